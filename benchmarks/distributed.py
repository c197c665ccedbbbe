"""Distributed Parareal, quasi-Newton Picard and MGRIT: 1 process against 2 (and 4) on a CPU.

The workload is one that a single process cannot spread over both cores: every process
runs with ONE torch thread, and the vector field is a per-particle MLP (128 particles of
dimension 64, hidden width 512: about 17 MFLOP per state row), so the evaluation rounds
dominate the Python overhead. The same ``pint.distributed.parareal`` call runs on a group
of 1 and of 2 processes (spawned with torch.multiprocessing, rendezvous through a file);
single-process ``pint.parareal`` (pipelined) and ``pint.serial`` run alongside for reference.

The ceiling of the speedup is the balance of the fine work: with ``K`` iterations, the
pipelined schedule propagates slice ``n`` finely in iterations ``0..min(n, K)`` (converged-
prefix skipping; iteration ``K``'s fine solves start before its convergence test ends), so
``P`` ranks can at best speed the solve up by
``sum_n min(n + 1, K + 1) / max_r sum_{n in r} min(n + 1, K + 1)``; the coarse sweep, the
pipeline's fill and the extra speculative work of the ranks ahead lower it further.

Quasi-Newton Picard (``pint.distributed.picard``, :class:`pint.Secant`) and MGRIT
(``pint.distributed.mgrit``, FCF, coarsening ``FINE_STEPS``, so its coarse grid is Parareal's
slices), each with one RK4 step of the fine propagator per interval of the same grid, share
each round's rows out over the ranks instead: their ceiling is the balance of the rows,
``rows / max_r rows_r`` per round (the updates, replicated on every rank, the exchange of the
rows and, for MGRIT, the coarsest level's serial solve, one row per round, lower it).
``--processes 1 2 4`` adds 4 processes (on 2 cores they share them: a correctness and
overhead run, not a scaling one).

Run: ``python benchmarks/distributed.py [--quick] [--processes 1 2]``; writes
``benchmarks/results/distributed.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from common import cpu_model
from common import median_time as common_median_time

import pint
import pint.distributed

RESULTS = Path(__file__).parent / "results"
SLICES, FINE_STEPS, TOL = 16, 4, 1e-6


def problem() -> tuple[object, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w1 = torch.randn(64, 512, generator=g, dtype=torch.float64) / 8
    w2 = torch.randn(512, 64, generator=g, dtype=torch.float64) / 16
    b = torch.randn(512, generator=g, dtype=torch.float64) / 4

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # y: (rows, 128, 64)
        return torch.tanh(y @ w1 + b) @ w2 * torch.cos(t)[:, None, None] - 0.5 * y

    y0 = torch.randn(128, 64, generator=g, dtype=torch.float64)
    return f, y0, torch.linspace(0.0, 4.0, SLICES + 1, dtype=torch.float64)


def rows_solve(method: str, distributed: bool) -> pint.Solution:
    """Picard or MGRIT on the fine grid, over the default group or in this process."""
    f, y0, t = problem()
    grid = picard_grid(t)
    if method == "picard":
        run = pint.distributed.picard if distributed else pint.picard
        return run(f, y0, grid, step=pint.RK4(1), tol=TOL, jacobian=pint.Secant(),
                   vectorized=True)
    run = pint.distributed.mgrit if distributed else pint.mgrit
    return run(f, y0, grid, propagator=pint.RK4(1), coarsening=FINE_STEPS, tol=TOL,
               vectorized=True)


ROWS_METHODS = {"picard": "quasi-Newton Picard", "mgrit": "MGRIT FCF"}


def solve(method: str) -> pint.Solution:
    if method in ROWS_METHODS:
        return rows_solve(method, distributed=True)
    f, y0, t = problem()
    return pint.distributed.parareal(f, y0, t, coarse=pint.RK4(1), fine=pint.RK4(FINE_STEPS),
                                     tol=TOL, vectorized=True)


def picard_grid(t: torch.Tensor) -> torch.Tensor:
    """The fine grid of the Parareal run: ``FINE_STEPS`` intervals per slice."""
    return torch.linspace(float(t[0]), float(t[-1]), SLICES * FINE_STEPS + 1,
                          dtype=torch.float64)


def worker(rank: int, world: int, method: str, store: str, repeats: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=120))
    times, sol = [], None
    for _ in range(repeats + 1):  # the first run warms up
        dist.barrier()
        start = time.perf_counter()
        sol = solve(method)
        dist.barrier()
        times.append(time.perf_counter() - start)
    if rank == 0:
        torch.save({"times": times[1:], "solution": sol}, out)
    dist.destroy_process_group()


def distributed_run(world: int, repeats: int, method: str = "parareal"
                    ) -> tuple[float, pint.Solution]:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.pt")
        mp.start_processes(worker, args=(world, method, os.path.join(tmp, "store"), repeats,
                                         out),
                           nprocs=world, start_method="spawn")
        result = torch.load(out, weights_only=False)
    return statistics.median(result["times"]), result["solution"]


EXCHANGE_ROWS = (0, 1, 8, 32)


def exchange_worker(rank: int, world: int, store: str, out: str, repeats: int) -> None:
    """Milliseconds per row exchange (``Distributed.gather``) of ``rows`` state rows per rank,
    nothing computed: what every shared round pays on top of its evaluations."""
    from pint.transport.distributed import Distributed

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=120))
    transport = Distributed(timeout=60)
    transport.open()
    _, y0, _ = problem()
    costs = {}
    for rows in EXCHANGE_ROWS:
        part = y0.expand(rows, *y0.shape).contiguous()
        transport.gather(part)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            transport.gather(part)
        costs[rows] = (time.perf_counter() - start) / repeats * 1e3
    transport.close()
    if rank == 0:
        Path(out).write_text(json.dumps(costs))
    dist.destroy_process_group()


def exchange_cost(repeats: int = 200) -> dict[int, float]:
    """:func:`exchange_worker` on 2 processes: rows per rank -> milliseconds per exchange."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        mp.start_processes(exchange_worker, args=(2, os.path.join(tmp, "store"), out, repeats),
                           nprocs=2, start_method="spawn")
        return {int(rows): ms for rows, ms in json.loads(Path(out).read_text()).items()}


def kernel(seconds_out: str | None = None) -> float:
    """The vector field alone, 400 rows one at a time, on one thread: its wall time."""
    torch.set_num_threads(1)
    f, y0, _ = problem()
    y, t = y0.unsqueeze(0), torch.zeros(1, dtype=torch.float64)
    start = time.perf_counter()
    for _ in range(400):
        f(t, y)
    elapsed = time.perf_counter() - start
    if seconds_out is not None:
        Path(seconds_out).write_text(str(elapsed))
    return elapsed


def machine_scaling() -> float:
    """How much two single-threaded processes get done together, relative to one alone
    (2.0 on two free cores): the hardware's ceiling at the time of the run."""
    alone = statistics.median(kernel() for _ in range(3))
    context = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        outs = [os.path.join(tmp, f"{i}.txt") for i in range(2)]
        procs = [context.Process(target=kernel, args=(out,)) for out in outs]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        together = max(float(Path(out).read_text()) for out in outs)
    return 2 * alone / together


def ceiling(iterations: int, world: int) -> float:
    work = [min(n + 1, iterations + 1) for n in range(SLICES)]
    ranges = pint.distributed.slice_ranges(SLICES, world)
    return sum(work) / max(sum(work[lo:hi]) for lo, hi in ranges)


def median_time(run, repeats: int) -> tuple[float, object]:
    """``common.median_time`` after one warm-up call."""
    run()
    return common_median_time(run, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2],
                        help="group sizes of the row-sharing runs (quasi-Newton, MGRIT)")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    scaling = machine_scaling()
    exchange = exchange_cost()
    row_ms = statistics.median(kernel() for _ in range(3)) / 400 * 1e3  # one row, alone
    f, y0, t = problem()
    serial_s, serial = median_time(
        lambda: pint.serial(f, y0, t, method=pint.RK4(FINE_STEPS), vectorized=True), repeats)
    single_s, single = median_time(
        lambda: pint.parareal(f, y0, t, coarse=pint.RK4(1), fine=pint.RK4(FINE_STEPS), tol=TOL,
                              vectorized=True, pipelined=True), repeats)
    one_s, one = distributed_run(1, repeats)
    two_s, two = distributed_run(2, repeats)
    assert torch.equal(one.ys, two.ys) and one.iterations == two.iterations
    k = two.iterations
    rows = [
        dict(method="pint.serial RK4 (1 process)", processes=1, iterations=0,
             nfe=serial.stats.nfe, wall_s=serial_s, speedup=None, ceiling=None, max_error=0.0),
        dict(method="pint.parareal pipelined (1 process)", processes=1,
             iterations=single.iterations, nfe=single.stats.nfe, wall_s=single_s, speedup=None,
             ceiling=None,
             max_error=float((single.ys - serial.ys).abs().max())),
        dict(method="pint.distributed.parareal", processes=1, iterations=one.iterations,
             nfe=one.stats.nfe, wall_s=one_s, speedup=1.0, ceiling=1.0,
             max_error=float((one.ys - serial.ys).abs().max())),
        dict(method="pint.distributed.parareal", processes=2, iterations=k, nfe=two.stats.nfe,
             wall_s=two_s, speedup=one_s / two_s, ceiling=ceiling(k, 2),
             max_error=float((two.ys - serial.ys).abs().max())),
    ]
    for method, name in ROWS_METHODS.items():
        alone_s, alone = median_time(lambda method=method: rows_solve(method, False), repeats)
        rows.append(dict(method=f"pint.{method} {name} (1 process)", processes=1,
                         iterations=alone.iterations, nfe=alone.stats.nfe, wall_s=alone_s,
                         speedup=None, ceiling=None,
                         max_error=float((alone.ys[::FINE_STEPS] - serial.ys).abs().max())))
        runs = {world: distributed_run(world, repeats, method) for world in args.processes}
        base_s = runs[min(runs)][0]
        for world, (wall, sol) in runs.items():
            assert torch.equal(sol.ys, alone.ys) and sol.iterations == alone.iterations
            assert sol.stats.sequential_nfe == alone.stats.sequential_nfe
            rows.append(dict(method=f"pint.distributed.{method} {name}", processes=world,
                             iterations=sol.iterations, nfe=sol.stats.nfe, wall_s=wall,
                             speedup=base_s / wall, ceiling=float(world),
                             max_error=float((sol.ys[::FINE_STEPS] - serial.ys).abs().max())))
    machine = {"machine": platform.machine(), "processor": cpu_model(),
               "cpu_cores": os.cpu_count(), "threads_per_process": 1, "torch": torch.__version__,
               "python": platform.python_version(), "backend": "gloo",
               "load_average_1min_before": load, "two_process_scaling_of_the_kernel": scaling,
               "exchange_ms_by_rows_per_rank": exchange, "one_row_ms": row_ms}
    setup = {"slices": SLICES, "coarse": "RK4(1)", "fine": f"RK4({FINE_STEPS})", "tol": TOL,
             "state": [128, 64], "mlp_hidden": 512, "repeats": repeats}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "distributed.json").write_text(
        json.dumps({"machine": machine, "setup": setup, "rows": rows}, indent=1) + "\n")
    lines = [
        f"# Distributed Parareal, quasi-Newton and MGRIT: 1 vs 2 processes ({SLICES} slices, "
        f"RK4({FINE_STEPS}) fine, RK4(1) coarse, tol {TOL:g})",
        "",
        f"Machine: {machine['processor']}, {machine['cpu_cores']} cores, one torch thread per "
        f"process, torch {machine['torch']}, Python {machine['python']}, gloo. Per-particle MLP "
        f"field (128 x 64 state, hidden 512), float64. Wall times are medians of {repeats} runs "
        "(after a warm-up); speedup and ceiling are against `pint.distributed.parareal` on 1 "
        "process. Ceiling: the balance of the fine work, "
        "`sum_n min(n+1, K+1) / max_rank sum_(n in rank) min(n+1, K+1)` (fine solves per rank).",
        "",
        f"Hardware ceiling at the time of the run: two independent single-threaded processes "
        f"evaluating the same field got {scaling:.2f}x the work of one done (2.00x on two free "
        f"cores); 1-minute load average before the run: {load:.2f}.",
        "",
        f"Parareal does about {single.stats.nfe / serial.stats.nfe:.1f} times the work of the "
        f"serial solve here (nfe {single.stats.nfe} against {serial.stats.nfe}) to shorten the "
        "critical path; on one core per process that extra work costs wall time, so this "
        "benchmark measures how the distributed solver scales with processes, not Parareal "
        "against serial (which needs more parallel hardware than two cores to pay off). What "
        "limits the speedup: the ranks' unequal fine work (slices of the converged prefix need "
        "no more fine solves; the ceiling above), the coarse sweep that crosses both ranks once, "
        "the pipeline's fill, and the speculative work of the rank ahead.",
        "",
        f"Quasi-Newton Picard (`pint.Secant`) and MGRIT (FCF, coarsening {FINE_STEPS}) on the "
        f"fine grid ({SLICES * FINE_STEPS} RK4 steps) share each round's rows out over the "
        "ranks; their results, iterations and depths equal the single process's bit for bit "
        "(checked). Each speedup is against its own run on "
        f"{min(args.processes)} process(es); the ceiling is the number of processes (the rows "
        "split evenly), lowered by the updates every rank repeats, the exchange of the rows "
        "and, for MGRIT, the coarsest level's serial solve (one row per round)"
        + (", and by the 2 cores the 4 processes share" if max(args.processes) > 2 else "")
        + ".",
        "",
        f"One row exchange between the 2 processes (`Distributed.gather`, every rank sending "
        f"its rows and receiving the other's, nothing computed; a row is one {tuple(y0.shape)} "
        f"float64 state, {y0.numel() * 8 // 1024} KiB): "
        + ", ".join(f"{ms:.2f} ms for {rows} row(s) per rank" for rows, ms in exchange.items())
        + f". Every shared round of Picard and MGRIT pays it on top of its evaluations (one "
        f"row costs {row_ms:.2f} ms to evaluate, alone on one thread).",
        "",
        "| method | processes | iterations | nfe | wall (s) | speedup | ceiling "
        "| max error vs serial |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        speedup = "" if row["speedup"] is None else f"{row['speedup']:.2f}x"
        ceil = "" if row["ceiling"] is None else f"{row['ceiling']:.2f}x"
        lines.append(f"| {row['method']} | {row['processes']} | {row['iterations']} | "
                     f"{row['nfe']} | {row['wall_s']:.3f} | {speedup} | {ceil} | "
                     f"{row['max_error']:.1e} |")
    (RESULTS / "distributed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
