"""Reporting: the tables as markdown and the summary of where each regime wins."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .results import HEADER, LATENCY, REFERENCE, THROUGHPUT, DemoResult, DemoRow, Point

__all__ = ["crossovers", "format_table", "format_tables", "summary"]


def _rows(rows: Iterable[DemoRow], regime: str) -> list[DemoRow]:
    return [r for r in rows if r.regime == regime]


def _serial_wall(rows: Sequence[DemoRow], row: DemoRow) -> float:
    return next(r.wall_per_sample for r in rows
                if r.method == REFERENCE and r.regime == row.regime and r.steps == row.steps)


def format_table(rows: Sequence[DemoRow]) -> str:
    """Rows (one regime) as a markdown table."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r.cells(_serial_wall(rows, r))) + " |" for r in rows]
    return "\n".join(lines)


def format_tables(result: DemoResult) -> str:
    """Both tables, each under a heading saying what it measures."""
    latency, throughput = _rows(result.rows, LATENCY), _rows(result.rows, THROUGHPUT)
    parts = []
    if latency:
        parts += [f"Latency: one sample per call, wall clock the median of "
                  f"{result.latency_repeats} calls ({result.machine})", "",
                  format_table(latency)]
    if throughput:
        parts += ["", f"Throughput: {throughput[0].batch} samples per call (every class), "
                      "wall clock per sample; quality of the batch", "",
                  format_table(throughput)]
    return "\n".join(parts)


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _winners(rows: Sequence[DemoRow]) -> str:
    """'SRDS wins at 100 and 1000 steps (1.8x and 2.1x serial's speed), serial at 25 steps'.
    A default that ran the serial sampler (``chosen == "serial"``) is serial's run again, not
    a contender: only serial itself and the samplers that ran in parallel compete."""
    by_method: dict[str, list[DemoRow]] = {}
    for n in dict.fromkeys(r.steps for r in rows):
        best = min((r for r in rows if r.steps == n and r.chosen != "serial"),
                   key=lambda r: r.wall_per_sample)
        by_method.setdefault(best.method, []).append(best)
    parts = []
    for i, (method, best) in enumerate(by_method.items()):
        text = f"{method} {'wins ' if i == 0 else ''}at {_join([str(r.steps) for r in best])} steps"
        if method != REFERENCE:
            speeds = [f"{_serial_wall(rows, r) / r.wall_per_sample:.1f}x" for r in best]
            text += f" ({_join(speeds)} serial's speed)"
        parts.append(text)
    return ", ".join(parts)


def crossovers(points: Sequence[Point]) -> dict[tuple[str, int], int]:
    """Per (parallel sampler, steps): the largest measured batch size up to which it takes
    less wall clock per sample than serial at every measured size; 0 when not even for one
    sample."""
    serial = {(p.steps, p.batch): p.wall_per_sample for p in points if p.method == REFERENCE}
    result: dict[tuple[str, int], int] = {}
    for key in dict.fromkeys((p.method, p.steps) for p in points if p.method != REFERENCE):
        limit = 0
        for p in sorted((p for p in points if (p.method, p.steps) == key), key=lambda p: p.batch):
            if p.wall_per_sample >= serial[p.steps, p.batch]:
                break
            limit = p.batch
        result[key] = limit
    return result


def summary(result: DemoResult) -> str:
    """Where each regime wins on this machine, from the measured numbers: one sentence, and
    one on the crossover of ``latency_vs_batch.png`` when there is a sweep."""
    latency, throughput = _rows(result.rows, LATENCY), _rows(result.rows, THROUGHPUT)
    clauses = []
    if latency:
        clauses.append(f"for latency (one sample per call) {_winners(latency)}")
    if throughput:
        clauses.append(f"for throughput ({throughput[0].batch} samples per call) "
                       f"{_winners(throughput)}")
    text = f"On this machine ({result.machine}), " + "; ".join(clauses) + "."
    limits = crossovers(result.points)
    if limits:
        by_steps: dict[int, list[str]] = {}
        for (method, steps), batch in limits.items():
            by_steps.setdefault(steps, []).append(
                f"{method} never" if batch == 0 else
                f"{method} only for one sample" if batch == 1 else
                f"{method} up to {batch} samples per call")
        text += (" Per sample, the parallel samplers beat serial (latency_vs_batch.png): "
                 + "; ".join(f"at {n} steps {_join(v)}" for n, v in by_steps.items()) + ".")
    return text

