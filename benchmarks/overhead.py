"""Where SRDS's wall time goes on the CPU: model calls vs everything else, and why the
wall-clock ratio to serial is what it is.

On the bundled digits model at N = 100 and 1000 DDIM steps, for one sample and for a
class-balanced batch of ten, serial DDIM and SRDS (defaults: pipelined, ``round(2 sqrt N)``
blocks, tol 1e-3) run interleaved ``repeats`` times with every denoiser call timed
(``perf_counter`` around it; CPU calls are synchronous). Reported: median wall clock of each,
the ratio, the share of SRDS's wall time spent outside model calls (the framework overhead),
the same share for serial, and the rows per call. A cost curve (milliseconds per denoiser call
against rows) shows how much a batched call saves over sequential ones on this machine: the
wall-clock speedup is bounded by ``serial calls * cost(b) / sum over rounds of cost(rows)``.

Run: ``python benchmarks/overhead.py [--quick] [--threads 2]``; writes
``benchmarks/results/overhead.{json,md}``.

``--against COMMIT`` measures instead the per-round cost of pint's own loop, at ``HEAD`` and at
``COMMIT`` side by side in one run: on Lotka-Volterra with 64 slices, RK4(200) fine
and RK4(1) coarse, tol 1e-8, ``pint.parareal`` and ``pint.serial`` (``vectorized=True``; and
Parareal with a per-state ``f`` vmapped by pint) against serial ``torchdiffeq.odeint`` RK4 on
the same fine grid.
Both are checked out with ``git worktree add`` into a temporary folder; each repeat runs one
subprocess per tree (alternating, ``PYTHONPATH`` pointing at that tree), which times every method
once after a warm-up, so each ratio compares runs of one process under the same load. Medians
over the repeats; writes ``benchmarks/results/overhead_against_<commit>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import (
    TimedDenoiser,
    arguments,
    digits,
    machine_info,
    machine_line,
    markdown_table,
    setup,
    write_results,
)

NAME = "overhead"
ROOT = Path(__file__).resolve().parent.parent


def cost_curve(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    """Milliseconds of one denoiser call (CFG: two UNet rows per sample) per batch size.

    The sizes are measured round-robin and the minimum over repeats is kept: the machine is
    shared, and the minimum is the least disturbed by other processes' bursts.
    """
    setup_ = digits(1)
    sigmas = setup_.sigmas(1000)
    calls = {}
    for size in sizes:
        labels = torch.arange(size) % 10
        calls[size] = (torch.randn(size, 1, 8, 8), sigmas[torch.arange(size) % 1000],
                       {"class_labels": labels,
                        "uncond_class_labels": torch.full_like(labels, 10)})
    times: dict[int, list[float]] = {size: [] for size in sizes}
    with torch.no_grad():
        for x, sigma, extra in calls.values():  # warm-up
            setup_.denoiser(x, sigma, **extra)
        for _ in range(repeats):
            for size, (x, sigma, extra) in calls.items():
                start = time.perf_counter()
                setup_.denoiser(x, sigma, **extra)
                times[size].append(time.perf_counter() - start)
    rows = []
    for size in sizes:
        ms = min(times[size]) * 1e3
        rows.append(dict(samples=size, ms_per_call=ms, ms_per_sample=ms / size,
                         ms_per_call_median=statistics.median(times[size]) * 1e3))
    base = rows[0]["ms_per_call"]
    for r in rows:
        r["vs_one"] = r["ms_per_call"] / base
    return rows


def measure(steps: int, per_class: int, classes: int, repeats: int) -> dict[str, Any]:
    from pint_diffusion import sample_serial, sample_srds

    setup_ = digits(per_class, classes=classes)
    sigmas = setup_.sigmas(steps)
    x = setup_.x(sigmas)
    timed = TimedDenoiser(setup_.denoiser)
    runs: dict[str, list[tuple[float, float, Any]]] = {"serial": [], "srds": []}
    for _ in range(repeats):  # interleaved, so both see the same machine load
        for name, sampler in (("serial", sample_serial), ("srds", sample_srds)):
            timed.reset()
            start = time.perf_counter()
            _, info = sampler(timed, x, sigmas, extra_args=setup_.extra_args, disable=True,
                              return_info=True)
            wall = time.perf_counter() - start
            runs[name].append((wall, timed.seconds, info, list(timed.rows_per_call)))
    out: dict[str, Any] = dict(steps=steps, samples=len(x))
    for name, results in runs.items():
        walls = [r[0] for r in results]
        shares = [1 - r[1] / r[0] for r in results]
        info, per_call = results[-1][2], results[-1][3]
        out[f"{name}_wall_s"] = statistics.median(walls)
        out[f"{name}_model_s"] = statistics.median(r[1] for r in results)
        out[f"{name}_overhead_share"] = statistics.median(shares)
        out[f"{name}_depth"] = info.sequential_nfe
        out[f"{name}_nfe"] = info.nfe
        out[f"{name}_rows_per_call"] = sum(per_call) / len(per_call)
        out[f"{name}_max_rows_per_call"] = max(per_call)
    out["wall_ratio"] = out["serial_wall_s"] / out["srds_wall_s"]
    out["blocks"] = len(runs["srds"][-1][2].blocks) - 1
    out["iterations"] = runs["srds"][-1][2].iterations
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}, flush=True)
    return out


def to_markdown(rows: list[dict[str, Any]], curve: list[dict[str, Any]], info: dict[str, Any],
                repeats: int) -> str:
    return "\n".join([
        "# SRDS overhead and wall clock on the CPU (digits model)",
        "",
        machine_line(info),
        f"Medians of {repeats} interleaved repeats. SRDS at its defaults (pipelined, "
        "round(2 sqrt N) blocks, tol 1e-3). `overhead` is the share of wall time outside "
        "denoiser calls (pint's scheduling, the Parareal updates, tensor bookkeeping).",
        "",
        markdown_table(rows, [
            ("N", "steps", "d"), ("samples", "samples", "d"), ("B", "blocks", "d"),
            ("iterations", "iterations", "d"),
            ("serial wall (s)", "serial_wall_s", ".2f"), ("SRDS wall (s)", "srds_wall_s", ".2f"),
            ("wall speedup", "wall_ratio", ".2f"), ("SRDS depth", "srds_depth", "d"),
            ("SRDS nfe / serial nfe", lambda r: r["srds_nfe"] / r["serial_nfe"], ".1f"),
            ("SRDS samples per call (mean)", "srds_rows_per_call", ".0f"),
            ("SRDS overhead", "srds_overhead_share", ".1%"),
            ("overhead per call (ms)",
             lambda r: (r["srds_wall_s"] - r["srds_model_s"]) / r["srds_depth"] * 1e3, ".2f"),
            ("serial overhead", "serial_overhead_share", ".1%")]),
        "",
        "## Cost of one denoiser call against its batch",
        "",
        "Minimum over round-robin repeats (median in the JSON).",
        "",
        markdown_table(curve, [("samples per call", "samples", "d"),
                               ("ms per call", "ms_per_call", ".1f"),
                               ("ms per sample", "ms_per_sample", ".2f"),
                               ("vs one sample", "vs_one", ".1f")]),
        "",
        "A batched round of `r` samples costs `cost(r)`; serial DDIM pays `N * cost(b)`, SRDS "
        "the sum of `cost(rows)` over its rounds. SRDS wins on wall clock only where the curve "
        "is flat over the rows it batches (as on a GPU); on two CPU cores it is nearly linear "
        "beyond a few dozen samples, so SRDS's extra evaluations (nfe) cost real time.",
    ])


# ------------------------------------------------------------------ pint's loop, two trees
METHODS = ("torchdiffeq", "parareal", "serial", "parareal_vmap")


def time_loop() -> dict[str, float]:
    """One timing of each method on the issue's problem, in this process (after a warm-up)."""
    import torchdiffeq

    import pint

    torch.set_default_dtype(torch.float64)
    problem = pint.problems.lotka_volterra()

    def per_state(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return problem.f(t.reshape(1), y.unsqueeze(0)).squeeze(0)

    def runs(slices: int) -> dict[str, Any]:
        t, fine = problem.times(65)[:slices + 1], problem.times(64 * 200 + 1)[:slices * 200 + 1]
        coarse, fine_rk = pint.RK4(1), pint.RK4(200)
        return {
            "torchdiffeq": lambda: torchdiffeq.odeint(problem.f, problem.y0, fine, method="rk4"),
            "parareal": lambda: pint.parareal(problem.f, problem.y0, t, coarse=coarse,
                                              fine=fine_rk, tol=1e-8, vectorized=True),
            "serial": lambda: pint.serial(problem.f, problem.y0, t, method=fine_rk,
                                          vectorized=True),
            "parareal_vmap": lambda: pint.parareal(per_state, problem.y0, t, coarse=coarse,
                                                   fine=fine_rk, tol=1e-8),
        }

    for run in runs(3).values():  # warm-up: imports, vmap tracing, allocator
        run()
    times = {}
    for name, run in runs(64).items():
        start, cpu = time.perf_counter(), time.process_time()
        run()
        times[name] = time.perf_counter() - start
        times[f"{name}_cpu"] = time.process_time() - cpu
    return times


def against(commit: str, repeats: int, threads: int) -> None:
    """The loop's timings at this tree and at ``commit``, alternating, in subprocesses."""
    info = machine_info()
    info["torch_threads"] = threads
    def sha(ref: str) -> str:
        return subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()

    trees = {"before": sha(commit), "head": sha("HEAD")}
    times: dict[str, list[dict[str, float]]] = {key: [] for key in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for key, ref in trees.items():  # both committed trees, so edits here cannot leak in
            subprocess.run(["git", "worktree", "add", "--detach", str(Path(tmp) / key), ref],
                           cwd=ROOT, check=True, capture_output=True)
        try:
            for _ in range(repeats):
                for key in trees:
                    env = dict(os.environ, PYTHONPATH=str(Path(tmp) / key),
                               OMP_NUM_THREADS=str(threads))
                    out = subprocess.run([sys.executable, __file__, "--child",
                                          "--threads", str(threads)], env=env, check=True,
                                         capture_output=True, text=True, cwd=tmp).stdout
                    times[key].append(json.loads(out.splitlines()[-1]))
                    print(key, times[key][-1], flush=True)
        finally:
            for key in trees:
                subprocess.run(["git", "worktree", "remove", "--force", str(Path(tmp) / key)],
                               cwd=ROOT, check=False, capture_output=True)
    rows = []
    for method in METHODS[1:]:
        row: dict[str, Any] = dict(method=method)
        for key, runs in times.items():
            row[f"{key}_s"] = statistics.median(r[method] for r in runs)
            row[key] = statistics.median(r["torchdiffeq"] / r[method] for r in runs)
            row[f"{key}_cpu"] = statistics.median(r["torchdiffeq_cpu"] / r[f"{method}_cpu"]
                                                  for r in runs)
        rows.append(row)
    labels = {"parareal": "`pint.parareal`, `vectorized=True`",
              "serial": "`pint.serial`, `vectorized=True`",
              "parareal_vmap": "`pint.parareal`, per-state `f` (vmap)"}
    markdown = "\n".join([
        "# pint's loop against an earlier commit (Lotka-Volterra, 64 slices, RK4(200) fine)",
        "",
        machine_line(info),
        f"`before` is {trees['before']}, `head` is {trees['head']}. Speedup over serial "
        "`torchdiffeq.odeint` RK4 on the same fine grid timed in the same process, RK4(1) "
        "coarse, tol 1e-8; "
        f"median over {repeats} repeats, the two trees alternating, one subprocess each. "
        f"`python benchmarks/overhead.py --against {commit} --repeats {repeats} --threads "
        f"{threads}`.",
        "",
        markdown_table(rows, [("", lambda r: labels[r["method"]], "s"),
                              ("before", "before", ".2f"), ("head", "head", ".2f"),
                              ("before, CPU time", "before_cpu", ".2f"),
                              ("head, CPU time", "head_cpu", ".2f"),
                              ("before (s)", "before_s", ".3f"), ("head (s)", "head_s", ".3f")]),
        "",
        "`before`/`head`: wall-clock speedup; `CPU time`: the same ratio of the process's CPU "
        "time (`time.process_time`), which other processes on a shared machine disturb less "
        "(one torch thread: CPU time is the work done); `(s)`: median wall seconds.",
    ])
    write_results(f"{NAME}_against_{trees['before']}",
                  dict(machine=info, trees=trees, repeats=repeats, times=times, rows=rows),
                  markdown)
    print(markdown)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--against", metavar="COMMIT",
                        help="time pint's loop here and at COMMIT side by side instead")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of --against")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    setup(args.threads)
    if args.child:
        print(json.dumps(time_loop()))
        return
    if args.against:
        against(args.against, args.repeats, args.threads)
        return
    repeats = 3 if args.quick else 5
    info = machine_info()
    start = time.perf_counter()
    curve = cost_curve([1, 2, 5, 10, 20, 50, 100, 200, 640], repeats=7)
    rows = []
    for steps in (100, 1000):
        rows.append(measure(steps, per_class=1, classes=1, repeats=repeats))
        rows.append(measure(steps, per_class=1, classes=10,
                            repeats=max(1, repeats - 1) if steps >= 1000 else repeats))
    info["seconds"] = time.perf_counter() - start
    write_results(NAME, dict(machine=info, quick=args.quick, repeats=repeats, rows=rows,
                             cost_curve=curve), to_markdown(rows, curve, info, repeats))
    print(f"done in {info['seconds']:.0f} s")


if __name__ == "__main__":
    main()
