"""Explicit Runge-Kutta propagators: one engine over Butcher tableaus."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import torch
from torch import Tensor

from ..engine import Propagation, Request

__all__ = ["RK4", "ButcherTableau", "Euler", "Heun", "Midpoint", "RungeKutta"]


@dataclass(frozen=True)
class ButcherTableau:
    """The coefficients of an explicit Runge-Kutta method.

    Args:
        a: strictly lower-triangular stage matrix, one row per stage (row ``i``
            holds ``i`` entries).
        b: the weights of the stages in the update.
        c: the stage times, as fractions of the step.
        order: the classical order of the method (used by the tests).
    """

    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]
    order: int

    def __post_init__(self) -> None:
        stages = len(self.b)
        if len(self.c) != stages or len(self.a) != stages:
            raise ValueError(
                f"a, b and c must describe the same number of stages, got "
                f"{len(self.a)}, {len(self.b)} and {len(self.c)}"
            )
        for i, row in enumerate(self.a):
            self._check_row(i, row)

    def _check_row(self, i: int, row: tuple[float, ...]) -> None:
        """Row ``i`` of ``a`` (explicit: ``i`` entries, below the diagonal)."""
        if len(row) != i:
            raise ValueError(f"row {i} of a must have {i} entries (explicit method), got {row}")

    @property
    def stages(self) -> int:
        """The number of vector-field evaluations per step."""
        return len(self.b)


EULER_TABLEAU = ButcherTableau(a=((),), b=(1.0,), c=(0.0,), order=1)
MIDPOINT_TABLEAU = ButcherTableau(a=((), (0.5,)), b=(0.0, 1.0), c=(0.0, 0.5), order=2)
HEUN_TABLEAU = ButcherTableau(a=((), (1.0,)), b=(0.5, 0.5), c=(0.0, 1.0), order=2)
RK4_TABLEAU = ButcherTableau(
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    c=(0.0, 0.5, 0.5, 1.0),
    order=4,
)


def _combine(y: Tensor, h: Tensor, coefficients: Sequence[float], ks: Sequence[Tensor]) -> Tensor:
    """``y + h * sum(coefficients[j] * ks[j])``, skipping zero terms."""
    terms = [(c, k) for c, k in zip(coefficients, ks, strict=False) if c != 0.0]
    if not terms:
        return y
    c0, k0 = terms[0]
    increment = k0 if c0 == 1.0 else k0 * c0
    for c, k in terms[1:]:
        increment = increment + c * k
    return torch.addcmul(y, h, increment)


class RungeKutta:
    """An explicit Runge-Kutta method with ``steps`` equal substeps per slice.

    Args:
        tableau: the method's Butcher tableau.
        steps: substeps per slice (``m`` in the Parareal literature).

    Example:
        >>> import pint
        >>> fine = pint.RungeKutta(pint.propagators.RK4_TABLEAU, steps=10)  # same as pint.RK4(10)
        >>> fine.depth
        40
    """

    def __init__(self, tableau: ButcherTableau, steps: int = 1) -> None:
        if isinstance(steps, bool) or not isinstance(steps, Integral) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        self.tableau = tableau
        self.steps = int(steps)

    @property
    def depth(self) -> int:
        """Evaluation rounds per slice: ``steps * stages``."""
        return self.steps * self.tableau.stages

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.steps})"

    def propagate(self, t0: Tensor, t1: Tensor, y0: Tensor) -> Propagation:
        """Advance ``y0`` from ``t0`` to ``t1`` with ``steps`` substeps."""
        tab = self.tableau
        h = (t1 - t0) / self.steps
        h_rows = h.reshape(-1, *([1] * (y0.ndim - 1)))
        y = y0
        for i in range(self.steps):
            # Substep start from t0 (not by accumulation) so the last substep ends at t1.
            t = t0 + (t1 - t0) * (i / self.steps) if i else t0
            ks: list[Tensor] = []
            for stage in range(tab.stages):
                y_stage = _combine(y, h_rows, tab.a[stage], ks)
                t_stage = t + tab.c[stage] * h if tab.c[stage] else t
                ks.append((yield Request(t_stage, y_stage)))
            y = _combine(y, h_rows, tab.b, ks)
        return y


class Euler(RungeKutta):
    """Forward Euler (order 1), ``steps`` substeps per slice."""

    def __init__(self, steps: int = 1) -> None:
        super().__init__(EULER_TABLEAU, steps)


class Midpoint(RungeKutta):
    """The explicit midpoint method (order 2), ``steps`` substeps per slice."""

    def __init__(self, steps: int = 1) -> None:
        super().__init__(MIDPOINT_TABLEAU, steps)


class Heun(RungeKutta):
    """Heun's method, the explicit trapezoidal rule (order 2), ``steps`` substeps per slice."""

    def __init__(self, steps: int = 1) -> None:
        super().__init__(HEUN_TABLEAU, steps)


class RK4(RungeKutta):
    """The classical fourth-order Runge-Kutta method, ``steps`` substeps per slice."""

    def __init__(self, steps: int = 1) -> None:
        super().__init__(RK4_TABLEAU, steps)


