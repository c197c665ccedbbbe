"""The serial sampler that SRDS converges to, with the same signature and statistics."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pint._rounds import Rounds, Task

from .srds import SRDSInfo, _check_batch, _check_sigmas
from .steppers import Euler, Solver, denoised_to_derivative

__all__ = ["sample_serial"]


@torch.no_grad()
def sample_serial(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    disable: bool | None = None,
    *,
    solver: Solver | None = None,
    return_info: bool = False,
) -> Tensor | tuple[Tensor, SRDSInfo]:
    """The sampler's own steps one after the other: k-diffusion's ``sample_euler`` (DDIM)
    or ``sample_heun``, computed by the same steppers SRDS uses.

    Args:
        model: a denoiser ``model(x, sigma, **extra_args)``.
        x: the initial noise, already scaled by ``sigmas[0]``.
        sigmas: the schedule, strictly decreasing.
        extra_args: keyword arguments of ``model`` (passed unchanged).
        callback: called after each step ``i`` with ``{"x", "i", "sigma", "sigma_hat",
            "denoised"}``; ``x`` and ``denoised`` are both the new state.
        disable: disable the progress bar.
        solver: :class:`Euler` (default) or :class:`Heun`.
        return_info: also return the cost as an :class:`SRDSInfo` (0 iterations).

    Returns:
        The samples, or ``(samples, info)``.
    """
    from tqdm.auto import tqdm

    extra_args = dict(extra_args or {})
    sigmas = _check_sigmas(sigmas, x)
    batch = _check_batch(x, extra_args)
    solver = Euler() if solver is None else solver

    def field(sigma: Tensor, y: Tensor) -> Tensor:
        return denoised_to_derivative(y, sigma, model(y, sigma, **extra_args))

    rounds = Rounds(field)
    start = time.perf_counter()
    ones = x.new_ones(batch)
    state: list[Tensor] = [x]
    for i in tqdm(range(len(sigmas) - 1), disable=disable, desc="serial", unit="step"):
        rounds.start(Task(
            propagation=solver.step(sigmas[i] * ones, sigmas[i + 1] * ones, state[0]),
            kind="fine", iteration=0, slices=torch.full((batch,), i),
            problems=torch.arange(batch), on_done=lambda y: state.__setitem__(0, y),
        ))
        while rounds.live:
            rounds.step()
        if callback is not None:
            callback({"x": state[0], "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i],
                      "denoised": state[0]})
    samples = state[0]
    if not return_info:
        return samples
    grid = sigmas.tolist()
    info = SRDSInfo(
        iterations=0, sample_iterations=torch.zeros(batch, dtype=torch.long), converged=True,
        residuals=[], nfe=rounds.rows["fine"], sequential_nfe=rounds.rounds,
        predicted_sequential_nfe=sum(solver.depth(a, b) for a, b in itertools.pairwise(grid)),
        blocks=[0, len(sigmas) - 1], wall_time=time.perf_counter() - start,
    )
    return samples, info
