"""Picard iterations over the whole grid, and their quasi-Newton acceleration.

On a grid ``t_0 < ... < t_N`` (or decreasing), one propagator step per interval is a map
``x_{j+1} = Phi_j(x_j)``. The serial solve applies the maps one after the other. A Picard-family
iteration evaluates ``Phi_j(X_j)`` at every point of a window ``[b, e)`` in ONE batched round
and updates the trajectory by the linearised recurrence (a scan, no evaluations)::

    X'_b = X_b,    X'_{j+1} = Phi_j(X_j) + A_j (X'_j - X_j)

``A_j = I`` is Picard iteration (waveform relaxation; ParaDiGMS for diffusion), ``A_j`` the
Jacobian of ``Phi_j`` is Newton's method (DEER), and a secant estimate of it in between is a
quasi-Newton method (:class:`Secant`). Whatever ``A_j``, the front ``X'_{b+1} = Phi_b(X_b)`` is
exact, so the iteration never needs more than ``N`` rounds and equals :func:`pint.serial` then.

Strategies, each an object: the Jacobian model (:class:`Identity`; :class:`Secant`, one
factor per step and problem; :class:`DiagonalSecant`, one per state component;
:class:`Anderson`, triangular Anderson acceleration of any of them, after ParaTAA), the
initial guess (:class:`Constant`, :class:`Extrapolate`, which with a sliding window also
re-predicts the points beyond the window), the acceptance rule (:class:`ExactFront`: only the
exact front is final and the problems stop by the stopping rule on the whole change;
:class:`Freeze`: ParaDiGMS's acceptance of every front point whose change is below a tolerance,
cheaper on smooth flows but able to lock in wrong states on expanding ones; ``stop=True``
adds the stopping rule once the window reaches the end).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from numbers import Integral, Real
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..engine import Engine, Propagation, Request, Task
from ..propagators import Propagator, propagation
from ..solution import Solution
from . import recurrence
from .driver import Callback, Iterations, Norm, StopRule, Tolerance, check_options, vectorize
from .parareal import check_propagators

__all__ = [
    "Acceptance",
    "Anderson",
    "Constant",
    "DiagonalSecant",
    "ExactFront",
    "Extrapolate",
    "Freeze",
    "Identity",
    "InitialGuess",
    "JacobianModel",
    "Secant",
    "picard",
]

PointNorm = Callable[[Tensor, Tensor], Tensor]
"""``norm(change, t)``: the change of the states at some points, ``(P, S, *state)``, with the
points' times ``(P,)``, to one value per point and problem, ``(P, S)``."""


# -- Jacobian models -----------------------------------------------------------------------
@runtime_checkable
class JacobianModel(Protocol):
    """The factor ``A_j`` of the linearised recurrence, one scalar per step and problem.

    Optional members: ``learns = False`` (no history needed, as :class:`Identity`);
    ``elementwise = True`` with ``estimate_elementwise(j, dphi, dx, seen, current)``: one
    factor per state component (:class:`DiagonalSecant`); ``mixer()``: a fresh object whose
    ``mix(x, g, members, batch, b, e)`` rewrites each iteration's update ``g`` of the iterate
    ``x`` (:class:`Anderson`).
    """

    def prior(self, t: Tensor) -> Tensor:
        """``A_j`` before any history, shape ``(N,)``, for the grid ``t``."""
        ...

    def estimate(self, j: Tensor, dphi_dx: Tensor, dx_dx: Tensor, current: Tensor) -> Tensor:
        """``A`` at steps ``j`` from ``<dPhi, dX>`` and ``<dX, dX>`` (each ``(P, S)``) between
        the last two evaluations; ``current`` the factors now. ``None``-free: return
        ``current`` where there is nothing to learn."""
        ...


class Identity:
    """``A_j = 1``: plain Picard iteration (ParaDiGMS, waveform relaxation)."""

    learns = False

    def __repr__(self) -> str:
        return "Identity()"

    def prior(self, t: Tensor) -> Tensor:
        """Ones."""
        return torch.ones(len(t) - 1, dtype=torch.float64)

    def estimate(self, j: Tensor, dphi_dx: Tensor, dx_dx: Tensor, current: Tensor) -> Tensor:
        """Ones, whatever the history."""
        return current


class Secant:
    """A scalar secant estimate of ``dPhi_j/dx`` per step and problem (quasi-Newton Picard):
    ``A_j = <dPhi, dX> / <dX, dX>`` from the last two evaluations at step ``j``, clipped to
    ``[lower_j, upper_j]``.

    Args:
        prior: ``A_j`` before any history: a number or a tensor of ``N`` values (default 1,
            Picard's choice).
        lower, upper: clip bounds, numbers or tensors of ``N`` values (default: no clipping).
    """

    learns = True

    def __init__(self, prior: float | Tensor = 1.0, lower: float | Tensor | None = None,
                 upper: float | Tensor | None = None) -> None:
        self._prior, self.lower, self.upper = prior, lower, upper

    def __repr__(self) -> str:
        return "Secant()"

    def prior(self, t: Tensor) -> Tensor:
        """The prior, one value per step (checking the prior and the bounds against the
        ``N = len(t) - 1`` steps)."""
        n = len(t) - 1
        for name, value in (("prior", self._prior), ("lower", self.lower),
                            ("upper", self.upper)):
            if isinstance(value, Tensor) and value.ndim > 0 and tuple(value.shape) != (n,):
                raise ValueError(f"Secant's {name} must be a number or a tensor of N = {n} "
                                 f"values (one per step), got shape {tuple(value.shape)}")
        prior = torch.as_tensor(self._prior, dtype=torch.float64).cpu()
        values = prior.expand(len(t) - 1).clone()
        if not bool(torch.isfinite(values).all()):
            raise ValueError("Secant's prior must be finite")
        return values

    def diagonal(self, floor: float = 0.1) -> DiagonalSecant:
        """The :class:`DiagonalSecant` with this prior and these bounds."""
        return DiagonalSecant(self._prior, self.lower, self.upper, floor=floor)

    def estimate(self, j: Tensor, dphi_dx: Tensor, dx_dx: Tensor, current: Tensor) -> Tensor:
        """The clipped secant where ``dX != 0``, else the current factor."""
        known = dx_dx > 0
        value = torch.where(known, dphi_dx / torch.where(known, dx_dx, 1), current)
        if self.lower is not None:
            value = torch.maximum(value, _at(self.lower, j, value))
        if self.upper is not None:
            value = torch.minimum(value, _at(self.upper, j, value))
        return torch.where(known, value, current)


def _at(bound: float | Tensor, j: Tensor, like: Tensor) -> Tensor:
    """A bound (a number, or one value per step) at steps ``j``, shaped like ``like``."""
    if isinstance(bound, Tensor) and bound.ndim == 1:
        return bound.to(like)[j.to(like.device)].reshape(-1, *[1] * (like.ndim - 1))
    return torch.as_tensor(bound, dtype=like.dtype, device=like.device)


class DiagonalSecant(Secant):
    """A diagonal secant estimate of ``dPhi_j/dx``: one factor per step, problem and state
    component, ``A_j[i] = dPhi[i] / dX[i]`` from the last two evaluations at step ``j``, where
    the component changed by more than ``floor`` times the change's RMS; elsewhere the scalar
    secant :class:`Secant` (the fallback); both clipped to ``[lower_j, upper_j]``.

    A diagonal ``A_j`` models steps whose components evolve at different rates (a
    diagonal-dominant Jacobian); on a step that mixes components (a denoiser) the
    componentwise quotients are noisy and the scalar secant is often as good.

    Args:
        prior, lower, upper: as in :class:`Secant`.
        floor: the smallest ``|dX[i]| / rms(dX)`` at which the componentwise quotient is used.
    """

    elementwise = True

    def __init__(self, prior: float | Tensor = 1.0, lower: float | Tensor | None = None,
                 upper: float | Tensor | None = None, floor: float = 0.1) -> None:
        super().__init__(prior, lower, upper)
        if isinstance(floor, bool) or not isinstance(floor, int | float) or not floor > 0:
            raise ValueError(f"DiagonalSecant's floor must be a positive number, got {floor!r}")
        self.floor = float(floor)

    def __repr__(self) -> str:
        return "DiagonalSecant()"

    def estimate_elementwise(self, j: Tensor, dphi: Tensor, dx: Tensor, seen: Tensor,
                             current: Tensor) -> Tensor:
        """The factors at steps ``j`` (``(P, S, *state)``) from the changes ``dphi``, ``dx``
        (each ``(P, S, *state)``) where ``seen`` (``(P, S)``); else ``current``."""
        shape = (*dx.shape[:2], *[1] * (dx.ndim - 2))
        dx_dx = _state_sum(dx * dx)
        scalar = super().estimate(j, _state_sum(dphi * dx).double(),
                                  torch.where(seen, dx_dx.double(), 0),
                                  _state_sum(current) / current[0, 0].numel())
        rms = (dx_dx / max(1, dx[0, 0].numel())).sqrt().reshape(shape)
        usable = (dx.abs() > self.floor * rms) & (rms > 0)
        value = torch.where(usable, dphi / torch.where(usable, dx, 1),
                            scalar.to(dx.dtype).reshape(shape))
        if self.lower is not None:
            value = torch.maximum(value, _at(self.lower, j, value))
        if self.upper is not None:
            value = torch.minimum(value, _at(self.upper, j, value))
        return torch.where(seen.reshape(shape), value, current)


def _state_sum(values: Tensor) -> Tensor:
    """``(P, S, *state)`` summed over the state: ``(P, S)`` (a state may have no axis: a
    ``sum`` over an empty tuple of dimensions would sum everything)."""
    return values.reshape(*values.shape[:2], -1).sum(2)


class Anderson:
    """Triangular Anderson acceleration of a Picard-family iteration, after ParaTAA (Tang,
    Tang, Luo, Wang & Chang, *Accelerating Parallel Sampling of Diffusion Models*, ICML 2024).

    The iteration is a fixed-point map ``G`` of the whole trajectory (``G(X)`` the update of
    :func:`picard` with the ``base`` Jacobian model: Picard's cumulative sum for
    :class:`Identity`). Anderson mixing replaces ``G(X_k)`` by ``G(X_k) - dG gamma``, with
    ``dG``, ``dR`` the differences of the last ``depth`` values of ``G`` and of the residual
    ``R = G(X) - X``, and ``gamma`` the least-squares fit of ``R_k`` by ``dR``. *Triangular*:
    the trajectory's map is lower triangular (point ``j`` depends only on the points before
    it), so each point ``t`` fits its own ``gamma_t`` on the residuals of the points up to
    ``t`` only. The exact front and the point after it take the plain update, so the prefix
    stays exact and the result equals :func:`pint.serial` at full iterations.

    Args:
        base: the Jacobian model of the map being accelerated (default :class:`Identity`).
        depth: how many past differences the fit uses (``m``; default 3).
        regularization: Tikhonov weight of the fit, relative to its Gram matrix's trace.
    """

    def __init__(self, base: JacobianModel | None = None, depth: int = 3,
                 regularization: float = 1e-8) -> None:
        if isinstance(depth, bool) or not isinstance(depth, Integral) or depth < 1:
            raise ValueError(f"Anderson's depth must be a positive integer, got {depth!r}")
        if isinstance(base, Anderson) or not isinstance(base, JacobianModel | None):
            raise TypeError(f"Anderson's base must be a JacobianModel other than Anderson, "
                            f"got {base!r}")
        if isinstance(regularization, bool) or not isinstance(regularization, Real) or not (
                0 <= regularization < math.inf):
            raise ValueError(f"Anderson's regularization must be a finite number >= 0, got "
                             f"{regularization!r}")
        self.base = Identity() if base is None else base
        self.depth, self.regularization = int(depth), float(regularization)
        self.learns = bool(getattr(self.base, "learns", True))
        self.elementwise = bool(getattr(self.base, "elementwise", False))

    def __repr__(self) -> str:
        return f"Anderson(base={self.base!r}, depth={self.depth})"

    def prior(self, t: Tensor) -> Tensor:
        """The base model's prior."""
        return self.base.prior(t)

    def estimate(self, j: Tensor, dphi_dx: Tensor, dx_dx: Tensor, current: Tensor) -> Tensor:
        """The base model's estimate."""
        return self.base.estimate(j, dphi_dx, dx_dx, current)

    def estimate_elementwise(self, j: Tensor, dphi: Tensor, dx: Tensor, seen: Tensor,
                             current: Tensor) -> Tensor:
        """The base model's elementwise estimate."""
        return self.base.estimate_elementwise(j, dphi, dx, seen, current)  # type: ignore

    def mixer(self) -> AndersonMixer:
        """The history of one solve."""
        return AndersonMixer(self.depth, self.regularization)


class AndersonMixer:
    """The history of one :class:`Anderson`-accelerated solve: the last ``depth + 1`` iterates
    ``X`` and updates ``G(X)`` of every problem (problems only ever leave the iteration, so
    the active ones have all of it)."""

    def __init__(self, depth: int, regularization: float) -> None:
        self.depth, self.regularization = depth, regularization
        self.xs: list[Tensor] = []  # each (N + 1, B, *state)
        self.gs: list[Tensor] = []

    def mix(self, x: Tensor, g: Tensor, members: Tensor, batch: int, b: int, e: int) -> Tensor:
        """The accelerated update: ``g`` with the points ``b + 2 .. e`` mixed, for the problems
        ``members`` (their rows of the iterate ``x`` and its update ``g``:
        ``(N + 1, S, *state)``; ``batch`` problems in all)."""
        history = [(hx[:, members], hg[:, members]) for hx, hg in zip(self.xs, self.gs,
                                                                       strict=True)]
        self._remember(x, g, members, batch)
        out = g.clone()
        lo = b + 1  # the fit's rows: the window from the point after the exact front
        if not history or e < lo + 1:
            return out
        xs = torch.stack([h[0][lo:e + 1] for h in history] + [x[lo:e + 1]])  # (m+1, P, S, ..)
        gs = torch.stack([h[1][lo:e + 1] for h in history] + [g[lo:e + 1]])
        r = gs - xs
        dr, dg = r[1:] - r[:-1], gs[1:] - gs[:-1]  # (m, P, S, ...)
        # the state flattened to one axis d (reshape: a scalar state has no axis to flatten)
        dr_flat = dr.reshape(*dr.shape[:3], -1).double()
        r_flat = r[-1].reshape(*r.shape[1:3], -1).double()
        # triangular: point t fits on the rows lo..t only, i.e. cumulative Gram sums
        gram = torch.einsum("ipsd,jpsd->psij", dr_flat, dr_flat).cumsum(0)  # (P, S, m, m)
        rhs = torch.einsum("ipsd,psd->psi", dr_flat, r_flat).cumsum(0)
        m = gram.shape[-1]
        trace = gram.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
        eye = torch.eye(m, dtype=gram.dtype, device=gram.device)
        gram = gram + (self.regularization * trace + torch.finfo(gram.dtype).tiny) * eye
        gamma = torch.linalg.solve(gram, rhs.unsqueeze(-1)).squeeze(-1)  # (P, S, m)
        gamma = torch.nan_to_num(gamma, nan=0.0, posinf=0.0, neginf=0.0).to(x.dtype)
        mixed = gs[-1] - torch.einsum("psi,ips...->ps...", gamma, dg)
        out[lo + 1:e + 1] = mixed[1:]  # the point after the front keeps the exact update
        return out

    def _remember(self, x: Tensor, g: Tensor, members: Tensor, batch: int) -> None:
        """Keep ``x`` and ``g`` of the problems ``members`` (the last ``depth + 1``)."""
        for store, value in ((self.xs, x), (self.gs, g)):
            full = torch.zeros(value.shape[0], batch, *value.shape[2:], dtype=value.dtype,
                               device=value.device)
            full[:, members] = value
            store.append(full)
            del store[:-self.depth]


# -- initial guesses ---------------------------------------------------------------------
@runtime_checkable
class InitialGuess(Protocol):
    """The trajectory the iteration starts from: a generator (like a propagation) that may
    yield requests and returns the states at every grid point, ``(N + 1, S, *state)``.

    An initial guess may also define ``ahead(t, end, slope)``: with a sliding window, the
    states at ``t[1:]`` beyond the window's end (``end``, the state at ``t[0]``; ``slope``
    the last step's ``(Phi(x) - x) / h``) after every iteration. Without it, the points
    beyond the window carry the correction of the window's end through the Jacobian model.
    """

    def guess(self, t: Tensor, y0: Tensor) -> Propagation:
        """The initial trajectory for the problems ``y0`` (``(S, *state)``)."""
        ...


class Constant:
    """Every point starts at ``y0`` (ParaDiGMS): no evaluation."""

    def __repr__(self) -> str:
        return "Constant()"

    def guess(self, t: Tensor, y0: Tensor) -> Propagation:
        """``y0`` at every point."""
        return y0.unsqueeze(0).expand(len(t), *y0.shape).clone()
        yield  # a generator that needs no evaluation


class Extrapolate:
    """One evaluation ``f(t_0, y0)`` and the straight line ``X_j = y0 + (t_j - t_0) f``:
    for a diffusion probability-flow ODE it is DDIM's prediction of every point from the first
    denoiser output, a far better start than the noise itself.

    With a sliding window, the points beyond the window are guessed again after every
    iteration (:meth:`ahead`) by the same straight line from the window's end, along the slope
    of its last step (DDIM's prediction from the latest, least noisy denoiser output), instead
    of carrying the window end's correction onto the first guess.
    """

    def __repr__(self) -> str:
        return "Extrapolate()"

    def guess(self, t: Tensor, y0: Tensor) -> Propagation:
        """The tangent line at ``t_0``."""
        slope = yield Request(t[:1].expand(len(y0)), y0)
        return self.ahead(t, y0, slope, start=0)

    def ahead(self, t: Tensor, end: Tensor, slope: Tensor, start: int = 1) -> Tensor:
        """The states at ``t[start:]`` on the line through ``end`` (the state at ``t[0]``,
        ``(S, *state)``) with ``slope`` (the last step's ``(Phi(x) - x) / h``; ``f`` itself
        for Euler steps)."""
        h = (t[start:] - t[0]).reshape(-1, 1, *[1] * (end.ndim - 1))
        return end.unsqueeze(0) + h * slope.unsqueeze(0)


# -- acceptance ------------------------------------------------------------------------
@runtime_checkable
class Acceptance(Protocol):
    """How far the window's front moves after an iteration: ``advance(change, t, b, tol)``
    with the change of the window's points ``b+1..e`` (``(P, S, *state)``) returns the new
    front (at least ``b + 1``, the exact point), or ``None`` to keep the default."""

    def advance(self, change: Tensor, t: Tensor, b: int, tol: float) -> int:
        """The new front."""
        ...


class ExactFront:
    """Only the exact front point is final (the front moves by one per iteration); problems
    stop by the stopping rule on the change of their whole trajectory. Never locks in a wrong
    state."""

    def __repr__(self) -> str:
        return "ExactFront()"

    def advance(self, change: Tensor, t: Tensor, b: int, tol: float) -> int:
        """``b + 1``."""
        return b + 1


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

    def advance(self, change: Tensor, t: Tensor, b: int, tol: float) -> int:
        """Past the exact front and every following point within the tolerance."""
        errors = self.errors(change, t)
        above = (errors[1:] > (tol if self.tol is None else self.tol)).nonzero()
        return b + (len(errors) if len(above) == 0 else 1 + int(above[0]))


# -- the solver -------------------------------------------------------------------------
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
        initial: :class:`Constant` (default) or :class:`Extrapolate`.
        acceptance: :class:`ExactFront` (default) or :class:`Freeze`.
        store_iterates: keep the trajectory after every iteration.
        callback: ``callback(k, ys, residual)`` after every iteration ``k`` (1 is the first), as
            in :func:`pint.parareal`.

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
    n = len(t) - 1 if isinstance(t, Tensor) and t.ndim == 1 else 0
    max_iters = check_options(y0, t, tol=tol, max_iters=max_iters, norm=norm, stop=stop,
                              independent=independent, limit=max(n, 1), callback=callback)
    check_propagators(step=step)
    window = n if window is None else window
    if isinstance(window, bool) or not isinstance(window, Integral) or not 1 <= window <= n:
        raise ValueError(f"window must be an integer in [1, {n}] (the number of intervals), "
                         f"got {window!r}")
    window = int(window)
    jacobian = Identity() if jacobian is None else jacobian
    initial = Constant() if initial is None else initial
    acceptance = ExactFront() if acceptance is None else acceptance
    for name, value, kind in (("jacobian", jacobian, JacobianModel),
                              ("initial", initial, InitialGuess),
                              ("acceptance", acceptance, Acceptance)):
        if isinstance(value, type) or not isinstance(value, kind):
            raise TypeError(f"{name} must be a {kind.__name__} instance (see pint.picard), "
                            f"got {value!r}")
    states = y0 if independent else y0.unsqueeze(0)
    engine = Engine(vectorize(f, vectorized), with_index=independent, max_batch=max_batch)
    iterations = Iterations(
        states, n + 1, tol=float(tol), stop=stop, norm=norm, max_iters=max_iters,
        exact_after=n, callback=callback, store_iterates=store_iterates,
        squeeze=not independent, verify=engine.verify,
    )
    solver = Picard(engine, iterations, t, step, window, jacobian, initial, acceptance)
    return solver.run()


class Picard:
    """The state of one Picard-family solve."""

    def __init__(self, engine: Engine, iterations: Iterations, t: Tensor, step: Propagator,
                 window: int, jacobian: JacobianModel, initial: InitialGuess,
                 acceptance: Acceptance) -> None:
        self.engine, self.it, self.t, self.step = engine, iterations, t, step
        self.window, self.jacobian, self.initial, self.acceptance = (
            window, jacobian, initial, acceptance)
        self.n = len(t) - 1
        self.batch = iterations.batch
        self.factors = jacobian.prior(t).to(t.device).unsqueeze(1).repeat(1, self.batch)
        self.elementwise = bool(getattr(jacobian, "elementwise", False))
        if self.elementwise:  # one factor per state component
            state = iterations.result.shape[2:]
            self.factors = self.factors.to(iterations.result.dtype).reshape(
                *self.factors.shape, *[1] * len(state)).repeat(1, 1, *state)
        mixer = getattr(jacobian, "mixer", None)
        self.mixer = None if mixer is None else mixer()
        self.learns = bool(getattr(jacobian, "learns", True))
        self.picard = not self.learns and bool((self.factors == 1).all())  # a cumulative sum
        self.seen_x: Tensor | None = None  # the last evaluated points and their images
        self.seen_phi: Tensor | None = None
        self.seen = torch.zeros(self.n, self.batch, dtype=torch.bool)  # which are known
        # Freeze(stop=True): the last whole-trajectory residual of each problem
        self.final = torch.full((self.batch,), math.nan, dtype=torch.float64)

    def evaluate(self, propagation: Propagation, label: str, k: int, points: Tensor,
                 problems: Tensor) -> Tensor:
        """Run one propagation to its end on the engine."""
        out: list[Tensor] = []
        self.engine.start(Task(propagation, out.append, label=label, iteration=k,
                               points=points, problems=problems))
        self.engine.run()
        return out[0]

    def run(self) -> Solution:
        start = time.perf_counter()
        y0 = self.it.result[0]
        members = self.it.members(y0.device)
        x = self.evaluate(self.initial.guess(self.t, y0), "initial", 0,
                          torch.zeros(self.batch, dtype=torch.long), members)
        x[0] = y0
        if self.learns:
            self.seen_x = torch.zeros_like(x[:-1])
            self.seen_phi = torch.zeros_like(x[:-1])
        self.it.result = x
        b, k = 0, 0
        try:
            while not self.it.done and k < self.it.max_iters:  # max_iters=0: the guess
                k += 1
                b = self.iterate(k, b)
        finally:
            self.engine.close()
        return self.it.solution(self.it.result, self.engine, time.perf_counter() - start)

    def iterate(self, k: int, b: int) -> int:
        """Iteration ``k`` with the front at ``b``; returns the new front."""
        e = min(b + self.window, self.n)
        members = self.it.members(self.t.device)
        x = self.it.take(self.it.result, dim=1)  # (N + 1, S, *state)
        points = e - b
        s = x.shape[1]
        rows = x[b:e].flatten(0, 1)
        starts = torch.arange(b, e).repeat_interleave(s)  # each row's step, on the host
        phi = self.evaluate(
            propagation(self.step, self.t, starts, starts + 1, rows), "step", k,
            starts, members.repeat(points),
        ).reshape(points, *x.shape[1:])
        a = self.factors[:, members]
        if self.learns:
            a = self.learn(b, e, members, x, phi, a)
        new = self.scan(x, phi, a, b, e)
        if self.mixer is not None:
            new = self.mixer.mix(x, new, members, self.batch, b, e)
        ahead = getattr(self.initial, "ahead", None)
        if e < self.n and ahead is not None:  # re-guess the points beyond the window
            slope = (phi[-1] - x[e - 1]) / (self.t[e] - self.t[e - 1])
            new[e + 1:] = ahead(self.t[e:], new[e], slope)
        change = new - x
        window, times = change[b + 1:e + 1], self.t[b + 1:e + 1]
        next_b = min(self.acceptance.advance(window, times, b, self.it.tol), self.n)
        if isinstance(self.acceptance, Freeze):  # stops when the front reaches the end
            stopping = torch.full((s,), next_b >= self.n)
            if self.acceptance.stop and e == self.n:  # or by the stopping rule
                whole = self.it.residual(change)
                rows = members.cpu()
                stopping |= self.it.stop(whole, self.final[rows], self.it.tol).cpu()
                self.final[rows] = whole
            residual = torch.full((s,), float(self.acceptance.errors(window, times).max()),
                                  dtype=torch.float64)
            self.it.decide(k, residual, new, exact=next_b >= self.n and self.it.tol == 0,
                           stopping=stopping)
        else:  # the exact front moved by one: the stopping rule decides, on the whole change
            residual = self.it.residual(change) if e == self.n else None
            self.it.decide(k, residual, new, exact=b + 1 >= self.n)
        return next_b

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
