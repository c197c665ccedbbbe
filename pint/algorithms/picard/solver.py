"""The Picard-family solver: the window's evaluations, the linearised recurrence and the
strategies' hooks."""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral

import torch
from torch import Tensor

from ...engine import Engine, Propagation, Task
from ...propagators import Propagator, propagation
from ...solution import Solution
from ...transport import Local, Transport
from .. import recurrence
from ..checks import check_options, check_propagators, signature
from ..driver import (
    Callback,
    Iterations,
    Norm,
    Outcome,
    StopRule,
    Tolerance,
    drive,
    vectorize,
)
from .acceptance import Acceptance, ExactFront, Window
from .initial import Constant, InitialGuess
from .jacobians import Identity, JacobianModel, _state_sum

__all__ = ["Picard", "picard"]


def picard(
    f: Callable[..., Tensor],
    y0: Tensor,
    t: Tensor,
    *,
    step: Propagator,
    window: int | None = None,
    tol: float = 1e-6,
    max_iters: int | None = None,
    norm: Norm | None = None,
    stop: StopRule | None = None,
    jacobian: JacobianModel | None = None,
    initial: InitialGuess | None = None,
    acceptance: Acceptance | None = None,
    vectorized: bool = False,
    independent: bool = False,
    store_iterates: bool = False,
    callback: Callback | None = None,
    max_batch: int | None = None,
    transport: Transport | None = None,
) -> Solution:
    """Solve ``dy/dt = f(t, y)`` on the grid ``t`` by Picard-family iterations.

    Every iteration evaluates one ``step`` per interval of the window in one batched round and
    updates the trajectory by the linearised recurrence of the module docstring.

    Args:
        f, y0, t, vectorized, independent, max_batch: as in :func:`pint.parareal`; ``t`` is the
            grid of the steps (``N`` intervals).
        step: the one-step propagator ``Phi_j`` on each interval, e.g. ``pint.RK4(1)``; at full
            iterations the result equals ``pint.serial(f, y0, t, method=step)``.
        window: how many intervals one iteration evaluates (ParaDiGMS's ``parallel``); the
            window slides as its front becomes final. Default: all ``N``.
        tol: the tolerance of the stopping rule (and of :class:`Freeze`).
        max_iters: the most iterations; default ``N``, after which the result is exact.
        norm: maps the change of one problem's whole trajectory between two iterations,
            ``(N + 1, *state)``, to its residual; default the largest absolute entry.
        stop: the stopping rule on the residual: :class:`pint.Tolerance` (default) or
            :class:`pint.Extrapolated`. Tested only while the window reaches the end of the grid.
        jacobian: :class:`Identity` (default: Picard), :class:`Secant` or
            :class:`DiagonalSecant` (quasi-Newton), or :class:`Anderson` (triangular Anderson
            acceleration).
        initial: :class:`Constant` (default) or :class:`Tangent`.
        acceptance: :class:`ExactFront` (default) or :class:`Freeze`.
        store_iterates: keep the trajectory after every iteration.
        callback: ``callback(k, ys, residual)`` after every iteration ``k`` (1 is the first), as
            in :func:`pint.parareal`.
        transport: where the rows of each round are evaluated: :class:`pint.transport.Local`
            (default) or :class:`pint.transport.Distributed`, over whose ranks the engine
            shares out every round's rows and gathers the results, every rank then applying
            the same update (see :func:`pint.distributed.picard`).

    Returns:
        A :class:`pint.Solution` with the trajectory at every point of ``t``.

    Example:
        >>> import torch, pint
        >>> t = torch.linspace(0, 1, 21, dtype=torch.float64)
        >>> y0 = torch.ones(1, dtype=torch.float64)
        >>> sol = pint.picard(lambda t, y: -y, y0, t, step=pint.RK4(1), tol=1e-10,
        ...                   jacobian=pint.Secant())
        >>> serial = pint.serial(lambda t, y: -y, y0, t, method=pint.RK4(1))
        >>> bool(torch.allclose(sol.ys, serial.ys, atol=1e-9)), sol.iterations < 20
        (True, True)
    """
    stop = Tolerance() if stop is None else stop
    transport = Local() if transport is None else transport
    n = len(t) - 1 if isinstance(t, Tensor) and t.ndim == 1 else 0
    error = None
    try:
        max_iters = check_options(y0, t, tol=tol, max_iters=max_iters, norm=norm, stop=stop,
                                  independent=independent, limit=max(n, 1), callback=callback)
        check_propagators(step=step)
        window = n if window is None else window
        if isinstance(window, bool) or not isinstance(window, Integral) or not 1 <= window <= n:
            raise ValueError(f"window must be an integer in [1, {n}] (the number of "
                             f"intervals), got {window!r}")
        window = int(window)
        jacobian = Identity() if jacobian is None else jacobian
        initial = Constant() if initial is None else initial
        acceptance = ExactFront() if acceptance is None else acceptance
        for name, value, kind in (("jacobian", jacobian, JacobianModel),
                                  ("initial", initial, InitialGuess),
                                  ("acceptance", acceptance, Acceptance)):
            if isinstance(value, type) or not isinstance(value, kind):
                raise TypeError(f"{name} must be a {kind.__name__} instance (see "
                                f"pint.picard), got {value!r}")
    except (TypeError, ValueError) as caught:  # raised on every process by the agreement
        error = caught
    transport.agree(y0, t, (float(tol) if error is None else tol, max_iters, norm is None,
                            independent, window, *map(signature, (stop, step, jacobian, initial,
                                                                  acceptance))),
                    error, values=True)
    states = y0 if independent else y0.unsqueeze(0)
    engine = Engine(vectorize(f, vectorized), with_index=independent, max_batch=max_batch,
                    transport=transport)
    iterations = Iterations(
        states, n + 1, tol=float(tol), stop=stop, norm=norm, max_iters=max_iters,  # type: ignore[arg-type]
        exact_after=n, callback=callback, store_iterates=store_iterates,
        squeeze=not independent, verify=engine.verify,
    )
    solver = Picard(engine, iterations, t, step, window, jacobian,  # type: ignore[arg-type]
                    initial, acceptance, transport)  # type: ignore[arg-type]
    return solver.run()


class Picard:
    """The state of one Picard-family solve (on a rank of a distributed one: the same state
    on every rank)."""

    def __init__(self, engine: Engine, iterations: Iterations, t: Tensor, step: Propagator,
                 window: int, jacobian: JacobianModel, initial: InitialGuess,
                 acceptance: Acceptance, transport: Transport) -> None:
        self.engine, self.it, self.t, self.propagator = engine, iterations, t, step
        self.window, self.jacobian, self.initial, self.acceptance = (
            window, jacobian, initial, acceptance)
        self.transport = transport
        self.n = len(t) - 1
        self.batch = iterations.batch
        self.k, self.b = 0, 0  # the iteration, the exact front
        self.factors = jacobian.prior(t).to(t.device).unsqueeze(1).repeat(1, self.batch)
        self.elementwise = jacobian.elementwise
        if self.elementwise:  # one factor per state component
            state = iterations.result.shape[2:]
            self.factors = self.factors.to(iterations.result.dtype).reshape(
                *self.factors.shape, *[1] * len(state)).repeat(1, 1, *state)
        self.mixer = jacobian.mixer()
        self.learns = jacobian.learns
        self.picard = not self.learns and bool((self.factors == 1).all())  # a cumulative sum
        self.seen_x: Tensor | None = None  # the last evaluated points and their images
        self.seen_phi: Tensor | None = None
        self.seen = torch.zeros(self.n, self.batch, dtype=torch.bool)  # which are known
        self.memory = torch.full((self.batch,), math.nan, dtype=torch.float64)  # acceptance's

    def evaluate(self, run: Propagation, label: str, k: int, points: Tensor,
                 problems: Tensor) -> Tensor:
        """The end states of the propagation ``run`` (its rows start from ``points`` and belong
        to ``problems``), run to its end on the engine."""
        out: list[Tensor] = []
        self.engine.start(Task(run, out.append, label=label, iteration=k, points=points,
                               problems=problems))
        self.engine.run()
        return out[0]

    def run(self) -> Solution:
        """The solve, by :func:`pint.algorithms.driver.drive`."""
        return drive(self, self.engine, self.it, self.transport)

    def begin(self) -> None:
        """The initial guess (one propagation of all problems)."""
        y0 = self.it.result[0]
        s = len(y0)
        members = self.it.members(y0.device)
        x = self.evaluate(_flat(self.initial.guess(self.t, y0)), "initial", 0,
                          torch.zeros(s, dtype=torch.long), members).reshape(self.n + 1, *y0.shape)
        x[0] = y0
        if self.learns:
            self.seen_x = torch.zeros_like(x[:-1])
            self.seen_phi = torch.zeros_like(x[:-1])
        self.it.result = x

    def step(self) -> bool:
        """The next iteration, unless ``max_iters`` are done (``max_iters=0``: the guess)."""
        if self.k >= self.it.max_iters:
            return False
        self.k += 1
        self.b = self.iterate(self.k, self.b)
        return True

    def end(self) -> Outcome:
        """The trajectory (the engine counted every process's evaluations and rounds)."""
        self.transport.close()
        return Outcome(self.it.result)

    def iterate(self, k: int, b: int) -> int:
        """Iteration ``k`` with the front at ``b``; returns the new front."""
        e = min(b + self.window, self.n)
        members = self.it.members(self.t.device)
        x = self.it.take(self.it.result, dim=1)  # (N + 1, S, *state)
        points = e - b
        rows = x[b:e].flatten(0, 1)
        starts = torch.arange(b, e).repeat_interleave(x.shape[1])  # each row's step, on the host

        phi = self.evaluate(propagation(self.propagator, self.t, starts, starts + 1, rows),
                            "step", k, starts, members.repeat(points)).reshape(points,
                                                                               *x.shape[1:])
        a = self.factors[:, members]
        if self.learns:
            a = self.learn(b, e, members, x, phi, a)
        new = self.scan(x, phi, a, b, e)
        if self.mixer is not None:
            new = self.mixer.mix(x, new, members, self.batch, b, e)
        if e < self.n:  # the initial guess may guess the points beyond the window again
            slope = (phi[-1] - x[e - 1]) / (self.t[e] - self.t[e - 1])
            ahead = self.initial.ahead(self.t[e:], new[e], slope)
            if ahead is not None:
                new[e + 1:] = ahead
        verdict = self.acceptance.accept(Window(new - x, self.t, b, e, self.it, members,
                                                self.memory))
        self.it.decide(k, verdict.residual, new, exact=verdict.exact, stopping=verdict.stopping)
        return min(verdict.front, self.n)

    def learn(self, b: int, e: int, members: Tensor, x: Tensor, phi: Tensor,
              a: Tensor) -> Tensor:
        """Update the factors of steps ``b..e-1`` from the secant of the last two evaluations."""
        assert self.seen_x is not None and self.seen_phi is not None
        window = slice(b, e)
        seen = self.seen[window][:, members.cpu()].to(x.device)
        dx = x[b:e] - self.seen_x[window][:, members]
        dphi = phi - self.seen_phi[window][:, members]
        steps = torch.arange(b, e, device=x.device)
        if self.elementwise:
            estimate = self.jacobian.estimate_elementwise(  # type: ignore[attr-defined]
                steps, dphi, dx, seen, a[window])
        else:
            dx_dx = torch.where(seen, _state_sum(dx * dx).double(), 0)
            dphi_dx = _state_sum(dphi * dx).double()
            estimate = self.jacobian.estimate(steps, dphi_dx, dx_dx, a[window])
        a = a.clone()
        a[window] = estimate
        self.factors[window.start:window.stop, members] = estimate
        self.seen_x[window, members] = x[b:e]
        self.seen_phi[window, members] = phi
        self.seen[window, members.cpu()] = True
        return a

    def scan(self, x: Tensor, phi: Tensor, a: Tensor, b: int, e: int) -> Tensor:
        """The linearised recurrence from the exact front ``b``: inside the window with the new
        evaluations, beyond it (no evaluation) carrying the correction of the window's end."""
        new = x.clone()
        if self.picard:  # a cumulative sum
            new[b + 1:e + 1] = x[b] + (phi - x[b:e]).cumsum(0)
            new[e + 1:] = x[e + 1:] + (new[e] - x[e])
            return new
        if not self.elementwise:  # one factor per step and problem: broadcast over the state
            a = a.to(x.dtype).reshape(*a.shape, *[1] * (x.ndim - 2))
        # the corrections d_{j+1} = a_j d_j + (phi_j - x_{j+1}) from d_b = 0, all at once;
        # new_{j+1} = phi_j + a_j d_j, so the point after the front is phi_b itself (exact)
        d = recurrence.solve(a[b:e], phi - x[b + 1:e + 1])
        new[b + 1] = phi[0]
        new[b + 2:e + 1] = phi[1:] + a[b + 1:e] * d[:-1]
        if e < self.n:
            new[e + 1:] = x[e + 1:] + a[e:].cumprod(0) * d[-1]
        return new


def _flat(guess: Propagation) -> Propagation:
    """An initial guess's trajectory ``(N + 1, S, *state)`` as rows ``((N + 1) S, *state)``."""
    x = yield from guess
    return x.flatten(0, 1)
