"""Self-Refining Diffusion Samplers (SRDS): Parareal over the diffusion trajectory.

Selvam, Merchant & Ermon, *Self-Refining Diffusion Samplers: Enabling Parallelization
via Parareal Iterations*, NeurIPS 2024. The ``N`` steps of a sampler are split into
``B`` blocks. A coarse pass (one solver step per block) gives a rough sample; each
iteration then runs the sampler's own steps inside every block *in parallel* (batched
denoiser calls) and corrects the coarse pass with them. After ``k`` iterations the
first ``k`` blocks are exact, so the result converges to the serial sampler's output,
usually after far fewer sequential denoiser calls than ``N``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import pint

from .steppers import Euler, OnSchedule, Solver, denoised_to_derivative

__all__ = ["DEFAULT_TOL", "SRDSInfo", "block_boundaries", "sample_srds"]

DEFAULT_TOL = 1e-3
"""Default tolerance: the RMS change of a sample's final state between two iterations."""

Denoiser = Callable[..., Tensor]


@dataclass(frozen=True)
class SRDSInfo:
    """What an SRDS run did and cost (``return_info=True``).

    Attributes:
        iterations: SRDS iterations after the coarse pass (the most any sample needed).
        sample_iterations: the iteration at which each sample stopped, shape ``(B,)``.
        converged: whether every sample met the tolerance (or was solved exactly).
        residuals: per iteration, the largest RMS change of a final state among the
            samples still iterating.
        nfe: denoiser evaluations, one per image row (classifier-free guidance done by
            the denoiser itself counts once).
        sequential_nfe: batched denoiser calls on the critical path (the depth);
            serial sampling with ``N`` Euler steps has depth ``N``.
        predicted_sequential_nfe: the depth the schedule's recurrence predicts
            (:func:`pint.predicted_depth`).
        blocks: the block boundaries, as indices into ``sigmas``.
        wall_time: seconds.
        iterates: when ``store_iterates=True``: the final sample after the coarse pass
            and after each iteration, each of shape ``x.shape``.
    """

    iterations: int
    sample_iterations: Tensor
    converged: bool
    residuals: list[float]
    nfe: int
    sequential_nfe: int
    predicted_sequential_nfe: int | None
    blocks: list[int]
    wall_time: float
    iterates: list[Tensor] | None = None


def block_boundaries(n_steps: int, blocks: int) -> list[int]:
    """Split ``n_steps`` steps into ``blocks`` contiguous blocks of near-equal length.

    Returns the ``blocks + 1`` boundary indices into the schedule, from 0 to ``n_steps``.
    """
    if isinstance(blocks, bool) or not isinstance(blocks, int) or not 1 <= blocks <= n_steps:
        raise ValueError(f"blocks must be an integer in [1, {n_steps}] (the number of "
                         f"steps), got {blocks!r}")
    return [round(i * n_steps / blocks) for i in range(blocks + 1)]


@torch.no_grad()
def sample_srds(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    disable: bool | None = None,
    *,
    blocks: int | None = None,
    tol: float = DEFAULT_TOL,
    solver: Solver | None = None,
    pipelined: bool = True,
    max_iters: int | None = None,
    return_info: bool = False,
    store_iterates: bool = False,
    group: Any = None,
) -> Tensor | tuple[Tensor, SRDSInfo]:
    """Sample with SRDS; a drop-in replacement for k-diffusion's ``sample_euler``.

    The first five arguments mean what they mean for k-diffusion's samplers.

    Args:
        model: a denoiser ``model(x, sigma, **extra_args) -> denoised``, with ``sigma`` of
            shape ``(rows,)``; it is called with rows of several blocks at once.
        x: the initial noise, already scaled by ``sigmas[0]``; shape ``(B, ...)``.
        sigmas: the schedule, strictly decreasing, ``N + 1`` values (usually ending in 0).
        extra_args: keyword arguments for ``model``. Tensors whose leading axis is the
            batch (``B``) are split per sample, so every row gets its own conditioning;
            other values are passed unchanged.
        callback: called after the coarse pass and after each iteration with
            ``{"x", "i", "sigma", "sigma_hat", "denoised", "residual"}``: the current
            final samples, the iteration, the last noise level (twice), the current
            samples again (the final state is the sampler's denoised output) and the
            per-sample residual (NaN where undefined).
        disable: disable the progress bar (as in k-diffusion).
        blocks: the number of blocks; defaults to ``round(2 sqrt(N))`` (at most ``N``).
            A pipelined iteration costs about ``N / blocks + blocks`` sequential calls,
            least at ``sqrt(N)``, but more blocks make the coarse pass more accurate and
            save iterations: on the bundled digits model ``2 sqrt(N)`` took 16 sequential
            calls at N = 25 and 32 at N = 100, against 25 and 46 for ``sqrt(N)``
            (``benchmarks/results/``).
        tol: a sample stops iterating (and leaves the batch) when the root-mean-square
            change of its final state between two iterations is at most ``tol``, in the
            units of ``x`` (data in ``[-1, 1]`` for image models). 0 runs until exact.
        solver: the step rule, :class:`pint_diffusion.Euler` (default; DDIM for VP
            models) or :class:`pint_diffusion.Heun`.
        pipelined: start each block's fine solve as soon as its initial state exists
            (SRDS's pipelined variant). Same result, fewer sequential calls.
        max_iters: the most iterations after the coarse pass; defaults to ``blocks``,
            after which the result equals the serial sampler's.
        return_info: also return an :class:`SRDSInfo`.
        store_iterates: keep the final samples after every iteration in the info.
        group: a ``torch.distributed`` process group (or ``"default"`` for the default
            group) to spread the blocks over its ranks with :func:`pint.distributed.parareal`;
            every rank calls ``sample_srds`` with the same arguments (and its own copy of
            the model) and gets the same samples as the single-process sampler, per-sample
            convergence included. The schedule is always pipelined; ``callback`` and
            ``store_iterates`` are not supported; ``info.wall_time`` is the rank's own.
            ``None`` (default): run in this process.

    Returns:
        The samples (like ``x``), or ``(samples, info)`` with ``return_info=True``.

    Raises:
        ValueError: bad ``sigmas``, ``blocks``, ``tol``, or ``extra_args`` whose batch does
            not match ``x``; or a non-finite denoiser output (the message names the block,
            the step and the iteration).

    Example:
        >>> import torch
        >>> from pint_diffusion import sample_srds
        >>> def denoiser(x, sigma):  # data distributed as N(0, 1): D = x / (1 + sigma^2)
        ...     return x / (1 + sigma[:, None] ** 2)
        >>> sigmas = torch.linspace(10.0, 0.0, 26)
        >>> x = torch.randn(4, 3) * sigmas[0]
        >>> samples, info = sample_srds(denoiser, x, sigmas, disable=True, return_info=True)
        >>> info.sequential_nfe < 25
        True
    """
    from tqdm.auto import tqdm

    extra_args = dict(extra_args or {})
    sigmas = _check_sigmas(sigmas, x)
    batch = _check_batch(x, extra_args)
    n_steps = len(sigmas) - 1
    if blocks is None:
        blocks = min(n_steps, max(1, round(2 * math.sqrt(n_steps))))
    bounds = block_boundaries(n_steps, blocks)
    if not isinstance(tol, int | float) or not (tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    solver = Euler() if solver is None else solver
    if not isinstance(solver, Solver):
        raise TypeError(f"solver must be a pint_diffusion solver (Euler(), Heun()), got "
                        f"{type(solver).__name__}")
    t = sigmas[bounds]
    fine = OnSchedule(solver, sigmas)
    coarse = OnSchedule(solver, t)
    sample_args = {k: v for k, v in extra_args.items() if _per_sample(v, batch)}
    shared_args = {k: v for k, v in extra_args.items() if k not in sample_args}

    def field(sigma: Tensor, y: Tensor, index: Tensor) -> Tensor:
        rows = {k: v[index] for k, v in sample_args.items()}
        return denoised_to_derivative(y, sigma, model(y, sigma, **rows, **shared_args))

    iterations = blocks if max_iters is None else min(max_iters, blocks)
    bar = tqdm(total=iterations + 1, disable=disable, desc="SRDS", unit="it")

    def on_iteration(k: int, ys: Tensor, residual: Tensor) -> None:
        finite = residual[~torch.isnan(residual)]
        bar.update(1)
        if len(finite):
            bar.set_postfix(residual=f"{float(finite.max()):.2e}")
        if callback is not None:
            final = ys[-1]
            callback({"x": final, "i": k, "sigma": sigmas[-1], "sigma_hat": sigmas[-1],
                      "denoised": final, "residual": residual})

    def final_rms(change: Tensor) -> Tensor:
        return change[-1].pow(2).mean().sqrt()

    try:
        if group is not None:
            solution = _distributed(field, x, t, coarse, fine, tol, max_iters, final_rms,
                                    group, callback is not None or store_iterates)
            bar.update(solution.iterations + 1)
        else:
            solution = pint.parareal(
                field, x, t, coarse=coarse, fine=fine, tol=tol, max_iters=max_iters,
                norm=final_rms, pipelined=pipelined, vectorized=True, independent=True,
                store_iterates=store_iterates, callback=on_iteration,
            )
    except pint.NonFiniteError as error:
        raise _located(error, bounds, solver, sigmas) from error
    finally:
        bar.close()
    samples = solution.ys[-1]
    if not return_info:
        return samples
    stats = solution.stats
    info = SRDSInfo(
        iterations=solution.iterations,
        sample_iterations=solution.sample_iterations,  # type: ignore[arg-type]
        converged=solution.converged,
        residuals=solution.residuals,
        nfe=stats.nfe,
        sequential_nfe=stats.sequential_nfe,
        predicted_sequential_nfe=stats.predicted_sequential_nfe,
        blocks=bounds,
        wall_time=stats.wall_time,
        iterates=None if solution.iterates is None else [it[-1] for it in solution.iterates],
    )
    return samples, info


def _distributed(field: Callable[..., Tensor], x: Tensor, t: Tensor, coarse: OnSchedule,
                 fine: OnSchedule, tol: float, max_iters: int | None,
                 norm: Callable[[Tensor], Tensor], group: Any, unsupported: bool) -> Any:
    """SRDS over the ranks of ``group`` (see ``group`` in :func:`sample_srds`)."""
    import pint.distributed

    if unsupported:
        raise ValueError("callback and store_iterates are not supported with group=")
    return pint.distributed.parareal(
        field, x, t, coarse=coarse, fine=fine, tol=tol, max_iters=max_iters, norm=norm,
        vectorized=True, independent=True,
        group=None if isinstance(group, str) and group == "default" else group,
    )


def _check_sigmas(sigmas: Tensor, x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1:
        raise TypeError("x must be a floating-point tensor with a leading batch axis")
    if not isinstance(sigmas, Tensor):
        sigmas = torch.as_tensor(sigmas)
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 values, got shape "
                         f"{tuple(sigmas.shape)}")
    sigmas = sigmas.to(x.device, x.dtype)
    if not bool(torch.isfinite(sigmas).all()) or bool((sigmas < 0).any()):
        raise ValueError("sigmas must be finite and non-negative")
    if not bool((sigmas.diff() < 0).all()):
        raise ValueError("sigmas must be strictly decreasing (from noise to data)")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite")
    return sigmas


def _per_sample(value: object, batch: int) -> bool:
    return isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] == batch


def _check_batch(x: Tensor, extra_args: dict[str, Any]) -> int:
    batch = x.shape[0]
    for key, value in extra_args.items():
        if isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] != batch:
            raise ValueError(
                f"extra_args[{key!r}] has leading size {value.shape[0]} but x has batch "
                f"size {batch}; per-sample arguments must match x's batch"
            )
    return batch


def _located(error: pint.NonFiniteError, bounds: list[int], solver: Solver,
             sigmas: Tensor) -> ValueError:
    block, k = error.slice, error.iteration
    where = f"iteration {k}"
    if error.kind == "fine" and error.evaluation is not None:
        grid = sigmas.tolist()
        step, rounds = bounds[block], 0
        while step < bounds[block + 1] - 1:
            rounds += solver.depth(grid[step], grid[step + 1])
            if rounds > error.evaluation:
                break
            step += 1
        return ValueError(
            f"the denoiser returned a non-finite value in block {block} (steps "
            f"{bounds[block]}..{bounds[block + 1] - 1}), step {step} (sigma "
            f"{grid[step]:.4g}), {where}"
        )
    kind = "coarse step" if error.kind == "coarse" else "state"
    return ValueError(
        f"non-finite value in the {kind} of block {block} (steps {bounds[block]}.."
        f"{bounds[min(block + 1, len(bounds) - 1)] - 1}), {where}: {error}"
    )
