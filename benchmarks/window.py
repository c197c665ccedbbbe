"""``window="auto"`` against fixed windows and serial on a synthetic device.

The bundled digits model (one sample, DDIM with its guidance batched inside the denoiser) is
wrapped so that every call takes ``scale x cost(rows)`` seconds (it runs the real model, then
sleeps the rest; the real model stays below the synthetic cost up to about 200 rows at
``scale`` 4 on the shared 2-core machine, whose other jobs slow the real model several-fold),
for two cost curves:

- **knee**: one NVIDIA H100 running an SD 1.5 UNet in fp16 (46 / 47 / 58 / 100 / 192 ms at
  1 / 8 / 16 / 32 / 64 rows, ``benchmarks/results/gpu_nvidia-h100-80gb-hbm3.md``), taken as the
  cost of the denoiser's rows;
- **linear**: no parallel capacity, 46 ms per row from one row.

Every sampler runs on the same noise: serial DDIM, quasi-Newton (and Picard at
``--picard-steps``) with fixed windows on the knee curve, and both with the default
``window="auto"``, which measures the synthetic device's cost curve
with :func:`pint.measure_cost` (its first call; the probe's seconds are reported apart, the
curve is cached for the process) and chooses. Wall clock: the median of ``--repeats`` calls,
the samplers interleaved. The table says whether the automatic default is within 15% of the
best fixed window (knee) and within 10% of serial (linear).

    OMP_NUM_THREADS=1 python benchmarks/window.py [--quick] [--threads 1]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, arguments, digits, machine_info, machine_line, setup, write_results

import pint
from pint_diffusion import Picard, QuasiNewton, Serial

H100_SD15 = {1: 0.046, 8: 0.047, 16: 0.058, 32: 0.100, 64: 0.192}
"""Seconds per call of an SD 1.5 UNet (fp16, 512 px) on one H100 against rows per call."""
CURVES = {"knee": pint.CostCurve.of(H100_SD15),
          "linear": pint.CostCurve.of({1: 0.046, 2: 0.092})}
KNEE_WITHIN, SERIAL_WITHIN = 1.15, 1.10


class SyntheticDevice:
    """``denoiser`` whose every call takes ``scale * curve(rows)`` seconds (at least its real
    time)."""

    def __init__(self, denoiser: Any, curve: pint.CostCurve, scale: float) -> None:
        self.denoiser, self.curve, self.scale = denoiser, curve, scale

    def __call__(self, x: Tensor, sigma: Tensor, **extra: Any) -> Tensor:
        start = time.perf_counter()
        out = self.denoiser(x, sigma, **extra)
        time.sleep(max(0.0, self.scale * self.curve(len(x)) - (time.perf_counter() - start)))
        return out


def contenders(curve: str, n: int, picard: bool) -> list[tuple[str, Any, int | str | None]]:
    """``(sampler name, sampler, window)``: serial, then quasi-Newton (and Picard) with fixed
    windows (on the knee curve) and ``"auto"``."""
    rows: list[tuple[str, Any, int | str | None]] = [("serial", Serial(), None)]
    windows = [w for w in (4, 8, 16, 32) if w < n] + [n] if curve == "knee" else []
    kinds = [("quasi-Newton", QuasiNewton)] + ([("Picard", Picard)] if picard else [])
    for name, kind in kinds:
        rows += [(name, kind(window=w), w) for w in windows]
        rows.append((name, kind(), "auto"))
    return rows


def run(steps: list[int], picard_steps: list[int], scale: float,
        repeats: int) -> list[dict[str, Any]]:
    work = digits(1, classes=1)
    rows: list[dict[str, Any]] = []
    for curve_name, curve in CURVES.items():
        device = SyntheticDevice(work.denoiser, curve, scale)
        for n in steps:
            sigmas = work.sigmas(n)
            x = work.x(sigmas)
            table = contenders(curve_name, n, n in picard_steps)
            reference = None
            walls: dict[int, list[float]] = {i: [] for i in range(len(table))}
            last: dict[int, Any] = {}
            probe = None
            for repeat in range(repeats + 1):  # the first round warms up (and probes)
                for i, (_, sampler, _) in enumerate(table):
                    start = time.perf_counter()
                    last[i] = sampler.sample(device, x, sigmas, work.extra_args, disable=True,
                                             return_info=True)
                    wall = time.perf_counter() - start
                    if repeat:
                        walls[i].append(wall)
                    elif probe is None and last[i][1].plan is not None:
                        probe = wall - last[i][1].wall_time
                print(f"{curve_name} N={n} round {repeat}", file=sys.stderr, flush=True)
            reference = last[0][0]
            serial_wall = statistics.median(walls[0])
            for i, (name, _, window) in enumerate(table):
                out, info = last[i]
                wall = statistics.median(walls[i])
                plan = info.plan
                rows.append({
                    "curve": curve_name, "steps": n, "sampler": name, "window": window,
                    "chosen": None if plan is None else ("serial" if plan.size is None
                                                         else plan.size),
                    "depth": info.sequential_nfe, "wall": wall, "walls": walls[i],
                    "speedup": serial_wall / wall,
                    "predicted_speedup": None if plan is None else plan.predicted_speedup,
                    "max_diff": float((out - reference).abs().max()),
                    "probe_seconds": probe if window == "auto" else None,
                    "curve_rows": None if plan is None else list(plan.curve.rows),
                    "curve_seconds": None if plan is None else list(plan.curve.seconds),
                })
    return rows


def verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per curve, steps and sampler: the automatic default against its yardstick."""
    out = []
    for auto in (r for r in rows if r["window"] == "auto"):
        same = [r for r in rows if (r["curve"], r["steps"]) == (auto["curve"], auto["steps"])]
        serial = next(r for r in same if r["sampler"] == "serial")
        if auto["curve"] == "knee":
            fixed = [r for r in same if r["sampler"] == auto["sampler"]
                     and isinstance(r["window"], int)]
            best = min(fixed, key=lambda r: r["wall"])
            yardstick, ratio, bound = f"best fixed window ({best['window']})", (
                auto["wall"] / best["wall"]), KNEE_WITHIN
        else:
            yardstick, ratio, bound = "serial", auto["wall"] / serial["wall"], SERIAL_WITHIN
        out.append({"curve": auto["curve"], "steps": auto["steps"], "sampler": auto["sampler"],
                    "chosen": auto["chosen"], "predicted_speedup": auto["predicted_speedup"],
                    "measured_speedup": auto["speedup"], "yardstick": yardstick,
                    "ratio": ratio, "bound": bound, "ok": ratio <= bound})
    return out


def markdown(rows: list[dict[str, Any]], checks: list[dict[str, Any]], info: dict[str, Any],
             scale: float, repeats: int, command: str) -> str:
    lines = [
        "# window=\"auto\" on a synthetic device", "",
        f"`{command}`. {machine_line(info)}",
        f"The bundled digits model (one sample, DDIM, tol 1e-3) wrapped so that a call of r rows "
        f"takes {scale:g} x cost(r) seconds: the knee curve is one H100's SD 1.5 UNet in fp16 "
        f"(46 / 47 / 58 / 100 / 192 ms at 1 / 8 / 16 / 32 / 64 rows), the linear one 46 ms per "
        f"row; times scaled by {scale:g} so that the real CPU model (slowed by the machine's "
        f"other jobs) stays below the synthetic cost. Wall clock: median of {repeats} calls "
        f"after one warm-up round (the automatic "
        f"default's first call also measures the curve: 'probe s', once per process).", "",
        "## The automatic default against its yardstick", "",
        "| curve | N | sampler | chosen window | predicted speedup | measured speedup | "
        "yardstick | auto / yardstick | bound | ok |",
        "|---|---:|---|---:|---:|---:|---|---:|---:|---|"]
    for c in checks:
        lines.append(f"| {c['curve']} | {c['steps']} | {c['sampler']} | {c['chosen']} | "
                     f"{c['predicted_speedup']:.2f}x | {c['measured_speedup']:.2f}x | "
                     f"{c['yardstick']} | {c['ratio']:.3f} | {c['bound']:.2f} | "
                     f"{'yes' if c['ok'] else 'NO'} |")
    lines += ["", "## Every run", "",
              "| curve | N | sampler | window | depth | wall (s) | speed vs serial | "
              "max abs diff vs serial | probe s |", "|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        window = "-" if r["window"] is None else (
            f"auto -> {r['chosen']}" if r["window"] == "auto" else str(r["window"]))
        lines.append(f"| {r['curve']} | {r['steps']} | {r['sampler']} | {window} | {r['depth']} "
                     f"| {r['wall']:.2f} | {r['speedup']:.2f}x | {r['max_diff']:.1e} | "
                     + ("-" if r["probe_seconds"] is None else f"{r['probe_seconds']:.1f}")
                     + " |")
    lines += ["", "![latency against window](window_latency.png)", "",
              "![cost curve](window_cost_curve.png)"]
    return "\n".join(lines)


def figures(rows: list[dict[str, Any]], scale: float, out: Path) -> None:
    """The measured cost curves with the knee marked, and wall clock against window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for k, name in enumerate(CURVES):
        auto = next(r for r in rows if r["curve"] == name and r["curve_rows"])
        measured = pint.CostCurve(tuple(auto["curve_rows"]), tuple(auto["curve_seconds"]))
        ax.loglog(measured.rows, measured.seconds, "o-", color=f"C{k}",
                  label=f"{name}: measured by the probe")
        ax.loglog(list(CURVES[name].rows) if name == "knee" else [1, 64],
                  [scale * CURVES[name](r) for r in
                   (CURVES[name].rows if name == "knee" else (1, 64))],
                  ":", color=f"C{k}", label=f"{name}: synthetic x {scale:g}")
        if name == "knee":
            ax.axvline(measured.knee, color=f"C{k}", lw=0.8, ls="--")
            ax.annotate(f"knee: {measured.knee} rows", (measured.knee, measured.seconds[0]),
                        textcoords="offset points", xytext=(6, 20), fontsize=8)
    ax.set(xlabel="rows per call", ylabel="seconds per call",
           title="Cost curves (synthetic device over the digits model)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "window_cost_curve.png", dpi=110)
    plt.close(fig)

    knee = [r for r in rows if r["curve"] == "knee"]
    steps = sorted({r["steps"] for r in knee})
    fig, axes = plt.subplots(1, len(steps), figsize=(5 * len(steps), 4), squeeze=False)
    for ax, n in zip(axes[0], steps, strict=True):
        mine = [r for r in knee if r["steps"] == n]
        serial = next(r for r in mine if r["sampler"] == "serial")
        ax.axhline(serial["wall"], color="black", lw=1, label="serial")
        for k, name in enumerate(("quasi-Newton", "Picard")):
            fixed = sorted((r for r in mine if r["sampler"] == name
                            and isinstance(r["window"], int)), key=lambda r: r["window"])
            if not fixed:
                continue
            ax.semilogx([r["window"] for r in fixed], [r["wall"] for r in fixed], "o-",
                        color=f"C{k}", label=f"{name}, fixed window")
            auto = next(r for r in mine if r["sampler"] == name and r["window"] == "auto")
            if isinstance(auto["chosen"], int):
                ax.plot([auto["chosen"]], [auto["wall"]], "*", ms=14, color=f"C{k}",
                        label=f"{name}, window=\"auto\" ({auto['chosen']})")
        ax.set(xlabel="window (steps per iteration)", ylabel="wall clock (s)",
               title=f"{n} DDIM steps, one sample, knee curve")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "window_latency.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--picard-steps", type=int, nargs="*", default=[50],
                        help="the steps at which Picard runs too (its fixed windows are slow)")
    parser.add_argument("--scale", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    setup(args.threads)
    steps = [50] if args.quick else args.steps
    rows = run(steps, args.picard_steps, args.scale, args.repeats)
    checks = verdicts(rows)
    info = machine_info()
    command = "python benchmarks/window.py " + " ".join(sys.argv[1:])
    write_results("window", {"machine": info, "scale": args.scale, "repeats": args.repeats,
                             "rows": rows, "checks": checks},
                  markdown(rows, checks, info, args.scale, args.repeats, command.strip()))
    figures(rows, args.scale, RESULTS)
    print(markdown(rows, checks, info, args.scale, args.repeats, command.strip()))


if __name__ == "__main__":
    main()
