"""Serial vs SRDS vs Picard (ParaDiGMS-style) on the bundled digits model, side by side.

For N in {25, 100, 1000} DDIM steps (classifier-free guidance 2.0, a class-balanced batch,
fixed noise): ``sample_serial``; ``sample_srds`` pipelined and plain at the default blocks
and a block sweep (sqrt N, 2 sqrt N, 3 sqrt N); ``sample_picard`` with the full window and
with a window of B steps (the parallel batch SRDS's pipelined schedule keeps busy: one step
per block); each over a tolerance sweep. Reported per run: iterations, nfe, sequential nfe
(depth), wall clock, max and RMS error against serial in the data scale [-1, 1], and the
digits metric (accuracy, Frechet distance, real-vs-real reference) for serial and for SRDS
at its defaults. The sweep draws each method's error-versus-depth frontier.

Quick mode (``--quick``, part of ``make bench``): 2 samples per class at N = 25 and 100,
1 per class at N = 1000 with a shorter sweep and Picard's window-B variant only.

Run: ``python benchmarks/diffusion.py [--quick] [--threads 2]``; writes
``benchmarks/results/diffusion_digits.{json,md}`` and ``diffusion_digits_frontier.png``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from common import (
    RESULTS,
    TARGET_RMS,
    TimedDenoiser,
    arguments,
    default_blocks,
    digits,
    errors,
    frontier_plot,
    load_results,
    machine_info,
    machine_line,
    markdown_table,
    median_time,
    setup,
    smallest_depth,
    write_results,
)

from pint_diffusion import sample_picard, sample_serial, sample_srds

NAME = "diffusion_digits"


@dataclass(frozen=True)
class Run:
    """One sampler configuration."""

    method: str  # "serial", "srds", "picard"
    tol: float = 0.0
    blocks: int | None = None  # SRDS
    pipelined: bool = True  # SRDS
    window: int | None = None  # Picard; None = all N steps
    metric: bool = False

    def label(self, steps: int) -> str:
        if self.method == "serial":
            return "serial DDIM"
        if self.method == "srds":
            kind = "pipelined" if self.pipelined else "plain"
            return f"SRDS {kind}, B={self.blocks}"
        return f"Picard, window={self.window or steps}"


def family(row: dict[str, Any]) -> str:
    """The frontier a result row belongs to, named the same way at every N."""
    steps = row["steps"]
    if row["method"] == "srds":
        names = {default_blocks(steps): "2√N (default)", round(math.sqrt(steps)): "√N",
                 round(3 * math.sqrt(steps)): "3√N"}
        name = f"SRDS B={names.get(row['blocks'], row['blocks'])}"
        return name if row["pipelined"] else name.replace("SRDS", "SRDS plain")
    if row["method"] == "picard":
        return "Picard full window" if row["window"] == steps else "Picard window=B"
    return "serial"


@dataclass
class Plan:
    """What to run at one N."""

    steps: int
    per_class: int
    tols: list[float]
    runs: list[Run] = field(default_factory=list)


def plan(steps: int, quick: bool) -> Plan:
    b = default_blocks(steps)
    sweep_blocks = sorted({max(1, round(k * math.sqrt(steps))) for k in (1, 2, 3)})
    large = steps >= 1000
    if quick:
        tols = [3e-2, 1e-2, 1e-3] if large else [1e-1, 1e-2, 1e-3, 1e-4]
        per_class = 1 if large else 2
    else:
        tols = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4] + ([] if large else [0.0])
        per_class = 2 if large else 5
    runs = [Run("serial", metric=True)]
    # the SRDS default (tol 1e-3, default blocks, pipelined) is scored with the metric
    runs += [Run("srds", tol, blocks=b, metric=tol == TARGET_RMS) for tol in tols]
    if not (quick and large):
        runs += [Run("srds", TARGET_RMS, blocks=b, pipelined=False)]
    for blocks in sweep_blocks:
        if blocks != b and not (quick and large and blocks > b):
            block_tols = [TARGET_RMS] if (quick and large) else tols
            runs += [Run("srds", tol, blocks=blocks) for tol in block_tols]
    runs += [Run("picard", tol, window=b) for tol in tols]
    if not (quick and large):  # the full window at N = 1000 costs ~1000 rows per call
        runs += [Run("picard", tol) for tol in (tols if not large else [3e-2, 1e-2, 1e-3])]
    return Plan(steps, per_class, tols, runs)


def run_one(run: Run, model: Any, x: torch.Tensor, sigmas: torch.Tensor,
            extra: dict[str, Any]) -> tuple[torch.Tensor, Any]:
    common = dict(extra_args=extra, disable=True, return_info=True)
    if run.method == "serial":
        return sample_serial(model, x, sigmas, **common)
    if run.method == "srds":
        return sample_srds(model, x, sigmas, blocks=run.blocks, tol=run.tol,
                           pipelined=run.pipelined, **common)
    return sample_picard(model, x, sigmas, window=run.window, tol=run.tol, **common)


def bench_steps(p: Plan, repeats: int, metric: Any) -> list[dict[str, Any]]:
    setup_ = digits(p.per_class)
    sigmas = setup_.sigmas(p.steps)
    x = setup_.x(sigmas)
    reference = None
    rows = []
    for run in p.runs:
        wall, (out, info) = median_time(
            lambda run=run: run_one(run, setup_.denoiser, x, sigmas, setup_.extra_args), repeats)
        data = setup_.data(out, sigmas)
        if reference is None:  # serial comes first
            reference = data
        row: dict[str, Any] = dict(
            steps=p.steps, samples=len(x), method=run.method, label=run.label(p.steps),
            tol=run.tol, pipelined=run.pipelined,
            blocks=len(info.blocks) - 1 if run.method == "srds" else None,
            window=(run.window or p.steps) if run.method == "picard" else None,
            iterations=info.iterations, nfe=info.nfe, sequential_nfe=info.sequential_nfe,
            predicted_sequential_nfe=info.predicted_sequential_nfe,
            depth_ratio=p.steps / info.sequential_nfe, wall_s=wall,
            **errors(data, reference),
        )
        row["family"] = family(row)
        if run.metric:
            score = metric.score(data, setup_.labels)
            row.update(accuracy=score.accuracy, frechet_distance=score.frechet_distance,
                       reference_frechet_distance=score.reference_frechet_distance)
        rows.append(row)
        print(f"N={p.steps:5d} {row['label']:28s} tol={run.tol:<7g} it={row['iterations']:3d} "
              f"depth={row['sequential_nfe']:5d} nfe={row['nfe']:7d} wall={wall:7.2f}s "
              f"rms={row['rms_error']:.1e}", flush=True)
    serial_wall = rows[0]["wall_s"]
    for row in rows:
        row["wall_ratio"] = serial_wall / row["wall_s"]
    return rows


def srds_trace(p: Plan, iterations: int) -> list[dict[str, Any]]:
    """SRDS at the default blocks with ``tol=0``: the error of every iterate against serial,
    and the depth at which it exists (denoiser calls made when the iteration's callback
    fires). This is the frontier of an ideal stopping rule; a tolerance on the change between
    iterates needs one more iteration to see that iterate ``k`` was already good enough."""
    setup_ = digits(p.per_class)
    sigmas = setup_.sigmas(p.steps)
    x = setup_.x(sigmas)
    timed = TimedDenoiser(setup_.denoiser)
    reference = setup_.data(sample_serial(timed, x, sigmas, extra_args=setup_.extra_args,
                                          disable=True), sigmas)
    timed.reset()
    trace: list[dict[str, Any]] = []

    def record(state: dict[str, Any]) -> None:
        finite = state["residual"][~torch.isnan(state["residual"])]
        trace.append(dict(steps=p.steps, blocks=default_blocks(p.steps), iteration=state["i"],
                          sequential_nfe=timed.calls, residual=float(finite.max()) if len(
                              finite) else None,
                          **errors(setup_.data(state["x"], sigmas), reference)))

    sample_srds(timed, x, sigmas, extra_args=setup_.extra_args, disable=True, tol=0.0,
                max_iters=iterations, callback=record)
    return trace


def headline(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per N and method: the fewest sequential evaluations at RMS error <= 1e-3."""
    out = []
    for steps in sorted({r["steps"] for r in rows}):
        at = [r for r in rows if r["steps"] == steps]
        groups = {"serial": [r for r in at if r["method"] == "serial"],
                  "SRDS (default blocks)": [r for r in at
                                            if family(r) == "SRDS B=2√N (default)"],
                  "SRDS (any blocks)": [r for r in at if r["method"] == "srds"],
                  "Picard (full window)": [r for r in at if family(r) == "Picard full window"],
                  "Picard (window B)": [r for r in at if family(r) == "Picard window=B"]}
        for name, group in groups.items():
            best = smallest_depth(group)
            out.append(dict(steps=steps, method=name, runs=len(group),
                            sequential_nfe=best["sequential_nfe"] if best else None,
                            ratio=steps / best["sequential_nfe"] if best else None,
                            config=best["label"] + f", tol {best['tol']:g}" if best else
                            ("not run" if not group else "no run reached RMS <= 1e-3"),
                            rms_error=best["rms_error"] if best else None))
    return out


def to_markdown(rows: list[dict[str, Any]], head: list[dict[str, Any]],
                trace: list[dict[str, Any]], info: dict[str, Any], repeats: int,
                quick: bool) -> str:
    parts = [
        "# Serial vs SRDS vs Picard on the bundled digits model",
        "",
        machine_line(info),
        f"Mode: {'quick' if quick else 'full'}; wall clock is the median of {repeats} run(s) "
        "(noisy: compare ratios from `overhead.md`, which interleaves repeats). DDIM (eta 0), "
        "classifier-free guidance 2.0, a class-balanced batch with fixed noise; errors are "
        "against serial DDIM in the data scale [-1, 1], over all pixels of the batch. "
        "SRDS's `tol` is the RMS change of a sample's final state between iterations; Picard's "
        "is the RMS change of a trajectory point (VP scale), worst sample. `depth` is "
        "`sequential_nfe`, batched denoiser calls on the critical path (CFG's two rows count "
        "once).",
        "",
        "## Fewest sequential evaluations at RMS error <= 1e-3",
        "",
        markdown_table(head, [
            ("N", "steps", "d"), ("method", "method", "s"), ("depth", "sequential_nfe", "d"),
            ("fewer than serial", "ratio", ".2f"), ("RMS error", "rms_error", ".1e"),
            ("configuration", "config", "s")]),
        "",
        "## Sample quality (digits metric)",
        "",
        markdown_table([r for r in rows if "accuracy" in r], [
            ("N", "steps", "d"), ("method", "label", "s"), ("tol", "tol", "g"),
            ("samples", "samples", "d"), ("accuracy", "accuracy", ".3f"),
            ("FD", "frechet_distance", ".2f"), ("real-vs-real FD", "reference_frechet_distance",
                                                ".2f"), ("RMS error", "rms_error", ".1e")]),
        "",
        "FD from so few samples is dominated by small-sample bias; compare it with the "
        "real-vs-real reference at the same count, and between serial and SRDS.",
        "",
        "## SRDS iterate by iterate (default blocks, tol 0)",
        "",
        "The error of each SRDS iterate and the depth at which it exists: what an ideal "
        "stopping rule would pay. Iteration 0 is the coarse pass; `residual` is the RMS change "
        "from the previous iterate (what `tol` is compared with), worst sample.",
        "",
        markdown_table(trace, [
            ("N", "steps", "d"), ("B", "blocks", "d"), ("iteration", "iteration", "d"),
            ("depth", "sequential_nfe", "d"), ("residual", "residual", ".1e"),
            ("max error", "max_error", ".1e"), ("RMS error", "rms_error", ".1e")]),
        "",
        "## All runs",
        "",
        markdown_table(rows, [
            ("N", "steps", "d"), ("method", "label", "s"), ("tol", "tol", "g"),
            ("iterations", "iterations", "d"), ("nfe", "nfe", "d"),
            ("depth", "sequential_nfe", "d"), ("predicted depth", "predicted_sequential_nfe", ""),
            ("fewer than serial", "depth_ratio", ".2f"), ("wall (s)", "wall_s", ".2f"),
            ("wall vs serial", "wall_ratio", ".2f"), ("max error", "max_error", ".1e"),
            ("RMS error", "rms_error", ".1e")]),
        "",
        f"![frontier]({NAME}_frontier.png)",
    ]
    return "\n".join(parts)


def plot(rows: list[dict[str, Any]], trace: list[dict[str, Any]]) -> None:
    panels: dict[str, dict[str, list[tuple[float, float]]]] = {}
    depth: dict[str, float] = {}
    for r in rows:
        panel = f"N = {r['steps']}"
        depth[panel] = r["steps"]
        if r["method"] != "serial":
            panels.setdefault(panel, {}).setdefault(family(r), []).append(
                (r["sequential_nfe"], r["rms_error"]))
    for r in trace:
        if r["iteration"] > 0:
            panels[f"N = {r['steps']}"].setdefault(
                "SRDS B=2√N ideal stop", []).append((r["sequential_nfe"],
                                                                r["rms_error"]))
    frontier_plot(RESULTS / f"{NAME}_frontier.png", panels, depth,
                  "digits model: RMS error vs serial DDIM against depth (tolerance sweep)")


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--steps", type=int, nargs="*", default=[25, 100, 1000])
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--from-json", action="store_true",
                        help="only re-render the tables and the plot from the saved JSON")
    args = parser.parse_args()
    if args.from_json:
        saved = load_results(NAME)
        rows, trace = saved["rows"], saved["srds_trace"]
        render(rows, trace, saved["machine"], saved["repeats"], saved["quick"])
        return
    setup(args.threads)
    repeats = args.repeats or (1 if args.quick else 3)
    from pint_diffusion.metrics import DigitsMetric

    metric = DigitsMetric()
    info = machine_info()
    start = time.perf_counter()
    rows = []
    for steps in args.steps:
        rows += bench_steps(plan(steps, args.quick), repeats, metric)
    trace = []
    for steps in args.steps:
        trace += srds_trace(plan(steps, args.quick), iterations=4 if args.quick else 6)
    info["seconds"] = time.perf_counter() - start
    render(rows, trace, info, repeats, args.quick)
    print(f"done in {info['seconds']:.0f} s")


def render(rows: list[dict[str, Any]], trace: list[dict[str, Any]], info: dict[str, Any],
           repeats: int, quick: bool) -> None:
    """Write the JSON, the markdown and the plot."""
    for row in rows:
        row["family"] = family(row)
    head = headline(rows)
    write_results(NAME, dict(machine=info, quick=quick, repeats=repeats, rows=rows,
                             headline=head, srds_trace=trace),
                  to_markdown(rows, head, trace, info, repeats, quick))
    plot(rows, trace)
    print(markdown_table(head, [("N", "steps", "d"), ("method", "method", "s"),
                                ("depth", "sequential_nfe", ""), ("config", "config", "s")]))


if __name__ == "__main__":
    main()
