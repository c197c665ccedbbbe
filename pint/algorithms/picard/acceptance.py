"""Acceptance rules: after an iteration, how far the window's front moves and which problems
stop."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..driver import Iterations

__all__ = ["Acceptance", "ExactFront", "Freeze", "PointNorm", "Verdict", "Window"]

PointNorm = Callable[[Tensor, Tensor], Tensor]
"""``norm(change, t)``: the change of the states at some points, ``(P, S, *state)``, with the
points' times ``(P,)``, to one value per point and problem, ``(P, S)``."""


@dataclass
class Window:
    """One iteration as an acceptance rule sees it.

    Attributes:
        change: the change of the active problems' whole trajectory, ``(N + 1, S, *state)``.
        t: the grid.
        b, e: the window ``[b, e)`` just evaluated (``b`` the exact front).
        iterations: the solve's bookkeeping: its ``residual(change)``, ``stop`` rule and
            ``tol``.
        members: the active problems (``(S,)`` indices among all ``B``).
        memory: ``(B,)`` float64 the rule may keep between iterations (NaN at the start).
    """

    change: Tensor
    t: Tensor
    b: int
    e: int
    iterations: Iterations
    members: Tensor
    memory: Tensor

    @property
    def n(self) -> int:
        """The number of intervals ``N``."""
        return len(self.t) - 1


@dataclass(frozen=True)
class Verdict:
    """What an acceptance rule decided.

    Attributes:
        front: the new front (at least ``b + 1``: the exact point).
        residual: one residual per active problem, or ``None`` (none this iteration).
        stopping: True where a problem stops; ``None``: the stopping rule decides on
            ``residual``.
        exact: the states are now the serial solution.
    """

    front: int
    residual: Tensor | None
    stopping: Tensor | None = None
    exact: bool = False


@runtime_checkable
class Acceptance(Protocol):
    """The acceptance rule of :func:`pint.picard`: ``accept(window)`` returns the
    :class:`Verdict` of an iteration."""

    def accept(self, window: Window) -> Verdict:
        """The new front, the residuals and which problems stop."""
        ...


class ExactFront:
    """Only the exact front point is final (the front moves by one per iteration); problems
    stop by the stopping rule on the change of their whole trajectory, tested while the window
    reaches the end of the grid. Never locks in a wrong state."""

    def __repr__(self) -> str:
        return "ExactFront()"

    def accept(self, window: Window) -> Verdict:
        """Front ``b + 1``; the residual of the whole change once the window reaches the end."""
        b, n = window.b, window.n
        residual = window.iterations.residual(window.change) if window.e == n else None
        return Verdict(b + 1, residual, exact=b + 1 >= n)


class Freeze:
    """ParaDiGMS's acceptance: after the exact front, every following point whose change is at
    most ``tol`` for every problem is accepted too; the problems stop when the front reaches
    the end.

    Args:
        norm: ``norm(change, t)`` per point and problem (see :data:`PointNorm`); default the
            largest absolute entry.
        tol: the acceptance tolerance; default the solver's ``tol``.
        stop: also stop a problem by the solver's stopping rule on the change of its whole
            trajectory (as :class:`ExactFront` does) in the iterations whose window reaches the
            end of the grid, before the front gets there. Default ``False`` (ParaDiGMS).
    """

    def __init__(self, norm: PointNorm | None = None, tol: float | None = None,
                 stop: bool = False) -> None:
        if not isinstance(stop, bool):
            raise TypeError(f"Freeze's stop must be True or False, got {stop!r}")
        if norm is not None and not callable(norm):
            raise TypeError(f"Freeze's norm must be callable or None, got {type(norm).__name__}")
        if tol is not None and (isinstance(tol, bool) or not isinstance(tol, Real) or not (
                tol >= 0 and math.isfinite(tol))):
            raise ValueError(f"Freeze's tol must be a finite number >= 0 or None, got {tol!r}")
        self.norm, self.tol, self.stop = norm, None if tol is None else float(tol), stop

    def __repr__(self) -> str:
        return f"Freeze(tol={self.tol!r}, stop={self.stop})"

    def errors(self, change: Tensor, t: Tensor) -> Tensor:
        """The worst problem's error at each point, ``(P,)``."""
        if self.norm is None:
            per = change.abs().reshape(*change.shape[:2], -1).amax(2)
        else:
            per = self.norm(change, t)
        return per.amax(1)

    def accept(self, window: Window) -> Verdict:
        """Past the exact front and every following point within the tolerance; the residual
        is the largest point error of the window."""
        b, e, n, it = window.b, window.e, window.n, window.iterations
        errors = self.errors(window.change[b + 1:e + 1], window.t[b + 1:e + 1])
        above = (errors[1:] > (it.tol if self.tol is None else self.tol)).nonzero()
        front = min(b + (len(errors) if len(above) == 0 else 1 + int(above[0])), n)
        s = window.change.shape[1]
        stopping = torch.full((s,), front >= n)
        if self.stop and e == n:  # or by the stopping rule on the whole change
            whole = it.residual(window.change)
            rows = window.members.cpu()
            stopping |= it.stop(whole, window.memory[rows], it.tol).cpu()
            window.memory[rows] = whole
        residual = torch.full((s,), float(errors.max()), dtype=torch.float64)
        return Verdict(front, residual, stopping, exact=front >= n and it.tol == 0)
