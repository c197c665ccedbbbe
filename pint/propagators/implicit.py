"""Implicit propagators for stiff problems: diagonally implicit Runge-Kutta methods with Newton.

One engine, :class:`DIRK`, runs any diagonally implicit Runge-Kutta tableau
(:class:`DIRKTableau`); :class:`BackwardEuler` (the one-stage DIRK) and :class:`SDIRK2`
(Alexander's L-stable two-stage method) are its named instances.

Each implicit stage solves ``Y = z + a_ii h f(t + c_i h, Y)`` by Newton's method. The propagator
never sees ``f``: every Newton iteration is ONE request to the engine, so it is one round (one
unit of depth), batched with everything else that runs in that round. The Newton matrix
``I - a_ii h J`` comes from the ``jacobian=`` argument (:mod:`pint.propagators.jacobians`):

- ``None`` (default): chosen from the number ``d`` of entries of one state: forward finite
  differences batched into each request for ``d <= 200`` (:class:`~pint.FiniteDifferences`),
  the exact Jacobian by forward-mode automatic differentiation for ``d <= 2048``
  (:class:`~pint.Autodiff`, banded when the Jacobian is), matrix-free Newton-Krylov beyond
  (:class:`~pint.NewtonKrylov`). Full Newton.
- a matrix ``J``: a dense ``(d, d)`` tensor, a sparse COO/CSR tensor, a :class:`~pint.Banded`
  matrix, or a callable ``t -> (d, d)`` or ``(R, d, d)``: a fixed Newton matrix, e.g. the linear
  part of a reaction-diffusion problem (simplified Newton: one row per row and iteration, linear
  convergence). A constant matrix is factorised once per step size and reused (sparse and
  banded ones by a sparse LU, never densified).
- ``jacobian=J, linear=True``: the problem is linear, ``f(t, y) = J(t) y + g(t)`` exactly. One
  Newton step solves each stage exactly, so a stage costs one round like an explicit stage and
  the depth is known in advance (``depth = steps * stages``).

``d`` is the number of entries of one state (states of any shape are flattened).

Example:
    >>> import pint
    >>> problem = pint.problems.stiff_cosine()
    >>> t = problem.times(33)
    >>> sol = pint.parareal(problem.f, problem.y0, t, coarse=pint.BackwardEuler(1),
    ...                     fine=pint.SDIRK2(20), tol=1e-9)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Generator
from dataclasses import dataclass
from numbers import Integral
from typing import Any, NoReturn

import numpy as np
import torch
from torch import Tensor

from ..engine import Propagation, Request
from . import jacobians as jac_
from .jacobians import Autodiff, Banded, FiniteDifferences, NewtonKrylov
from .runge_kutta import ButcherTableau

__all__ = [
    "BACKWARD_EULER_TABLEAU",
    "DIRK",
    "SDIRK2",
    "SDIRK2_TABLEAU",
    "BackwardEuler",
    "DIRKTableau",
    "NewtonError",
]

Jacobian = (Tensor | Banded | Callable[[Tensor], Tensor] | FiniteDifferences | Autodiff
            | NewtonKrylov)
"""The Newton matrix's source: a strategy, a dense or sparse ``(d, d)`` tensor, a
:class:`~pint.Banded` matrix, or a callable ``t (R,) -> (d, d) or (R, d, d)``."""

_STRATEGIES = (FiniteDifferences, Autodiff, NewtonKrylov)


class NewtonError(ArithmeticError, ValueError):
    """Newton's method did not converge in an implicit stage.

    Attributes:
        t0: the start time of the slice (propagation row) that failed.
        t: the stage time at which it failed.
        residual: the max-norm of the stage equation's residual at the last evaluated iterate.
        update: the max-norm of the last Newton update.
        iterations: the Newton iterations run.
        stage: the stage (0 is the first) of the method's step that failed.
        linear_residual: for :class:`~pint.NewtonKrylov`, the relative residual the linear
            solve reached when it did not converge, else ``None``.
    """

    def __init__(self, message: str, *, t0: float, t: float, residual: float, update: float,
                 iterations: int, stage: int = 0, linear_residual: float | None = None) -> None:
        super().__init__(message)
        self.t0 = t0
        self.t = t
        self.residual = residual
        self.update = update
        self.iterations = iterations
        self.stage = stage
        self.linear_residual = linear_residual


@dataclass(frozen=True)
class DIRKTableau(ButcherTableau):
    """The coefficients of a diagonally implicit Runge-Kutta method.

    Args:
        a: lower-triangular stage matrix, one row per stage, the diagonal included (row ``i``
            holds ``i + 1`` entries). A zero diagonal entry makes that stage explicit.
        b: the weights of the stages in the update.
        c: the stage times, as fractions of the step.
        order: the classical order of the method (used by the tests).
    """

    def _check_row(self, i: int, row: tuple[float, ...]) -> None:
        """Row ``i`` of ``a``: ``i + 1`` entries, the diagonal included and ``>= 0``."""
        if len(row) != i + 1:
            raise ValueError(f"row {i} of a must have {i + 1} entries (diagonally implicit: "
                             f"the diagonal included), got {row}")
        if row[i] < 0:
            raise ValueError(f"the diagonal entry a[{i}][{i}] must be >= 0, got {row[i]}")

    @property
    def stiffly_accurate(self) -> bool:
        """``b`` equals the last row of ``a``: the step's result is the last stage value."""
        return tuple(self.a[-1]) == tuple(self.b)


BACKWARD_EULER_TABLEAU = DIRKTableau(a=((1.0,),), b=(1.0,), c=(1.0,), order=1)
_GAMMA = 1.0 - 1.0 / math.sqrt(2.0)
SDIRK2_TABLEAU = DIRKTableau(
    a=((_GAMMA,), (1.0 - _GAMMA, _GAMMA)), b=(1.0 - _GAMMA, _GAMMA), c=(_GAMMA, 1.0), order=2,
)
"""Alexander's (1977) two-stage SDIRK: order 2, L-stable, stiffly accurate,
``gamma = 1 - 1/sqrt(2)``; stability function ``(1 + (1 - 2 gamma) z) / (1 - gamma z)^2``."""


def _combine(y: Tensor, coefficients: tuple[float, ...], increments: list[Tensor]) -> Tensor:
    """``y + sum(coefficients[j] * increments[j])`` (the increments already carry ``h``)."""
    out = y
    for c, dk in zip(coefficients, increments, strict=False):
        if c != 0.0:
            out = out + (dk if c == 1.0 else c * dk)
    return out


def _max_norm(x: Tensor) -> Tensor:
    """Max-norm of each row of ``(R, d)``."""
    return x.abs().amax(dim=1) if x.shape[1] else x.new_zeros(len(x))


class DIRK:
    """A diagonally implicit Runge-Kutta method with ``steps`` equal substeps per slice.

    Args:
        tableau: the method's :class:`DIRKTableau`.
        steps: substeps per slice.
        jacobian: the Newton matrix's source (:mod:`pint.propagators.jacobians`): ``None``
            (auto: by the state's size ``d``, :class:`~pint.FiniteDifferences` up to 200
            entries, :class:`~pint.Autodiff` up to 2048, :class:`~pint.NewtonKrylov` beyond);
            one of those strategies; or a fixed Newton matrix (simplified Newton) over the
            flattened state of ``d`` entries: a dense or sparse (COO, CSR) ``(d, d)`` tensor,
            a :class:`~pint.Banded` matrix, or a callable ``t -> (d, d)`` or ``(R, d, d)``
            (``t`` of shape ``(R,)``). A matrix must have the states' dtype and device.
        linear: the problem is linear, ``f(t, y) = J(t) y + g(t)`` with ``J`` the given
            ``jacobian`` matrix: one Newton step per stage, no convergence test, so the depth
            is known (``steps * stages``). Needs a matrix ``jacobian``.
        tol: Newton stops for a row when the error left in its iterate, estimated from the
            last update (its max-norm, or ``theta / (1 - theta)`` times it once the
            convergence rate ``theta`` is known), is at most ``tol * max(1, |Y|_max)``.
            ``None``: ``1e-12`` in float64, ``1000 * eps`` in lower precisions.
        max_iters: the most Newton iterations per stage; :class:`NewtonError` when exceeded.

    Raises:
        NewtonError: from ``propagate`` when a stage's Newton iteration does not converge in
            ``max_iters`` iterations, produces a non-finite state, or (Newton-Krylov) a linear
            solve does not reach its tolerance.

    Warns:
        SlowNewtonWarning: once, when finite differences run on states of more than 200
            entries (chosen, or the fallback of a vector field without forward-mode AD).

    Example:
        >>> import pint
        >>> from pint.propagators import SDIRK2_TABLEAU
        >>> pint.propagators.DIRK(SDIRK2_TABLEAU, steps=4)  # same as pint.SDIRK2(4)
        DIRK(steps=4, jacobian=None)
    """

    def __init__(self, tableau: DIRKTableau, steps: int = 1, *, jacobian: Jacobian | None = None,
                 linear: bool = False, tol: float | None = None, max_iters: int = 20) -> None:
        if isinstance(steps, bool) or not isinstance(steps, Integral) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if not isinstance(tableau, DIRKTableau):
            raise TypeError(f"tableau must be a pint.propagators.DIRKTableau, got "
                            f"{type(tableau).__name__}")
        if jacobian is not None and not (jac_.is_matrix(jacobian) or callable(jacobian)
                                         or isinstance(jacobian, _STRATEGIES)):
            raise TypeError(f"jacobian must be None, pint.FiniteDifferences(), pint.Autodiff(), "
                            f"pint.NewtonKrylov(...), a (d, d) dense or sparse tensor, a "
                            f"pint.Banded matrix or a callable t -> matrix, got "
                            f"{type(jacobian).__name__}")
        if jac_.is_matrix(jacobian):
            jac_.check_matrix(jacobian)
            if jacobian.requires_grad and not (isinstance(jacobian, Tensor)
                                               and jacobian.layout == torch.strided):
                raise ValueError("jacobian: gradients through a sparse or banded matrix are not "
                                 "supported; pass a dense tensor, or detach it")
        if not isinstance(linear, bool):
            raise TypeError(f"linear must be True or False, got {linear!r}")
        if linear and not (jac_.is_matrix(jacobian) or (
                callable(jacobian) and not isinstance(jacobian, _STRATEGIES))):
            raise ValueError("linear=True needs jacobian= a matrix or a callable t -> matrix (the "
                             "J of f(t, y) = J y + g(t)); finite-difference, automatic or "
                             "Krylov Newton is not one exact solve")
        if tol is not None and not (isinstance(tol, int | float) and tol > 0):
            raise ValueError(f"tol must be a positive number or None, got {tol!r}")
        if isinstance(max_iters, bool) or not isinstance(max_iters, Integral) or max_iters < 1:
            raise ValueError(f"max_iters must be a positive integer, got {max_iters!r}")
        self.tableau = tableau
        self.steps = int(steps)
        self.jacobian = jacobian
        self.linear = linear
        self.tol = tol
        self.max_iters = int(max_iters)
        self._factors: dict[tuple[float, torch.dtype, torch.device],
                            Callable[[Tensor], Tensor]] = {}
        self._band: dict[int, tuple[int, int] | None] = {}  # Autodiff: d -> (lower, upper)
        self._no_tangents = False  # f carried no tangents: finite differences instead
        self._warned = False

    @property
    def depth(self) -> int | None:
        """Evaluation rounds per slice when known in advance (``linear=True`` or an explicit
        tableau): ``steps * stages``; ``None`` when Newton's iteration count decides."""
        explicit = all(row[i] == 0.0 for i, row in enumerate(self.tableau.a))
        return self.steps * self.tableau.stages if self.linear or explicit else None

    def __repr__(self) -> str:
        j = self.jacobian
        if j is None or isinstance(j, _STRATEGIES):
            source = repr(j)
        elif isinstance(j, Banded):
            source = repr(j)
        elif isinstance(j, Tensor):
            source = "matrix" if j.layout == torch.strided else "sparse matrix"
        else:
            source = "callable"
        extra = ", linear=True" if self.linear else ""
        return f"{type(self).__name__}(steps={self.steps}, jacobian={source}{extra})"

    # -- the step ----------------------------------------------------------------------
    def propagate(self, t0: Tensor, t1: Tensor, y0: Tensor) -> Propagation:
        """Advance ``y0`` from ``t0`` to ``t1`` with ``steps`` substeps."""
        tab = self.tableau
        shape = y0.shape
        rows = shape[0]
        h = (t1 - t0) / self.steps
        h_y = h.to(y0.dtype)  # the step in the states' precision
        y = y0.reshape(rows, -1)
        for i in range(self.steps):
            t = t0 + (t1 - t0) * (i / self.steps) if i else t0
            increments: list[Tensor] = []  # h * k_j of every stage so far
            stage_value = y
            for s in range(tab.stages):
                z = _combine(y, tab.a[s][:s], increments)
                t_stage = t + tab.c[s] * h if tab.c[s] else t
                diagonal = tab.a[s][s]
                if diagonal == 0.0:  # an explicit stage
                    k = yield Request(t_stage, z.reshape(shape))
                    increments.append(h_y[:, None] * k.reshape(rows, -1))
                    stage_value = z
                    continue
                stage_value = yield from self._solve_stage(
                    t0, t_stage, h_y * diagonal, z, stage_value, shape, s)
                increments.append((stage_value - z) / diagonal)
            y = stage_value if tab.stiffly_accurate else _combine(y, tab.b, increments)
        return y.reshape(shape)

    def _strategy(self, d: int) -> FiniteDifferences | Autodiff | NewtonKrylov | None:
        """The Newton path for states of ``d`` entries; ``None`` for a given matrix."""
        j = self.jacobian
        if j is None:
            if d <= jac_.FINITE_DIFFERENCES_MAX:
                j = FiniteDifferences()
            else:
                j = Autodiff() if d <= jac_.AUTO_DENSE else NewtonKrylov()
        if not isinstance(j, _STRATEGIES):
            return None
        if self._no_tangents and not isinstance(j, FiniteDifferences):
            j = FiniteDifferences()
        if isinstance(j, FiniteDifferences) and d > jac_.FINITE_DIFFERENCES_MAX and not (
                self._warned):
            self._warned = True
            jac_.warn_slow(type(self).__name__, d)
        return j

    def _solve_stage(self, t0: Tensor, t: Tensor, ha: Tensor, z: Tensor, guess: Tensor,
                     shape: torch.Size, stage: int) -> Propagation:
        """Newton for ``Y - z - ha f(t, Y) = 0`` on rows ``(R, d)``; returns ``Y``."""
        rows, d = z.shape
        tol = self._tolerance(z.dtype)
        strategy = self._strategy(d)
        matrix = self._newton_matrix(t, ha, z) if strategy is None else None
        # A linear problem starts from Y = 0, where f(t, 0) = g(t) exactly: the one Newton step
        # is then Y = (I - ha J)^{-1} (z + ha g(t)), free of cancellation.
        y = torch.zeros_like(z) if self.linear else guess
        active: Tensor | None = None  # None: every row
        residual = update = z.new_zeros(rows)
        for iteration in range(1, self.max_iters + 1):
            idx = slice(None) if active is None else active
            y_a, t_a, ha_a, z_a = y[idx], t[idx], ha[idx][:, None], z[idx]
            if matrix is not None:
                f_y = (yield Request(t_a, y_a.reshape(-1, *shape[1:]), active)).reshape(-1, d)
                g = y_a - z_a - ha_a * f_y
                step = -(matrix if active is None else _restrict(matrix, active))(g)
            else:
                g, step, failed = yield from self._newton_step(
                    strategy, t_a, y_a, z_a, ha_a, active, shape)
                if failed is not None:
                    linear_residual = failed
                    self._fail(t0, t, _scatter(residual, active, _max_norm(g)), update,
                               active, iteration,
                               f"the Krylov solve of stage {stage} did not converge (relative "
                               f"residual {linear_residual:.1e} > rtol={strategy.rtol:g} after "
                               f"maxiter={strategy.maxiter} products; give a preconditioner, "
                               f"raise maxiter, or use smaller steps)", stage, linear_residual)
            y_new = y_a + step
            if active is None:
                y = y_new
            else:
                y = y.index_copy(0, active, y_new)  # (index_add is slow on the CPU)
            if not bool(torch.isfinite(y_new).all()):
                self._fail(t0, t, _scatter(residual, active, _max_norm(g.detach())),
                           _scatter(update, active, _max_norm(step.detach())), active,
                           iteration, "the Newton iterate became non-finite (a singular or "
                           "ill-conditioned Newton matrix?)", stage)
            if self.linear:
                return y
            with torch.no_grad():
                update_a = _max_norm(step)
                # the error left after this update: the update itself, or, once the rate
                # theta = |update| / |previous update| is known and below 1, the geometric
                # tail theta / (1 - theta) |update| (Hairer & Wanner IV.8)
                left = update_a
                if iteration > 1:
                    theta = update_a / (update if active is None else update[active])
                    left = torch.where(theta < 1, theta / (1 - theta) * update_a, update_a)
                    left = torch.minimum(left, update_a)
                done = left <= tol * _max_norm(y_new).clamp_min(1.0)
                residual = _scatter(residual, active, _max_norm(g))
                update = _scatter(update, active, update_a)
            if bool(done.all()):
                return y
            keep = ~done
            current = torch.arange(rows, device=z.device) if active is None else active
            active = current[keep]
        self._fail(t0, t, residual, update, active, self.max_iters,
                   f"Newton did not converge in max_iters={self.max_iters} iterations "
                   f"(tol={tol:.1e}; raise max_iters or tol, use smaller steps, or give a "
                   f"better jacobian)", stage)

    # -- the Newton paths that evaluate J themselves --------------------------------------
    def _newton_step(self, strategy: FiniteDifferences | Autodiff | NewtonKrylov, t: Tensor,
                     y: Tensor, z: Tensor, ha: Tensor, active: Tensor | None, shape: torch.Size
                     ) -> Generator[Request, Tensor, tuple[Tensor, Tensor, Any]]:
        """One Newton iteration's requests and solve: ``(g, step, failure)`` with ``failure``
        ``None`` or the relative residual a Krylov solve fell short with."""
        d = y.shape[1]
        if isinstance(strategy, FiniteDifferences):
            f_y, jac = yield from self._evaluate_with_jacobian(t, y, active, shape)
            newton = torch.eye(d, dtype=y.dtype, device=y.device) - ha[:, :, None] * jac
            g = y - z - ha * f_y
            return g, -_dense_solver(newton)(g), None
        if isinstance(strategy, Autodiff):
            band = yield from self._detect_band(strategy, t, y, active, shape)
            if not self._no_tangents:
                f_y, solve = yield from self._autodiff_jacobian(band, t, y, ha, active, shape)
            if self._no_tangents:  # f carried no tangents: finite differences from now on
                return (yield from self._newton_step(FiniteDifferences(), t, y, z, ha, active,
                                                     shape))
            g = y - z - ha * f_y
            return g, -solve(g), None
        return (yield from self._krylov_step(strategy, t, y, z, ha, active, shape))

    def _tangents(self, t: Tensor, y: Tensor, v: Tensor, rows: Tensor | None, shape: torch.Size
                  ) -> Generator[Request, Tensor, tuple[Tensor, Tensor | None]]:
        """``f(y)`` and ``J v`` in one request; ``J v`` is ``None`` (and finite differences
        take over, with a warning) when ``f`` did not carry the tangents."""
        f_y, jv = yield from jac_.tangent_request(t, y, v, rows, tuple(shape[1:]))
        if jv is None and not self._no_tangents:
            self._no_tangents = True
            warnings.warn(f"{type(self).__name__}: the vector field returned no forward-mode "
                          f"tangents (NumPy inside, an autograd.Function without jvp, or "
                          f"inference mode?): Newton falls back to finite differences; pass a "
                          f"matrix jacobian= for speed", jac_.SlowNewtonWarning, stacklevel=5)
        return f_y, jv

    def _detect_band(self, strategy: Autodiff, t: Tensor, y: Tensor, active: Tensor | None,
                     shape: torch.Size) -> Generator[Request, Tensor, tuple[int, int] | None]:
        """The Jacobian's (lower, upper) band, from one row's full Jacobian (once per ``d``);
        ``None``: dense (or ``f`` carried no tangents)."""
        d = y.shape[1]
        if not strategy.banded:
            return None
        if d not in self._band:
            # at a slightly perturbed state, so that no entry vanishes by chance (y = 0)
            y0 = y[:1].detach()
            gen = torch.Generator(device="cpu").manual_seed(d)
            noise = torch.rand(1, d, generator=gen, dtype=y.dtype).to(y.device)
            point = (y0 + 1e-3 * (1 + y0.abs()) * noise).expand(d, d)
            owner = None if active is None else active[:1].repeat(d)
            rows = owner if owner is not None else torch.zeros(d, dtype=torch.long,
                                                                device=y.device)
            _, jv = yield from self._tangents(t[:1].expand(d), point.contiguous(),
                                              torch.eye(d, dtype=y.dtype, device=y.device),
                                              rows, shape)
            if jv is None:
                return None
            i, j = (jv.T != 0).nonzero(as_tuple=True)  # J[i, j] = jv[j, i]
            lower = int((i - j).max().clamp_min(0)) if len(i) else 0
            upper = int((j - i).max().clamp_min(0)) if len(i) else 0
            self._band[d] = (lower, upper) if lower + upper + 1 < d / 2 else None
        return self._band[d]

    def _autodiff_jacobian(self, band: tuple[int, int] | None, t: Tensor, y: Tensor, ha: Tensor,
                           active: Tensor | None, shape: torch.Size
                           ) -> Generator[Request, Tensor,
                                          tuple[Tensor, Callable[[Tensor], Tensor]]]:
        """One request: ``f(y)`` and the Newton matrices' solver, from ``d`` tangents per row
        (dense) or ``lower + upper + 1`` compressed ones (banded)."""
        rows, d = y.shape
        width = d if band is None else sum(band) + 1
        columns = torch.arange(d, device=y.device)
        # tangent c of every row: the sum of the unit vectors e_j with j = c (mod width)
        seeds = (columns[None, :] % width == torch.arange(width, device=y.device)[:, None])
        owners = torch.arange(rows, device=y.device) if active is None else active
        f_all, jv = yield from self._tangents(
            t.repeat_interleave(width), y.repeat_interleave(width, dim=0),
            seeds.to(y.dtype).repeat(rows, 1), owners.repeat_interleave(width), shape)
        if jv is None:  # no tangents: the caller falls back to finite differences
            return f_all, _dense_solver(f_all.new_zeros(0, d, d))
        f_y = f_all.reshape(rows, width, d)[:, 0]
        jv = jv.detach().reshape(rows, width, d)  # jv[r, c, i] = sum_{j = c mod w} J[i, j]
        if band is None:
            newton = torch.eye(d, dtype=y.dtype, device=y.device) - ha.detach()[:, :, None] * (
                jv.transpose(1, 2))
            return f_y, _dense_solver(newton)
        lower, upper = band
        # LAPACK band layout: bands[upper + i - j, j] = J[i, j] = jv[r, j % w, i]
        k = torch.arange(width, device=y.device)[:, None]
        i = columns[None, :] + k - upper
        inside = (i >= 0) & (i < d)
        # bands[r, k, j] = G[r, j, j + k - upper] with G[r, j, i] = jv[r, j % w, i]
        bands = jv[:, (columns % width)[None, :].expand(width, d), i.clamp(0, d - 1)]
        bands = torch.where(inside, -ha.detach()[:, :, None] * bands, 0)
        bands[:, upper] += 1
        return f_y, _banded_solver(bands, lower, upper)

    def _krylov_step(self, strategy: NewtonKrylov, t: Tensor, y: Tensor, z: Tensor, ha: Tensor,
                     active: Tensor | None, shape: torch.Size
                     ) -> Generator[Request, Tensor, tuple[Tensor, Tensor, Any]]:
        """Matrix-free: ``f(y)``, then GMRES on ``(I - ha J) s = -g`` with one request per
        product ``J v``."""
        rows, d = y.shape
        f_y = (yield Request(t, y.reshape(-1, *shape[1:]), active)).reshape(rows, d)
        g = y - z - ha * f_y
        if g.requires_grad:
            raise ValueError(f"{type(self).__name__}: jacobian=pint.NewtonKrylov() does not "
                             f"differentiate through its solves (states or f's parameters "
                             f"require grad); use jacobian=pint.Autodiff() or a matrix, or "
                             f"solve under torch.no_grad()")
        if self._no_tangents:
            return (yield from self._newton_step(FiniteDifferences(), t, y, z, ha, active,
                                                 shape))
        point = y.detach()
        h = ha.detach()

        def product(v: Tensor) -> Generator[Request, Tensor, Tensor]:
            _, jv = yield from self._tangents(t, point, v, active, shape)
            if jv is None:  # no tangents: the identity ends GMRES; finite differences follow
                return v
            return v - h * jv.detach()

        step, relative, converged = yield from jac_.gmres(
            product, -g.detach(), rtol=strategy.rtol, maxiter=strategy.maxiter,
            restart=strategy.restart, preconditioner=self._preconditioner(strategy, t, h, point))
        if self._no_tangents:  # f stopped carrying tangents: redo with finite differences
            return (yield from self._newton_step(FiniteDifferences(), t, y, z, ha, active,
                                                 shape))
        if not bool(converged.all()):
            return g, step, float(relative.max())
        return g, step, None

    def _preconditioner(self, strategy: NewtonKrylov, t: Tensor, ha: Tensor, y: Tensor
                        ) -> Callable[[Tensor], Tensor] | None:
        """``r -> M^{-1} r`` from the strategy's preconditioner."""
        p = strategy.preconditioner
        if p is None:
            return None
        if jac_.is_matrix(p):
            return self._constant_solver(p, ha[:, 0], y, False, "NewtonKrylov: preconditioner")
        return lambda r: p(t, ha[:, 0], r)

    def _evaluate_with_jacobian(self, t: Tensor, y: Tensor, active: Tensor | None,
                                shape: torch.Size) -> Propagation:
        """One request: ``f(t, y)`` and the forward-difference Jacobian ``(R, d, d)``."""
        rows, d = y.shape
        y_detached = y.detach()
        eps = torch.finfo(y.dtype).eps ** 0.5 * y_detached.abs().clamp_min(1.0)  # (R, d)
        perturbed = y_detached[:, None, :] + torch.diag_embed(eps)  # (R, d, d): row j moves e_j
        eps = (perturbed.diagonal(dim1=1, dim2=2) - y_detached)  # the representable step
        owners = torch.arange(rows, device=y.device) if active is None else active
        request_rows = torch.cat([owners, owners.repeat_interleave(d)])
        out = yield Request(
            torch.cat([t, t.repeat_interleave(d)]),
            torch.cat([y, perturbed.reshape(rows * d, d)]).reshape(-1, *shape[1:]),
            request_rows,
        )
        out = out.reshape(-1, d)
        f_y, f_perturbed = out[:rows], out[rows:].reshape(rows, d, d)
        with torch.no_grad():
            # column j of the Jacobian is (f(y + eps_j e_j) - f(y)) / eps_j
            jac = ((f_perturbed - f_y.detach()[:, None, :]) / eps[:, :, None]).transpose(1, 2)
        return f_y, jac

    # -- a given matrix -------------------------------------------------------------------
    def _newton_matrix(self, t: Tensor, ha: Tensor, z: Tensor) -> Callable[[Tensor], Tensor]:
        """A solver ``g -> (I - ha J)^{-1} g`` for the rows of this stage."""
        rows, d = z.shape
        jacobian = self.jacobian
        # On the linear path the matrix is part of the result, so gradients flow through it
        # (to parameters in a matrix that requires grad); elsewhere it is only Newton's
        # preconditioner, and the converged stage does not depend on it.
        differentiable = self.linear and torch.is_grad_enabled()
        if jac_.is_matrix(jacobian):
            return self._constant_solver(jacobian, ha, z, differentiable
                                         and jacobian.requires_grad)
        assert callable(jacobian)
        with torch.set_grad_enabled(differentiable):
            jac = torch.as_tensor(jacobian(t)).to(z)
        if jac.shape not in ((d, d), (rows, d, d)):
            raise ValueError(f"jacobian(t) must return a ({d}, {d}) or ({rows}, {d}, {d}) "
                             f"matrix for {rows} rows of {d} entries, got {tuple(jac.shape)}")
        eye = torch.eye(d, dtype=z.dtype, device=z.device)
        scale = ha if differentiable else ha.detach()
        return _dense_solver(eye - scale[:, None, None] * jac, keep_grad=differentiable)

    def _constant_solver(self, matrix: Tensor | Banded, ha: Tensor, z: Tensor,
                         differentiable: bool, name: str = "jacobian"
                         ) -> Callable[[Tensor], Tensor]:
        """``(I - ha A)^{-1}`` row by row for a constant ``A``: one factorisation per distinct
        ``ha``, memoised."""
        jac_.check_against_states(matrix, z.shape[1], z.dtype, z.device, name)
        values, inverse = torch.unique(ha.detach(), return_inverse=True)
        solvers = [self._factor(matrix, float(v), z.dtype, z.device, differentiable)
                   for v in values.tolist()]
        return _by_value(solvers, inverse)

    def _factor(self, matrix: Tensor | Banded, ha: float, dtype: torch.dtype,
                device: torch.device, differentiable: bool = False
                ) -> Callable[[Tensor], Tensor]:
        """The solver of ``I - ha A``, memoised (not when it carries gradients)."""
        key = (id(matrix), ha, dtype, device)
        solver = None if differentiable else self._factors.get(key)
        if solver is None:
            if isinstance(matrix, Banded) or matrix.layout != torch.strided:
                solver = jac_.sparse_solver(matrix, ha)
            else:
                with torch.set_grad_enabled(differentiable):
                    newton = torch.eye(len(matrix), dtype=dtype, device=device) - ha * matrix
                    lu, pivots, info = torch.linalg.lu_factor_ex(newton)
                    if int(info):  # singular: solves give non-finite values, reported by Newton
                        lu = torch.full_like(lu, math.nan)

                def solver(g: Tensor, lu: Tensor = lu, pivots: Tensor = pivots) -> Tensor:
                    return torch.linalg.lu_solve(lu, pivots, g.T.contiguous()).T
            if differentiable:
                return solver
            if len(self._factors) >= 32:  # a small memo: slices of a few lengths
                self._factors.pop(next(iter(self._factors)))
            self._factors[key] = solver
        return solver

    def _tolerance(self, dtype: torch.dtype) -> float:
        if self.tol is not None:
            return float(self.tol)
        eps = torch.finfo(dtype).eps
        return 1e-12 if eps < 1e-10 else 1000 * eps

    def _fail(self, t0: Tensor, t: Tensor, residual: Tensor, update: Tensor,
              active: Tensor | None, iterations: int, why: str, stage: int,
              linear_residual: float | None = None) -> NoReturn:
        """Raise :class:`NewtonError` for the worst row."""
        rows = torch.arange(len(t0)) if active is None else active.cpu()
        worst = int(rows[int(residual.cpu()[rows].argmax())]) if len(rows) else 0
        r, u = float(residual.cpu()[worst]), float(update.cpu()[worst])
        start, now = float(t0.detach().cpu()[worst]), float(t.detach().cpu()[worst])
        raise NewtonError(
            f"{type(self).__name__}: {why}; in the slice starting at t0={start:.6g}, stage "
            f"{stage} at time t={now:.6g}: residual {r:.3e}, last Newton update {u:.3e}, after "
            f"{iterations} iterations ({len(rows)} of {len(t0)} rows unconverged)",
            t0=start, t=now, residual=r, update=u, iterations=iterations, stage=stage,
            linear_residual=linear_residual,
        )


def _dense_solver(newton: Tensor, keep_grad: bool = False) -> Callable[[Tensor], Tensor]:
    """``g -> newton^{-1} g`` for one ``(R, d, d)`` matrix per row."""
    matrix = newton if keep_grad else newton.detach()

    def solve(g: Tensor) -> Tensor:
        out, info = torch.linalg.solve_ex(matrix, g)
        singular = info != 0
        if bool(singular.any()):  # reported by Newton as a non-finite iterate
            out = torch.where(singular[:, None], math.nan, out)
        return out

    solve.matrix = matrix  # type: ignore[attr-defined]
    return solve


def _banded_solver(bands: Tensor, lower: int, upper: int) -> Callable[[Tensor], Tensor]:
    """``g -> newton^{-1} g`` for one banded Newton matrix per row, ``bands`` ``(R, w, d)`` in
    LAPACK's layout: SciPy's banded LU on the CPU when no gradient is needed (and SciPy is
    installed), else dense."""

    def solve(g: Tensor) -> Tensor:
        if g.device.type != "cpu" or g.requires_grad or not jac_.has_scipy():
            return _dense_solver(_banded_to_dense(bands, upper))(g)
        from scipy.linalg import solve_banded

        b, rhs = bands.numpy(), g.numpy()
        try:
            out = [solve_banded((lower, upper), b[r], rhs[r]) for r in range(len(rhs))]
        except (ValueError, np.linalg.LinAlgError):  # singular: reported by Newton
            return torch.full_like(g, math.nan)
        return torch.from_numpy(np.stack(out))

    solve.matrix = None  # type: ignore[attr-defined]
    solve.rows = lambda active: _banded_solver(bands[active], lower, upper)  # type: ignore[attr-defined]
    return solve


def _banded_to_dense(bands: Tensor, upper: int) -> Tensor:
    """``(R, w, d)`` bands in LAPACK's layout as ``(R, d, d)`` matrices."""
    rows, width, d = bands.shape
    out = bands.new_zeros(rows, d, d)
    for k in range(width):
        o = upper - k
        diagonal = bands[:, k, max(o, 0):d + min(o, 0)]
        out = out + torch.diag_embed(diagonal, offset=o)
    return out


def _by_value(solvers: list[Callable[[Tensor], Tensor]], inverse: Tensor
              ) -> Callable[[Tensor], Tensor]:
    """Row ``r`` solved by ``solvers[inverse[r]]`` (one solver per distinct step size)."""

    def solve(g: Tensor) -> Tensor:
        if len(solvers) == 1:
            return solvers[0](g)
        out = torch.empty_like(g)
        for n, solver in enumerate(solvers):
            mask = inverse == n
            if bool(mask.any()):
                out[mask] = solver(g[mask])
        return out

    solve.rows = lambda active: _by_value(solvers, inverse[active])  # type: ignore[attr-defined]
    return solve


def _restrict(solver: Callable[[Tensor], Tensor], active: Tensor) -> Callable[[Tensor], Tensor]:
    """The solver of a subset of the rows (the rows still iterating)."""
    matrix = getattr(solver, "matrix", None)
    if matrix is not None:
        return _dense_solver(matrix[active])
    return solver.rows(active)  # type: ignore[attr-defined]


def _scatter(full: Tensor, active: Tensor | None, values: Tensor) -> Tensor:
    if active is None:
        return values.detach().clone()
    out = full.clone()
    out[active] = values.detach()
    return out


class BackwardEuler(DIRK):
    """Backward (implicit) Euler, order 1, L-stable, ``steps`` substeps per slice.

    Stability function ``R(z) = 1 / (1 - z)``. See :class:`DIRK` for the Newton options
    (``jacobian``, ``linear``, ``tol``, ``max_iters``).

    Example:
        >>> import pint
        >>> pint.BackwardEuler(1)
        BackwardEuler(steps=1, jacobian=None)
    """

    def __init__(self, steps: int = 1, *, jacobian: Jacobian | None = None, linear: bool = False,
                 tol: float | None = None, max_iters: int = 20) -> None:
        super().__init__(BACKWARD_EULER_TABLEAU, steps, jacobian=jacobian, linear=linear,
                         tol=tol, max_iters=max_iters)


class SDIRK2(DIRK):
    """Alexander's two-stage SDIRK: order 2, L-stable, ``steps`` substeps per slice.

    ``gamma = 1 - 1/sqrt(2)``, stability function ``R(z) = (1 + (1 - 2 gamma) z) /
    (1 - gamma z)^2``. See :class:`DIRK` for the Newton options.
    """

    def __init__(self, steps: int = 1, *, jacobian: Jacobian | None = None, linear: bool = False,
                 tol: float | None = None, max_iters: int = 20) -> None:
        super().__init__(SDIRK2_TABLEAU, steps, jacobian=jacobian, linear=linear,
                         tol=tol, max_iters=max_iters)
