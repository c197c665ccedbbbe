"""What limits SRDS's depth at a given error: block count and coarse solver, iterate by iterate.

On the bundled digits model (one sample per class), for N DDIM steps, SRDS's Parareal
iteration is run through ``pint.parareal`` directly (the fine propagator is always the
sampler's own Euler = DDIM steps, so every variant converges to serial DDIM) with

- the coarse solver: Euler (SRDS's default, one DDIM step per block) or Heun (two
  evaluations per block, second order; a step to sigma = 0 stays Euler);
- the block count: sqrt N, 2 sqrt N, 3 sqrt N;

and every iterate's RMS error against serial DDIM is recorded with the depth (denoiser
calls made) at which it exists. For each variant the table gives the first iterate whose
RMS error is at most 1e-3 and its depth: the best any stopping rule could do. It also checks
the depth against ``pint.predicted_depth``'s recurrence.

``sample_srds`` has no separate coarse solver option; this script builds the same vector
field it does (``pint_diffusion.steppers``) to try one.

Run: ``python benchmarks/srds_limits.py [--quick]``; writes
``benchmarks/results/srds_limits.{json,md}``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from common import (
    TARGET_RMS,
    TimedDenoiser,
    arguments,
    digits,
    errors,
    machine_info,
    machine_line,
    markdown_table,
    setup,
    write_results,
)

import pint
from pint_diffusion import Euler, Heun, OnSchedule, block_boundaries, sample_serial
from pint_diffusion.steppers import denoised_to_derivative

NAME = "srds_limits"


def trace(steps: int, blocks: int, coarse_solver: Any, iterations: int,
          per_class: int) -> list[dict[str, Any]]:
    setup_ = digits(per_class)
    sigmas = setup_.sigmas(steps)
    x = setup_.x(sigmas)
    timed = TimedDenoiser(setup_.denoiser)
    reference = setup_.data(sample_serial(timed, x, sigmas, extra_args=setup_.extra_args,
                                          disable=True), sigmas)
    labels = setup_.extra_args
    t = sigmas[block_boundaries(steps, blocks)]

    def field(sigma: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        rows = {k: v[index] for k, v in labels.items()}
        return denoised_to_derivative(y, sigma, timed(y, sigma, **rows))

    out: list[dict[str, Any]] = []

    def record(k: int, ys: torch.Tensor, residual: torch.Tensor) -> None:
        out.append(dict(steps=steps, blocks=blocks, coarse=type(coarse_solver).__name__,
                        iteration=k, sequential_nfe=timed.calls,
                        **errors(setup_.data(ys[-1], sigmas), reference)))

    timed.reset()
    sol = pint.parareal(field, x, t, coarse=OnSchedule(coarse_solver, t),
                        fine=OnSchedule(Euler(), sigmas), tol=0.0, max_iters=iterations,
                        pipelined=True, vectorized=True, independent=True, callback=record)
    for row in out:
        row["predicted_total"] = sol.stats.predicted_sequential_nfe
        row["measured_total"] = sol.stats.sequential_nfe
    return out


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    summary = []
    keys = dict.fromkeys((r["steps"], r["blocks"], r["coarse"]) for r in rows)
    for steps, blocks, coarse in keys:
        its = [r for r in rows if (r["steps"], r["blocks"], r["coarse"]) == (steps, blocks,
                                                                             coarse)]
        good = [r for r in its if r["rms_error"] <= TARGET_RMS]
        first = min(good, key=lambda r: r["iteration"]) if good else None
        summary.append(dict(
            steps=steps, blocks=blocks, coarse=coarse,
            coarse_error=its[0]["rms_error"],
            iteration=first["iteration"] if first else None,
            sequential_nfe=first["sequential_nfe"] if first else None,
            ratio=steps / first["sequential_nfe"] if first else None,
            rms_error=first["rms_error"] if first else None,
            errors=" ".join(f"{r['rms_error']:.0e}@{r['sequential_nfe']}" for r in its),
            depth_check=f"{its[0]['measured_total']} / {its[0]['predicted_total']}"))
    return summary


def main() -> None:
    parser = arguments(__doc__)
    args = parser.parse_args()
    setup(args.threads)
    info = machine_info()
    start = time.perf_counter()
    step_list = [100] if args.quick else [25, 100, 1000]
    rows = []
    for steps in step_list:
        for k in (1, 2, 3):
            for solver in (Euler(), Heun()):
                blocks = max(1, round(k * math.sqrt(steps)))
                rows += trace(steps, blocks, solver, iterations=3, per_class=1)
                print(summarise(rows)[-1], flush=True)
    summary = summarise(rows)
    info["seconds"] = time.perf_counter() - start
    markdown = "\n".join([
        "# What limits SRDS: block count and coarse solver (digits model)",
        "",
        machine_line(info),
        "One sample per class, CFG 2.0, tol 0 for 3 iterations; fine = DDIM's own steps. "
        "`depth` is the denoiser calls made when the iterate exists (pipelined schedule). "
        "`first iterate <= 1e-3` is the best any stopping rule could do; `errors` lists "
        "RMS error @ depth for the coarse pass and each iterate. `depth check` is the run's "
        "measured / predicted (`pint.predicted_depth`) total depth.",
        "",
        markdown_table(summary, [
            ("N", "steps", "d"), ("B", "blocks", "d"), ("coarse", "coarse", "s"),
            ("coarse-pass error", "coarse_error", ".1e"),
            ("first iterate <= 1e-3", "iteration", ""), ("its depth", "sequential_nfe", ""),
            ("fewer than serial", "ratio", ".2f"), ("errors (RMS@depth)", "errors", "s"),
            ("depth check", "depth_check", "s")]),
    ])
    write_results(NAME, dict(machine=info, quick=args.quick, rows=rows, summary=summary),
                  markdown)
    print(markdown)


if __name__ == "__main__":
    main()
