"""MGRIT: multigrid reduction in time, the nonlinear (FAS) multilevel solver.

The fine grid ``t[0], ..., t[N]`` and a one-step propagator ``Phi`` (one call of
``propagator.propagate`` per interval) define the serial solution as the forward
substitution of the space-time system ``u[i] - Phi(u[i-1]) = g[i]`` (``g = 0`` on the fine
grid). MGRIT (Falgout et al., SIAM J. Sci. Comput. 2014; nonlinear FAS form: Falgout,
Manteuffel, O'Neill, Schroder, SIAM J. Sci. Comput. 2017) solves it iteratively with a
hierarchy of time grids: every ``m``-th point of a level is a *C-point* and the next, coarser
level, the C-points alone, uses a propagator over the long coarse step. One iteration is a
cycle over the levels:

- **F-relaxation**: from every C-point, propagate through the F-points up to the next C-point;
  the intervals are independent, so all of them go to ``f`` in ONE batched task per sweep
  (``m - 1`` propagator steps deep, whatever the number of intervals).
- **C-relaxation**: every C-point takes one step from the F-point before it (one batched step).
  F-relaxation is ``F``; FCF-relaxation is ``F`` then ``C`` then ``F``.
- **FAS restriction** (injection): the coarse level starts from ``v = u`` at the C-points with
  the right-hand side ``g_c[i] = r[c_i] + v[i] - Phi_c(v[i-1])``, where ``r`` is the residual of
  the finer level at its C-points.
- **the coarse problem**: a cycle on the next level, or, on the coarsest level, the serial
  forward solve ``u[i] = g[i] + Phi_c(u[i-1])``.
- **correction** ``u[c_i] += u_c[i] - v[i]`` and a final F-relaxation (ideal interpolation).

With two levels and F-relaxation this *is* Parareal with the coarse propagator ``G = Phi_c``
(one step over the coarse interval) and the fine one ``F = m`` steps of ``Phi``: the
corrected C-points are ``U[i] = G(U_new[i-1]) + F(U_old[i-1]) - G(U_old[i-1])``.

The initial guess is the *nested iteration* (PyMGRIT's default): a serial solve on the coarsest
level, injected to the C-points of each finer level and improved there by one V-cycle, then an
F-relaxation of the fine level (iteration 0; with two levels, Parareal's coarse sweep). The
residual is PyMGRIT's: ``r[i] = Phi(u[i-1]) - u[i]`` at the C-points of the fine level (zero at
the F-points after the final F-relaxation), measured by default by its 2-norm over all points
and components, so ``tol`` means what PyMGRIT's ``tol`` means and the iteration counts compare.

Every evaluation of ``f`` goes through :class:`pint.engine.Engine`: the rounds it counts are
the solve's depth. A relaxation sweep is one task over all intervals, the FAS restriction's
two propagations share their round, the coarsest solve is serial. The fine step into each
C-point, ``Phi(u[c - 1])``, is computed once and reused until an F-relaxation changes
``u[c - 1]`` (by the residual check, the next C-relaxation and the restriction).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral

import torch
from torch import Tensor

from ..engine import Engine, Location, NonFiniteError, Propagation, Request, Task, VectorField
from ..propagators import Propagator
from ..solution import Solution
from ..transport import Local, Transport
from .checks import check_options, check_propagators, signature
from .driver import (
    Callback,
    Iterations,
    Norm,
    Outcome,
    Tolerance,
    drive,
    scalar_norm,
    vectorize,
)

__all__ = ["Cycle", "FCFRelaxation", "FCycle", "FRelaxation", "Relaxation", "VCycle", "mgrit"]



# ----------------------------------------------------------------------------- strategies
class Relaxation:
    """How MGRIT relaxes a level before it restricts: ``F`` then ``cf_sweeps`` times ``CF``.

    Use :class:`FRelaxation` or :class:`FCFRelaxation`.
    """

    cf_sweeps: int = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FRelaxation(Relaxation):
    """F-relaxation: propagate from each C-point through its F-points. With two levels,
    MGRIT with F-relaxation is Parareal."""

    cf_sweeps = 0


class FCFRelaxation(Relaxation):
    """FCF-relaxation: F, then C (each C-point steps from the F-point before it), then F.

    Args:
        sweeps: the number of CF pairs after the first F (``1``: FCF; ``2``: FCFCF, ...).
    """

    def __init__(self, sweeps: int = 1) -> None:
        if isinstance(sweeps, bool) or not isinstance(sweeps, Integral) or sweeps < 1:
            raise ValueError(f"sweeps must be a positive integer, got {sweeps!r}")
        self.cf_sweeps = int(sweeps)

    def __repr__(self) -> str:
        return f"FCFRelaxation(sweeps={self.cf_sweeps})"


class Cycle:
    """The order in which MGRIT visits the levels. Use :class:`VCycle` or :class:`FCycle`."""

    revisit: bool = False
    """After a level's correction and F-relaxation, visit it once more with a V-cycle."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class VCycle(Cycle):
    """The V-cycle: relax and restrict down to the coarsest level, correct on the way up."""

    revisit = False


class FCycle(Cycle):
    """The F-cycle: as the V-cycle, but every level below the finest is visited again by a
    V-cycle after its correction (PyMGRIT's ``cycle_type='F'``)."""

    revisit = True


# ----------------------------------------------------------------------------- entry point
def mgrit(
    f: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    t: Tensor,
    *,
    propagator: Propagator,
    coarsening: int | Sequence[int] = 2,
    levels: int | None = None,
    relaxation: Relaxation | None = None,
    cycle: Cycle | None = None,
    tol: float = 1e-7,
    max_iters: int | None = None,
    norm: Norm | None = None,
    vectorized: bool = False,
    coarse_propagator: Propagator | Sequence[Propagator] | None = None,
    store_iterates: bool = False,
    callback: Callback | None = None,
    transport: Transport | None = None,
) -> Solution:
    """Solve ``dy/dt = f(t, y)``, ``y(t[0]) = y0``, by MGRIT iterations (nonlinear FAS).

    Args:
        f: the vector field in torchdiffeq's convention, ``f(t, y) -> dy/dt``.
        y0: the initial state, any shape.
        t: the fine time grid, 1-D with at least 2 points, strictly monotone, same dtype and
            device as ``y0``. MGRIT converges to the serial solve that takes one
            ``propagator`` step per interval of ``t``.
        propagator: the fine-level propagator ``Phi``, applied once per interval of ``t``
            (e.g. ``pint.RK4(1)``, or an implicit one for stiff problems).
        coarsening: the coarsening factor ``m`` (an int >= 2, the same for every level), or
            one factor per coarse level (``levels - 1`` ints). Level ``l + 1`` keeps every
            ``m``-th point of level ``l`` (its C-points), starting at ``t[0]``; when ``m``
            does not divide a level's interval count, the points after its last C-point are
            F-points of the last interval, as in PyMGRIT.
        levels: the number of time grids, at least 2. Default: 2, or ``len(coarsening) + 1``
            when ``coarsening`` is a list.
        relaxation: :class:`FRelaxation` or :class:`FCFRelaxation` (default: FCF, PyMGRIT's
            default).
        cycle: :class:`VCycle` (default) or :class:`FCycle`.
        tol: stop when the residual (see ``norm``) after an iteration is at most ``tol``.
        max_iters: the most iterations after the initial guess. Default: the number of
            intervals of the second level, after which the result is the serial fine solve
            (each iteration makes at least one more C-point exact).
        norm: maps the residual of the whole fine grid, shape ``(N + 1, *y0.shape)``, to a
            scalar. The residual is ``Phi(u[i-1]) - u[i]`` at the C-points and zero elsewhere.
            Default: its 2-norm over all points and components (PyMGRIT's measure).
        vectorized: ``False``: ``f`` is written for one state and pint vectorizes it with
            :func:`torch.func.vmap`. ``True``: ``f`` takes ``t`` of shape ``(R,)`` and ``y`` of
            shape ``(R, *y0.shape)``.
        coarse_propagator: the propagator on the coarse levels, applied once per coarse
            interval; one for all coarse levels or one per coarse level. Default:
            ``propagator`` itself, i.e. one step of the same method over the coarse interval.
        store_iterates: keep the states at all points after every iteration (0 is the initial
            guess) in :attr:`Solution.iterates`.
        callback: called after each iteration ``k`` (0: the initial guess) as
            ``callback(k, ys, residual)`` with a copy of the states at all points of ``t`` and
            the residual (a 0-d tensor).
        transport: where the rows of each round are evaluated: :class:`pint.transport.Local`
            (default) or :class:`pint.transport.Distributed`, over whose ranks the engine
            shares out every round's rows (a relaxation's intervals) and gathers the results,
            every rank then applying the same update (see :func:`pint.distributed.mgrit`).

    Returns:
        A :class:`pint.Solution`: ``ys`` at every point of ``t``, ``iterations`` after the
        initial guess, ``converged`` (the residual met ``tol``), ``residuals`` (one per
        iteration, iteration 0's goes to the callback only) and :class:`pint.Stats`, whose
        ``fine_nfe`` counts the evaluations on the fine level and ``coarse_nfe`` those on the
        coarse levels.

    Raises:
        TypeError: ``y0``/``t`` not floating tensors; a propagator, relaxation or cycle of the
            wrong kind; ``norm`` not callable.
        ValueError: inconsistent shapes or options, e.g. a level with no interval left.
        pint.engine.NonFiniteError: ``f`` returned a non-finite value, or a state became
            non-finite (the message names the level, the point of ``t`` and the iteration).

    Example:
        >>> import torch, pint
        >>> t = torch.linspace(0, 1, 17, dtype=torch.float64)
        >>> y0 = torch.tensor([1.0], dtype=torch.float64)
        >>> sol = pint.mgrit(lambda t, y: -y, y0, t, propagator=pint.RK4(1), coarsening=4,
        ...                  relaxation=pint.FRelaxation(), tol=1e-12)
        >>> exact = pint.serial(lambda t, y: -y, y0, t, method=pint.RK4(1)).ys
        >>> bool(torch.allclose(sol.ys, exact, atol=1e-12)), sol.converged
        (True, True)
    """
    transport = Local() if transport is None else transport
    error = None
    try:
        factors = _factors(coarsening, levels)
        grids = _grid_sizes(len(t) - 1 if isinstance(t, Tensor) and t.ndim == 1 else 0,
                            factors, coarsening, levels)
        max_iters = check_options(y0, t, tol=tol, max_iters=max_iters, norm=norm,
                                  stop=Tolerance(), independent=False, limit=grids[1],
                                  callback=callback)
        propagators = _propagators(propagator, coarse_propagator, len(factors))
        relaxation = FCFRelaxation() if relaxation is None else relaxation
        cycle = VCycle() if cycle is None else cycle
        if not isinstance(relaxation, Relaxation):
            raise TypeError(f"relaxation must be pint.FRelaxation() or pint.FCFRelaxation(), "
                            f"got {relaxation!r}")
        if not isinstance(cycle, Cycle):
            raise TypeError(f"cycle must be pint.VCycle() or pint.FCycle(), got {cycle!r}")
    except (TypeError, ValueError) as caught:  # raised on every process by the agreement
        error = caught
    transport.agree(y0, t, (float(tol) if error is None else tol, max_iters if error is None
                            else None, norm is None, coarsening, levels,
                            *map(signature, (propagator, coarse_propagator, relaxation,
                                             cycle))),
                    error, values=True)
    solver = _MGRIT(
        f=vectorize(f, vectorized), y0=y0, t=t, factors=factors,
        propagators=propagators, relaxation=relaxation, cycle=cycle, tol=float(tol),
        max_iters=max_iters, norm=norm, store_iterates=store_iterates, callback=callback,
        transport=transport,
    )
    return solver.run()


# ----------------------------------------------------------------------------- checks
def _is_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _factors(coarsening: int | Sequence[int], levels: int | None) -> list[int]:
    """One coarsening factor per coarse level."""
    if levels is not None and (not _is_int(levels) or levels < 2):
        raise ValueError(f"levels must be an integer >= 2 (a fine and at least one coarse "
                         f"time grid), got {levels!r}")
    if _is_int(coarsening):
        factors = [int(coarsening)] * ((levels or 2) - 1)
    elif isinstance(coarsening, Sequence) and not isinstance(coarsening, str):
        factors = list(coarsening)
        if not factors or not all(_is_int(m) for m in factors):
            raise ValueError(f"coarsening must be an integer >= 2 or a non-empty list of them, "
                             f"got {coarsening!r}")
        factors = [int(m) for m in factors]
        if levels is not None and levels != len(factors) + 1:
            raise ValueError(f"coarsening lists {len(factors)} factors, so levels must be "
                             f"{len(factors) + 1} (one factor per coarse level), got {levels}")
    else:
        raise ValueError(f"coarsening must be an integer >= 2 or a list of them, got "
                         f"{coarsening!r}")
    if any(m < 2 for m in factors):
        raise ValueError(f"coarsening factors must be >= 2, got {coarsening!r}")
    return factors


def _grid_sizes(intervals: int, factors: list[int], coarsening: object,
                levels: int | None) -> list[int]:
    """The number of intervals of every level; each level needs at least one."""
    sizes = [intervals]
    for m in factors:
        sizes.append(sizes[-1] // m)
        if sizes[-1] < 1:
            need = math.prod(factors)
            raise ValueError(
                f"coarsening={coarsening!r} with levels={levels or len(factors) + 1} leaves "
                f"level {len(sizes) - 1} with no time interval: t has {intervals} intervals, "
                f"the coarsest grid needs at least {need} (the product of the factors); use "
                f"fewer levels or a smaller factor")
    return sizes


def _propagators(fine: Propagator, coarse: Propagator | Sequence[Propagator] | None,
                 coarse_levels: int) -> list[Propagator]:
    if coarse is None:
        chosen: list[object] = [fine] * (coarse_levels + 1)
    elif isinstance(coarse, Sequence):
        if len(coarse) != coarse_levels:
            raise ValueError(f"coarse_propagator lists {len(coarse)} propagators; give one, or "
                             f"one per coarse level ({coarse_levels})")
        chosen = [fine, *coarse]
    else:
        chosen = [fine] + [coarse] * coarse_levels
    for level, prop in enumerate(chosen):
        check_propagators(**{"propagator" if level == 0 else "coarse_propagator": prop})
    return chosen  # type: ignore[return-value]


def _on_rows(propagation: Propagation, rows: Tensor | None) -> Propagation:
    """A propagation over some rows of a task: its requests name those rows of the task."""
    if rows is None:
        return (yield from propagation)
    try:
        request = Request(*next(propagation))
        while True:
            inner = request.rows
            out = yield Request(request.t, request.y, rows if inner is None else rows[inner])
            request = Request(*propagation.send(out))
    except StopIteration as stop:
        return stop.value


# ----------------------------------------------------------------------------- the solver
@dataclass
class _Level:
    """One time grid: its points, propagator, states, FAS right-hand side and C-points."""

    t: Tensor  # the level's points, (n + 1,)
    stride: int  # level point p is fine point p * stride
    propagator: Propagator
    u: Tensor  # states, (n + 1, *state)
    g: Tensor | None  # FAS right-hand side (None on the fine level: zero)
    v: Tensor | None  # the restricted states the level started from (None on the fine level)
    m: int | None  # coarsening factor to the next level; None on the coarsest
    into_c: Tensor | None = None  # Phi(u[c - 1]) for the C-points c >= m, while valid

    @property
    def n(self) -> int:
        return len(self.t) - 1

    def c_points(self) -> Tensor:
        """The C-points after the first (those with an interval before them)."""
        assert self.m is not None
        return torch.arange(self.m, self.n + 1, self.m, device=self.t.device)


class _MGRIT:
    """The state of one MGRIT solve: the levels, the engine, the iteration history."""

    def __init__(self, *, f: VectorField, y0: Tensor, t: Tensor, factors: list[int],
                 propagators: list[Propagator], relaxation: Relaxation, cycle: Cycle,
                 tol: float, max_iters: int, norm: Norm | None, store_iterates: bool,
                 callback: Callback | None, transport: Transport) -> None:
        self.engine = Engine(f, transport=transport)
        self.transport = transport
        self.relaxation, self.cycle, self.norm = relaxation, cycle, norm
        self.it = Iterations(y0.unsqueeze(0), len(t), tol=tol, stop=Tolerance(), norm=None,
                             max_iters=max_iters, exact_after=max_iters + 1, callback=callback,
                             store_iterates=store_iterates, squeeze=True,
                             verify=self.engine.verify)
        self.iteration = 0
        self.levels: list[_Level] = []
        stride, grid = 1, t
        for level, prop in enumerate(propagators):
            m = factors[level] if level < len(factors) else None
            u = y0.new_zeros((len(grid), *y0.shape))
            u[0] = y0
            coarse = level > 0  # the fine level has g = 0 and no restricted states
            self.levels.append(_Level(
                t=grid, stride=stride, propagator=prop, u=u, m=m,
                g=torch.zeros_like(u) if coarse else None,
                v=torch.zeros_like(u) if coarse else None))
            if m is not None:
                grid, stride = grid[::m], stride * m

    # -- the steps :func:`~pint.algorithms.driver.drive` runs --------------------------------
    def run(self) -> Solution:
        """The solve, by :func:`pint.algorithms.driver.drive`."""
        return drive(self, self.engine, self.it, self.transport)

    def begin(self) -> None:
        """The nested iteration; the initial guess is tested only when no iteration may run."""
        self.initial_guess()
        residual = self.residual(0)
        self.it.decide(0, residual if self.it.max_iters == 0 else None,
                       self.levels[0].u.unsqueeze(1))

    def step(self) -> bool:
        """One cycle and its test."""
        self.iteration += 1
        self.cycle_level(0, self.cycle, first_f=False)
        self.it.decide(self.iteration, self.residual(self.iteration),
                       self.levels[0].u.unsqueeze(1))
        return True

    def end(self) -> Outcome:
        """The fine level's states; the evaluations of the fine level and of the coarse ones."""
        self.transport.close()
        rows = Counter(self.engine.rows)
        fine_nfe = rows.pop("level 0", 0)
        evaluations = {"fine": fine_nfe, "coarse": sum(rows.values())}
        return Outcome(self.levels[0].u.unsqueeze(1), evaluations)

    def residual(self, k: int) -> Tensor:
        """The residual after iteration ``k`` (PyMGRIT's: the norm of ``Phi(u_{C-1}) - u_C`` at
        the fine level's C-points), as a one-element tensor."""
        fine = self.levels[0]
        residual = torch.zeros_like(fine.u)
        c = fine.c_points()
        residual[c] = self.into_c(0) - fine.u[c]
        value = torch.linalg.vector_norm(residual) if self.norm is None else scalar_norm(
            self.norm(residual))
        number = float(value)
        if not math.isfinite(number):
            bad = ~torch.isfinite(residual.flatten(1)).all(1) | ~torch.isfinite(
                fine.u.flatten(1)).all(1)
            if bool(bad.any()):
                point = int(bad.nonzero()[0])
                where = Location("state", k, point, 0)
                raise NonFiniteError(f"the MGRIT solution became non-finite: {where}", where)
            point = int(residual.flatten(1).abs().amax(1).argmax())
            where = Location("state", k, point, 0)
            raise NonFiniteError(
                f"the MGRIT residual is {number} in iteration {k} (largest at point {point}): "
                f"the iteration diverges; use a stabler coarse propagator (e.g. an implicit "
                f"one) or a smaller coarsening factor", where)
        return torch.tensor([number], dtype=torch.float64)

    # -- the multigrid cycle ---------------------------------------------------------
    def initial_guess(self) -> None:
        """Nested iteration: solve the coarsest level, inject it into each finer level's
        C-points and V-cycle there (``g = 0``); then F-relax the fine level."""
        self.solve_coarsest()
        for level in range(len(self.levels) - 2, -1, -1):
            fine, coarse = self.levels[level], self.levels[level + 1]
            assert fine.m is not None
            fine.u[::fine.m] = coarse.u
            fine.into_c = None
            if level > 0:
                self.cycle_level(level, VCycle(), first_f=True)
        self.f_relax(0)

    def cycle_level(self, level: int, cycle: Cycle, first_f: bool) -> None:
        """One cycle on ``level`` (PyMGRIT's ``iteration``); the fine level's leading
        F-relaxation was done by the previous iteration's last one."""
        if level == len(self.levels) - 1:
            self.solve_coarsest()
            return
        if first_f:
            self.f_relax(level)
        for _ in range(self.relaxation.cf_sweeps):
            self.c_relax(level)
            self.f_relax(level)
        self.restrict(level)
        self.cycle_level(level + 1, cycle, first_f=True)
        self.correct(level)
        self.f_relax(level)
        if level > 0 and cycle.revisit:
            self.cycle_level(level, VCycle(), first_f=False)

    # -- the operations, each one batched task (or two sharing a round) -------------------
    def f_relax(self, level: int) -> None:
        """F-relaxation: all intervals at once, one step per F-point of the longest."""
        lv = self.levels[level]
        assert lv.m is not None
        starts = torch.arange(0, lv.n, lv.m, device=lv.t.device)  # C-points with F-points
        counts = torch.clamp(lv.n - starts, max=lv.m - 1)  # F-points after each
        if int(counts.max()) > 0:
            self.run_tasks((self._sweep(lv, starts, counts), level, starts))
        lv.into_c = None

    def _sweep(self, lv: _Level, starts: Tensor, counts: Tensor) -> Propagation:
        y = lv.u[starts]
        for j in range(1, int(counts.max()) + 1):
            going = counts >= j
            rows = None if bool(going.all()) else going.nonzero().squeeze(1)
            idx = starts + j if rows is None else starts[rows] + j
            y_in = y if rows is None else y[rows]
            out = yield from _on_rows(lv.propagator.propagate(lv.t[idx - 1], lv.t[idx], y_in),
                                      rows)
            if lv.g is not None:
                out = out + lv.g[idx]
            lv.u[idx] = out
            y = out if rows is None else y.index_copy(0, rows, out)
        return y

    def into_c(self, level: int) -> Tensor:
        """``Phi(u[c - 1])`` for the C-points ``c >= m`` (computed once per F-relaxation)."""
        lv = self.levels[level]
        if lv.into_c is None:
            c = lv.c_points()
            lv.into_c, = self.run_tasks(self._step(lv, c - 1, level))
        return lv.into_c

    def _step(self, lv: _Level, before: Tensor, level: int) -> tuple[Propagation, int, Tensor]:
        """One propagator step from the points ``before`` of a level, as a task."""
        return lv.propagator.propagate(lv.t[before], lv.t[before + 1], lv.u[before]), level, before

    def c_relax(self, level: int) -> None:
        """C-relaxation: every C-point takes one step from the F-point before it."""
        lv = self.levels[level]
        c = lv.c_points()
        step = self.into_c(level)
        lv.u[c] = step if lv.g is None else lv.g[c] + step

    def restrict(self, level: int) -> None:
        """FAS restriction by injection: ``v = u[C]``, ``g_c = r[C] + v - Phi_c(v[:-1])``."""
        fine, coarse = self.levels[level], self.levels[level + 1]
        assert fine.m is not None and coarse.g is not None and coarse.v is not None
        c = fine.c_points()
        v = fine.u[::fine.m].clone()
        before = torch.arange(coarse.n, device=v.device)
        jobs = [(coarse.propagator.propagate(coarse.t[:-1], coarse.t[1:], v[:-1]),
                 level + 1, before)]
        if fine.into_c is None:
            jobs.append(self._step(fine, c - 1, level))
        results = self.run_tasks(*jobs)
        if fine.into_c is None:
            fine.into_c = results[1]
        residual = fine.into_c - fine.u[c]
        if fine.g is not None:
            residual = residual + fine.g[c]
        coarse.v.copy_(v)
        coarse.u.copy_(v)
        coarse.g[1:] = residual + v[1:] - results[0]
        coarse.into_c = None

    def solve_coarsest(self) -> None:
        """The coarsest level, serially: ``u[i] = g[i] + Phi(u[i-1])``."""
        level = len(self.levels) - 1
        lv = self.levels[level]
        self.run_tasks((self._serial(lv), level, torch.zeros(1, dtype=torch.long)))

    def _serial(self, lv: _Level) -> Propagation:
        y = lv.u[:1]
        for i in range(1, lv.n + 1):
            y = yield from lv.propagator.propagate(lv.t[i - 1:i], lv.t[i:i + 1], y)
            if lv.g is not None:
                y = y + lv.g[i:i + 1]
            lv.u[i] = y[0]
        return y

    def correct(self, level: int) -> None:
        """``u[C] += u_c - v``: the coarse level's correction, injected."""
        fine, coarse = self.levels[level], self.levels[level + 1]
        assert fine.m is not None and coarse.v is not None
        fine.u[::fine.m] += coarse.u - coarse.v

    # -- the engine ----------------------------------------------------------------------
    def run_tasks(self, *jobs: tuple[Propagation, int, Tensor]) -> list[Tensor]:
        """Run propagations side by side (they share rounds); returns their end states.

        Each job is (propagation, level, the level points its rows start from)."""
        results: list[Tensor | None] = [None] * len(jobs)
        for j, (propagation, level, points) in enumerate(jobs):
            def done(value: Tensor, j: int = j) -> None:
                results[j] = value

            points = points.cpu()
            self.engine.start(Task(propagation, done, label=f"level {level}",
                                   iteration=self.iteration,
                                   points=points * self.levels[level].stride,
                                   problems=torch.zeros_like(points)))
        self.engine.run()
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]
