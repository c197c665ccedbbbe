"""The serial sampler the parallel ones converge to, with the same signature and statistics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

import pint

from ..steppers import Solver
from .base import KCallback, Progress, Sampler, SamplerInfo
from .trajectory import Trajectory

__all__ = ["Serial", "sample_serial"]


class Serial(Sampler):
    """The sampler's own steps one after the other: k-diffusion's ``sample_euler`` (DDIM) or
    ``sample_heun``, computed by the same steppers the parallel samplers use. Its callback is
    called after every step, with ``"i"`` the step and ``"sigma"`` the noise level
    ``sigmas[i + 1]`` the step reached."""

    name = "serial"

    def __repr__(self) -> str:
        return "Serial()"

    def iterations_bound(self, trajectory: Trajectory) -> int:
        """One bar tick per step."""
        return trajectory.steps - 1

    def run(self, trajectory: Trajectory, progress: Progress | None,
            max_batch: int | None) -> tuple[pint.Solution, list[int] | None]:
        """:func:`pint.serial`, every sample its own problem."""

        def each_step(n: int, y: Tensor) -> None:
            if progress is not None:
                progress(n, y.unsqueeze(0), torch.full((len(y),), float("nan")), point=n + 1)

        solution = pint.serial(trajectory.field, trajectory.y0, trajectory.grid,
                               method=trajectory.fine, vectorized=True, max_batch=max_batch,
                               independent=True, callback=each_step)
        return solution, None


def sample_serial(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: KCallback | None = None,
    disable: bool | None = None,
    *,
    solver: Solver | None = None,
    return_info: bool = False,
    max_batch: int | str | None = "auto",
    drop_failed: bool = False,
) -> Tensor | tuple[Tensor, SamplerInfo]:
    """The serial sampler: ``Serial().sample(model, x, sigmas, ...)`` (see
    :meth:`Sampler.sample`); with ``Euler`` it is k-diffusion's ``sample_euler``, with ``Heun``
    its ``sample_heun``."""
    return Serial().sample(model, x, sigmas, extra_args, callback, disable, solver=solver,
                           return_info=return_info, max_batch=max_batch,
                           drop_failed=drop_failed)
