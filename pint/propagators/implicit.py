"""Implicit propagators for stiff problems: diagonally implicit Runge-Kutta methods with Newton.

One engine, :class:`DIRK`, runs any diagonally implicit Runge-Kutta tableau
(:class:`DIRKTableau`); :class:`BackwardEuler` (the one-stage DIRK) and :class:`SDIRK2`
(Alexander's L-stable two-stage method) are its named instances.

Each implicit stage solves ``Y = z + a_ii h f(t + c_i h, Y)`` by Newton's method. The propagator
never sees ``f``: every Newton iteration is ONE request to the engine, so it is one round (one
unit of depth), batched with everything else that runs in that round. The Newton matrix
``I - a_ii h J`` comes from one of three sources:

- ``jacobian=None`` (default): the Jacobian ``J = df/dy`` by forward finite differences, in the
  same request as the residual: the rows ``Y`` and ``Y + eps_j e_j`` for every component ``j``,
  ``(d + 1) R`` rows for ``R`` rows of a ``d``-dimensional state. Full Newton; good for small
  ``d``.
- ``jacobian=A`` (a ``(d, d)`` tensor, or a callable ``t -> (d, d)`` or ``(R, d, d)``): a fixed
  Newton matrix, e.g. the linear part of a reaction-diffusion problem (simplified Newton: one
  row per row and iteration, linear convergence). A constant matrix is factorised once per step
  size and reused.
- ``jacobian=A, linear=True``: the problem is linear, ``f(t, y) = A(t) y + g(t)`` exactly. One
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
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral
from typing import NoReturn

import torch
from torch import Tensor

from ..engine import Propagation, Request
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

Jacobian = Tensor | Callable[[Tensor], Tensor]
"""A Newton matrix: a ``(d, d)`` tensor, or a callable ``t (R,) -> (d, d) or (R, d, d)``."""


class NewtonError(ArithmeticError, ValueError):
    """Newton's method did not converge in an implicit stage.

    Attributes:
        t0: the start time of the slice (propagation row) that failed.
        t: the stage time at which it failed.
        residual: the max-norm of the stage equation's residual at the last evaluated iterate.
        update: the max-norm of the last Newton update.
        iterations: the Newton iterations run.
    """

    def __init__(self, message: str, *, t0: float, t: float, residual: float, update: float,
                 iterations: int) -> None:
        super().__init__(message)
        self.t0 = t0
        self.t = t
        self.residual = residual
        self.update = update
        self.iterations = iterations


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
        jacobian: the Newton matrix's source: ``None`` for finite differences batched into
            each Newton request (full Newton); a ``(d, d)`` tensor, or a callable ``t -> (d, d)``
            or ``(R, d, d)`` (``t`` of shape ``(R,)``), for a fixed Newton matrix (simplified
            Newton) over the flattened state of ``d`` entries.
        linear: the problem is linear, ``f(t, y) = J(t) y + g(t)`` with ``J`` the given
            ``jacobian``: one Newton step per stage, no convergence test, so the depth is known
            (``steps * stages``). Needs ``jacobian``.
        tol: Newton stops for a row when the error left in its iterate, estimated from the
            last update (its max-norm, or ``theta / (1 - theta)`` times it once the
            convergence rate ``theta`` is known), is at most ``tol * max(1, |Y|_max)``.
            ``None``: ``1e-12`` in float64, ``1000 * eps`` in lower precisions.
        max_iters: the most Newton iterations per stage; :class:`NewtonError` when exceeded.

    Raises:
        NewtonError: from ``propagate`` when a stage's Newton iteration does not converge in
            ``max_iters`` iterations, or produces a non-finite state.

    Example:
        >>> import pint
        >>> from pint.propagators import SDIRK2_TABLEAU
        >>> pint.propagators.DIRK(SDIRK2_TABLEAU, steps=4)  # same as pint.SDIRK2(4)
        DIRK(steps=4, jacobian='finite differences')
    """

    def __init__(self, tableau: DIRKTableau, steps: int = 1, *, jacobian: Jacobian | None = None,
                 linear: bool = False, tol: float | None = None, max_iters: int = 20) -> None:
        if isinstance(steps, bool) or not isinstance(steps, Integral) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if not isinstance(tableau, DIRKTableau):
            raise TypeError(f"tableau must be a pint.propagators.DIRKTableau, got "
                            f"{type(tableau).__name__}")
        if jacobian is not None and not (isinstance(jacobian, Tensor) or callable(jacobian)):
            raise TypeError(f"jacobian must be None, a (d, d) tensor or a callable t -> matrix, "
                            f"got {type(jacobian).__name__}")
        if isinstance(jacobian, Tensor) and (jacobian.ndim != 2
                                             or jacobian.shape[0] != jacobian.shape[1]):
            raise ValueError(f"jacobian must be a square (d, d) matrix, got shape "
                             f"{tuple(jacobian.shape)}")
        if not isinstance(linear, bool):
            raise TypeError(f"linear must be True or False, got {linear!r}")
        if linear and jacobian is None:
            raise ValueError("linear=True needs jacobian= (the matrix J of f(t, y) = J y + g(t));"
                             " finite-difference Jacobians are not exact")
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
        self._factors: dict[tuple[float, torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}

    @property
    def depth(self) -> int | None:
        """Evaluation rounds per slice when known in advance (``linear=True`` or an explicit
        tableau): ``steps * stages``; ``None`` when Newton's iteration count decides."""
        explicit = all(row[i] == 0.0 for i, row in enumerate(self.tableau.a))
        return self.steps * self.tableau.stages if self.linear or explicit else None

    def __repr__(self) -> str:
        if self.jacobian is None:
            source = "'finite differences'"
        else:
            source = "matrix" if isinstance(self.jacobian, Tensor) else "callable"
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
                    t0, t_stage, h_y * diagonal, z, stage_value, shape)
                increments.append((stage_value - z) / diagonal)
            y = stage_value if tab.stiffly_accurate else _combine(y, tab.b, increments)
        return y.reshape(shape)

    def _solve_stage(self, t0: Tensor, t: Tensor, ha: Tensor, z: Tensor, guess: Tensor,
                     shape: torch.Size) -> Propagation:
        """Newton for ``Y - z - ha f(t, Y) = 0`` on rows ``(R, d)``; returns ``Y``."""
        rows, d = z.shape
        tol = self._tolerance(z.dtype)
        matrix = None if self.jacobian is None else self._newton_matrix(t, ha, z)
        # A linear problem starts from Y = 0, where f(t, 0) = g(t) exactly: the one Newton step
        # is then Y = (I - ha J)^{-1} (z + ha g(t)), free of cancellation.
        y = torch.zeros_like(z) if self.linear else guess
        active: Tensor | None = None  # None: every row
        residual = update = z.new_zeros(rows)
        for iteration in range(1, self.max_iters + 1):
            idx = slice(None) if active is None else active
            y_a, t_a, ha_a = y[idx], t[idx], ha[idx][:, None]
            if self.jacobian is None:
                f_y, jac = yield from self._evaluate_with_jacobian(t_a, y_a, active, shape)
                newton = torch.eye(d, dtype=z.dtype, device=z.device) - ha_a[:, :, None] * jac
                solve = _dense_solver(newton)
            else:
                request_rows = active
                f_y = (yield Request(t_a, y_a.reshape(-1, *shape[1:]), request_rows))
                f_y = f_y.reshape(-1, d)
                solve = matrix if active is None else _restrict(matrix, active)
            g = y_a - z[idx] - ha_a * f_y
            step = -solve(g)
            y_new = y_a + step
            if active is None:
                y = y_new
            else:
                y = y.index_copy(0, active, y_new)  # (index_add is slow on the CPU)
            if not bool(torch.isfinite(y_new).all()):
                self._fail(t0, t, _max_norm(g.detach()), _max_norm(step.detach()), active,
                           iteration, "the Newton iterate became non-finite (a singular or "
                           "ill-conditioned Newton matrix?)")
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
                   f"better jacobian)")

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

    def _newton_matrix(self, t: Tensor, ha: Tensor, z: Tensor) -> Callable[[Tensor], Tensor]:
        """A solver ``g -> (I - ha J)^{-1} g`` for the rows of this stage."""
        rows, d = z.shape
        jacobian = self.jacobian
        # On the linear path the matrix is part of the result, so gradients flow through it
        # (to parameters in a matrix that requires grad); elsewhere it is only Newton's
        # preconditioner, and the converged stage does not depend on it.
        differentiable = self.linear and torch.is_grad_enabled()
        if isinstance(jacobian, Tensor):
            return self._constant_solver(ha, z, differentiable and jacobian.requires_grad)
        assert jacobian is not None
        with torch.set_grad_enabled(differentiable):
            jac = torch.as_tensor(jacobian(t)).to(z)
        if jac.shape not in ((d, d), (rows, d, d)):
            raise ValueError(f"jacobian(t) must return a ({d}, {d}) or ({rows}, {d}, {d}) "
                             f"matrix for {rows} rows of {d} entries, got {tuple(jac.shape)}")
        eye = torch.eye(d, dtype=z.dtype, device=z.device)
        scale = ha if differentiable else ha.detach()
        return _dense_solver(eye - scale[:, None, None] * jac, keep_grad=differentiable)

    def _constant_solver(self, ha: Tensor, z: Tensor, differentiable: bool
                         ) -> Callable[[Tensor], Tensor]:
        """``(I - ha A)^{-1}`` row by row for a constant ``A``: one LU per distinct ``ha``."""
        assert isinstance(self.jacobian, Tensor)
        values, inverse = torch.unique(ha.detach(), return_inverse=True)
        factors = [self._factor(float(v), z.dtype, z.device, differentiable)
                   for v in values.tolist()]

        def solve(g: Tensor, inverse: Tensor = inverse) -> Tensor:
            if len(factors) == 1:
                lu, pivots = factors[0]
                return torch.linalg.lu_solve(lu, pivots, g.T.contiguous()).T
            out = torch.empty_like(g)
            for n, (lu, pivots) in enumerate(factors):
                mask = inverse == n
                if bool(mask.any()):
                    out[mask] = torch.linalg.lu_solve(lu, pivots, g[mask].T.contiguous()).T
            return out

        solve.inverse = inverse  # type: ignore[attr-defined]
        solve.factors = factors  # type: ignore[attr-defined]
        return solve

    def _factor(self, ha: float, dtype: torch.dtype, device: torch.device,
                differentiable: bool = False) -> tuple[Tensor, Tensor]:
        """The LU factors of ``I - ha A``, memoised (not when they carry gradients)."""
        key = (ha, dtype, device)
        factor = None if differentiable else self._factors.get(key)
        if factor is None:
            assert isinstance(self.jacobian, Tensor)
            with torch.set_grad_enabled(differentiable):
                jac = self.jacobian.to(dtype=dtype, device=device)
                newton = torch.eye(len(jac), dtype=dtype, device=device) - ha * jac
                lu, pivots, info = torch.linalg.lu_factor_ex(newton)
                if int(info):  # singular: solves give non-finite values, reported by Newton
                    lu = torch.full_like(lu, math.nan)
                factor = (lu, pivots)
            if differentiable:
                return factor
            if len(self._factors) >= 32:  # a small memo: slices of a few lengths
                self._factors.pop(next(iter(self._factors)))
            self._factors[key] = factor
        return factor

    def _tolerance(self, dtype: torch.dtype) -> float:
        if self.tol is not None:
            return float(self.tol)
        eps = torch.finfo(dtype).eps
        return 1e-12 if eps < 1e-10 else 1000 * eps

    def _fail(self, t0: Tensor, t: Tensor, residual: Tensor, update: Tensor,
              active: Tensor | None, iterations: int, why: str) -> NoReturn:
        """Raise :class:`NewtonError` for the worst row."""
        rows = torch.arange(len(t0)) if active is None else active.cpu()
        worst = int(rows[int(residual.cpu()[rows].argmax())]) if len(rows) else 0
        r, u = float(residual.cpu()[worst]), float(update.cpu()[worst])
        start, now = float(t0.detach().cpu()[worst]), float(t.detach().cpu()[worst])
        raise NewtonError(
            f"{type(self).__name__}: {why}; in the slice starting at t0={start:.6g}, stage time "
            f"t={now:.6g}: residual {r:.3e}, last Newton update {u:.3e}, after {iterations} "
            f"iterations ({len(rows)} of {len(t0)} rows unconverged)",
            t0=start, t=now, residual=r, update=u, iterations=iterations,
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


def _restrict(solver: Callable[[Tensor], Tensor], active: Tensor) -> Callable[[Tensor], Tensor]:
    """The solver of a subset of the rows (the rows still iterating)."""
    matrix = getattr(solver, "matrix", None)
    if matrix is not None:
        return _dense_solver(matrix[active])
    inverse, factors = solver.inverse[active], solver.factors  # type: ignore[attr-defined]
    if len(factors) == 1:
        return solver

    def solve(g: Tensor) -> Tensor:
        out = torch.empty_like(g)
        for n, (lu, pivots) in enumerate(factors):
            mask = inverse == n
            if bool(mask.any()):
                out[mask] = torch.linalg.lu_solve(lu, pivots, g[mask].T.contiguous()).T
        return out

    return solve


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
        BackwardEuler(steps=1, jacobian='finite differences')
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
