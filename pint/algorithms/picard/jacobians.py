"""Jacobian models: the factor ``A_j`` of Picard's linearised recurrence, from Picard's
identity to secant estimates per step and problem or per state component."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["DiagonalSecant", "Identity", "JacobianModel", "Mixer", "Secant"]


@runtime_checkable
class JacobianModel(Protocol):
    """The factor ``A_j`` of the linearised recurrence, one scalar per step and problem.

    Attributes:
        learns: the model estimates ``A_j`` from the history of evaluations (the solver keeps
            the last evaluated points and their images only then); ``False`` for
            :class:`Identity`.
        elementwise: one factor per state component: the solver calls
            ``estimate_elementwise(j, dphi, dx, seen, current)`` instead of :meth:`estimate`
            (:class:`DiagonalSecant`).
    """

    learns: bool
    elementwise: bool

    def prior(self, t: Tensor) -> Tensor:
        """``A_j`` before any history, shape ``(N,)``, for the grid ``t``."""
        ...

    def estimate(self, j: Tensor, dphi_dx: Tensor, dx_dx: Tensor, current: Tensor) -> Tensor:
        """``A`` at steps ``j`` from ``<dPhi, dX>`` and ``<dX, dX>`` (each ``(P, S)``) between
        the last two evaluations; ``current`` the factors now. ``None``-free: return
        ``current`` where there is nothing to learn."""
        ...

    def mixer(self) -> Mixer | None:
        """A fresh object that rewrites each iteration's update (:class:`pint.Anderson`), or
        ``None``."""
        ...


@runtime_checkable
class Mixer(Protocol):
    """The history of one solve that rewrites each iteration's update ``g`` of the iterate
    ``x`` (both ``(N + 1, S, *state)``) for the problems ``members`` (of ``batch``) with the
    window ``[b, e)``."""

    def mix(self, x: Tensor, g: Tensor, members: Tensor, batch: int, b: int, e: int) -> Tensor:
        """The rewritten update."""
        ...


class Identity:
    """``A_j = 1``: plain Picard iteration (ParaDiGMS, waveform relaxation)."""

    learns = False
    elementwise = False

    def __repr__(self) -> str:
        return "Identity()"

    def mixer(self) -> None:
        """No mixing."""
        return None

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
    elementwise = False

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

    def mixer(self) -> None:
        """No mixing."""
        return None

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
