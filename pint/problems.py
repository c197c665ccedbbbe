"""Initial-value problems with known solutions, shared by the tests, docs and benchmarks.

Each :class:`Problem` has a vector field ``f(t, y)`` that works for one state
(``t`` a scalar, ``y`` of shape ``(d,)``, torchdiffeq's convention) and for a batch of
rows (``t`` of shape ``(R,)``, ``y`` of shape ``(R, d)``, pint's ``vectorized=True``).
Problems with a closed-form solution carry it; the others have a reference computed
with SciPy's DOP853 (Radau for stiff problems) at tight tolerances (SciPy is imported only
then).

The stiff problems (:data:`STIFF`: :func:`stiff_cosine`, and by the method of lines
:func:`heat_1d`, :func:`heat_2d`, :func:`allen_cahn`) need implicit propagators; each carries
a Newton matrix for them, ``problem.jacobian`` (the exact Jacobian when ``problem.linear``,
else the stiff linear part)::

    coarse = pint.BackwardEuler(1, jacobian=problem.jacobian, linear=problem.linear)

Example:
    >>> import pint
    >>> problem = pint.problems.lotka_volterra()
    >>> t = problem.times(65)  # 64 slices over the problem's interval
    >>> reference = problem.reference(t)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "Problem",
    "allen_cahn",
    "brusselator",
    "dahlquist",
    "harmonic_oscillator",
    "heat_1d",
    "heat_2d",
    "laplacian_1d",
    "laplacian_2d",
    "linear",
    "logistic",
    "lorenz",
    "lotka_volterra",
    "non_autonomous",
    "stiff_cosine",
    "van_der_pol",
]

DTYPE = torch.float64


@dataclass(frozen=True)
class Problem:
    """An initial-value problem ``dy/dt = f(t, y)``, ``y(t0) = y0`` on ``[t0, t1]``.

    Attributes:
        name: a short label.
        f: the vector field (see the module docstring for the shapes it accepts).
        y0: the initial state, float64, shape ``(d,)``.
        t0: the start of the interval.
        t1: the end of the interval.
        solution: the exact solution ``t (T,) -> y (T, d)`` when one is known.
        jacobian: a ``(d, d)`` Newton matrix for implicit propagators (``jacobian=`` of
            :class:`pint.BackwardEuler`): the exact Jacobian ``df/dy`` when ``linear``, else
            the stiff linear part of ``f``; ``None`` when the problem has none.
        linear: ``f(t, y) = jacobian @ y + g(t)`` exactly.
        stiff: explicit methods need tiny steps; the SciPy reference uses Radau.
    """

    name: str
    f: Callable[[Tensor, Tensor], Tensor]
    y0: Tensor
    t0: float
    t1: float
    solution: Callable[[Tensor], Tensor] | None = None
    jacobian: Tensor | None = None
    linear: bool = False
    stiff: bool = False

    def times(self, points: int, dtype: torch.dtype = DTYPE, device: str | torch.device = "cpu"
              ) -> Tensor:
        """``points`` equally spaced times from ``t0`` to ``t1``."""
        return torch.linspace(self.t0, self.t1, points, dtype=dtype, device=device)

    def reference(self, t: Tensor) -> Tensor:
        """The solution at ``t``, shape ``(len(t), d)``, in float64 on the CPU.

        Exact when the problem has a closed form; otherwise SciPy's DOP853 with
        ``rtol = atol = 1e-13`` (about 1e-11 accurate on these problems), or for a stiff
        problem Radau with ``rtol = atol = 1e-12`` (about 1e-10 accurate).
        """
        times = t.detach().to("cpu", DTYPE)
        if self.solution is not None:
            return self.solution(times)
        from scipy.integrate import solve_ivp

        def rhs(s: float, y: object) -> object:
            return self.f(torch.tensor(s, dtype=DTYPE), torch.as_tensor(y, dtype=DTYPE)).numpy()

        tol = 1e-12 if self.stiff else 1e-13
        extra = {} if self.jacobian is None or not self.linear else {
            "jac": self.jacobian.numpy()}
        out = solve_ivp(
            rhs, (self.t0, float(times[-1])), self.y0.numpy(),
            method="Radau" if self.stiff else "DOP853", t_eval=times.numpy(), rtol=tol,
            atol=tol, **extra,
        )
        if not out.success:
            raise RuntimeError(f"reference solve of {self.name} failed: {out.message}")
        return torch.from_numpy(out.y.T.copy())


def _column(t: Tensor) -> Tensor:
    """``t`` shaped to broadcast against states ``(..., d)``."""
    return torch.as_tensor(t)[..., None]


def dahlquist(lam: float | list[float] = -1.0, t1: float = 1.0) -> Problem:
    """``y' = lam * y`` (scalar, or diagonal when ``lam`` is a list), ``y(0) = 1``."""
    lams = torch.tensor([lam] if isinstance(lam, int | float) else list(lam), dtype=DTYPE)
    y0 = torch.ones_like(lams)

    def f(t: Tensor, y: Tensor) -> Tensor:
        return lams.to(y) * y

    def solution(t: Tensor) -> Tensor:
        return y0 * torch.exp(lams * (t - 0.0)[:, None])

    return Problem("dahlquist", f, y0, 0.0, t1, solution, jacobian=torch.diag(lams), linear=True)


def linear(matrix: Tensor | None = None, y0: Tensor | None = None, t1: float = 5.0) -> Problem:
    """``y' = A y``, solved exactly with ``torch.linalg.matrix_exp``.

    The default ``A`` is a damped rotation coupled to a decaying mode.
    """
    a = matrix if matrix is not None else torch.tensor(
        [[-0.1, 2.0, 0.0], [-2.0, -0.1, 0.5], [0.0, 0.0, -0.5]], dtype=DTYPE
    )
    a = a.to(DTYPE)
    start = (y0 if y0 is not None else torch.tensor([1.0, 0.0, 1.0])).to(DTYPE)
    if a.shape != (len(start), len(start)):
        raise ValueError(f"matrix must be ({len(start)}, {len(start)}), got {tuple(a.shape)}")

    def f(t: Tensor, y: Tensor) -> Tensor:
        return y @ a.to(y).T

    def solution(t: Tensor) -> Tensor:
        return torch.linalg.matrix_exp(a * t[:, None, None]) @ start

    return Problem("linear", f, start, 0.0, t1, solution, jacobian=a, linear=True)


def harmonic_oscillator(omega: float = 2.0, t1: float = 10.0) -> Problem:
    """``q'' = -omega^2 q`` as ``(q, p)``, ``q(0) = 1``, ``p(0) = 0``."""

    def f(t: Tensor, y: Tensor) -> Tensor:
        return torch.stack([y[..., 1], -(omega**2) * y[..., 0]], dim=-1)

    def solution(t: Tensor) -> Tensor:
        return torch.stack([torch.cos(omega * t), -omega * torch.sin(omega * t)], dim=-1)

    return Problem("harmonic_oscillator", f, torch.tensor([1.0, 0.0], dtype=DTYPE), 0.0, t1,
                   solution)


def logistic(rate: float = 1.0, capacity: float = 1.0, y0: float = 0.1, t1: float = 10.0
             ) -> Problem:
    """``y' = r y (1 - y / K)`` with its closed-form sigmoid solution."""

    def f(t: Tensor, y: Tensor) -> Tensor:
        return rate * y * (1 - y / capacity)

    def solution(t: Tensor) -> Tensor:
        return (capacity / (1 + (capacity / y0 - 1) * torch.exp(-rate * t)))[:, None]

    return Problem("logistic", f, torch.tensor([y0], dtype=DTYPE), 0.0, t1, solution)


def non_autonomous(y0: float = 1.0, t1: float = 10.0) -> Problem:
    """``y' = -y + sin t``; ``y = (y0 + 1/2) e^{-t} + (sin t - cos t) / 2``."""

    def f(t: Tensor, y: Tensor) -> Tensor:
        return -y + torch.sin(_column(t)).to(y)

    def solution(t: Tensor) -> Tensor:
        return ((y0 + 0.5) * torch.exp(-t) + 0.5 * (torch.sin(t) - torch.cos(t)))[:, None]

    return Problem("non_autonomous", f, torch.tensor([y0], dtype=DTYPE), 0.0, t1, solution)


def lotka_volterra(t1: float = 10.0) -> Problem:
    """Predator-prey: ``x' = 1.5 x - x y``, ``y' = x y - 3 y``, from ``(1, 1)``."""

    def f(t: Tensor, y: Tensor) -> Tensor:
        x, z = y[..., 0], y[..., 1]
        return torch.stack([1.5 * x - x * z, x * z - 3.0 * z], dim=-1)

    return Problem("lotka_volterra", f, torch.tensor([1.0, 1.0], dtype=DTYPE), 0.0, t1)


def van_der_pol(mu: float = 1.0, t1: float = 10.0) -> Problem:
    """The Van der Pol oscillator in its non-stiff regime, from ``(2, 0)``."""

    def f(t: Tensor, y: Tensor) -> Tensor:
        x, v = y[..., 0], y[..., 1]
        return torch.stack([v, mu * (1 - x * x) * v - x], dim=-1)

    return Problem("van_der_pol", f, torch.tensor([2.0, 0.0], dtype=DTYPE), 0.0, t1)


def brusselator(a: float = 1.0, b: float = 3.0, t1: float = 10.0) -> Problem:
    """The Brusselator reaction ``x' = a + x^2 y - (b + 1) x``, ``y' = b x - x^2 y``."""

    def f(t: Tensor, y: Tensor) -> Tensor:
        x, z = y[..., 0], y[..., 1]
        return torch.stack([a + x * x * z - (b + 1) * x, b * x - x * x * z], dim=-1)

    return Problem("brusselator", f, torch.tensor([1.5, 3.0], dtype=DTYPE), 0.0, t1)


def lorenz(t1: float = 2.0) -> Problem:
    """The Lorenz system (sigma 10, rho 28, beta 8/3) on a short horizon, from ``(1, 1, 1)``.

    The horizon is short because the system is chaotic: errors grow like
    ``exp(0.9 t)``, so a longer interval would amplify round-off beyond any reference.
    """

    def f(t: Tensor, y: Tensor) -> Tensor:
        x, v, z = y[..., 0], y[..., 1], y[..., 2]
        return torch.stack([10.0 * (v - x), x * (28.0 - z) - v, x * v - (8.0 / 3.0) * z], dim=-1)

    return Problem("lorenz", f, torch.tensor([1.0, 1.0, 1.0], dtype=DTYPE), 0.0, t1)


def stiff_cosine(rate: float = 1000.0, y0: float = 0.0, t1: float = 10.0) -> Problem:
    """The stiff scalar ``y' = -rate (y - cos t)``, a fast decay onto a slow cosine.

    With ``a = rate``: ``y = a^2/(1 + a^2) cos t + a/(1 + a^2) sin t
    + (y0 - a^2/(1 + a^2)) e^{-a t}`` (the particular solution ``A cos t + B sin t`` has
    ``B = a/(1 + a^2)``, ``A = a B``). Explicit Euler is stable only for steps below
    ``2 / rate``.
    """
    a = float(rate)
    cos_part, sin_part = a * a / (1 + a * a), a / (1 + a * a)

    def f(t: Tensor, y: Tensor) -> Tensor:
        return -a * (y - torch.cos(_column(t)).to(y))

    def solution(t: Tensor) -> Tensor:
        return (cos_part * torch.cos(t) + sin_part * torch.sin(t)
                + (y0 - cos_part) * torch.exp(-a * t))[:, None]

    return Problem("stiff_cosine", f, torch.tensor([y0], dtype=DTYPE), 0.0, t1, solution,
                   jacobian=torch.tensor([[-a]], dtype=DTYPE), linear=True, stiff=True)


def laplacian_1d(points: int, length: float = 1.0) -> Tensor:
    """The second-difference matrix ``(u[i-1] - 2 u[i] + u[i+1]) / dx^2`` on ``points``
    interior points of ``(0, length)`` with zero Dirichlet boundaries, ``dx = length /
    (points + 1)``; shape ``(points, points)``, float64."""
    if isinstance(points, bool) or not isinstance(points, int) or points < 1:
        raise ValueError(f"points must be a positive integer, got {points!r}")
    dx = length / (points + 1)
    off = torch.ones(points - 1, dtype=DTYPE)
    return (torch.diag(off, -1) - 2 * torch.eye(points, dtype=DTYPE) + torch.diag(off, 1)) / dx**2


def laplacian_2d(points: int, length: float = 1.0) -> Tensor:
    """The 5-point Laplacian on the ``points x points`` interior grid of the square
    ``(0, length)^2`` with zero Dirichlet boundaries, for states flattened row-major
    (``u[i, j]`` at ``i * points + j``); shape ``(points^2, points^2)``, float64."""
    one = laplacian_1d(points, length)
    eye = torch.eye(points, dtype=DTYPE)
    return torch.kron(one, eye) + torch.kron(eye, one)


def _second_difference(u: Tensor, dx: float, dim: int) -> Tensor:
    """``(u[i-1] - 2 u[i] + u[i+1]) / dx^2`` along ``dim`` with zero values beyond the ends."""
    n = u.shape[dim]
    zero = torch.zeros_like(u.narrow(dim, 0, 1))
    left = torch.cat([zero, u.narrow(dim, 0, n - 1)], dim)
    right = torch.cat([u.narrow(dim, 1, n - 1), zero], dim)
    return (left - 2 * u + right) / dx**2


def _sine_eigenvalue(k: int, points: int, length: float) -> float:
    """The eigenvalue of :func:`laplacian_1d` for the mode ``sin(k pi x / length)``."""
    dx = length / (points + 1)
    return -4.0 / dx**2 * math.sin(k * math.pi * dx / (2 * length)) ** 2


def heat_1d(points: int = 63, diffusivity: float = 1.0, modes: tuple[int, ...] = (1, 3, 16),
            t1: float = 0.5) -> Problem:
    """The heat equation ``u_t = diffusivity u_xx`` on ``(0, 1)``, ``u = 0`` at both ends,
    by the method of lines: second-order differences on ``points`` interior points.

    The initial state is ``sum_k sin(k pi x)`` over ``modes``. Each sine is an eigenvector
    of the difference matrix, with eigenvalue ``-4/dx^2 sin^2(k pi dx / 2)``, so the
    semi-discrete system (the ODE pint solves) has the exact solution ``sum_k e^{lambda_k t}
    sin(k pi x)``; it differs from the PDE's ``e^{-k^2 pi^2 t}`` by ``O(dx^2)``. High modes
    make it stiff: the spectrum reaches ``-4 diffusivity / dx^2``. Linear; ``jacobian`` is
    ``diffusivity * laplacian_1d(points)``.
    """
    matrix = diffusivity * laplacian_1d(points)
    dx = 1.0 / (points + 1)
    x = torch.arange(1, points + 1, dtype=DTYPE) * dx
    shapes = torch.stack([torch.sin(k * math.pi * x) for k in modes])  # (K, d)
    rates = torch.tensor([diffusivity * _sine_eigenvalue(k, points, 1.0) for k in modes],
                         dtype=DTYPE)

    def f(t: Tensor, y: Tensor) -> Tensor:
        return diffusivity * _second_difference(y, dx, -1)

    def solution(t: Tensor) -> Tensor:
        return torch.exp(t[:, None] * rates) @ shapes

    return Problem("heat_1d", f, shapes.sum(0), 0.0, t1, solution, jacobian=matrix,
                   linear=True, stiff=True)


def heat_2d(points: int = 15, diffusivity: float = 1.0,
            modes: tuple[tuple[int, int], ...] = ((1, 1), (2, 3), (7, 5)), t1: float = 0.2
            ) -> Problem:
    """The heat equation ``u_t = diffusivity (u_xx + u_yy)`` on the unit square, ``u = 0`` on
    the boundary, by the method of lines: the 5-point Laplacian on ``points x points``
    interior points, the state flattened row-major to ``points^2`` entries.

    The initial state is ``sum sin(k pi x) sin(l pi y)`` over ``modes`` ``(k, l)``; each is an
    eigenvector with eigenvalue ``lambda_k + lambda_l`` (see :func:`heat_1d`), which gives the
    semi-discrete exact solution. Linear; ``jacobian`` is ``diffusivity *
    laplacian_2d(points)``.
    """
    matrix = diffusivity * laplacian_2d(points)
    dx = 1.0 / (points + 1)
    x = torch.arange(1, points + 1, dtype=DTYPE) * dx
    shapes = torch.stack([torch.outer(torch.sin(k * math.pi * x), torch.sin(m * math.pi * x))
                          .reshape(-1) for k, m in modes])
    rates = torch.tensor([diffusivity * (_sine_eigenvalue(k, points, 1.0)
                                         + _sine_eigenvalue(m, points, 1.0)) for k, m in modes],
                         dtype=DTYPE)

    def f(t: Tensor, y: Tensor) -> Tensor:
        u = y.reshape(*y.shape[:-1], points, points)
        lap = _second_difference(u, dx, -1) + _second_difference(u, dx, -2)
        return diffusivity * lap.reshape(y.shape)

    def solution(t: Tensor) -> Tensor:
        return torch.exp(t[:, None] * rates) @ shapes

    return Problem("heat_2d", f, shapes.sum(0), 0.0, t1, solution, jacobian=matrix,
                   linear=True, stiff=True)


def allen_cahn(points: int = 63, diffusivity: float = 0.01, t1: float = 4.0) -> Problem:
    """The Allen-Cahn equation ``u_t = diffusivity u_xx + u - u^3`` on ``(0, 1)``, ``u = 0`` at
    both ends, by the method of lines (second-order differences on ``points`` interior
    points), from ``u0 = 0.6 sin(2 pi x) - 0.3 sin(3 pi x)``: a nonlinear reaction-diffusion
    problem in which the state separates into a phase near ``+1`` and one near ``-1`` with
    an interface between them.

    No closed form: the reference is SciPy's Radau at tight tolerances. ``jacobian`` is the
    Jacobian at the phases ``u = +-1``, ``diffusivity * laplacian_1d(points) - 2 I`` (a
    simplified-Newton matrix; the exact Jacobian has ``1 - 3 u^2`` on its diagonal instead
    of ``-2``).
    """
    dx = 1.0 / (points + 1)
    x = torch.arange(1, points + 1, dtype=DTYPE) * dx
    y0 = 0.6 * torch.sin(2 * math.pi * x) - 0.3 * torch.sin(3 * math.pi * x)
    matrix = diffusivity * laplacian_1d(points) - 2 * torch.eye(points, dtype=DTYPE)

    def f(t: Tensor, y: Tensor) -> Tensor:
        return diffusivity * _second_difference(y, dx, -1) + y - y**3

    return Problem("allen_cahn", f, y0, 0.0, t1, jacobian=matrix, stiff=True)


ALL = (dahlquist, linear, harmonic_oscillator, logistic, non_autonomous, lotka_volterra,
       van_der_pol, brusselator, lorenz)
"""Every problem factory, for tests and benchmarks that sweep them."""

STIFF = (stiff_cosine, heat_1d, heat_2d, allen_cahn)
"""The stiff problem factories (method-of-lines PDEs among them): implicit propagators only."""
