"""The serial baseline: one propagator across the slices, one slice after the other."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor

from ._rounds import Rounds, Task
from .parareal import _check_tensors, _vmapped
from .propagators import Propagator, slice_depths
from .solution import Solution, Stats

__all__ = ["serial"]


def serial(
    f: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    t: Tensor,
    *,
    method: Propagator,
    vectorized: bool = False,
) -> Solution:
    """Solve ``dy/dt = f(t, y)`` with ``method`` on each slice of ``t`` in turn.

    This is the solution Parareal converges to when ``method`` is its fine propagator,
    with the same cost accounting: its ``sequential_nfe`` is the serial depth that a
    parallel-in-time solve is measured against.

    Args:
        f: the vector field ``f(t, y)``, as in :func:`pint.parareal`.
        y0: the initial state, any shape.
        t: the slice boundaries (strictly monotone, same dtype and device as ``y0``).
        method: the propagator, e.g. ``pint.RK4(200)`` for 200 RK4 steps per slice.
        vectorized: as in :func:`pint.parareal`.

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
    _check_tensors(y0, t)
    if not isinstance(method, Propagator):
        raise TypeError(f"method must be a pint.Propagator, got {type(method).__name__}")
    start = time.perf_counter()
    rounds = Rounds(f if vectorized else _vmapped(f))
    ys = [y0]
    for n in range(len(t) - 1):
        def on_done(y1: Tensor) -> None:
            ys.append(y1[0])

        rounds.start(Task(
            propagation=method.propagate(t[n:n + 1], t[n + 1:n + 2], ys[-1].unsqueeze(0)),
            kind="fine", iteration=0, slices=torch.tensor([n]),
            problems=torch.zeros(1, dtype=torch.long), on_done=on_done,
        ))
        while rounds.live:
            rounds.step()
    depths = slice_depths(method, t)
    return Solution(
        ys=torch.stack(ys),
        iterations=0,
        converged=True,
        residuals=[],
        stats=Stats(
            nfe=rounds.rows["fine"],
            sequential_nfe=rounds.rounds,
            coarse_nfe=0,
            fine_nfe=rounds.rows["fine"],
            wall_time=time.perf_counter() - start,
            predicted_sequential_nfe=None if depths is None else sum(depths),
        ),
    )
