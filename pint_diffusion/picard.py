"""Picard iterations over a sliding window: ParaDiGMS-style parallel sampling.

Shih, Belkhale, Ermon, Sadigh & Anari, *Parallel Sampling of Diffusion Models*, NeurIPS
2023 (ParaDiGMS; diffusers' ``StableDiffusionParadigmsPipeline``). A one-step solver
writes ``x[j+1] = x[j] + Phi(x[j], sigma_j)``; Picard iteration replaces the chain by the
fixed point ``x[j+1] = x[b] + sum_{l=b..j} Phi(x[l], sigma_l)`` over a window of ``p``
steps starting at ``b``: every iteration evaluates ``Phi`` at all window points in one
batched call and takes a cumulative sum. Points at the front of the window whose change
falls below the tolerance are accepted, and the window slides past them. The first point
of the window is exact after every iteration, so at worst the method takes as many
sequential rounds as the serial sampler.

This is the peer that SRDS is benchmarked against, run over the same denoisers and
solvers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pint._rounds import NonFiniteError, Rounds, Task

from .srds import DEFAULT_TOL, SRDSInfo, _check_batch, _check_sigmas, _per_sample
from .steppers import Euler, Solver, denoised_to_derivative

__all__ = ["sample_picard"]

Denoiser = Callable[..., Tensor]


@torch.no_grad()
def sample_picard(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    disable: bool | None = None,
    *,
    window: int | None = None,
    tol: float = DEFAULT_TOL,
    solver: Solver | None = None,
    return_info: bool = False,
) -> Tensor | tuple[Tensor, SRDSInfo]:
    """Sample with sliding-window Picard iterations (ParaDiGMS), k-diffusion's signature.

    Args:
        model: a denoiser ``model(x, sigma, **extra_args)``, as for :func:`sample_srds`.
        x: the initial noise, already scaled by ``sigmas[0]``; shape ``(B, ...)``.
        sigmas: the schedule, strictly decreasing, ``N + 1`` values.
        extra_args: keyword arguments of ``model``; batch-leading tensors are split per row.
        callback: called after each iteration with ``{"x", "i", "sigma", "sigma_hat",
            "denoised"}``: the state at the front of the window, the iteration, the front's
            noise level (twice) and the state again.
        disable: disable the progress bar.
        window: how many steps are iterated at once (ParaDiGMS's ``parallel``);
            defaults to all ``N``.
        tol: a point is accepted when the RMS change of its state in the last iteration
            is at most ``tol``, measured in the model's data scale (the change divided by
            ``sqrt(1 + sigma^2)``, i.e. in variance-preserving units), for every sample.
        solver: the one-step rule, :class:`Euler` (default) or :class:`Heun`.
        return_info: also return the cost, as an :class:`SRDSInfo` (``iterations`` counts
            Picard iterations; ``blocks`` is ``[0, N]``).

    Returns:
        The samples, or ``(samples, info)`` with ``return_info=True``.
    """
    from tqdm.auto import tqdm

    extra_args = dict(extra_args or {})
    sigmas = _check_sigmas(sigmas, x)
    batch = _check_batch(x, extra_args)
    n_steps = len(sigmas) - 1
    window = n_steps if window is None else window
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= n_steps:
        raise ValueError(f"window must be an integer in [1, {n_steps}], got {window!r}")
    if not isinstance(tol, int | float) or not (tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    solver = Euler() if solver is None else solver
    if not isinstance(solver, Solver):
        raise TypeError(f"solver must be a pint_diffusion solver, got {type(solver).__name__}")
    sample_args = {k: v for k, v in extra_args.items() if _per_sample(v, batch)}
    shared_args = {k: v for k, v in extra_args.items() if k not in sample_args}

    def field(sigma: Tensor, y: Tensor, index: Tensor) -> Tensor:
        rows = {k: v[index] for k, v in sample_args.items()}
        return denoised_to_derivative(y, sigma, model(y, sigma, **rows, **shared_args))

    rounds = Rounds(field, with_index=True)
    start_time = time.perf_counter()
    states = x.unsqueeze(0).repeat(n_steps + 1, *([1] * x.ndim))  # the trajectory guess
    scale = (1 + sigmas**2).sqrt().reshape(-1, *([1] * x.ndim))
    begin, iterations, residuals = 0, 0, []
    samples_index = torch.arange(batch, device=x.device)
    bar = tqdm(total=n_steps, disable=disable, desc="Picard", unit="step")
    try:
        while begin < n_steps:
            end = min(begin + window, n_steps)
            points = end - begin
            rows = states[begin:end].flatten(0, 1)
            lo = sigmas[begin:end].repeat_interleave(batch)
            hi = sigmas[begin + 1:end + 1].repeat_interleave(batch)
            increments: list[Tensor] = []
            rounds.start(Task(
                propagation=solver.step(lo, hi, rows), kind="fine", iteration=iterations,
                slices=torch.arange(begin, end).repeat_interleave(batch),
                problems=samples_index.repeat(points),
                on_done=increments.append,
            ))
            while rounds.live:
                rounds.step()
            delta = (increments[0] - rows).reshape(points, *x.shape)
            new = states[begin] + delta.cumsum(0)
            change = (new - states[begin + 1:end + 1]) / scale[begin + 1:end + 1]
            error = change.pow(2).flatten(2).mean(2).sqrt().amax(1)  # worst sample per point
            states[begin + 1:end + 1] = new
            iterations += 1
            # the first point is exact; accept the converged prefix after it
            above = (error[1:] > tol).nonzero()
            stride = points if len(above) == 0 else 1 + int(above[0])
            residuals.append(float(error.max()))
            # slide: the points that enter the window start from the last known state
            if end < n_steps:
                states[end + 1:min(end + stride, n_steps) + 1] = states[end]
            begin += stride
            bar.update(stride)
            bar.set_postfix(residual=f"{residuals[-1]:.2e}")
            if callback is not None:
                front = states[min(begin, n_steps)]
                callback({"x": front, "i": iterations - 1, "sigma": sigmas[min(begin, n_steps)],
                          "sigma_hat": sigmas[min(begin, n_steps)], "denoised": front})
    except NonFiniteError as error:
        raise ValueError(
            f"the denoiser returned a non-finite value at step {error.slice} (sigma "
            f"{float(sigmas[error.slice]):.4g}), Picard iteration {error.iteration}"
        ) from error
    finally:
        bar.close()
    samples = states[-1]
    if not return_info:
        return samples
    info = SRDSInfo(
        iterations=iterations,
        sample_iterations=torch.full((batch,), iterations),
        converged=True,
        residuals=residuals,
        nfe=rounds.rows["fine"],
        sequential_nfe=rounds.rounds,
        predicted_sequential_nfe=None,
        blocks=[0, n_steps],
        wall_time=time.perf_counter() - start_time,
    )
    return samples, info
