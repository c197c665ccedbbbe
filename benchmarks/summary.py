"""The headline: sequential evaluations at RMS error <= 1e-3, wall clock, overhead, targets.

Reads the committed results of ``diffusion.py``, ``sd.py``, ``overhead.py``,
``srds_limits.py`` and ``torchdyn_ode.py`` and writes ``benchmarks/results/README.md``:
the headline table, where each of issue 5's targets stands, and the analysis of what limits
the missed ones (``benchmarks/analysis.md``, hand-written, appended verbatim).

Run: ``python benchmarks/summary.py`` (after the others; ``make bench`` does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import RESULTS, load_results, machine_line, markdown_table

TARGET_RATIO = {25: 2.0, 100: 3.0, 1000: 8.0}
ANALYSIS = Path(__file__).resolve().parent / "analysis.md"


def _pick(head: list[dict[str, Any]], steps: int, method: str) -> dict[str, Any] | None:
    return next((h for h in head if h["steps"] == steps and h["method"] == method), None)


def depth_rows(digits: dict[str, Any]) -> list[dict[str, Any]]:
    head = digits["headline"]
    rows = []
    for steps in sorted({h["steps"] for h in head}):
        srds = _pick(head, steps, "SRDS (any blocks)")
        srds_default = _pick(head, steps, "SRDS (default blocks)")
        picards = [p for p in (_pick(head, steps, "Picard (full window)"),
                               _pick(head, steps, "Picard (window B)"))
                   if p and p["sequential_nfe"]]
        picard = min(picards, key=lambda p: p["sequential_nfe"]) if picards else None
        samples = next(r["samples"] for r in digits["rows"] if r["steps"] == steps)
        rows.append(dict(
            steps=steps, samples=samples,
            srds_default=srds_default["sequential_nfe"] if srds_default else None,
            srds=srds["sequential_nfe"] if srds else None,
            srds_config=srds["config"] if srds else "-",
            srds_ratio=srds["ratio"] if srds else None,
            target=TARGET_RATIO.get(steps),
            picard=picard["sequential_nfe"] if picard else None,
            picard_ratio=picard["ratio"] if picard else None,
            picard_config=picard["config"] if picard else "not run",
        ))
    return rows


def sd_rows(sd: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for steps in sorted({h["steps"] for h in sd["headline"]}):
        at = {h["method"]: h for h in sd["headline"] if h["steps"] == steps}
        srds = next(v for k, v in at.items() if k.startswith("SRDS"))
        paradigms = [v for k, v in at.items() if k.startswith("ParaDiGMS") and
                     v["sequential_nfe"]]
        best_p = min(paradigms, key=lambda v: v["sequential_nfe"]) if paradigms else None
        rows.append(dict(steps=steps, srds=srds["sequential_nfe"],
                         picard=at["Picard full window"]["sequential_nfe"],
                         paradigms=best_p["sequential_nfe"] if best_p else None,
                         paradigms_config=f"{best_p['method']}, {best_p['config']}"
                         if best_p else "not reached"))
    return rows


def status(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


def targets(depth: list[dict[str, Any]], sd: list[dict[str, Any]],
            overhead: dict[str, Any] | None) -> list[dict[str, Any]]:
    out = []
    for r in depth:
        ok = r["srds_ratio"] is not None and r["srds_ratio"] >= r["target"]
        out.append(dict(target=f"{r['target']:g}x fewer sequential evaluations than serial at "
                               f"N = {r['steps']}",
                        result=f"{r['srds_ratio']:.2f}x ({r['srds']} vs {r['steps']})"
                        if r["srds_ratio"] else "not reached", status=status(ok)))
    for r in depth:
        ok = None if r["picard"] is None or r["srds"] is None else r["srds"] < r["picard"]
        out.append(dict(target=f"fewer than Picard at equal error, digits N = {r['steps']}",
                        result=f"SRDS {r['srds']} vs Picard {r['picard']}",
                        status=status(ok)))
    for r in sd:
        rivals = [v for v in (r["picard"], r["paradigms"]) if v]
        ok = bool(rivals) and r["srds"] < min(rivals)
        out.append(dict(target=f"fewer than Picard/ParaDiGMS at equal error, tiny SD N = "
                               f"{r['steps']}",
                        result=f"SRDS {r['srds']} vs Picard {r['picard']}, ParaDiGMS "
                               f"{r['paradigms']}", status=status(ok)))
    if overhead:
        for r in overhead["rows"]:
            if r["steps"] == 1000:
                out.append(dict(target=f"1.5x CPU wall clock at N = 1000 ({r['samples']} "
                                       "sample(s))",
                                result=f"{r['wall_ratio']:.2f}x ({r['serial_wall_s']:.1f} s vs "
                                       f"{r['srds_wall_s']:.1f} s)",
                                status=status(r["wall_ratio"] >= 1.5)))
        for r in overhead["rows"]:
            out.append(dict(target=f"overhead < 10% (N = {r['steps']}, {r['samples']} "
                                   "sample(s))",
                            result=f"{r['srds_overhead_share']:.1%}",
                            status=status(r["srds_overhead_share"] < 0.10)))
    return out


def main() -> None:
    digits = load_results("diffusion_digits")
    sd = load_results("diffusion_sd")
    overhead = load_results("overhead")
    if digits is None:
        raise SystemExit("run benchmarks/diffusion.py first")
    depth = depth_rows(digits)
    sdr = sd_rows(sd) if sd else []
    parts = [
        "# Benchmark summary (issue 5)",
        "",
        "Generated by `benchmarks/summary.py` from the committed results (`make bench`). "
        + machine_line(digits["machine"]),
        "",
        "## Headline: sequential model evaluations at RMS error <= 1e-3 of serial",
        "",
        "Bundled digits model, DDIM with CFG 2.0, data scale [-1, 1], read off each method's "
        "tolerance sweep (`diffusion_digits.md`): the smallest `sequential_nfe` whose RMS "
        "error against serial DDIM is at most 1e-3. SRDS pipelined; Picard is the better of "
        "its full window and a window of B steps.",
        "",
        markdown_table(depth, [
            ("N", "steps", "d"), ("samples", "samples", "d"), ("serial", "steps", "d"),
            ("SRDS (default blocks)", "srds_default", ""), ("SRDS (best)", "srds", ""),
            ("SRDS fewer than serial", "srds_ratio", ".2f"), ("target", "target", "g"),
            ("SRDS configuration", "srds_config", "s"), ("Picard", "picard", ""),
            ("Picard fewer than serial", "picard_ratio", ".2f"),
            ("Picard configuration", "picard_config", "s")]),
        "",
    ]
    if sdr:
        parts += ["Tiny SD components (random weights, latent units; `diffusion_sd.md`):", "",
                  markdown_table(sdr, [("N", "steps", "d"), ("SRDS", "srds", ""),
                                       ("Picard (ours)", "picard", ""),
                                       ("ParaDiGMS (diffusers)", "paradigms", ""),
                                       ("ParaDiGMS configuration", "paradigms_config", "s")]),
                  ""]
    if overhead:
        parts += ["## CPU wall clock and overhead (`overhead.md`)", "",
                  markdown_table(overhead["rows"], [
                      ("N", "steps", "d"), ("samples", "samples", "d"),
                      ("serial (s)", "serial_wall_s", ".2f"), ("SRDS (s)", "srds_wall_s", ".2f"),
                      ("wall speedup", "wall_ratio", ".2f"), ("SRDS depth", "srds_depth", "d"),
                      ("SRDS nfe / serial", lambda r: r["srds_nfe"] / r["serial_nfe"], ".1f"),
                      ("overhead share", "srds_overhead_share", ".1%")]),
                  ""]
    long = [r for r in digits["rows"] if r["steps"] == max(TARGET_RATIO) and
            r["tol"] in (0.0, 1e-3) and (r["method"] != "srds" or r["pipelined"])]
    if long:
        parts += [f"Wall clock of each method at N = {max(TARGET_RATIO)} in the digits run "
                  f"({long[0]['samples']} samples per call, `diffusion_digits.md`; one run "
                  "each, so noisier than the interleaved medians above):", "",
                  markdown_table(long, [("method", "label", "s"), ("tol", "tol", "g"),
                                        ("depth", "sequential_nfe", "d"),
                                        ("nfe", "nfe", "d"), ("wall (s)", "wall_s", ".2f"),
                                        ("wall vs serial", "wall_ratio", ".2f")]), ""]
    parts += ["## Targets", "",
              markdown_table(targets(depth, sdr, overhead), [
                  ("target", "target", "s"), ("measured", "result", "s"),
                  ("status", "status", "s")]),
              "",
              "Frontier plots: `diffusion_digits_frontier.png`, `diffusion_sd_frontier.png`; "
              "generic ODEs: `parareal_ode.md`, `torchdyn_ode.md`.",
              "",
              "## Scripts",
              "",
              "`make bench` runs the quick mode of each (about 9 minutes on 2 CPU cores) and "
              "rewrites this directory; `--quick` off is the full mode (more samples, denser "
              "tolerance sweeps, more repeats; tens of minutes). All take `--threads` "
              "(default 2).",
              "",
              "| script | results | what |",
              "|---|---|---|",
              "| `diffusion.py` | `diffusion_digits.*` | serial / SRDS / Picard on the digits "
              "model, N = 25, 100, 1000, tolerance and block sweeps, digits metric |",
              "| `quasi_newton.py` | `quasi_newton.*` | quasi-Newton Picard vs SRDS vs Picard vs "
              "serial on the digits model, guidance 2 / 5 / 8, depth at RMS <= 1e-3, default "
              "runs |",
              "| `sd.py` | `diffusion_sd.*` | the same on tiny SD components, with diffusers' "
              "ParaDiGMS |",
              "| `overhead.py` | `overhead.*` | wall clock vs serial, time outside model calls, "
              "cost of a call against its batch |",
              "| `srds_limits.py` | `srds_limits.*` | block count and coarse solver, iterate by "
              "iterate; depth formula check |",
              "| `parareal_ode.py` | `parareal_ode.*` | pint Parareal vs serial torchdiffeq |",
              "| `torchdyn_ode.py` | `torchdyn_ode.*` | pint Parareal vs torchdyn's parareal, "
              "error per iteration |",
              "| `srds_default_tol.py` | `srds_default_tol.*` | SRDS pipeline vs serial "
              "pipeline at the default tolerance (tiny SD) |",
              "| `gpu.py` | `gpu_<device>.*` | on a CUDA GPU (`make bench-gpu`, not part of "
              "`make bench`): SD 1.5-size UNet and digits model, cost of a call against its "
              "rows, serial / SRDS / Picard / quasi-Newton wall clock, time outside model "
              "calls and host syncs, torch.compile, peak memory; `--smoke` checks it on the "
              "CPU; committed: one H100 (`gpu_nvidia-h100-80gb-hbm3*`) |",
              "| `summary.py` | `README.md` | this page (+ `analysis.md`) |",
              ""]
    if ANALYSIS.is_file():
        parts.append(ANALYSIS.read_text())
    (RESULTS / "README.md").write_text("\n".join(parts).rstrip() + "\n")
    print("\n".join(parts))


if __name__ == "__main__":
    main()
