"""What a sampler integrates: a :class:`Trajectory` built from a model and a schedule.

Every parallel sampler (SRDS, Picard, quasi-Newton) and the serial one solve the same thing:
states ``y`` of ``B`` samples carried along a grid of ``N + 1`` points by a fine propagator (the
sampler's own steps), with a batched vector field. :func:`probability_flow` builds it for a
k-diffusion denoiser on a ``sigmas`` schedule; other steppings (a diffusers scheduler's own
``step`` over an augmented state, flow matching) build theirs and plug into the same samplers.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import pint

from ..steppers import Euler, OnSchedule, Solver, denoised_to_derivative
from .conditioning import conditioned

__all__ = ["Trajectory", "check_sigmas", "probability_flow"]


@dataclass(frozen=True)
class Trajectory:
    """A sampling problem in pint's terms.

    Attributes:
        field: the batched vector field ``field(t, y, index)`` (``index``: each row's sample).
        y0: the initial states, ``(B, *state)``.
        grid: the schedule's points, ``(N + 1,)`` (noise levels, or step numbers).
        fine: a propagator taking the schedule's own steps between any two grid points.
        coarse: ``coarse(points)``: a cheap propagator, one step per slice between ``points``.
        output: the samples from final states (``(B, *state) -> (B, ...)``).
        step_depths: evaluation rounds of each of the ``N`` steps.
        describe: ``describe(j)``: grid point ``j`` in words, for messages (e.g. its sigma).
        scale: per grid point, the factor that brings a change of the state to data units
            (``sqrt(1 + sigma^2)`` for variance-exploding states), ``(N + 1,)``.
        secant: the quasi-Newton model of this stepping's steps (prior and bounds of ``A_j``),
            or ``None`` for a generic :class:`pint.Secant`.
        model: the object that identifies the model (its cost curve is cached per model for the
            process, see :func:`pint.measure_cost`); ``None``: the field itself.
    """

    field: Callable[[Tensor, Tensor, Tensor], Tensor]
    y0: Tensor
    grid: Tensor
    fine: pint.Propagator
    coarse: Callable[[Tensor], pint.Propagator]
    output: Callable[[Tensor], Tensor]
    step_depths: list[int]
    describe: Callable[[int], str]
    scale: Tensor
    secant: pint.Secant | None = None
    model: Any = None

    def subset(self, keep: Tensor) -> Trajectory:
        """The same problem for the samples ``keep`` only (their positions in ``y0``)."""
        field = self.field

        def sub_field(t: Tensor, y: Tensor, index: Tensor) -> Tensor:
            return field(t, y, keep.to(index.device)[index])

        return dataclasses.replace(self, field=sub_field, y0=self.y0[keep.to(self.y0.device)])

    @property
    def steps(self) -> int:
        """``N``, the number of steps."""
        return len(self.grid) - 1

    @property
    def batch(self) -> int:
        """``B``, the number of samples."""
        return self.y0.shape[0]


def check_sigmas(sigmas: Any, x: Any) -> Tensor:
    """``sigmas`` as a strictly decreasing non-negative tensor like ``x``; ``x`` finite.

    One exception is accepted: a last step of length 0 at a positive noise level
    (``sigmas[-2] == sigmas[-1] > 0``, which :meth:`pint_diffusion.DiffusersDenoiser.sigmas`
    returns for DDIM with ``set_alpha_to_one=False`` and a last timestep 0). That step leaves the
    state unchanged (as in k-diffusion and diffusers), so it is dropped from the returned
    schedule and costs no evaluation.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1:
        raise TypeError("x must be a floating-point tensor with a leading batch axis")
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one sample (its batch axis is empty)")
    if not isinstance(sigmas, Tensor):
        sigmas = torch.as_tensor(sigmas)
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 values, got shape "
                         f"{tuple(sigmas.shape)}")
    sigmas = sigmas.to(x.device, x.dtype)
    if not bool(torch.isfinite(sigmas).all()) or bool((sigmas < 0).any()):
        raise ValueError("sigmas must be finite and non-negative")
    if len(sigmas) > 2 and bool(sigmas[-1] == sigmas[-2]) and bool(sigmas[-1] > 0):
        sigmas = sigmas[:-1]  # a zero-length last step: the identity
    if not bool((sigmas.diff() < 0).all()):
        raise ValueError("sigmas must be strictly decreasing (from noise to data)")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite")
    return sigmas


def probability_flow(model: Callable[..., Tensor], x: Tensor, sigmas: Tensor,
                     extra_args: dict[str, Any] | None = None, solver: Solver | None = None,
                     sigma_data: float = 0.5) -> Trajectory:
    """The probability-flow ODE ``dx/dsigma = (x - D(x, sigma)) / sigma`` of a k-diffusion
    denoiser ``model(x, sigma, **extra_args)`` on the schedule ``sigmas``, stepped by ``solver``
    (:class:`pint_diffusion.Euler`, DDIM for variance-preserving models, or ``Heun``).

    ``sigma_data`` (the data's standard deviation, 0.5 for images in ``[-1, 1]``) sets the
    quasi-Newton prior: before any history, the denoiser's slope along a change of ``x`` is
    taken as ``sigma_data^2 / (sigma^2 + sigma_data^2)`` (exact for Gaussian data).
    """
    sigmas = check_sigmas(sigmas, x)
    solver = Euler() if solver is None else solver
    if isinstance(solver, type) or not isinstance(solver, Solver):
        raise TypeError(f"solver must be a pint_diffusion solver instance (Euler(), Heun()), "
                        f"got {solver!r}")
    if not (isinstance(sigma_data, int | float) and math.isfinite(sigma_data) and sigma_data > 0):
        raise ValueError(f"sigma_data must be a finite positive number, got {sigma_data!r}")
    call = conditioned(model, extra_args, x.shape[0])

    def field(sigma: Tensor, y: Tensor, index: Tensor) -> Tensor:
        denoised = call(y, sigma, index)
        if not (isinstance(denoised, Tensor) and denoised.shape == y.shape
                and denoised.dtype == y.dtype and denoised.device == y.device):
            raise TypeError(
                f"the model (denoiser) must return the denoised states exactly like its input x "
                f"(shape {tuple(y.shape)}, {y.dtype}, on {y.device}); it returned "
                + (f"shape {tuple(denoised.shape)}, {denoised.dtype}, on {denoised.device}"
                   if isinstance(denoised, Tensor) else type(denoised).__name__))
        return denoised_to_derivative(y, sigma, denoised)

    grid = sigmas.tolist()
    s = sigmas.double().cpu()
    ratio = s[1:] / s[:-1]  # r_j: the DDIM step is x' = r x + (1 - r) D
    slope = sigma_data**2 / (s[:-1] ** 2 + sigma_data**2)
    secant = pint.Secant(prior=ratio + (1 - ratio) * slope, lower=ratio,
                         upper=ratio + 1.5 * (1 - ratio))
    return Trajectory(
        field=field,
        y0=x,
        grid=sigmas,
        fine=OnSchedule(solver, sigmas),
        coarse=lambda points: OnSchedule(solver, points),
        output=lambda y: y,
        step_depths=[solver.depth(a, b) for a, b in itertools.pairwise(grid)],
        describe=lambda j: f"step {j} (sigma {grid[j]:.4g})",
        scale=(1 + sigmas**2).sqrt(),
        secant=secant,
        model=model,
    )
