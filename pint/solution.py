"""What a parallel-in-time solve returns: the states, how it converged, and what it cost."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["Solution", "Stats"]


@dataclass(frozen=True)
class Stats:
    """The cost of a solve.

    Attributes:
        nfe: vector-field evaluations in total, one per state row (a slice's state,
            or one sample's state when solving independent problems).
        sequential_nfe: batched evaluation rounds on the critical path (the solve's
            *depth*): a batched call of many rows counts once. A serial solve with
            ``n`` Euler steps has depth ``n``.
        coarse_nfe: the share of ``nfe`` spent by the coarse propagator.
        fine_nfe: the share of ``nfe`` spent by the fine propagator.
        wall_time: seconds from the start to the end of the solve.
        predicted_sequential_nfe: the depth that the schedule's recurrence predicts for
            the iterations that ran (see :func:`pint.predicted_depth`); ``None`` when a
            propagator's depth is not known in advance (adaptive steps).
    """

    nfe: int
    sequential_nfe: int
    coarse_nfe: int
    fine_nfe: int
    wall_time: float
    predicted_sequential_nfe: int | None = None


@dataclass(frozen=True)
class Solution:
    """The result of :func:`pint.parareal`.

    Attributes:
        ys: the states at the slice boundaries ``t``, shape ``(N + 1, *y0.shape)``.
        iterations: Parareal iterations run after the initial coarse sweep (the
            largest over the samples when solving independent problems).
        converged: whether every problem met the tolerance (or was solved exactly by
            running ``N`` iterations).
        residuals: one per iteration: the largest residual among the problems still
            iterating (see ``norm`` in :func:`pint.parareal`).
        stats: evaluation counts and wall time, see :class:`Stats`.
        iterates: when ``store_iterates=True``: the boundary states after the initial
            coarse sweep, then after each iteration (each like ``ys``); otherwise ``None``.
        sample_iterations: with ``independent=True``: the iteration at which each
            problem stopped, shape ``(B,)``; otherwise ``None``.
    """

    ys: Tensor
    iterations: int
    converged: bool
    residuals: list[float]
    stats: Stats
    iterates: list[Tensor] | None = None
    sample_iterations: Tensor | None = None
