"""``window="auto"``: the window (or SRDS's block count) that the device's cost curve favours.

A parallel sampler trades sequential model calls (its depth) for rows per call. Whether that
pays is the device's business: the time of one call is flat in its rows up to a knee and then
linear (one H100 and an SD 1.5 UNet in fp16: 46 / 47 / 58 / 100 / 192 ms at 1 / 8 / 16 / 32 /
64 rows). :class:`AutoWindow` measures that curve (:func:`pint.measure_cost`, once per model,
state shape, dtype and device in a process) or takes a known one, predicts every candidate's
latency as ``depth x (cost(rows per call) + overhead)`` and chooses the fastest (among those
within 5% of it, the one with the fewest sequential calls: timings are noisy); where nothing is
predicted to beat the serial sampler by ``margin``, it chooses the serial sampler.

Rows per call are the sampler's field rows: ``window x batch`` (SRDS: ``blocks x batch``); a
model that batches classifier-free guidance inside its call doubles its network's rows, which the
measured curve includes (a curve given by hand must be in field rows, i.e. priced at twice the
network rows with batched guidance). ``max_batch`` splits a call into several.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch

import pint

from .trajectory import Trajectory

__all__ = ["AutoWindow", "DepthModel", "Plan"]


@dataclass(frozen=True)
class DepthModel:
    """The depth (sequential model calls) of a sliding-window sampler against its window:
    ``depth(w) = max(full, lag + N / (advance * w))``, at most ``N + 1``.

    The front of the window advances by about ``advance * w`` steps per iteration, the tail
    needs ``lag`` more iterations, and no window needs fewer than the full window's ``full``.
    The priors (:attr:`QUASI_NEWTON`, :attr:`PICARD`) are fitted to the bundled digits model at
    N = 100, one sample, the default tolerance (quasi-Newton's depth 43 / 26 / 20 / 16 / 8 at
    windows 4 / 8 / 12 / 16 / full; Picard's 60 / 36 / 26 / 23 at 4 / 8 / 16 / full); the full
    window's depth barely grows with N (quasi-Newton 9 / 9 / 11 at N = 25 / 100 / 1000).
    """

    advance: float
    lag: float
    full: float
    QUASI_NEWTON: ClassVar[DepthModel]
    PICARD: ClassVar[DepthModel]

    def __call__(self, window: int, n: int) -> float:
        """The predicted depth of window ``window`` on ``n`` steps."""
        if window >= n:
            return min(self.full, n + 1.0)
        return min(max(self.full, self.lag + n / (self.advance * window)), n + 1.0)


DepthModel.QUASI_NEWTON = DepthModel(advance=0.735, lag=9.0, full=9.0)
DepthModel.PICARD = DepthModel(advance=0.52, lag=12.0, full=23.0)

SRDS_ITERATIONS = 4.0
"""SRDS's prior iterations after the coarse pass: ``blocks + 4 (N / blocks - 1)`` sequential
calls, least at ``2 sqrt(N)`` blocks when rows are free (measured on the digits model: 16 at
N = 25, 32 at N = 100)."""

Pieces = list[tuple[float, int]]
"""A plan's calls: ``(how many sequential calls, rows per call)`` pairs."""


@dataclass(frozen=True)
class Plan:
    """What :class:`AutoWindow` chose (``SamplerInfo.plan``).

    Attributes:
        size: the window (Picard, quasi-Newton) or the block count (SRDS); ``None``: the serial
            sampler ran because no size was predicted to beat it.
        predicted_latency: the chosen plan's predicted seconds in the model.
        serial_latency: the serial sampler's predicted seconds in the model (``N`` calls of
            ``batch`` rows, from the same curve).
        latencies: every candidate size's predicted seconds.
        curve: the cost curve the prediction used.
        max_batch: the rows-per-call cap that was applied (``None``: none).
    """

    size: int | None
    predicted_latency: float
    serial_latency: float
    latencies: dict[int, float]
    curve: pint.CostCurve
    max_batch: int | None = None

    @property
    def predicted_speedup(self) -> float:
        """Serial's predicted latency over the chosen plan's."""
        return self.serial_latency / self.predicted_latency if self.predicted_latency else 1.0


class AutoWindow:
    """Choose a sampler's window (or SRDS's blocks) from the model's cost curve.

    Args:
        curve: a known cost curve (:class:`pint.CostCurve` or ``{rows: seconds}`` in field
            rows); default: measured with :func:`pint.measure_cost` on the trajectory's first
            grid point, up to the full window's rows.
        margin: a plan must be predicted faster than serial by this fraction to be chosen
            (predictions err; the serial sampler never loses to itself).
        depth: the depth model of Picard-family samplers; default the sampler's prior
            (:attr:`DepthModel.QUASI_NEWTON` or :attr:`DepthModel.PICARD`).
        overhead: seconds outside the model per sequential call (the sampler's bookkeeping;
            about 1 ms on a 2-core Xeon), added to every call of every plan, serial's included.

    Raises:
        TypeError / ValueError: a ``curve`` that is not a valid cost curve (naming it), a
            ``margin`` outside ``[0, 1)``, an ``overhead`` that is not finite and >= 0.
    """

    def __init__(self, curve: pint.CostCurve | Mapping[int, float] | None = None, *,
                 margin: float = 0.1, depth: DepthModel | None = None,
                 overhead: float = 1e-3) -> None:
        self.curve = None if curve is None else pint.CostCurve.of(curve)
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not (
                0 <= margin < 1):
            raise ValueError(f"margin must be a number in [0, 1), got {margin!r}")
        if isinstance(overhead, bool) or not isinstance(overhead, int | float) or not (
                math.isfinite(overhead) and overhead >= 0):
            raise ValueError(f"overhead must be a finite number of seconds >= 0, got "
                             f"{overhead!r}")
        if depth is not None and not isinstance(depth, DepthModel):
            raise TypeError(f"depth must be a DepthModel or None, got {depth!r}")
        self.margin, self.depth, self.overhead = float(margin), depth, float(overhead)

    def __repr__(self) -> str:
        return "AutoWindow()" if self.curve is None else f"AutoWindow(curve={self.curve})"

    def cost_curve(self, trajectory: Trajectory, rows: int) -> pint.CostCurve:
        """The given curve, or the trajectory's field measured up to ``rows`` rows."""
        if self.curve is not None:
            return self.curve
        return pint.measure_cost(trajectory.field, trajectory.grid[0], trajectory.y0,
                                 with_index=True, max_rows=max(rows, 1), key=trajectory.model)

    def choose(self, candidates: dict[int, Pieces], serial: Pieces, curve: pint.CostCurve,
               max_batch: int | None) -> Plan:
        """The fastest candidate (among those within 5% of it, the fewest sequential calls), or
        ``size=None`` where none beats ``serial`` by ``margin``."""
        priced = curve if max_batch is None else dataclasses.replace(
            curve, max_rows=min(max_batch, curve.max_rows or max_batch))  # split calls

        def latency(pieces: Pieces) -> float:
            return sum(calls * (priced(rows) + self.overhead) for calls, rows in pieces)

        latencies = {size: latency(pieces) for size, pieces in candidates.items()}
        fastest = min(latencies.values())
        best = min((size for size, value in latencies.items() if value <= 1.05 * fastest),
                   key=lambda size: (sum(calls for calls, _ in candidates[size]), -size))
        serial_latency = latency(serial)
        if latencies[best] >= (1 - self.margin) * serial_latency:
            return Plan(None, serial_latency, serial_latency, latencies, curve, max_batch)
        return Plan(best, latencies[best], serial_latency, latencies, curve, max_batch)

    def window(self, trajectory: Trajectory, depth: DepthModel,
               max_batch: int | None) -> Plan:
        """The window of a Picard-family sampler (``depth``: its prior, unless given)."""
        n, batch = trajectory.steps, trajectory.batch
        depth = self.depth or depth
        curve = self.cost_curve(trajectory, n * batch)
        candidates = {w: [(depth(w, n), w * batch)] for w in range(1, n + 1)}
        return self.choose(candidates, serial_pieces(trajectory), curve, max_batch)

    def blocks(self, trajectory: Trajectory, max_batch: int | None) -> Plan:
        """SRDS's block count: ``blocks`` coarse calls of ``batch`` rows and
        ``4 (N / blocks - 1)`` fine calls of ``blocks x batch`` rows."""
        n, batch = trajectory.steps, trajectory.batch
        curve = self.cost_curve(trajectory, n * batch)
        candidates = {b: [(float(b), batch), (SRDS_ITERATIONS * (n / b - 1), b * batch)]
                      for b in range(2, n + 1)}
        return self.choose(candidates, serial_pieces(trajectory), curve, max_batch)


def serial_pieces(trajectory: Trajectory) -> Pieces:
    """The serial sampler: one call of ``batch`` rows per evaluation round of every step."""
    return [(float(sum(trajectory.step_depths)), trajectory.batch)]


def auto_max_batch(trajectory: Trajectory, curve: pint.CostCurve | None) -> int | None:
    """``max_batch="auto"``: on CUDA, the rows that fit in 80% of the free memory (measured per
    row by the probe); elsewhere only the rows the probe saw fit before running out of memory."""
    device = trajectory.y0.device
    if device.type == "cuda":
        if curve is None:
            curve = pint.measure_cost(trajectory.field, trajectory.grid[0], trajectory.y0,
                                      with_index=True, max_rows=trajectory.steps * trajectory.batch,
                                      key=trajectory.model)
        return curve.rows_in_memory(torch.cuda.mem_get_info(device)[0])
    return None if curve is None else curve.max_rows


def check_window(window: object, name: str = "window") -> int | AutoWindow | None:
    """A positive integer, ``None`` (the full window), ``"auto"`` or an :class:`AutoWindow`."""
    if isinstance(window, str) and window == "auto":
        return AutoWindow()
    if window is None or isinstance(window, AutoWindow):
        return window
    if isinstance(window, bool) or not hasattr(window, "__index__") or int(window) < 1:  # type: ignore[call-overload]
        raise ValueError(f"{name} must be a positive integer, None, \"auto\" or an AutoWindow, "
                         f"got {window!r}")
    return int(window)  # type: ignore[call-overload]


def over_group(choice: int | AutoWindow | None, group: object) -> int | AutoWindow | None:
    """A sampler's window or block count over a process ``group``: an :class:`AutoWindow`
    without a given curve becomes ``None`` (the full window; SRDS: ``round(2 sqrt(N))``
    blocks), since each rank would time its own probe and every rank must agree on the window.
    A curve given by hand is the same on every rank and is kept."""
    if group is not None and isinstance(choice, AutoWindow) and choice.curve is None:
        return None
    return choice


def speedup(plan: Plan | None, wall_time: float) -> float | None:
    """The measured speedup: serial's latency predicted from the measured curve over the run's
    wall time."""
    if plan is None or not wall_time or not math.isfinite(wall_time):
        return None
    return plan.serial_latency / wall_time
