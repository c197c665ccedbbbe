"""The demo's data model: a table row, a point of the latency-against-batch sweep, the result
with its JSON form."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["HEADER", "LATENCY", "REFERENCE", "THROUGHPUT", "DemoResult", "DemoRow", "Point"]

LATENCY = "latency"
THROUGHPUT = "throughput"
REFERENCE = "serial"
"""The sampler every other one is compared with (its rows' ``max_diff`` is 0)."""


@dataclass(frozen=True)
class DemoRow:
    """One line of a demo table: one sampler, one number of steps, one regime.

    ``nfe`` counts the call's denoiser evaluations (all samples), ``sequential_nfe`` its
    depth; ``wall_time`` is seconds per call (the median over repeats in the latency
    regime); ``max_diff`` the largest pixel difference from serial on the same samples;
    ``accuracy`` and ``frechet_distance`` (throughput regime only) the digits metric;
    ``chosen`` the window (SRDS: blocks) that ``"auto"`` chose (``"serial"`` where it ran the
    serial sampler, ``"-"`` for serial itself) and ``predicted_speedup`` its prediction.
    """

    regime: str
    method: str
    steps: int
    batch: int
    iterations: int
    nfe: int
    sequential_nfe: int
    wall_time: float
    max_diff: float
    accuracy: float | None = None
    frechet_distance: float | None = None
    chosen: str = "-"
    predicted_speedup: float | None = None

    @property
    def wall_per_sample(self) -> float:
        """Seconds per sample."""
        return self.wall_time / self.batch

    def cells(self, serial_wall_per_sample: float) -> list[str]:
        """The row as table cells, with its speed relative to serial's."""
        return [self.method, str(self.steps), self.chosen, str(self.iterations),
                str(self.sequential_nfe), f"{self.nfe / self.batch:.0f}",
                f"{self.wall_per_sample:.3f}",
                "-" if self.predicted_speedup is None else f"{self.predicted_speedup:.2f}x",
                f"{serial_wall_per_sample / self.wall_per_sample:.2f}x",
                "-" if self.method == REFERENCE else f"{self.max_diff:.1e}",
                "-" if self.accuracy is None else f"{self.accuracy:.3f}",
                "-" if self.frechet_distance is None else f"{self.frechet_distance:.2f}"]


HEADER = ["method", "steps", "window (auto)", "iterations", "depth", "nfe per sample",
          "wall per sample (s)", "predicted speed", "speed vs serial", "max |x - serial|",
          "accuracy", "FD"]


@dataclass(frozen=True)
class Point:
    """One point of ``latency_vs_batch.png``: seconds per sample at a batch size."""

    method: str
    steps: int
    batch: int
    wall_per_sample: float


@dataclass
class DemoResult:
    """What :func:`run_demo` measured: both tables' rows and the sweep's points."""

    rows: list[DemoRow]
    points: list[Point]
    machine: str
    latency_repeats: int
    figures: list[Path] = field(default_factory=list)

    def to_json(self) -> str:
        """The measurements (not the figures' paths) as JSON."""
        return json.dumps({"machine": self.machine, "latency_repeats": self.latency_repeats,
                           "rows": [asdict(r) for r in self.rows],
                           "points": [asdict(p) for p in self.points]}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> DemoResult:
        """Read back :meth:`to_json`'s output (e.g. to redraw the figure)."""
        data = json.loads(text)
        return cls([DemoRow(**r) for r in data["rows"]], [Point(**p) for p in data["points"]],
                   data["machine"], data["latency_repeats"])

