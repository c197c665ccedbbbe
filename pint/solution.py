"""What a parallel-in-time solve returns: the states, how it converged, and what it cost."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

__all__ = ["Solution", "Stats"]


@dataclass(frozen=True)
class Stats:
    """The cost of a solve.

    Attributes:
        nfe: vector-field evaluations in total, one per state row (a slice's state, or one
            problem's state when solving independent problems).
        sequential_nfe: batched evaluation rounds on the critical path (the solve's *depth*):
            a batched call of many rows counts once. A serial solve with ``n`` Euler steps has
            depth ``n``.
        wall_time: seconds from the start to the end of the solve.
        predicted_sequential_nfe: the depth that the schedule's recurrence predicts for the
            iterations that ran (see :func:`pint.predicted_depth`); ``None`` where the
            algorithm has no such recurrence or a propagator's depth is not known in advance.
        evaluations: ``nfe`` split by the kind of work (the engine's task labels, e.g.
            ``{"coarse": ..., "fine": ...}`` for Parareal, ``{"step": ...}`` for Picard).
        calls: calls of the vector field (more than ``sequential_nfe`` when ``max_batch``
            splits a round into several calls).
    """

    nfe: int
    sequential_nfe: int
    wall_time: float
    predicted_sequential_nfe: int | None = None
    evaluations: dict[str, int] = field(default_factory=dict)
    calls: int = 0

    @property
    def coarse_nfe(self) -> int:
        """The evaluations of Parareal's coarse propagator."""
        return self.evaluations.get("coarse", 0)

    @property
    def fine_nfe(self) -> int:
        """The evaluations of Parareal's fine propagator (all of a serial solve's)."""
        return self.evaluations.get("fine", 0)


@dataclass(frozen=True)
class Solution:
    """The result of a solve (:func:`pint.parareal`, :func:`pint.picard`, :func:`pint.serial`).

    Attributes:
        ys: the states at the grid points ``t``, shape ``(N + 1, *y0.shape)``.
        iterations: iterations run (after Parareal's initial coarse sweep; the largest over the
            problems when solving independent problems).
        converged: whether every problem met the tolerance or was solved exactly.
        residuals: one per iteration: the largest residual among the problems still iterating.
        stats: evaluation counts and wall time, see :class:`Stats`.
        iterates: when ``store_iterates=True``: the states after every iteration (each like
            ``ys``; Parareal's first is its coarse sweep); otherwise ``None``.
        sample_iterations: with ``independent=True``: the iteration at which each problem
            stopped, shape ``(B,)``; otherwise ``None``.
        converged_by: ``"tolerance"`` (the stopping rule was met), ``"exactness"`` (enough
            iterations ran for the result to equal the serial solve whatever the residuals) or
            ``None`` (not converged).
    """

    ys: Tensor
    iterations: int
    converged: bool
    residuals: list[float]
    stats: Stats
    iterates: list[Tensor] | None = None
    sample_iterations: Tensor | None = None
    converged_by: str | None = None
