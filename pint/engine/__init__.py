"""The engine: many propagations at once, one batched vector-field call per round.

Every algorithm in pint is written over this engine. A *propagation* is a coroutine that
yields evaluation :class:`Request` s and receives ``f(t, y)`` for each (see
:mod:`pint.propagators`). A :class:`Task` wraps one propagation with a free-form label
(``"coarse"``, ``"fine"``, ``"picard"``, ...), where its rows sit (the iteration, the grid
point each row starts from, the problem each row belongs to) and what to do with its result.
:class:`Engine` runs every live task in lock step: each round gathers the pending request of
every task and evaluates them in ONE call of the batched vector field (chunked into calls of at
most ``max_batch`` rows when that is set), then hands each task its rows. A task started during
a round joins the next one, so the round in which a value becomes available is exactly its depth
on the critical path: :attr:`Engine.rounds` *is* the solve's ``sequential_nfe``.

A round never waits for the device: the finiteness of its evaluations is tested on the device
and read back, with every other pending check, at :meth:`Engine.verify` (the algorithms call it
where they read a value anyway: a residual, the end of the solve). On a GPU the host can then
queue the next round while the device still computes this one.

Example::

    engine = Engine(f)
    engine.start(Task(pint.RK4(10).propagate(t0, t1, y0), on_done=results.append, label="fine"))
    engine.run()
    engine.rounds, engine.rows["fine"]
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from numbers import Integral
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ..transport import Transport

#: The most finiteness checks an engine keeps unread; one more reads them all (a sync).
MAX_PENDING_CHECKS = 64

__all__ = ["Engine", "Location", "NonFiniteError", "Propagation", "Request", "Task", "VectorField"]


class Request(NamedTuple):
    """One evaluation a propagation asks for: ``f(t, y)`` for ``R`` rows.

    Attributes:
        t: the times, shape ``(R,)``.
        y: the states, shape ``(R, *state_shape)``.
        rows: ``None`` when the request is for every row of the propagation, else the indices
            (1-D) of the propagation's rows these are, e.g. when some rows need fewer steps.
    """

    t: Tensor
    y: Tensor
    rows: Tensor | None = None


Propagation = Generator[Request, Tensor, Tensor]
"""A running propagation: yields requests, receives ``f(t, y)``, returns the end states."""

VectorField = Callable[..., Tensor]
"""The batched vector field ``f(t, y)`` (or ``f(t, y, problems)``) the engine calls."""


@dataclass(frozen=True)
class Location:
    """Where in a solve something happened, in the algorithm's own terms.

    Attributes:
        label: the task's label (e.g. ``"coarse"``, ``"fine"``, ``"picard"``), or ``"state"``
            for a state the algorithm formed itself.
        iteration: the algorithm's iteration.
        point: the grid point (time slice, step) the row's propagation started from.
        problem: the independent problem (sample) the row belongs to.
        evaluation: the evaluation within the propagation (0 is its first), ``None`` for a state.
    """

    label: str
    iteration: int
    point: int
    problem: int
    evaluation: int | None = None

    def __str__(self) -> str:
        what = "the state" if self.evaluation is None else (
            f"evaluation {self.evaluation} of the {self.label} propagation from")
        return f"{what} point {self.point} in iteration {self.iteration} (problem {self.problem})"


class NonFiniteError(FloatingPointError, ValueError):
    """A vector-field evaluation or a state became NaN or infinite.

    Attributes:
        location: the first non-finite row, a :class:`Location`.
        problems: every problem (sample) with a non-finite row in that evaluation, sorted.
    """

    def __init__(self, message: str, location: Location, problems: list[int] | None = None):
        super().__init__(message)
        self.location = location
        self.problems = [location.problem] if problems is None else problems


@dataclass(eq=False)
class Task:
    """A running propagation and what to do when it ends.

    Args:
        propagation: the coroutine (e.g. ``propagator.propagate(t0, t1, y0)``).
        on_done: called with the propagation's return value (the end states).
        label: names the kind of work; the engine counts rows per label.
        iteration: the algorithm's iteration, for error locations.
        points: the grid point of each row (length ``R``), for error locations; default all 0.
        problems: the problem index of each row, handed to ``f`` when the engine was built
            ``with_index=True``; default ``0, 1, ..., R - 1``.
    """

    propagation: Propagation
    on_done: Callable[[Tensor], None]
    label: str = "f"
    iteration: int = 0
    points: Tensor | None = None
    problems: Tensor | None = None
    request: Request | None = field(default=None, repr=False)
    evaluations: int = 0

    def _rows(self, values: Tensor | None, n: int) -> Tensor:
        """``values`` (one per row of the propagation) at the rows of the pending request."""
        assert self.request is not None
        return _rows(self.request, values, n)


def _rows(request: Request, values: Tensor | None, n: int) -> Tensor:
    """``values`` (one per row of a propagation) at the ``n`` rows of ``request``."""
    if values is None:
        return torch.arange(n) if request.rows is None else request.rows
    if request.rows is None:
        return values
    return values[request.rows.to(values.device, non_blocking=True)]


def _request(value: object) -> Request:
    if isinstance(value, Request):
        return value
    if isinstance(value, tuple) and len(value) in (2, 3):
        return Request(*value)
    raise TypeError(f"a propagation must yield pint.engine.Request(t, y[, rows]); "
                    f"got {type(value).__name__}")


_Round = tuple[list["Task"], list[int], list[int], list[Request]]
"""What locates a round's rows: its tasks, their row counts, evaluations and requests."""


class Engine:
    """Drives tasks in lock step, one batched call of ``f`` per round.

    Args:
        f: the batched vector field: ``f(t, y)`` with ``t`` of shape ``(R,)`` and ``y`` of shape
            ``(R, *state_shape)``, returning ``dy/dt`` like ``y``; with ``with_index=True`` it
            is called as ``f(t, y, problems)`` with each row's problem index.
        with_index: pass each row's problem index to ``f``.
        check_finite: raise :class:`NonFiniteError` when ``f`` returns NaN or infinity. The
            check runs on the device and is read back at the next :meth:`verify`, which the
            algorithms call where they read a value anyway (a residual, the end of the solve),
            so a round costs no host-device synchronisation of its own.
        max_batch: the most rows in one call of ``f``; a round with more rows is split into
            several calls (same depth: it is still one round). ``None``: no limit.
        transport: the processes that share each round's rows (a
            :class:`pint.transport.Transport`; ``None`` or a local one: this process
            evaluates them all). Every process runs the same tasks; each evaluates its share
            (:meth:`~pint.transport.Transport.share`), checks it at once for non-finite values
            (so the process that computed a bad row names it, and the others learn that it
            failed), and gathers the others' (:meth:`~pint.transport.Transport.gather`). So
            every process advances its tasks with the same values: the rounds, the rows and
            the results are the single process's, bit for bit when ``f`` computes each row
            independently of the rows beside it.

    Attributes:
        rounds: rounds run so far (the depth, ``sequential_nfe``).
        calls: calls of ``f`` so far (more than ``rounds`` when ``max_batch`` splits rounds;
            over a transport, this process's calls).
        rows: rows evaluated so far, per task label (over a transport, by all processes).
        live: the tasks waiting for an evaluation.
    """

    def __init__(self, f: VectorField, *, with_index: bool = False, check_finite: bool = True,
                 max_batch: int | None = None, transport: Transport | None = None) -> None:
        if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(
                max_batch, Integral) or max_batch < 1):
            raise ValueError(f"max_batch must be a positive integer or None, got {max_batch!r}")
        self.f = f
        self.with_index = with_index
        self.check_finite = check_finite
        self.max_batch = None if max_batch is None else int(max_batch)
        self.transport = transport if transport is not None and transport.distributed else None
        self.rounds = 0
        self.calls = 0
        self.rows: Counter[str] = Counter()
        self.live: list[Task] = []
        self._finished: deque[tuple[Task, Tensor]] = deque()
        self._draining = False
        self._checked = False
        self._checks: list[tuple[Tensor, Callable[[], None] | _Round]] = []  # (row sums, why)

    # -- tasks -------------------------------------------------------------------------
    def start(self, task: Task) -> None:
        """Start a task; it evaluates for the first time in the next round.

        A propagation that needs no evaluation completes at once: its ``on_done`` runs before
        ``start`` returns (or, when ``start`` is called from another task's ``on_done``, right
        after that one, so chains of such tasks do not recurse).
        """
        try:
            task.request = _request(next(task.propagation))
        except StopIteration as stop:
            self._finished.append((task, stop.value))
            self._drain()
            return
        self.live.append(task)

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Run rounds while any task is live (and, if given, until ``until()`` is true)."""
        while self.live and not (until is not None and until()):
            self.step()

    def close(self) -> None:
        """Abandon all live tasks (their work is no longer needed)."""
        for task in self.live:
            task.propagation.close()
        self.live.clear()

    def expect_finite(self, value: Tensor, fail: Callable[[], None]) -> None:
        """Check that ``value`` is finite at the next :meth:`verify`; ``fail`` raises if not.

        The test runs on ``value``'s device now; only its one-element result is read back later,
        with every other pending check, so checking costs no synchronisation per round.
        """
        self._defer(_sums(value.reshape(1, -1)), fail)

    def verify(self) -> None:
        """Read the pending finiteness checks (one transfer) and raise for the first failed one."""
        if not self._checks:
            return
        checks, self._checks = self._checks, []
        sums = [total for total, _ in checks]
        if bool(torch.isfinite(sums[0] if len(sums) == 1 else torch.cat(sums)).all()):
            return
        for total, fail in checks:
            ok = torch.isfinite(total).cpu()
            if not bool(ok.all()):
                self.close()
                fail() if callable(fail) else self._fail_rows(ok, *fail)

    def _drain(self) -> None:
        """Run the completions of finished tasks, first in, first out; on an error, a pending
        non-finite evaluation (its cause, most likely) is raised instead, chained to it."""
        if self._draining:
            return
        self._draining = True
        try:
            while self._finished:
                task, value = self._finished.popleft()
                task.on_done(value)
        except Exception:
            self.verify()
            raise
        finally:
            self._draining = False

    # -- one round ---------------------------------------------------------------------
    def step(self) -> None:
        """Run one round: one batched evaluation, then advance every live task."""
        live = self.live
        if not live:
            raise RuntimeError("no live task to advance")
        requests = [task.request for task in live]
        if len(live) == 1:
            request = requests[0]
            t, y = request.t, request.y  # type: ignore[union-attr]
            sizes = [y.shape[0]]
        else:
            sizes = [request.y.shape[0] for request in requests]  # type: ignore[union-attr]
            t = torch.cat([request.t for request in requests])  # type: ignore[union-attr]
            y = torch.cat([request.y for request in requests])  # type: ignore[union-attr]
        index = None
        if self.with_index:
            index = _cat([task._rows(task.problems, size) for task, size in
                          zip(live, sizes, strict=True)]).to(y.device, non_blocking=True)
        where = (live, sizes, [task.evaluations for task in live], requests)
        out = self._evaluate(t, y, index) if self.transport is None else self._share(
            t, y, index, where)
        self.rounds += 1
        if self.check_finite and self.transport is None:  # one flag per row, read at verify()
            rows = out if out.ndim == 2 else out.reshape(out.shape[0], -1)
            self._defer(_sums(rows), where)
        parts = out.split(sizes) if len(sizes) > 1 else (out,)
        still_live = []
        try:
            for task, part, size in zip(live, parts, sizes, strict=True):
                self.rows[task.label] += size
                task.evaluations += 1
                try:
                    task.request = _request(task.propagation.send(part))
                    still_live.append(task)
                except StopIteration as stop:
                    self._finished.append((task, stop.value))
        except Exception:
            self.verify()
            raise
        self.live = still_live
        self._drain()

    def _evaluate(self, t: Tensor, y: Tensor, index: Tensor | None) -> Tensor:
        """``f`` on all rows, in chunks of at most ``max_batch`` rows."""
        size = self.max_batch
        if size is None or y.shape[0] <= size:
            out = self.f(t, y) if index is None else self.f(t, y, index)
            self.calls += 1
            if not self._checked or not isinstance(out, Tensor) or out.shape != y.shape:
                _check_output(out, y)
                self._checked = True
            return out
        outs = []
        for start in range(0, y.shape[0], size):
            chunk = slice(start, start + size)
            outs.append(self._evaluate(t[chunk], y[chunk],
                                       None if index is None else index[chunk]))
        return torch.cat(outs)

    def _share(self, t: Tensor, y: Tensor, index: Tensor | None, where: _Round) -> Tensor:
        """``f`` on this process's share of the rows, checked now; every process's rows."""
        assert self.transport is not None
        lo, hi = self.transport.share(y.shape[0])
        part = y[:0]
        if hi > lo:
            part = self._evaluate(t[lo:hi], y[lo:hi], None if index is None else index[lo:hi])
            if self.check_finite:  # the gather reads the rows back anyway
                good = torch.isfinite(_sums(part.reshape(hi - lo, -1))).cpu()
                if not bool(good.all()):
                    whole = torch.ones(y.shape[0], dtype=torch.bool)
                    whole[lo:hi] = good
                    try:
                        self._fail_rows(whole, *where)
                    finally:  # after: the round's tasks are those live now
                        self.close()
        return self.transport.gather(part)

    def _fail_rows(self, good: Tensor, live: list[Task], sizes: list[int],
                   evaluations: list[int], requests: list[Request]) -> None:
        """A round's evaluations were not all finite: name its first bad row and every problem
        with one."""
        first: Location | None = None
        problems: set[int] = set()
        for task, size, evaluation, request, ok in zip(live, sizes, evaluations, requests,
                                                       good.split(sizes), strict=True):
            bad = ~ok
            if not bool(bad.any()):
                continue
            owners = _rows(request, task.problems, size).cpu()
            problems.update(owners[bad].tolist())
            if first is None:
                row = int(bad.nonzero()[0])
                points = _rows(request, task.points, size)
                first = Location(task.label, task.iteration,
                                 0 if task.points is None else int(points[row]),
                                 int(owners[row]), evaluation)
        assert first is not None
        raise NonFiniteError(f"f returned a non-finite value in {first}", first, sorted(problems))

    def _defer(self, sums: Tensor, fail: Callable[[], None] | _Round) -> None:
        self._checks.append((sums, fail))
        if len(self._checks) >= MAX_PENDING_CHECKS:
            self.verify()


def _check_output(out: object, y: Tensor) -> None:
    """The vector field must return a tensor exactly like its input states."""
    if not isinstance(out, Tensor):
        raise TypeError(f"the vector field f must return a tensor like y (shape "
                        f"{tuple(y.shape)}, dtype {y.dtype}); it returned {type(out).__name__}")
    if out.shape != y.shape:
        raise ValueError(f"the vector field f returned shape {tuple(out.shape)} for y of shape "
                         f"{tuple(y.shape)}; it must return dy/dt with exactly the shape of y "
                         f"(no broadcasting)")
    if out.dtype != y.dtype:
        raise TypeError(f"the vector field f returned dtype {out.dtype} for y of dtype {y.dtype};"
                        f" it must return dy/dt in the dtype of y")
    if out.device != y.device:
        raise ValueError(f"the vector field f returned a tensor on {out.device} for y on "
                         f"{y.device}; it must return dy/dt on the device of y")


def _sums(rows: Tensor) -> Tensor:
    """The sum of each row of ``rows`` (``(R, d)``), in float64: a NaN or an infinity in the
    row makes it non-finite, and half- and single-precision entries cannot overflow it, so
    it is finite exactly when the row is; float64 entries near the largest float64 (1e308)
    can overflow it, and such a row counts as non-finite (it has diverged). One reduction per
    round; the finiteness of all pending rounds is tested at once at :meth:`Engine.verify`."""
    return rows.sum(1, dtype=torch.float64)


def _cat(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)
