"""Propagators: the solvers that parallel-in-time algorithms combine.

A propagator advances states across time slices. pint interleaves the vector-field
evaluations of many propagations (several slices, several iterations) into one batched call
per round (:mod:`pint.engine`), so a propagator is written as a *coroutine*: it yields each
evaluation it needs as a :class:`pint.engine.Request` and receives the result::

    def propagate(self, t0, t1, y0):
        k = yield Request(t0, y0)   # ask for f(t0, y0), one row per slice
        return y0 + (t1 - t0)[:, None] * k

``t0`` and ``t1`` have shape ``(S,)`` (one entry per row), ``y0`` has shape
``(S, *state_shape)``. ``Request(t, y, rows)`` asks for the subset ``rows`` (a 1-D index
tensor), e.g. when some rows need fewer steps than others. The engine owns the vector field,
counts evaluations and batches the requests of all live propagations together; the
propagator never sees ``f``.

Algorithms start propagations across their own grid ``t`` through :func:`propagation`, with
each row's start and end *indices* into ``t`` known on the host. A propagator that needs the
positions of its times on a grid of its own (``pint_diffusion``'s ``OnSchedule``) may define
``propagate_indexed(t, start, end, y0)``, which gets those indices instead of the times, so it
never reads times back from the device.

Any object with such a ``propagate`` method is a :class:`Propagator`. Propagators that know in
advance how many evaluation rounds a slice costs also define ``depth`` (an int, the same for
every slice) or ``slice_depths(t)`` (one int per slice of the grid ``t``), so that a solver can
report the depth its schedule predicts.

- :mod:`pint.propagators.runge_kutta`: explicit Runge-Kutta methods over Butcher tableaus.
- :mod:`pint.propagators.implicit`: diagonally implicit Runge-Kutta methods (backward Euler,
  SDIRK2) with a batched Newton solve, for stiff problems.
- :mod:`pint.propagators.jacobians`: their Newton matrices: finite differences, automatic
  differentiation, matrix-free Newton-Krylov, dense, sparse and banded matrices.
- :mod:`pint.propagators.torchdiffeq`: any ``torchdiffeq.odeint`` method.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from ..engine import Propagation, Request
from .implicit import (
    BACKWARD_EULER_TABLEAU,
    DIRK,
    SDIRK2,
    SDIRK2_TABLEAU,
    BackwardEuler,
    DIRKTableau,
    NewtonError,
)
from .jacobians import (
    Autodiff,
    Banded,
    FiniteDifferences,
    NewtonKrylov,
    SlowNewtonWarning,
)
from .runge_kutta import (
    EULER_TABLEAU,
    HEUN_TABLEAU,
    MIDPOINT_TABLEAU,
    RK4,
    RK4_TABLEAU,
    ButcherTableau,
    Euler,
    Heun,
    Midpoint,
    RungeKutta,
)
from .torchdiffeq import Torchdiffeq

__all__ = [
    "BACKWARD_EULER_TABLEAU",
    "DIRK",
    "EULER_TABLEAU",
    "HEUN_TABLEAU",
    "MIDPOINT_TABLEAU",
    "RK4",
    "RK4_TABLEAU",
    "SDIRK2",
    "SDIRK2_TABLEAU",
    "Autodiff",
    "BackwardEuler",
    "Banded",
    "ButcherTableau",
    "DIRKTableau",
    "Euler",
    "FiniteDifferences",
    "Heun",
    "Midpoint",
    "NewtonError",
    "NewtonKrylov",
    "Propagation",
    "Propagator",
    "Request",
    "RungeKutta",
    "SlowNewtonWarning",
    "Torchdiffeq",
    "propagation",
    "slice_depths",
]


@runtime_checkable
class Propagator(Protocol):
    """The protocol every propagator follows.

    ``propagate(t0, t1, y0)`` is a generator that advances the rows of ``y0`` from ``t0`` to
    ``t1`` (both of shape ``(S,)``; a row's ``t1`` may be smaller than its ``t0`` when
    integrating backwards in time). It yields :class:`pint.engine.Request` s and receives
    ``f(t, y)`` for each; its return value is the array of end states, shaped like ``y0``.
    """

    def propagate(self, t0: Tensor, t1: Tensor, y0: Tensor) -> Propagation:
        """Advance ``y0`` from ``t0`` to ``t1``, yielding the evaluations it needs."""
        ...


def propagation(propagator: Propagator, t: Tensor, start: Tensor, end: Tensor,
                y0: Tensor) -> Propagation:
    """``propagator`` advancing each row of ``y0`` from ``t[start]`` to ``t[end]``.

    ``start`` and ``end`` are integer index tensors on the host, one entry per row. A propagator
    with a ``propagate_indexed(t, start, end, y0)`` method gets them as they are; any other gets
    the times, ``propagate(t[start], t[end], y0)`` (indices copied to ``t``'s device without
    waiting for it).
    """
    indexed = getattr(propagator, "propagate_indexed", None)
    if callable(indexed):
        return indexed(t, start, end, y0)
    return propagator.propagate(t[start.to(t.device, non_blocking=True)],
                                t[end.to(t.device, non_blocking=True)], y0)


def slice_depths(propagator: object, t: Tensor) -> list[int] | None:
    """Evaluation rounds the propagation of each slice of ``t`` costs; ``None`` if unknown."""
    per_slice = getattr(propagator, "slice_depths", None)
    if callable(per_slice):
        return list(per_slice(t))
    depth = getattr(propagator, "depth", None)
    return [depth] * (len(t) - 1) if isinstance(depth, int) else None
