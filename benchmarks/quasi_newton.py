"""Quasi-Newton Picard against SRDS, Picard (ParaDiGMS), Picard + triangular Anderson and
serial DDIM: the digits model, the tiny Stable Diffusion components, generic ODEs.

Digits (the main section): for each configuration (classifier-free guidance 2 at N = 25, 100
and 1000 DDIM steps; guidance 5 and 8 at N = 100), every sampler runs over a tolerance sweep
from the same noise, and the result is compared with serial DDIM in the data scale [-1, 1]: the
error-versus-depth frontier (sequential model calls against RMS error), the depth at RMS <= 1e-3
read off it, the work (model evaluations / serial's) and each sampler's *default* run (its
default tolerance 1e-3, no tuning): is it within 1e-3, and does it say ``converged`` only when
it is?

Samplers: ``sample_serial``; SRDS (pipelined, default 2 sqrt(N) blocks) with the plain and the
extrapolated stop; Picard (ParaDiGMS, full window); Picard + triangular Anderson acceleration
(``QuasiNewton(jacobian=pint.Anderson())``: ParaTAA-style, with quasi-Newton's initial guess
and stop); quasi-Newton with the scalar DDIM secant and with the default diagonal one (full
window), and the default with a window of 200 at N = 1000. At N = 1000 only the default
tolerance runs (plus 1e-2 and 3e-3 for the windowed quasi-Newton): a full-window iteration
there evaluates all 1000 steps of every sample. Quick mode (``--quick``, part of ``make
bench``): 10 samples (one per class), a shorter sweep; about 50 minutes on 2 cores.

Two short sections follow: the tiny SD components against diffusers'
``StableDiffusionParadigmsPipeline``, and generic ODEs (``pint.problems``) with every Jacobian
model of :func:`pint.picard`.

Run: ``python benchmarks/quasi_newton.py [--quick] [--threads 2] [--only digits|sd|ode]``;
writes ``benchmarks/results/quasi_newton.{json,md}`` and ``quasi_newton_frontier.png``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from common import (
    RESULTS,
    TARGET_RMS,
    ModuleCounter,
    arguments,
    digits,
    errors,
    frontier_plot,
    load_results,
    machine_info,
    machine_line,
    markdown_table,
    setup,
    smallest_depth,
    write_results,
)

import pint
from pint_diffusion import SRDS, Picard, QuasiNewton, Sampler, Serial, probability_flow

NAME = "quasi_newton"


@dataclass(frozen=True)
class Method:
    """A sampler family: how to build it at a tolerance."""

    name: str
    build: Any  # tol -> Sampler

    def sampler(self, tol: float) -> Sampler:
        return self.build(tol)


def methods(steps: int, secant: pint.Secant) -> list[Method]:
    """The samplers of one configuration; ``secant`` the DDIM scalar secant of its schedule."""
    out = [
        Method("SRDS", lambda tol: SRDS(tol=tol)),
        Method("SRDS, extrapolated stop", lambda tol: SRDS(tol=tol, stop=pint.Extrapolated())),
        Method("Picard (full window)", lambda tol: Picard(tol=tol)),
        Method("Picard + triangular Anderson (full window)",
               lambda tol: QuasiNewton(tol=tol, jacobian=pint.Anderson())),
        Method("quasi-Newton, scalar secant (full window)",
               lambda tol: QuasiNewton(tol=tol, jacobian=secant)),
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
    secant = probability_flow(d.denoiser, x, sigmas, d.extra_args).secant
    assert secant is not None
    for method in methods(steps, secant):
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


SD_STEPS = (25, 100)


def tiny_sd(tols: list[float], paradigms_tols: list[float]) -> list[dict[str, Any]]:
    """The tiny Stable Diffusion components (random weights, DDIM, CFG 5, four prompts):
    pint's Picard, Picard + Anderson and quasi-Newton against diffusers' ParaDiGMS pipeline
    (``StableDiffusionParadigmsPipeline``, ``parallel = N``), errors in latent units against
    the serial pipeline (``set_alpha_to_one=True`` everywhere, see ``benchmarks/sd.py``)."""
    from sd import GUIDANCE, PROMPTS, ddim, pipelines

    from pint_diffusion import DiffusersDenoiser
    from pint_diffusion.testing import tiny_sd_components

    pipes = pipelines(tiny_sd_components(0))
    unet = pipes["serial"].unet
    noise = torch.randn(len(PROMPTS), 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond, uncond = pipes["serial"].encode_prompt(PROMPTS, "cpu", 1, True, None)
    extra = {"encoder_hidden_states": cond, "uncond_encoder_hidden_states": uncond}
    rows: list[dict[str, Any]] = []
    for steps in SD_STEPS:
        call = dict(prompt=PROMPTS, num_inference_steps=steps, guidance_scale=GUIDANCE,
                    output_type="latent")
        with torch.no_grad():
            reference = pipes["serial"](latents=noise.clone(), **call).images
        denoiser = DiffusersDenoiser(unet, ddim(type(pipes["serial"].scheduler)),
                                     guidance_scale=GUIDANCE)
        sigmas = denoiser.sigmas(steps)
        x = denoiser.to_ve(noise, sigmas[0])
        rows.append(dict(steps=steps, method="serial DDIM pipeline", tol=None,
                         sequential_nfe=steps, nfe=steps * len(PROMPTS), rms_error=0.0,
                         max_error=0.0))
        samplers = [("Picard (full window)", lambda tol: Picard(tol=tol)),
                    ("Picard + triangular Anderson (full window)",
                     lambda tol: QuasiNewton(tol=tol, jacobian=pint.Anderson())),
                    ("quasi-Newton (full window)", lambda tol: QuasiNewton(tol=tol))]
        for name, build in samplers:
            for tol in tols:
                with torch.no_grad():
                    out, info = build(tol).sample(denoiser, x, sigmas, extra, disable=True,
                                                  return_info=True)
                rows.append(dict(steps=steps, method=name, tol=tol,
                                 sequential_nfe=info.sequential_nfe, nfe=info.nfe,
                                 **errors(denoiser.from_ve(out, sigmas[-1]), reference)))
        for tol in paradigms_tols:
            with torch.no_grad(), ModuleCounter(unet) as counter:
                out = pipes["paradigms"](latents=noise.clone(), parallel=steps, tolerance=tol,
                                         **call).images
            rows.append(dict(steps=steps, method=f"diffusers ParaDiGMS (parallel={steps})",
                             tol=tol, sequential_nfe=counter.calls, nfe=counter.rows // 2,
                             **errors(out, reference)))
        for r in rows[-(1 + len(samplers) * len(tols) + len(paradigms_tols)):]:
            print(f"tiny SD N={steps:4d} {r['method']:44s} tol={r['tol']!s:7s} "
                  f"depth={r['sequential_nfe']:4d} rms={r['rms_error']:.1e}", flush=True)
    return rows


ODE_STEPS = 100
ODE_TARGET = 1e-6


def ode_problems() -> list[dict[str, Any]]:
    """Generic ODEs (``pint.problems``, on the first ``span`` of their interval), one RK4 step
    per interval of a 100-step grid: the Jacobian models of :func:`pint.picard` with priors 1,
    errors (max abs) against ``pint.serial`` with the same steps."""
    problems = [(pint.problems.lotka_volterra(), 2.0), (pint.problems.van_der_pol(), 2.0),
                (pint.problems.brusselator(), 2.0), (pint.problems.lorenz(), 0.5)]
    models = [("Picard", pint.Identity()), ("Picard + triangular Anderson", pint.Anderson()),
              ("quasi-Newton, scalar secant", pint.Secant()),
              ("quasi-Newton, diagonal secant", pint.DiagonalSecant())]
    rows: list[dict[str, Any]] = []
    for problem, span in problems:  # whole-horizon iterations diverge on the long spans
        t = torch.linspace(problem.t0, problem.t0 + span, ODE_STEPS + 1, dtype=torch.float64)
        serial = pint.serial(problem.f, problem.y0, t, method=pint.RK4(1), vectorized=True)
        scale = float(serial.ys.abs().max())
        rows.append(dict(problem=problem.name, method="serial RK4", tol=None,
                         iterations=0, sequential_nfe=serial.stats.sequential_nfe,
                         nfe=serial.stats.nfe, max_error=0.0))
        for name, model in models:
            for tol in (1e-4, 1e-6, 1e-8):
                try:
                    sol = pint.picard(problem.f, problem.y0, t, step=pint.RK4(1),
                                      tol=tol * scale, jacobian=model,
                                      initial=pint.Constant(), stop=pint.Extrapolated(),
                                      vectorized=True)
                except (pint.NonFiniteError, ValueError) as error:  # the iterates overflowed
                    if "finite" not in str(error):
                        raise
                    rows.append(dict(problem=problem.name, method=name, tol=tol,
                                     iterations=None, sequential_nfe=None, nfe=None,
                                     max_error=math.inf))
                else:
                    rows.append(dict(problem=problem.name, method=name, tol=tol,
                                     iterations=sol.iterations,
                                     sequential_nfe=sol.stats.sequential_nfe, nfe=sol.stats.nfe,
                                     max_error=float((sol.ys - serial.ys).abs().max()) / scale))
                r = rows[-1]
                print(f"ODE {problem.name:16s} {name:30s} tol={tol:<6g} "
                      f"iterations={r['iterations']} rel. error={r['max_error']:.1e}",
                      flush=True)
    return rows


def ode_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for problem in dict.fromkeys(r["problem"] for r in rows):
        for name in dict.fromkeys(r["method"] for r in rows if r["problem"] == problem):
            group = [r for r in rows if r["problem"] == problem and r["method"] == name]
            best = smallest_depth(group, ODE_TARGET, key="max_error")
            serial = next(r for r in rows if r["problem"] == problem and r["tol"] is None)
            out.append(dict(problem=problem, method=name,
                            iterations=best["iterations"] if best else None,
                            depth=best["sequential_nfe"] if best else None,
                            work=best["nfe"] / serial["nfe"] if best else None))
    return out


def sd_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for steps in SD_STEPS:
        for name in dict.fromkeys(r["method"] for r in rows if r["steps"] == steps):
            group = [r for r in rows if r["steps"] == steps and r["method"] == name]
            best = smallest_depth(group)
            out.append(dict(steps=steps, method=name,
                            depth=best["sequential_nfe"] if best else None,
                            tol=best["tol"] if best else None,
                            work=best["nfe"] / (steps * 4) if best else None))
    return out


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
           quick: bool, sd_rows: list[dict[str, Any]], ode_rows: list[dict[str, Any]]) -> str:
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
    sd_table = markdown_table(sd_summary(sd_rows), [
        ("N", "steps", "d"), ("sampler", "method", "s"),
        ("depth at RMS <= 1e-3", "depth", "d"), ("its tol", "tol", "g"),
        ("work there (x serial)", "work", ".1f")]) if sd_rows else "(not run)"
    sd_all = markdown_table(sd_rows, [
        ("N", "steps", "d"), ("sampler", "method", "s"), ("tol", "tol", "g"),
        ("depth", "sequential_nfe", "d"), ("evaluations", "nfe", "d"),
        ("RMS", "rms_error", ".1e"), ("max", "max_error", ".1e")]) if sd_rows else ""
    ode_table = markdown_table(ode_summary(ode_rows), [
        ("problem", "problem", "s"), ("Jacobian model", "method", "s"),
        ("iterations", "iterations", "d"), ("depth (RK4 stages)", "depth", "d"),
        ("work (x serial)", "work", ".1f")]) if ode_rows else "(not run)"
    ode_all = markdown_table(ode_rows, [
        ("problem", "problem", "s"), ("Jacobian model", "method", "s"), ("tol", "tol", "g"),
        ("iterations", "iterations", "d"), ("depth", "sequential_nfe", "d"),
        ("relative max error", "max_error", ".1e")]) if ode_rows else ""
    mode = "quick mode" if quick else "full mode"
    return f"""# Quasi-Newton Picard vs SRDS vs Picard (+ Anderson) vs serial DDIM

Digits model (below), tiny SD components with diffusers' ParaDiGMS, generic ODEs.

`python benchmarks/quasi_newton.py{' --quick' if quick else ''}` ({mode}), {machine_line(info)}.
Sequential model calls (depth) and errors are deterministic; wall clock is one run on a shared
machine. Errors: against serial DDIM from the same noise, in the data scale [-1, 1]; "RMS" over
the whole batch, "worst sample RMS" the largest per-sample RMS. Depth at RMS <= 1e-3: the
fewest sequential calls among the tolerance sweep's runs that reached it. Default run: the
sampler at its default tolerance (1e-3), no tuning; "safe": it did not report `converged`
with a sample more than 1e-3 (RMS) off. "quasi-Newton" is the default (diagonal DDIM secant,
`pint.Extrapolated(safety=2)` stop; with a window: freezing at `tol / 3`, DDIM re-prediction
of the points beyond the window, the extrapolated stop once the window reaches the end);
"scalar secant" the same with one secant factor per step and sample; "Picard + triangular
Anderson" the same with `pint.Anderson()` (over Picard's `A = 1`).

## Summary (digits model)

{head}

![error against depth](quasi_newton_frontier.png)

## Tiny Stable Diffusion components, with diffusers' ParaDiGMS

Random-weight tiny SD (latents 4x8x8, DDIM, CFG 5, four prompts; `benchmarks/sd.py`'s
pipelines, `set_alpha_to_one=True` everywhere). Errors in latent units (latent RMS about 12-15)
against the serial pipeline; diffusers' `StableDiffusionParadigmsPipeline` with
`parallel = N` over its `tolerance`, counted by a hook on the UNet. Depth at RMS <= 1e-3: the
fewest sequential UNet calls among the sweep's runs that reached it.

{sd_table}

## Generic ODEs

`pint.problems` over their first 2 time units (Lorenz: 0.5) on a grid of {ODE_STEPS}
intervals, one `pint.RK4(1)` step each (over the problems' whole intervals every variant's
iterates overflow: a whole-horizon Picard-type iteration needs a short enough span);
`pint.picard` with `initial=pint.Constant()`, `stop=pint.Extrapolated()` and each Jacobian
model (priors 1, no bounds), over `tol` 1e-4, 1e-6, 1e-8 (relative to the solution's largest
entry). Errors: max absolute difference from `pint.serial` (the same RK4 steps) relative to
that entry; the table gives the fewest iterations reaching {ODE_TARGET:g} (depth: 4 rounds per
RK4 iteration; work: evaluations / serial's); "-" where no run did (overflow, or a stop
with a larger error: see every run below).

{ode_table}

## Every run

{full}

### Tiny SD, every run

{sd_all}

### Generic ODEs, every run

{ode_all}
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


SECTIONS = ("digits", "sd", "ode")


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--only", choices=SECTIONS, action="append",
                        help="run only this section (repeatable); the others' rows are kept "
                             "from the committed results")
    args = parser.parse_args()
    threads = setup(args.threads)
    sections = args.only or list(SECTIONS)
    old = load_results(NAME) or {}
    tols = [1e-2, 3e-3, 1e-3, 3e-4] if args.quick else [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4]
    rows: list[dict[str, Any]] = old.get("rows", [])
    if "digits" in sections:
        rows = []
        for guidance, steps in CONFIGS:
            # at N = 1000 a full-window iteration evaluates 1000 steps of every sample: quick
            # mode runs the default tolerance only (and 1e-2, 3e-3 for the windowed variant)
            sweep = [1e-2, 3e-3, 1e-3] if steps >= 1000 and args.quick else tols
            rows += run_config(guidance, steps, sweep, per_class=1 if args.quick else 2)
    sd_rows = tiny_sd([1e-2, 1e-3, 1e-4], [1e-1, 1e-2, 1e-3]) if "sd" in sections else \
        old.get("sd_rows", [])
    ode_rows = ode_problems() if "ode" in sections else old.get("ode_rows", [])
    table = summary(rows)
    info = machine_info() | {"threads": threads, "quick": args.quick}
    if sections != list(SECTIONS) and "machine" in old:
        info["sections_run"] = sections
        info["earlier_sections"] = old["machine"]
    write_results(NAME, {"machine": info, "rows": rows, "summary": table, "sd_rows": sd_rows,
                         "ode_rows": ode_rows},
                  render(rows, table, info, args.quick, sd_rows, ode_rows))
    plot(rows)


if __name__ == "__main__":
    main()
