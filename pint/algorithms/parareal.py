"""The Parareal iteration, with the batched and the pipelined schedule, over any transport.

With slice boundaries ``t[0], ..., t[N]``, a coarse propagator ``G`` and a fine propagator
``F``, iteration ``k + 1`` computes

    ``U[n+1]^{k+1} = G(U[n]^{k+1}) + F(U[n]^k) - G(U[n]^k)``

after an initial coarse sweep ``U[n+1]^0 = G(U[n]^0)`` (iteration 0). After iteration ``k`` the
boundaries ``0..k`` equal the serial fine solution, so they are carried over unchanged and only
slices ``n >= k`` are propagated again: the fine batch shrinks every iteration, and ``N``
iterations reproduce the serial fine solve.

The solver is driven by events: a propagation completes, a boundary arrives from another
process, the residuals of an iteration are gathered. A :mod:`transport <pint.transport>` says
which boundaries this process owns, hands boundary ``hi`` to the process that owns the next
ones (:meth:`~pint.transport.Transport.send`) and gathers each iteration's residual shares
(:meth:`~pint.transport.Transport.post`), which this module reduces; in a single process
(:class:`pint.transport.Local`) it owns them all and carries nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..engine import Engine, Location, NonFiniteError, Task
from ..propagators import Propagator, propagation, slice_depths
from ..solution import Solution
from ..transport import Event, Gathered, Local, Transport
from .checks import check_options, check_propagators
from .driver import (
    Callback,
    Iterations,
    Norm,
    Outcome,
    StopRule,
    Tolerance,
    drive,
    largest,
    vectorize,
)

__all__ = ["parareal", "predicted_depth"]

INSTABILITY_ADVICE = (
    "Use a coarse propagator that is stable at the slice length (an implicit one such as "
    "pint.BackwardEuler(1) for stiff problems), or more slices."
)


def parareal(
    f: Callable[..., Tensor],
    y0: Tensor,
    t: Tensor,
    *,
    coarse: Propagator,
    fine: Propagator,
    tol: float = 1e-6,
    max_iters: int | None = None,
    norm: Norm | None = None,
    stop: StopRule | None = None,
    pipelined: bool = False,
    vectorized: bool = False,
    store_iterates: bool = False,
    independent: bool = False,
    callback: Callback | None = None,
    max_batch: int | None = None,
    transport: Transport | None = None,
) -> Solution:
    """Solve ``dy/dt = f(t, y)``, ``y(t[0]) = y0``, by Parareal iterations.

    Args:
        f: the vector field in torchdiffeq's convention, ``f(t, y) -> dy/dt``.
        y0: the initial state, any shape.
        t: the slice boundaries, 1-D with at least 2 points, strictly increasing or strictly
            decreasing; same dtype and device as ``y0``.
        coarse: the cheap propagator ``G`` (e.g. ``pint.RK4(1)``).
        fine: the accurate propagator ``F`` (e.g. ``pint.RK4(100)``); the result converges to
            the serial solve with ``F`` on every slice.
        tol: the tolerance of the stopping rule.
        max_iters: the most iterations after the initial coarse sweep; defaults to
            ``N = len(t) - 1``, after which the result *is* the serial fine solution.
        norm: maps the change of all boundary states of one problem between two iterations,
            shape ``(N + 1, *state_shape)``, to a scalar (the residual). Defaults to the largest
            absolute entry, so ``tol`` is an absolute tolerance in the units of ``y``.
        stop: the stopping rule, :class:`pint.Tolerance` (default: residual at most ``tol``)
            or :class:`pint.Extrapolated` (error extrapolated from the contraction).
        pipelined: use the pipelined schedule of SRDS: the fine propagation of a slice starts
            as soon as its initial state exists, instead of after the whole coarse sweep. Same
            iterates, shorter critical path.
        vectorized: ``False`` (default): ``f`` is written for one state and pint vectorizes it
            over rows with :func:`torch.func.vmap`. ``True``: ``f`` already takes ``t`` of shape
            ``(R,)`` and ``y`` of shape ``(R, *state_shape)``.
        store_iterates: keep the boundary states after every iteration in
            :attr:`Solution.iterates`.
        independent: the leading axis of ``y0`` indexes ``B`` independent problems (e.g. a batch
            of samples). Each has its own residual and stops iterating, leaving the batch, as
            soon as it converges. ``f`` then sees one problem's state per row
            (``state_shape = y0.shape[1:]``) and is called as ``f(t, y, index)``, where
            ``index`` holds each row's problem (its position in ``y0``), so that per-problem
            data (e.g. conditioning) can be looked up.
        callback: called after each iteration ``k`` (0 is the coarse sweep) as
            ``callback(k, ys, residual)``, with a copy of the current boundary states (like
            :attr:`Solution.ys`) and the residual of each problem (shape ``()``, or ``(B,)``
            with ``independent``; NaN where undefined).
        max_batch: the most rows in one call of ``f`` (see :class:`pint.engine.Engine`); the
            result and the depth are the same, only the peak memory of a call changes.
        transport: where the slices live: :class:`pint.transport.Local` (default) or
            :class:`pint.transport.Distributed` (see :func:`pint.distributed.parareal`).

    Returns:
        A :class:`pint.Solution` with the states at ``t``, the iteration history and the cost.

    Raises:
        TypeError: ``y0`` or ``t`` is not a floating tensor, ``coarse``/``fine`` is not a
            :class:`pint.Propagator`, or ``f`` returns something other than a tensor like ``y``.
        ValueError: inconsistent shapes, dtypes, devices or options.
        pint.NonFiniteError: a state or an evaluation of ``f`` is not finite (its ``location``
            names the iteration, the slice and the problem).

    Example:
        >>> import torch, pint
        >>> t = torch.linspace(0, 1, 11, dtype=torch.float64)
        >>> y0 = torch.tensor([1.0], dtype=torch.float64)
        >>> sol = pint.parareal(lambda t, y: -y, y0, t, coarse=pint.Euler(1), fine=pint.RK4(20))
        >>> bool(torch.allclose(sol.ys[-1], torch.exp(-t[-1:]), atol=1e-6))
        True
    """
    stop = Tolerance() if stop is None else stop
    transport = Local() if transport is None else transport
    error = None
    try:
        max_iters = check_options(y0, t, tol=tol, max_iters=max_iters, norm=norm, stop=stop,
                                  independent=independent, limit=len(t) - 1, callback=callback)
        check_propagators(coarse=coarse, fine=fine)
        if transport.distributed and (callback is not None or store_iterates):
            raise ValueError("callback and store_iterates are not supported over processes")
    except (TypeError, ValueError) as caught:  # raised on every process by the agreement
        error = caught
    transport.agree(y0, t, (float(tol) if error is None else tol, max_iters, norm is None,
                            independent, repr(stop)), error)
    states = y0 if independent else y0.unsqueeze(0)
    lo, hi = transport.owned(len(t) - 1)
    engine = Engine(vectorize(f, vectorized), with_index=independent, max_batch=max_batch)
    iterations = Iterations(
        states, hi - lo + 1, tol=float(tol), stop=stop, norm=norm, max_iters=max_iters,  # type: ignore[arg-type]
        exact_after=len(t) - 1, callback=callback, store_iterates=store_iterates,
        squeeze=not independent, advice=INSTABILITY_ADVICE, verify=engine.verify,
    )
    return Parareal(engine, iterations, states, t, coarse, fine, pipelined, transport).run()


def predicted_depth(
    n_slices: int,
    iterations: int,
    coarse_depth: int | Sequence[int],
    fine_depth: int | Sequence[int],
    pipelined: bool,
) -> int:
    """The depth (``sequential_nfe``) of ``iterations`` Parareal iterations.

    With ``c`` the coarse depth and ``f`` the fine depth of a slice (one int for all slices,
    or one per slice), the time at which boundary ``n`` of iteration ``k`` is ready is
    ``t(n, k)``, with ``t(0, k) = 0`` and ``t(n + 1, 0) = t(n, 0) + c``. The pipelined schedule
    starts a fine propagation as soon as its initial state exists::

        t(k + 1, k + 1) = t(k, k) + f
        t(n + 1, k + 1) = max(t(n, k + 1) + c, t(n, k) + f)   for n > k

    (DESIGN 2.4 with ``f = m c``). The batched schedule starts the fine propagations of
    iteration ``k + 1`` as one batch once iteration ``k`` is complete, at ``T(k) = t(N, k)``;
    the batch ends with its deepest slice: ``t(k + 1, k + 1) = T(k) + max f`` and
    ``t(n + 1, k + 1) = t(n, k + 1) + c``. The depth is ``t(N, iterations)``.
    """
    c = [coarse_depth] * n_slices if isinstance(coarse_depth, int) else list(coarse_depth)
    f = [fine_depth] * n_slices if isinstance(fine_depth, int) else list(fine_depth)
    ready = [0] * (n_slices + 1)
    for n in range(n_slices):
        ready[n + 1] = ready[n] + c[n]
    for k in range(iterations):
        new = list(ready)
        if pipelined:
            new[k + 1] = ready[k] + f[k]
            for n in range(k + 1, n_slices):
                new[n + 1] = max(new[n] + c[n], ready[n] + f[n])
        else:
            new[k + 1] = ready[n_slices] + max(f[k:])
            for n in range(k + 1, n_slices):
                new[n + 1] = new[n] + c[n]
        ready = new
    return ready[n_slices]


Outputs = dict[tuple[int, int], Tensor]


def boundary_update(m: int, k: int, coarse_out: Outputs, fine_out: Outputs) -> Tensor | None:
    """Boundary ``m`` of iteration ``k`` from the propagations' outputs, keyed by (slice,
    iteration), or ``None`` while one of its inputs is missing:
    ``U[m]^k = G(U[m-1]^k) + F(U[m-1]^(k-1)) - G(U[m-1]^(k-1))``; the first new boundary of an
    iteration (``m = k``) is the fine solution itself, exactly, and iteration 0 is the coarse
    sweep."""
    n = m - 1
    if k == 0:
        return coarse_out.get((n, 0))
    old_fine = fine_out.get((n, k - 1))
    if old_fine is None:
        return None
    if n == k - 1:
        return old_fine
    new_coarse, old_coarse = coarse_out.get((n, k)), coarse_out.get((n, k - 1))
    if new_coarse is None or old_coarse is None:
        return None
    return new_coarse + (old_fine - old_coarse)


class Parareal:
    """One process's share of a Parareal solve: the boundaries ``lo..hi`` its transport gives
    it (all of them in a single process), driven by its events."""

    def __init__(
        self, engine: Engine, iterations: Iterations, y0: Tensor, t: Tensor,
        coarse: Propagator, fine: Propagator, pipelined: bool, transport: Transport,
    ) -> None:
        self.engine, self.it, self.t = engine, iterations, t
        self.coarse, self.fine, self.pipelined, self.transport = coarse, fine, pipelined, transport
        self.n = len(t) - 1
        self.lo, self.hi = transport.owned(self.n)
        self.batch = y0.shape[0]
        self.tables: dict[int, Tensor] = {0: iterations.result.clone()}  # k -> boundaries lo..hi
        self.coarse_out: Outputs = {}  # (slice, iteration) -> G(U[n]^k), all problems
        self.fine_out: Outputs = {}  # (slice, iteration) -> F(U[n]^k), all problems
        self.formed: set[tuple[int, int]] = set()
        self.complete: set[int] = set()  # iterations whose boundaries lo..hi are all formed
        self.formed_at: dict[int, int] = {}  # k -> depth at which boundary hi was formed
        # The depth of each value: a boundary's is the largest of its inputs', a propagation's
        # output's is its start's plus its evaluations. In one process it equals the engine's
        # round count; over processes it is the same number, however the ranks' rounds
        # interleave (a rank's own rounds of other work are no dependency).
        self.done_at: dict[tuple[str, int, int], int] = {}  # (label, slice, iteration) -> depth
        self.decided = -1  # the last iteration whose convergence test is known
        self.pending: int | None = None  # the iteration whose residuals are being gathered

    def run(self) -> Solution:
        """The solve, by :func:`pint.algorithms.driver.drive`."""
        return drive(self, self.engine, self.it, self.transport)

    def begin(self) -> None:
        """The coarse sweep from boundary 0."""
        if self.lo == 0:
            self.form(0, 0, self.tables[0][0], 0)

    def step(self) -> bool:
        """Handle what arrived, else run a round, else wait for a message."""
        event = self.transport.poll()
        if event is not None:
            self.on(event)
        elif self.engine.live:
            self.engine.step()
        else:
            self.on(self.transport.wait(self.awaited()))
        return True

    def end(self) -> Outcome:
        """The result and the evaluations of all processes, the depth, the predicted depth."""
        k = int(self.it.sample_iterations.max())
        closed = self.transport.close(self.it.result[1 if self.lo > 0 else 0:],
                                      dict(self.engine.rows), self.formed_at.get(k, 0))
        ys = closed.parts[0] if len(closed.parts) == 1 else torch.cat(closed.parts)
        c_depth, f_depth = slice_depths(self.coarse, self.t), slice_depths(self.fine, self.t)
        predicted = None
        if c_depth is not None and f_depth is not None:
            predicted = predicted_depth(self.n, k, c_depth, f_depth, self.pipelined)
        # in one process the engine's rounds are the depth; over several, the graph's
        depth = closed.depth if self.transport.distributed else None
        return Outcome(ys, closed.evaluations, depth, predicted)

    def on(self, event: Event) -> None:
        """A boundary arrived from the previous process, or an iteration's residual shares
        were gathered."""
        if self.it.done:  # the solve is over here: what other processes still send is moot
            return
        if isinstance(event, Gathered):
            self.decide(event.key, self.reduce(event.values))
        else:
            self.receive(event.key, event.value.to(self.t.device), event.clock)

    def awaited(self) -> str:
        """What this process waits for when it has nothing to compute."""
        waits = [] if self.lo == 0 else [f"boundary {self.lo} from the previous process"]
        if self.pending is not None:
            waits.append(f"the residuals of iteration {self.pending}")
        return " or ".join(waits)

    # -- the dependency graph ------------------------------------------------------------
    def table(self, k: int) -> Tensor:
        """The local boundaries of iteration ``k`` (after iteration ``hi`` they are exact)."""
        return self.tables[min(k, self.hi)]

    def receive(self, k: int, value: Tensor, clock: int) -> None:
        """Boundary ``lo`` of iteration ``k``, computed at depth ``clock`` by the previous
        process, arrived."""
        self.form(self.lo, k, self.it.take(value), clock)

    def form(self, m: int, k: int, value: Tensor, clock: int) -> None:
        """Boundary ``m`` of iteration ``k``, of depth ``clock``, is known for the active
        problems."""
        members = self.it.members(value.device)

        def fail() -> None:
            bad = (~torch.isfinite(value.reshape(len(value), -1))).any(1).nonzero().flatten()
            problems = members[bad].tolist()
            raise NonFiniteError(
                f"the state at slice boundary {m} became non-finite in iteration {k}",
                Location("state", k, m, problems[0]), problems,
            )

        self.engine.expect_finite(value, fail)
        table = self.tables.get(k)
        if table is None:  # first boundary of iteration k here: carry the exact prefix over
            table = self.tables[k] = self.tables[k - 1].clone()
        if self.it.active is None:
            table[m - self.lo] = value
        else:
            table[m - self.lo].index_copy_(0, self.it.active, value)
        self.formed.add((m, k))
        if k > 0:  # the inputs of this boundary are used up
            self.coarse_out.pop((m - 1, k - 1), None)
            self.fine_out.pop((m - 1, k - 1), None)
        if m < self.hi:
            self.start("coarse", [m], k, clock)
            if self.pipelined and k < self.it.max_iters:
                self.start("fine", [m], k, clock)
            return
        self.formed_at[k] = clock
        if self.hi < self.n:
            self.transport.send(k, table[-1], clock)
        self.complete.add(k)
        self.test_next()

    def start(self, label: str, slices: list[int], k: int, clock: int) -> None:
        """Propagate the active problems across ``slices`` from iteration ``k``'s boundaries,
        known at depth ``clock``."""
        samples = self.it.active
        table = self.tables[k]
        y0 = torch.cat([self.it.take(table[n - self.lo]) for n in slices])
        rows = len(y0) // len(slices)
        points = torch.tensor(slices).repeat_interleave(rows)
        members = self.it.members(y0.device)
        began = self.engine.rounds

        def on_done(y1: Tensor) -> None:
            outputs = self.coarse_out if label == "coarse" else self.fine_out
            done = clock + self.engine.rounds - began  # one evaluation per round since start
            for n, part in zip(slices, y1.split(rows), strict=True):
                if samples is not None:
                    part = part.new_zeros((self.batch, *part.shape[1:])).index_copy_(
                        0, samples, part)
                outputs[n, k] = part
                self.done_at[label, n, k] = done
            for n in slices:
                if label == "coarse":
                    self.try_form(n + 1, k)
                self.try_form(n + 1, k + 1)

        propagator = self.coarse if label == "coarse" else self.fine
        self.engine.start(Task(
            propagation(propagator, self.t, points, points + 1, y0), on_done, label=label,
            iteration=k, points=points, problems=members.repeat(len(slices)),
        ))

    def try_form(self, m: int, k: int) -> None:
        """Form boundary ``m`` of iteration ``k`` if all its inputs are known."""
        if self.it.done or k > self.it.max_iters or m < k or (m, k) in self.formed:
            return
        value = boundary_update(m, k, self.coarse_out, self.fine_out)
        if value is not None:
            n, at = m - 1, self.done_at
            inputs = ([("coarse", n, 0)] if k == 0 else [("fine", n, k - 1)] if n == k - 1
                      else [("coarse", n, k), ("fine", n, k - 1), ("coarse", n, k - 1)])
            self.form(m, k, self.it.take(value), max(at[key] for key in inputs))

    # -- the convergence test --------------------------------------------------------------
    def test_next(self) -> None:
        """Start the test of the next undecided iteration once it is complete here."""
        k = self.decided + 1
        if self.it.done or self.pending is not None or k > self.it.max_iters:
            return
        if k not in self.complete and not (self.hi in self.complete and k > self.hi):
            return
        if k == 0:  # the coarse sweep has no residual
            self.decide(0, None)
            return
        own = 1 if self.lo > 0 else 0  # boundary lo belongs to the previous process
        change = self.it.take((self.table(k) - self.table(k - 1))[own:], dim=1)
        self.pending = k
        # this process's share: the largest change per problem, or (a custom norm needs all
        # of it) the change itself
        self.transport.post(k, change if self.it.norm is not None else largest(change).to(
            "cpu", torch.float64))
        event = self.transport.poll()  # in one process: the residuals, at once
        if event is not None:
            self.on(event)

    def reduce(self, shares: list[Tensor]) -> Tensor:
        """The residuals from every process's share (in process order): the largest of the
        largest changes, or the norm of the whole change. The shares do not overlap, so this
        is exactly the single process's residual."""
        if self.it.norm is None:
            return self.it.checked(shares[0] if len(shares) == 1 else
                                   torch.stack(shares).amax(0))
        change = shares[0] if len(shares) == 1 else torch.cat(shares)
        return self.it.residual(change.to(self.t.device))

    def decide(self, k: int, residual: Tensor | None) -> None:
        """The residuals of iteration ``k`` are known: stop or go on."""
        self.pending = None
        self.decided = k
        self.it.decide(k, residual, self.it.take(self.table(k), dim=1))
        for old in [j for j in self.tables if j < min(k, self.hi)]:
            del self.tables[old]
        if self.it.done:
            return
        if not self.pipelined and max(k, self.lo) < self.hi:
            self.start("fine", list(range(max(k, self.lo), self.hi)), k, self.engine.rounds)
        self.test_next()
