"""The serial baseline: one propagator across the slices, one slice after the other."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..engine import Engine, Task
from ..propagators import Propagator, propagation, slice_depths
from ..solution import Solution
from .checks import check_callable, check_grid, check_propagators
from .driver import Iterations, Outcome, Tolerance, drive, vectorize

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
    engine = Engine(vectorize(f, vectorized), with_index=independent, max_batch=max_batch)
    states = y0 if independent else y0.unsqueeze(0)
    iterations = Iterations(states, len(t), tol=0.0, stop=Tolerance(), norm=None, max_iters=0,
                            exact_after=0, squeeze=not independent, verify=engine.verify)
    return drive(Serial(engine, iterations, t, method, callback), engine, iterations)


class Serial:
    """The serial solve as :func:`pint.algorithms.driver.drive` runs it: one step per slice."""

    def __init__(self, engine: Engine, iterations: Iterations, t: Tensor, method: Propagator,
                 callback: Callable[[int, Tensor], None] | None) -> None:
        self.engine, self.it, self.t, self.method, self.callback = (
            engine, iterations, t, method, callback)
        self.ys = [iterations.result[0]]
        rows = len(self.ys[0])
        self.problems = torch.arange(rows, device=t.device)

    def begin(self) -> None:
        """Nothing before the first slice."""

    def step(self) -> bool:
        """Propagate across the next slice; after the last, the states are exact."""
        n = len(self.ys) - 1
        at = torch.full((len(self.problems),), n)
        self.engine.start(Task(propagation(self.method, self.t, at, at + 1, self.ys[-1]),
                               self.ys.append, label="fine", points=at, problems=self.problems))
        self.engine.run()
        if self.callback is not None:
            self.callback(n, self.it.output(self.ys[-1].unsqueeze(0))[0].clone())
        if len(self.ys) == len(self.t):
            self.it.decide(0, None, torch.stack(self.ys), exact=True)
        return True

    def end(self) -> Outcome:
        """The states; the serial depth predicted from the propagator."""
        depths = slice_depths(self.method, self.t)
        return Outcome(self.it.result, predicted=None if depths is None else sum(depths))
