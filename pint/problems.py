"""Initial-value problems with known solutions, shared by the tests, docs and benchmarks.

Each :class:`Problem` has a vector field ``f(t, y)`` that works for one state
(``t`` a scalar, ``y`` of shape ``(d,)``, torchdiffeq's convention) and for a batch of
rows (``t`` of shape ``(R,)``, ``y`` of shape ``(R, d)``, pint's ``vectorized=True``).
Problems with a closed-form solution carry it; the others have a reference computed
with SciPy's DOP853 at tight tolerances (SciPy is imported only then).

Example:
    >>> import pint
    >>> problem = pint.problems.lotka_volterra()
    >>> t = problem.times(65)  # 64 slices over the problem's interval
    >>> reference = problem.reference(t)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "Problem",
    "brusselator",
    "dahlquist",
    "harmonic_oscillator",
    "linear",
    "logistic",
    "lorenz",
    "lotka_volterra",
    "non_autonomous",
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
    """

    name: str
    f: Callable[[Tensor, Tensor], Tensor]
    y0: Tensor
    t0: float
    t1: float
    solution: Callable[[Tensor], Tensor] | None = None

    def times(self, points: int, dtype: torch.dtype = DTYPE, device: str | torch.device = "cpu"
              ) -> Tensor:
        """``points`` equally spaced times from ``t0`` to ``t1``."""
        return torch.linspace(self.t0, self.t1, points, dtype=dtype, device=device)

    def reference(self, t: Tensor) -> Tensor:
        """The solution at ``t``, shape ``(len(t), d)``, in float64 on the CPU.

        Exact when the problem has a closed form; otherwise SciPy's DOP853 with
        ``rtol = atol = 1e-13`` (about 1e-11 accurate on these problems).
        """
        times = t.detach().to("cpu", DTYPE)
        if self.solution is not None:
            return self.solution(times)
        from scipy.integrate import solve_ivp

        def rhs(s: float, y: object) -> object:
            return self.f(torch.tensor(s, dtype=DTYPE), torch.as_tensor(y, dtype=DTYPE)).numpy()

        out = solve_ivp(
            rhs, (self.t0, float(times[-1])), self.y0.numpy(), method="DOP853",
            t_eval=times.numpy(), rtol=1e-13, atol=1e-13,
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

    return Problem("dahlquist", f, y0, 0.0, t1, solution)


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

    return Problem("linear", f, start, 0.0, t1, solution)


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


ALL = (dahlquist, linear, harmonic_oscillator, logistic, non_autonomous, lotka_volterra,
       van_der_pol, brusselator, lorenz)
"""Every problem factory, for tests and benchmarks that sweep them."""
