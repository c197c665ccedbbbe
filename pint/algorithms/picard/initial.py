"""Initial guesses: the trajectory a Picard-family iteration starts from."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from ...engine import Propagation, Request

__all__ = ["Constant", "Extrapolate", "InitialGuess", "Tangent"]


@runtime_checkable
class InitialGuess(Protocol):
    """The trajectory the iteration starts from: a generator (like a propagation) that may
    yield requests and returns the states at every grid point, ``(N + 1, S, *state)``.

    With a sliding window, :meth:`ahead` may guess the points beyond the window again after
    every iteration; where it returns ``None`` they carry the correction of the window's end
    through the Jacobian model.
    """

    def guess(self, t: Tensor, y0: Tensor) -> Propagation:
        """The initial trajectory for the problems ``y0`` (``(S, *state)``)."""
        ...

    def ahead(self, t: Tensor, end: Tensor, slope: Tensor) -> Tensor | None:
        """The states at ``t[1:]`` beyond the window's end (``end``, the state at ``t[0]``;
        ``slope`` the last step's ``(Phi(x) - x) / h``), or ``None`` to keep the carried
        correction."""
        ...


class Constant:
    """Every point starts at ``y0`` (ParaDiGMS): no evaluation."""

    def __repr__(self) -> str:
        return "Constant()"

    def guess(self, t: Tensor, y0: Tensor) -> Propagation:
        """``y0`` at every point."""
        return y0.unsqueeze(0).expand(len(t), *y0.shape).clone()
        yield  # a generator that needs no evaluation

    def ahead(self, t: Tensor, end: Tensor, slope: Tensor) -> None:
        """Nothing: the points beyond the window carry the window end's correction."""
        return None


class Tangent:
    """The tangent line at the start: one evaluation ``f(t_0, y0)`` and the straight line
    ``X_j = y0 + (t_j - t_0) f``:
    for a diffusion probability-flow ODE it is DDIM's prediction of every point from the first
    denoiser output, a far better start than the noise itself.

    With a sliding window, the points beyond the window are guessed again after every
    iteration (:meth:`ahead`) by the same straight line from the window's end, along the slope
    of its last step (DDIM's prediction from the latest, least noisy denoiser output), instead
    of carrying the window end's correction onto the first guess.
    """

    def __repr__(self) -> str:
        return "Tangent()"

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


Extrapolate = Tangent
"""The former name of :class:`Tangent` (renamed: it read like :class:`pint.Extrapolated`, a
stopping rule); kept as an alias."""
