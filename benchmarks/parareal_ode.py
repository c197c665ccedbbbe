"""Parareal against serial torchdiffeq on the same fine grid (generic ODEs, CPU).

For each problem: serial ``torchdiffeq.odeint`` RK4 over the fine grid (``slices * steps``
steps), pint's serial RK4, and pint Parareal (batched and pipelined schedules) with
coarse RK4(1) and fine RK4(steps). Wall-clock times are medians over repeats, measured
side by side in one run; errors are against the serial fine solution.

Run: ``python benchmarks/parareal_ode.py [--quick]``; writes
``benchmarks/results/parareal_ode.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
import torchdiffeq
from common import median_time

import pint

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, object]:
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def bench_problem(problem: pint.problems.Problem, slices: int, steps: int, tol: float,
                  repeats: int) -> list[dict[str, object]]:
    t = problem.times(slices + 1)
    fine_grid = problem.times(slices * steps + 1)
    rows = []

    def torchdiffeq_serial():
        return torchdiffeq.odeint(problem.f, problem.y0, fine_grid, method="rk4")[::steps]

    wall, reference = median_time(torchdiffeq_serial, repeats)
    rows.append(dict(method="torchdiffeq rk4 (serial)", iterations=0,
                     sequential_nfe=4 * slices * steps, nfe=4 * slices * steps,
                     wall_s=wall, max_error=0.0))

    def pint_serial():
        return pint.serial(problem.f, problem.y0, t, method=pint.RK4(steps), vectorized=True)

    wall, sol = median_time(pint_serial, repeats)
    rows.append(dict(method="pint.serial RK4", iterations=0,
                     sequential_nfe=sol.stats.sequential_nfe, nfe=sol.stats.nfe, wall_s=wall,
                     max_error=(sol.ys - reference).abs().max().item()))
    for pipelined in (False, True):
        def run(pipelined=pipelined):
            return pint.parareal(problem.f, problem.y0, t, coarse=pint.RK4(1),
                                 fine=pint.RK4(steps), tol=tol, vectorized=True,
                                 pipelined=pipelined)

        wall, sol = median_time(run, repeats)
        rows.append(dict(
            method=f"pint.parareal ({'pipelined' if pipelined else 'batched'})",
            iterations=sol.iterations, sequential_nfe=sol.stats.sequential_nfe,
            predicted_sequential_nfe=sol.stats.predicted_sequential_nfe, nfe=sol.stats.nfe,
            wall_s=wall, max_error=(sol.ys - reference).abs().max().item(),
        ))
    base = rows[0]
    for row in rows:
        row["problem"] = problem.name
        row["depth_ratio"] = base["sequential_nfe"] / row["sequential_nfe"]
        row["speedup"] = base["wall_s"] / row["wall_s"]
    return rows


def to_markdown(rows: list[dict[str, object]], info: dict[str, object], header: str) -> str:
    lines = [
        f"# {header}", "",
        f"Machine: {info['processor']} ({info['machine']}), {info['cpus']} torch threads, "
        f"torch {info['torch']}, Python {info['python']}. Wall times are medians; ratios are "
        "against serial torchdiffeq RK4 on the same fine grid, measured in the same run.", "",
        "| problem | method | iterations | sequential nfe | depth ratio | nfe | wall (s) "
        "| speedup | max error vs serial |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['problem']} | {r['method']} | {r['iterations']} | {r['sequential_nfe']} | "
            f"{r['depth_ratio']:.1f}x | {r['nfe']} | {r['wall_s']:.3f} | {r['speedup']:.1f}x | "
            f"{r['max_error']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    repeats = 3 if args.quick else 7
    problems = [pint.problems.lotka_volterra(), pint.problems.van_der_pol(),
                pint.problems.brusselator(), pint.problems.lorenz()]
    rows = []
    for problem in problems:
        rows += bench_problem(problem, slices=64, steps=200, tol=1e-8, repeats=repeats)
        print(f"{problem.name}: done")
    info = machine()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "parareal_ode.json").write_text(json.dumps({"machine": info, "rows": rows},
                                                           indent=1))
    markdown = to_markdown(rows, info, "Parareal vs serial (64 slices, RK4(200) fine, RK4(1) "
                           "coarse, tol 1e-8)")
    (args.out / "parareal_ode.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
