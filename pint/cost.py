"""The measured cost of a batched vector field: seconds per call against rows per call.

A parallel-in-time solver evaluates many rows in one call of ``f``; whether that pays depends on
the device. On an accelerator the time of a call is flat in its rows up to a knee (the device is
saturated) and linear beyond it; on a small CPU model it is flat to thousands of rows; on a big
CPU model it is linear from one row. :func:`measure_cost` times the real call; a
:class:`CostCurve` interpolates it, so a solver can predict the latency of a plan:
``depth x cost(rows per call)``.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["CostCurve", "measure_cost"]


@dataclass(frozen=True)
class CostCurve:
    """Seconds per call of a batched function against its rows per call.

    Args:
        rows: the measured row counts, strictly increasing, starting at 1.
        seconds: the time of one call at each, finite and >= 0.
        max_rows: the most rows a call can take (memory ran out beyond), or ``None``.
        bytes_per_row: the device memory one more row costs (measured on CUDA), or ``None``.

    Between measured rows the time is interpolated linearly, beyond the last one extrapolated
    linearly with the last segment's slope (the time per row at one point when only one row was
    measured). Build one from a mapping with :meth:`of`.

    Raises:
        ValueError: ``rows`` not strictly increasing positive integers starting at 1, or
            ``seconds`` not finite and non-negative, or of another length.
    """

    rows: tuple[int, ...]
    seconds: tuple[float, ...]
    max_rows: int | None = None
    bytes_per_row: float | None = None

    def __post_init__(self) -> None:
        rows, seconds = tuple(self.rows), tuple(self.seconds)
        if (not rows or any(isinstance(r, bool) or not isinstance(r, int) for r in rows)
                or rows[0] != 1 or any(b <= a for a, b in itertools.pairwise(rows))):
            raise ValueError(f"cost curve rows must be strictly increasing integers starting at "
                             f"1 row, got {rows!r}")
        if len(seconds) != len(rows) or not all(
                isinstance(s, int | float) and math.isfinite(s) and s >= 0 for s in seconds):
            raise ValueError(f"cost curve seconds must be one finite number >= 0 per row count, "
                             f"got {seconds!r}")
        if self.max_rows is not None and (isinstance(self.max_rows, bool) or not isinstance(
                self.max_rows, int) or self.max_rows < 1):
            raise ValueError(f"max_rows must be a positive integer or None, got {self.max_rows!r}")
        object.__setattr__(self, "rows", rows)
        object.__setattr__(self, "seconds", tuple(float(s) for s in seconds))

    @classmethod
    def of(cls, curve: CostCurve | Mapping[int, float]) -> CostCurve:
        """``curve`` itself, or a curve from ``{rows: seconds}`` (e.g. ``{1: 0.046, 8: 0.047}``).

        Raises:
            TypeError: neither a :class:`CostCurve` nor a mapping.
            ValueError: as the constructor (the mapping's keys must start at 1 row).
        """
        if isinstance(curve, CostCurve):
            return curve
        if not isinstance(curve, Mapping):
            raise TypeError(f"a cost curve must be a pint.CostCurve or a mapping "
                            f"{{rows: seconds}}, got {type(curve).__name__}")
        keys = list(curve)
        return cls(tuple(keys), tuple(curve[k] for k in keys))

    def __call__(self, rows: float) -> float:
        """The predicted seconds of one call of ``rows`` rows (``rows >= 1``; a call beyond
        ``max_rows`` is priced as the calls it is split into)."""
        rows = max(float(rows), 1.0)
        if self.max_rows is not None and rows > self.max_rows:
            full, rest = divmod(rows, self.max_rows)
            return full * self(self.max_rows) + (self(rest) if rest else 0.0)
        xs, ys = self.rows, self.seconds
        if len(xs) == 1:
            return ys[0] * rows
        i = next((i for i in range(1, len(xs)) if rows <= xs[i]), len(xs) - 1)
        slope = (ys[i] - ys[i - 1]) / (xs[i] - xs[i - 1])
        return max(ys[i - 1] + slope * (rows - xs[i - 1]), 0.0)

    @property
    def knee(self) -> int:
        """The most measured rows whose call costs at most 1.25 times one row's: up to here
        rows come almost free."""
        return max(r for r, s in zip(self.rows, self.seconds, strict=True)
                   if s <= 1.25 * self.seconds[0])

    def rows_in_memory(self, free_bytes: float, fraction: float = 0.8) -> int | None:
        """The most rows per call that fit in ``fraction`` of ``free_bytes`` (and ``max_rows``);
        ``None`` when nothing bounds them."""
        cap = self.max_rows
        if self.bytes_per_row:
            fit = max(1, int(fraction * free_bytes / self.bytes_per_row))
            cap = fit if cap is None else min(cap, fit)
        return cap


_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], CostCurve]] = (
    weakref.WeakKeyDictionary())


def measure_cost(f: Callable[..., Tensor], t: Tensor, y: Tensor, *, with_index: bool = False,
                 max_rows: int = 4096, ratio: float = 4.0, repeats: int = 3,
                 key: Any = None) -> CostCurve:
    """Time ``f``'s batched call at 1, 2, 4, ... rows.

    Rows are the states ``y`` (``(B, *state)``, cycled) at the time ``t`` (a scalar):
    ``f(t.expand(R), y[i % B])`` (with ``with_index``, ``f(t, y, index)`` with each row's
    problem as ``index``). The doubling stops once a call takes ``ratio`` times one row's time,
    at ``max_rows``, or when the device runs out of memory (``torch.OutOfMemoryError``; then
    ``max_rows`` of the curve is the last size that fit). Each size is called once to warm up
    and then timed ``repeats`` times (median; synchronised on CUDA). On CUDA the peak memory per
    row is kept as ``bytes_per_row``.

    The curve is cached for the process per ``key`` (the model: pass the object that identifies
    it; default ``f``), row shape, dtype and device.

    Raises:
        Exception: whatever ``f`` raises (other than running out of memory), with a note that it
            was raised during the cost probe, before any solving.
    """
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise ValueError(f"max_rows must be a positive integer, got {max_rows!r}")
    owner = f if key is None else key
    shape = (tuple(y.shape[1:]), y.dtype, y.device.type, y.device.index, with_index)
    try:
        cached = _CACHE.get(owner, {})
    except TypeError:  # not weak-referenceable: no cache
        cached = {}
    found = cached.get(shape)
    if found is not None and (found.max_rows is not None or found.rows[-1] >= max_rows
                              or found.seconds[-1] >= ratio * found.seconds[0]):
        return found  # complete: it stopped at the knee or by memory, or covers max_rows
    cuda = y.device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(y.device)

    def call(rows: int) -> float:
        index = torch.arange(rows, device=y.device) % len(y)
        args = (t.reshape(()).expand(rows), y[index]) + ((index,) if with_index else ())
        sync()
        start = time.perf_counter()
        f(*args)
        sync()
        return time.perf_counter() - start

    rows_list: list[int] = []
    seconds: list[float] = []
    peaks: list[float] = []
    limit = None
    rows = 1
    with torch.no_grad():
        while rows <= max_rows:
            try:
                if cuda:
                    torch.cuda.reset_peak_memory_stats(y.device)
                    base = torch.cuda.memory_allocated(y.device)
                call(rows)  # warm-up
                seconds.append(statistics.median(call(rows) for _ in range(repeats)))
                if cuda:
                    peaks.append(torch.cuda.max_memory_allocated(y.device) - base)
            except torch.OutOfMemoryError:
                if cuda:
                    torch.cuda.empty_cache()
                if not rows_list:
                    raise
                limit = rows_list[-1]
                break
            except Exception as error:
                error.add_note("raised by the model during the cost probe (pint.measure_cost, "
                               "which times the model's batched call before any sampling)")
                raise
            rows_list.append(rows)
            if seconds[-1] >= ratio * seconds[0] or rows == max_rows:
                break
            rows = min(2 * rows, max_rows)
    per_row = None
    if len(peaks) >= 2 and rows_list[-1] > rows_list[0]:
        per_row = max((peaks[-1] - peaks[0]) / (rows_list[-1] - rows_list[0]), 0.0) or None
    curve = CostCurve(tuple(rows_list), tuple(seconds), limit, per_row)
    try:
        _CACHE.setdefault(owner, {})[shape] = curve
    except TypeError:
        pass
    return curve
