"""What every algorithm shares: the one loop that runs it (:func:`drive`), the set of problems
still iterating, the stopping rule, the callback, the history, and the assembled
:class:`pint.Solution`.

An algorithm (Parareal, Picard, MGRIT, serial) is a :class:`Steps`: its set-up, one step of
its work, and what it returns. :func:`drive` owns the loop: the timing, the steps until every
problem has stopped, closing the engine's tasks, telling the transport's other processes when
this one fails, and the :class:`pint.Solution` with its :class:`pint.Stats`. For each iteration
``k`` a step produces the states of the problems still iterating and their residuals (the
change since the last iteration, measured by the user's norm); :class:`Iterations` decides
which problems stop, keeps the returned states and calls the callback.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..engine import Engine, VectorField
from ..solution import Solution, Stats

# the checks lived here: kept as aliases of pint.algorithms.checks
from .checks import check_callable as check_callable
from .checks import check_grid as check_grid
from .checks import check_options as check_options

__all__ = [
    "Callback",
    "Extrapolated",
    "InstabilityWarning",
    "Iterations",
    "Norm",
    "Outcome",
    "Steps",
    "StopRule",
    "Tolerance",
    "drive",
]

Norm = Callable[[Tensor], Tensor]
"""Maps the change of one problem's states between two iterations to a scalar."""

Callback = Callable[[int, Tensor, Tensor], None]
"""``callback(k, ys, residual)`` after iteration ``k``."""


class InstabilityWarning(UserWarning):
    """The residuals of an iteration grow: the solve converges only by exactness, if at all."""


@runtime_checkable
class StopRule(Protocol):
    """When a problem stops iterating: ``rule(residual, previous, tol)`` with the residual of
    every problem still iterating, their residuals one iteration earlier (NaN where there is
    none) and the tolerance; returns a boolean tensor, True where the problem stops."""

    def __call__(self, residual: Tensor, previous: Tensor, tol: float) -> Tensor:
        """True where the problem has converged."""
        ...


class Tolerance:
    """Stop when the residual (the change of the states in the last iteration) is at most
    ``tol``."""

    def __repr__(self) -> str:
        return "Tolerance()"

    def __call__(self, residual: Tensor, previous: Tensor, tol: float) -> Tensor:
        """``residual <= tol``."""
        return residual <= tol


class Extrapolated:
    """Stop when the error *extrapolated from the contraction* is at most ``tol``.

    With ``rho = f_k / f_{k-1}`` the ratio of the last two residuals, a contraction leaves an
    error of at most ``f_k rho / (1 - rho)`` after iteration ``k``; the problem stops when
    ``rho < 1`` and that bound is at most ``tol`` (or the residual is exactly 0). Safer than
    :class:`Tolerance` on slowly contracting iterations, and it stops an iteration earlier on
    fast ones.

    The bound is an estimate (the contraction may slow down after it was measured): with
    ``safety`` ``s`` the problem stops only when ``s`` times the bound is at most ``tol``. A
    ratio below ``fastest`` counts as ``fastest``: a residual that drops by orders of magnitude
    after growing (a transient of Picard iterations on a chaotic problem: 2e84 then 2e5) is
    not a contraction to extrapolate from.

    Args:
        safety: the factor on the extrapolated error (default 1), at least 1.
        fastest: the fastest contraction ratio trusted, in ``[0, 1)`` (default 0.05: the
            problem stops only once its residual is within about ``20 tol / safety``).
    """

    def __init__(self, safety: float = 1.0, fastest: float = 0.05) -> None:
        if isinstance(safety, bool) or not isinstance(safety, int | float) or not (
                1 <= safety < math.inf):
            raise ValueError(f"Extrapolated's safety must be a finite number >= 1, got "
                             f"{safety!r}")
        if isinstance(fastest, bool) or not isinstance(fastest, int | float) or not (
                0 <= fastest < 1):
            raise ValueError(f"Extrapolated's fastest must be a number in [0, 1), got "
                             f"{fastest!r}")
        self.safety, self.fastest = float(safety), float(fastest)

    def __repr__(self) -> str:
        return "Extrapolated()" if self.safety == 1 else f"Extrapolated(safety={self.safety:g})"

    def __call__(self, residual: Tensor, previous: Tensor, tol: float) -> Tensor:
        """``rho < 1`` and ``safety * residual * r / (1 - r) <= tol``, ``r = max(rho,
        fastest)``."""
        rho = residual / previous
        trusted = rho.clamp(min=self.fastest)
        bound = self.safety * residual * trusted / (1 - trusted)
        contracting = (rho < 1) & (bound <= tol)
        return (residual == 0) | torch.nan_to_num(contracting.to(torch.bool), nan=0.0).bool()


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside pint (where the user called it)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def scalar_norm(value: object) -> Tensor:
    """What a user's ``norm`` returned, as a 0-d tensor; a ValueError unless it is one value."""
    value = torch.as_tensor(value)
    if value.numel() != 1:
        raise ValueError(f"norm must return a scalar (one value for the change of one problem), "
                         f"got shape {tuple(value.shape)}")
    return value.reshape(())


def largest(change: Tensor) -> Tensor:
    """The largest absolute entry of each problem's change, ``(points, S, *state)`` -> ``(S,)``
    (the default norm)."""
    return change.abs().transpose(0, 1).flatten(1).amax(1)


def vectorize(f: Callable[..., Tensor], vectorized: bool) -> VectorField:
    """``f`` as a batched vector field: itself when ``vectorized``, else vmapped over rows."""
    if vectorized:
        return f
    batched = torch.func.vmap(f)

    def field(*args: Tensor) -> Tensor:
        try:
            return batched(*args)
        except RuntimeError as error:
            error.add_note(
                "pint vectorizes f over rows with torch.func.vmap; if f cannot be vmapped, "
                "write it for a batch of rows (t: (R,), y: (R, *state)) and pass vectorized=True"
            )
            raise

    return field


class Iterations:
    """The bookkeeping of an iterative solve of ``B`` independent problems.

    Args:
        y0: the problems' initial states, ``(B, *state)`` (``B = 1`` for a single problem).
        points: the number of grid points whose states are returned (``N + 1``; on a rank of a
            distributed solve, the points it owns).
        tol, stop, norm, callback: the solver's options (``norm`` ``None``: the max norm).
        max_iters: the most iterations.
        exact_after: the iteration after which the result is exact (``N``).
        store_iterates: keep the states after every iteration.
        squeeze: a single problem (``y0`` had no batch axis): results drop the batch axis.
        advice: what to do when the residuals keep growing; given, an
            :class:`InstabilityWarning` with it is issued once when a problem's residual has
            grown three iterations in a row.
        verify: reads the engine's pending finiteness checks (:meth:`pint.engine.Engine.verify`)
            before a residual or a decision is read, so a non-finite evaluation is reported
            as such rather than as the non-finite residual it caused.

    Attributes:
        active: the indices of the problems still iterating (``None``: all of them).
        result: the returned states ``(points, B, *state)``, updated at every decision.
        done: no problem iterates any more.
    """

    def __init__(
        self, y0: Tensor, points: int, *, tol: float, stop: StopRule, norm: Norm | None,
        max_iters: int, exact_after: int, callback: Callback | None = None,
        store_iterates: bool = False, squeeze: bool = False, advice: str | None = None,
        verify: Callable[[], None] | None = None,
    ) -> None:
        self.batch = y0.shape[0]
        self.tol, self.stop, self.norm = float(tol), stop, norm
        self.max_iters, self.exact_after = max_iters, exact_after
        self.callback, self.squeeze, self.advice = callback, squeeze, advice
        self.verify = verify or (lambda: None)
        self.active: Tensor | None = None
        self.result = y0.unsqueeze(0).expand(points, *y0.shape).clone()
        self.sample_iterations = torch.zeros(self.batch, dtype=torch.long)
        self.previous = torch.full((self.batch,), math.nan, dtype=torch.float64)
        self.growth = torch.zeros(self.batch, dtype=torch.long)
        self.residuals: list[float] = []
        self.iterates: list[Tensor] | None = [] if store_iterates else None
        self.done = False
        self.converged = False
        self.converged_by: str | None = None
        self._warned = False

    def take(self, states: Tensor, dim: int = 0) -> Tensor:
        """The entries of ``states`` (indexed by problem along ``dim``) still iterating."""
        return states if self.active is None else states.index_select(dim, self.active)

    def members(self, device: torch.device) -> Tensor:
        """The problem index of each active problem."""
        if self.active is None:
            return torch.arange(self.batch, device=device)
        return self.active.to(device)

    def residual(self, change: Tensor) -> Tensor:
        """One residual per active problem from ``change``, ``(points, S, *state)``: the
        user's norm of each problem's change, or the largest absolute entry."""
        if self.norm is None:
            return self.checked(largest(change))
        return self.checked(torch.stack([scalar_norm(self.norm(change[:, i]))
                                         for i in range(change.shape[1])]))

    def checked(self, values: Tensor) -> Tensor:
        """``values`` (one residual per active problem) on the CPU in float64, once the engine's
        pending checks passed (a non-finite evaluation is the error to report, not the
        residual it caused); a ValueError unless they are finite and ``>= 0``."""
        self.verify()
        values = values.detach().to("cpu", torch.float64)
        if not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
            raise ValueError(f"the residual norm must return finite values >= 0, got "
                             f"{values.tolist()}")
        return values

    def decide(self, k: int, residual: Tensor | None, current: Tensor, *,
               exact: bool | None = None, stopping: Tensor | None = None) -> None:
        """Iteration ``k`` is over: ``current`` holds the active problems' states (like
        :attr:`result`, restricted to them along axis 1), ``residual`` their residuals
        (``None`` for an iteration that has none, like Parareal's coarse sweep). Records the
        states, stops the converged problems, and sets :attr:`done` when none is left.

        ``exact`` (default: ``k >= exact_after``) says the states are now the serial solution;
        ``stopping`` overrides the stopping rule (an algorithm with its own acceptance)."""
        self.verify()
        samples = self.active
        cpu = slice(None) if samples is None else samples.cpu()
        exact = k >= self.exact_after if exact is None else exact
        shown = torch.full((self.batch,), math.nan, dtype=torch.float64)
        if residual is not None:
            shown[cpu] = residual
            self.residuals.append(float(residual.max()))
            self._watch(residual, cpu)
        if stopping is None:
            if residual is None:
                stopping = torch.zeros(current.shape[1], dtype=torch.bool)
            else:
                stopping = self.stop(residual, self.previous[cpu], self.tol).cpu()
        if residual is not None:
            self.previous[cpu] = residual
        if exact:
            stopping = torch.ones_like(stopping)
        if samples is None:
            self.result = current.clone()
        else:
            self.result.index_copy_(1, samples.to(current.device), current)
        self.sample_iterations[cpu] = k
        if self.iterates is not None:
            self.iterates.append(self.output(self.result).clone())
        if self.callback is not None:
            self.callback(k, self.output(self.result).clone(), shown[0] if self.squeeze else shown)
        keep = ~stopping
        if k >= self.max_iters or not bool(keep.any()):
            self.done = True
            self.converged = bool(stopping.all()) and (residual is not None or exact)
            self.converged_by = None if not self.converged else (
                "exactness" if exact else "tolerance")
            return
        if not bool(keep.all()):
            positions = keep.nonzero().squeeze(1)
            base = torch.arange(self.batch) if samples is None else samples.cpu()
            self.active = base[positions].to(current.device)

    def _watch(self, residual: Tensor, rows: slice | Tensor) -> None:
        """Warn once when a problem's residual has grown three iterations in a row."""
        if self.advice is None:
            return
        grew = residual > self.previous[rows]
        self.growth[rows] = torch.where(grew, self.growth[rows] + 1, 0)
        if not self._warned and bool((self.growth >= 3).any()):
            self._warned = True
            warnings.warn(f"the residuals have grown three iterations in a row: the iteration "
                          f"diverges and can converge only by exactness. {self.advice}",
                          InstabilityWarning, stacklevel=_caller_level())

    def output(self, states: Tensor) -> Tensor:
        """``states`` (``(points, B, *state)``) as returned: without the batch axis if squeezed."""
        return states[:, 0] if self.squeeze else states

    def solution(self, ys: Tensor, engine: Engine, wall_time: float,
                 predicted: int | None = None, *, depth: int | None = None,
                 evaluations: dict[str, int] | None = None) -> Solution:
        """The :class:`pint.Solution` of the solve (``depth``/``evaluations`` default to the
        engine's own counts)."""
        engine.verify()
        counts = dict(engine.rows) if evaluations is None else evaluations
        stats = Stats(
            nfe=sum(counts.values()),
            sequential_nfe=engine.rounds if depth is None else depth,
            wall_time=wall_time,
            predicted_sequential_nfe=predicted,
            evaluations=counts,
            calls=engine.calls,
        )
        return Solution(
            ys=self.output(ys),
            iterations=int(self.sample_iterations.max()),
            converged=self.converged,
            residuals=self.residuals,
            stats=stats,
            iterates=self.iterates,
            sample_iterations=None if self.squeeze else self.sample_iterations,
            converged_by=self.converged_by,
        )


class Outcome(NamedTuple):
    """What an algorithm returns after its last step.

    Attributes:
        ys: the states at the grid points, ``(points, B, *state)`` (all of them, on every
            process of a distributed solve).
        evaluations: rows evaluated per task label (of all processes); ``None``: the engine's.
        depth: the depth (``sequential_nfe``); ``None``: the engine's round count.
        predicted: the predicted depth, where the algorithm has a model of it.
    """

    ys: Tensor
    evaluations: dict[str, int] | None = None
    depth: int | None = None
    predicted: int | None = None


class Steps(Protocol):
    """An algorithm as :func:`drive` runs it."""

    def begin(self) -> None:
        """The set-up and the work before the first step (an initial guess, a coarse sweep)."""
        ...

    def step(self) -> bool:
        """One step of the work (an iteration, or an event: a round, a message); ``False`` when
        there is none left to do."""
        ...

    def end(self) -> Outcome:
        """After the last step: the result and its cost."""
        ...


def drive(steps: Steps, engine: Engine, iterations: Iterations, transport: Any = None) -> Solution:
    """Run ``steps`` to the end: the transport (if any) opens, then the steps' set-up, their
    steps until every problem has stopped (or they have none left), and their outcome as a
    :class:`pint.Solution` with the wall time. Whatever happens, the engine's live tasks are
    closed; on an error the transport tells the other processes before it propagates."""
    start = time.perf_counter()
    try:
        try:
            if transport is not None:
                transport.open()
            steps.begin()
            while not iterations.done and steps.step():
                pass
        finally:
            engine.close()
        outcome = steps.end()
    except BaseException as error:  # tell the other processes, then raise it here
        if transport is not None:
            transport.abort(error)
        raise
    return iterations.solution(outcome.ys, engine, time.perf_counter() - start,
                               outcome.predicted, depth=outcome.depth,
                               evaluations=outcome.evaluations)
