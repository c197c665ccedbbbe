"""The serial baseline: one propagator across the slices, one slice after the other."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor

from ..engine import Engine, Task
from ..propagators import Propagator, propagation, slice_depths
from ..solution import Solution, Stats
from .checks import check_callable, check_grid, check_propagators
from .driver import vectorize

__all__ = ["serial"]


def serial(
    f: Callable[..., Tensor],
    y0: Tensor,
    t: Tensor,
    *,
    method: Propagator,
    vectorized: bool = False,
    max_batch: int | None = None,
    independent: bool = False,
    callback: Callable[[int, Tensor], None] | None = None,
) -> Solution:
    """Solve ``dy/dt = f(t, y)`` with ``method`` on each slice of ``t`` in turn.

    This is the solution the parallel solvers converge to (Parareal with ``method`` as its
    fine propagator, Picard with it as its step), with the same cost accounting: its
    ``sequential_nfe`` is the serial depth that a parallel-in-time solve is measured against.

    Args:
        f: the vector field ``f(t, y)``, as in :func:`pint.parareal`.
        y0: the initial state, any shape.
        t: the slice boundaries (strictly monotone, same dtype and device as ``y0``).
        method: the propagator, e.g. ``pint.RK4(200)`` for 200 RK4 steps per slice.
        vectorized, max_batch, independent: as in :func:`pint.parareal`.
        callback: called after each slice ``n`` as ``callback(n, y)`` with a copy of the state
            at ``t[n + 1]``.

    Returns:
        A :class:`pint.Solution` with ``iterations = 0`` and ``converged = True``.

    Example:
        >>> import torch, pint
        >>> t = torch.linspace(0, 1, 5, dtype=torch.float64)
        >>> sol = pint.serial(lambda t, y: -y, torch.ones(1, dtype=torch.float64), t,
        ...                   method=pint.RK4(10))
        >>> sol.stats.sequential_nfe
        160
    """
    check_grid(y0, t)
    check_propagators(method=method)
    check_callable("callback", callback)
    if independent and y0.ndim == 0:
        raise ValueError("independent=True needs y0 with a leading batch axis, got a 0-d tensor")
    start = time.perf_counter()
    engine = Engine(vectorize(f, vectorized), with_index=independent, max_batch=max_batch)
    states = y0 if independent else y0.unsqueeze(0)
    rows = len(states)
    ys = [states]
    for n in range(len(t) - 1):
        at = torch.full((rows,), n)
        engine.start(Task(
            propagation(method, t, at, at + 1, ys[-1]), ys.append, label="fine", points=at,
            problems=torch.arange(rows, device=y0.device),
        ))
        engine.run()
        if callback is not None:
            callback(n, (ys[-1] if independent else ys[-1][0]).clone())
    engine.verify()
    depths = slice_depths(method, t)
    return Solution(
        ys=torch.stack(ys) if independent else torch.cat(ys),
        iterations=0,
        converged=True,
        residuals=[],
        stats=Stats(
            nfe=sum(engine.rows.values()),
            sequential_nfe=engine.rounds,
            wall_time=time.perf_counter() - start,
            predicted_sequential_nfe=None if depths is None else sum(depths),
            evaluations=dict(engine.rows),
            calls=engine.calls,
        ),
        converged_by="exactness",
    )
