"""Quasi-Newton Picard against SRDS, Picard (ParaDiGMS) and serial DDIM on the digits model.

For each configuration (classifier-free guidance 2 at N = 25, 100 and 1000 DDIM steps; guidance
5 and 8 at N = 100), every sampler runs over a tolerance sweep from the same noise, and the
result is compared with serial DDIM in the data scale [-1, 1]: the error-versus-depth frontier
(sequential model calls against RMS error), the depth at RMS <= 1e-3 read off it, the work
(model evaluations / serial's) and each sampler's *default* run (its default tolerance 1e-3,
no tuning): is it within 1e-3, and does it say ``converged`` only when it is?

Samplers: ``sample_serial``; SRDS (pipelined, default 2 sqrt(N) blocks) with the plain and the
extrapolated stop; Picard (ParaDiGMS, full window); quasi-Newton Picard (full window, and a
window of 200 at N = 1000). At N = 1000 only the default tolerance runs (plus 1e-2 and 3e-3
for the windowed quasi-Newton): a full-window iteration there evaluates all 1000 steps of
every sample. Quick mode (``--quick``, part of ``make bench``): 10 samples (one per class), a
shorter sweep; about 40 minutes on 2 cores.

Run: ``python benchmarks/quasi_newton.py [--quick] [--threads 2]``; writes
``benchmarks/results/quasi_newton.{json,md}`` and ``quasi_newton_frontier.png``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from common import (
    RESULTS,
    TARGET_RMS,
    arguments,
    digits,
    errors,
    frontier_plot,
    machine_info,
    machine_line,
    markdown_table,
    setup,
    smallest_depth,
    write_results,
)

import pint
from pint_diffusion import SRDS, Picard, QuasiNewton, Sampler, Serial

NAME = "quasi_newton"


@dataclass(frozen=True)
class Method:
    """A sampler family: how to build it at a tolerance."""

    name: str
    build: Any  # tol -> Sampler

    def sampler(self, tol: float) -> Sampler:
        return self.build(tol)


def methods(steps: int) -> list[Method]:
    out = [
        Method("SRDS", lambda tol: SRDS(tol=tol)),
        Method("SRDS, extrapolated stop", lambda tol: SRDS(tol=tol, stop=pint.Extrapolated())),
        Method("Picard (full window)", lambda tol: Picard(tol=tol)),
        Method("quasi-Newton (full window)", lambda tol: QuasiNewton(tol=tol)),
    ]
    if steps >= 1000:
        out.append(Method("quasi-Newton (window 200)", lambda tol: QuasiNewton(window=200,
                                                                                 tol=tol)))
    return out


CONFIGS = [(2.0, 25), (2.0, 100), (2.0, 1000), (5.0, 100), (8.0, 100)]


def run_config(guidance: float, steps: int, tols: list[float], per_class: int
               ) -> list[dict[str, Any]]:
    d = digits(per_class)
    d.denoiser.guidance_scale = guidance
    sigmas = d.sigmas(steps)
    x = d.x(sigmas)
    rows = []
    start = time.perf_counter()
    serial, info = Serial().sample(d.denoiser, x, sigmas, d.extra_args, disable=True,
                                   return_info=True)
    reference = d.data(serial, sigmas)
    serial_nfe = info.nfe
    rows.append(dict(guidance=guidance, steps=steps, method="serial DDIM", tol=None,
                     sequential_nfe=info.sequential_nfe, nfe=info.nfe, work=1.0,
                     iterations=0, converged=True, rms_error=0.0, max_error=0.0,
                     worst_sample_rms=0.0, wall_s=time.perf_counter() - start))
    for method in methods(steps):
        for tol in tols:
            if steps >= 1000 and tol != TARGET_RMS and "window 200" not in method.name:
                continue
            begin = time.perf_counter()
            out, info = method.sampler(tol).sample(d.denoiser, x, sigmas, d.extra_args,
                                                   disable=True, return_info=True)
            data = d.data(out, sigmas)
            worst = float((data - reference).pow(2).flatten(1).mean(1).sqrt().max())
            row = dict(guidance=guidance, steps=steps, method=method.name, tol=tol,
                       sequential_nfe=info.sequential_nfe, nfe=info.nfe,
                       work=info.nfe / serial_nfe, iterations=info.iterations,
                       converged=info.converged, worst_sample_rms=worst,
                       wall_s=time.perf_counter() - begin, **errors(data, reference))
            rows.append(row)
            print(f"cfg {guidance:g} N={steps:5d} {method.name:28s} tol={tol:<7g} "
                  f"depth={row['sequential_nfe']:5d} work={row['work']:5.1f}x "
                  f"rms={row['rms_error']:.1e} worst={worst:.1e} {row['wall_s']:6.1f}s",
                  flush=True)
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration and method: depth at RMS <= 1e-3, and the default run."""
    out = []
    for guidance, steps in CONFIGS:
        at = [r for r in rows if r["guidance"] == guidance and r["steps"] == steps]
        if not at:
            continue
        for name in dict.fromkeys(r["method"] for r in at):
            group = [r for r in at if r["method"] == name]
            best = smallest_depth(group)
            default = next((r for r in group if r["tol"] in (None, TARGET_RMS)), None)
            out.append(dict(
                guidance=guidance, steps=steps, method=name,
                depth=best["sequential_nfe"] if best else None,
                work=best["work"] if best else None,
                default_depth=default["sequential_nfe"] if default else None,
                default_rms=default["rms_error"] if default else None,
                default_worst=default["worst_sample_rms"] if default else None,
                # safe: never a sample off by more than the tolerance marked converged
                default_safe=None if default is None else (
                    not default["converged"] or default["worst_sample_rms"] <= TARGET_RMS),
            ))
    return out


def render(rows: list[dict[str, Any]], table: list[dict[str, Any]], info: dict[str, Any],
           quick: bool) -> str:
    head = markdown_table(table, [
        ("guidance", "guidance", "g"), ("N", "steps", "d"), ("sampler", "method", "s"),
        ("depth at RMS <= 1e-3", "depth", "d"), ("work there (x serial)", "work", ".1f"),
        ("default run: depth", "default_depth", "d"), ("RMS", "default_rms", ".1e"),
        ("worst sample RMS", "default_worst", ".1e"), ("safe", "default_safe", ""),
    ])
    full = markdown_table(rows, [
        ("guidance", "guidance", "g"), ("N", "steps", "d"), ("sampler", "method", "s"),
        ("tol", "tol", "g"), ("iterations", "iterations", "d"), ("depth", "sequential_nfe", "d"),
        ("work", "work", ".1f"), ("RMS", "rms_error", ".1e"), ("max", "max_error", ".1e"),
        ("worst sample RMS", "worst_sample_rms", ".1e"), ("converged", "converged", ""),
        ("wall s", "wall_s", ".1f"),
    ])
    mode = "quick mode" if quick else "full mode"
    return f"""# Quasi-Newton Picard vs SRDS vs Picard vs serial DDIM (digits model)

`python benchmarks/quasi_newton.py{' --quick' if quick else ''}` ({mode}), {machine_line(info)}.
Sequential model calls (depth) and errors are deterministic; wall clock is one run on a shared
machine. Errors: against serial DDIM from the same noise, in the data scale [-1, 1]; "RMS" over
the whole batch, "worst sample RMS" the largest per-sample RMS. Depth at RMS <= 1e-3: the
fewest sequential calls among the tolerance sweep's runs that reached it. Default run: the
sampler at its default tolerance (1e-3), no tuning; "safe": it did not report `converged`
with a sample more than 1e-3 (RMS) off.

## Summary

{head}

![error against depth](quasi_newton_frontier.png)

## Every run

{full}
"""


def plot(rows: list[dict[str, Any]]) -> None:
    panels: dict[str, dict[str, list[tuple[float, float]]]] = {}
    serial_depth: dict[str, float] = {}
    for r in rows:
        panel = f"guidance {r['guidance']:g}, N = {r['steps']}"
        if r["method"] == "serial DDIM":
            serial_depth[panel] = r["sequential_nfe"]
            continue
        panels.setdefault(panel, {}).setdefault(r["method"], []).append(
            (r["sequential_nfe"], r["rms_error"]))
    frontier_plot(RESULTS / f"{NAME}_frontier.png", panels, serial_depth,
                  "RMS error vs serial DDIM against sequential model calls (digits model)")


def main() -> None:
    args = arguments(__doc__).parse_args()
    threads = setup(args.threads)
    tols = [1e-2, 3e-3, 1e-3, 3e-4] if args.quick else [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4]
    rows: list[dict[str, Any]] = []
    for guidance, steps in CONFIGS:
        # at N = 1000 a full-window iteration evaluates 1000 steps of every sample: quick mode
        # runs the default tolerance only (and 1e-2, 3e-3 for the windowed variant)
        sweep = [1e-2, 3e-3, 1e-3] if steps >= 1000 and args.quick else tols
        rows += run_config(guidance, steps, sweep, per_class=1 if args.quick else 2)
    table = summary(rows)
    info = machine_info() | {"threads": threads, "quick": args.quick}
    write_results(NAME, {"machine": info, "rows": rows, "summary": table},
                  render(rows, table, info, args.quick))
    plot(rows)


if __name__ == "__main__":
    main()
