"""Self-Refining Diffusion Samplers (SRDS): Parareal over the diffusion trajectory.

Selvam, Merchant & Ermon, *Self-Refining Diffusion Samplers: Enabling Parallelization via
Parareal Iterations*, NeurIPS 2024. The ``N`` steps of a sampler are split into ``B`` blocks. A
coarse pass (one solver step per block) gives a rough sample; each iteration then runs the
sampler's own steps inside every block *in parallel* (batched model calls) and corrects the
coarse pass with them. After ``k`` iterations the first ``k`` blocks are exact, so the result
converges to the serial sampler's output, usually after far fewer sequential calls than ``N``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

from torch import Tensor

import pint

from ..steppers import Solver
from .auto import AutoWindow, Plan, check_window, over_group
from .base import DEFAULT_TOL, KCallback, Progress, Sampler, SamplerInfo, check_tol, final_rms
from .serial import Serial
from .trajectory import Trajectory

__all__ = ["SRDS", "block_boundaries", "sample_srds"]


def block_boundaries(n_steps: int, blocks: int) -> list[int]:
    """Split ``n_steps`` steps into ``blocks`` contiguous blocks of near-equal length.

    Returns the ``blocks + 1`` boundary indices into the schedule, from 0 to ``n_steps``.
    """
    if isinstance(blocks, bool) or not isinstance(blocks, int) or not 1 <= blocks <= n_steps:
        raise ValueError(f"blocks must be an integer in [1, {n_steps}] (the number of "
                         f"steps), got {blocks!r}")
    return [round(i * n_steps / blocks) for i in range(blocks + 1)]


class SRDS(Sampler):
    """SRDS: Parareal with the sampler's own steps as the fine solver.

    Args:
        blocks: the number of blocks. ``None``: ``round(2 sqrt(N))`` (at most ``N``). The
            coarse pass and ``K`` pipelined iterations cost about
            ``blocks + K (N / blocks - 1)`` sequential calls, least at ``sqrt(K N)``, and more
            blocks make the coarse pass more accurate and save iterations (on the bundled
            digits model ``2 sqrt(N)`` beats ``sqrt(N)``; see the benchmarks in ``benchmarks/``).
            ``"auto"`` (default) or an :class:`AutoWindow`: the count that minimises the latency
            predicted from the model's measured cost curve with ``K = 4`` (``2 sqrt(N)`` where
            rows are free), or the serial sampler where no count is predicted to beat it; with
            ``group``, ``"auto"`` is ``round(2 sqrt(N))`` (every rank must agree without
            timing).
        tol: a sample stops iterating (and leaves the batch) when its final state meets the
            stopping rule at this tolerance (RMS, in the units of ``x``). 0 runs until exact.
        stop: :class:`pint.Tolerance` (default: the RMS change of the final state between two
            iterations is at most ``tol``) or :class:`pint.Extrapolated` (the error extrapolated
            from the contraction; usually one iteration fewer).
        pipelined: start each block's fine solve as soon as its initial state exists (SRDS's
            pipelined variant). Same result, fewer sequential calls. A bool (else TypeError).
        max_iters: the most iterations after the coarse pass; defaults to ``blocks``, after
            which the result equals the serial sampler's.
        group: a ``torch.distributed`` process group (or ``"default"``) to spread the blocks
            over its ranks (:func:`pint.distributed.parareal`): every rank samples with the same
            arguments (and its own copy of the model) and gets the same samples as in one
            process. The schedule is always pipelined; no callback, ``store_iterates`` or
            ``drop_failed`` (a rank cannot sample again without the others).
    """

    name = "SRDS"

    def __init__(self, blocks: int | str | AutoWindow | None = "auto", tol: float = DEFAULT_TOL,
                 stop: pint.StopRule | None = None, pipelined: bool = True,
                 max_iters: int | None = None, group: Any = None) -> None:
        if not isinstance(pipelined, bool):
            raise TypeError(f"pipelined must be True or False, got {pipelined!r}")
        self.blocks = over_group(check_window(blocks, "blocks"), group)
        self.tol, self.stop, self.pipelined = check_tol(tol), stop, pipelined
        self.max_iters, self.group = max_iters, group

    def __repr__(self) -> str:
        return f"SRDS(blocks={self.blocks}, tol={self.tol:g})"

    def planned(self, trajectory: Trajectory,
                max_batch: int | None) -> tuple[Sampler, Plan | None]:
        """With an :class:`AutoWindow`: SRDS with the chosen block count, or :class:`Serial`
        where no count is predicted to beat it."""
        if not isinstance(self.blocks, AutoWindow):
            return self, None
        plan = self.blocks.blocks(trajectory, max_batch)
        if plan.size is None:
            return Serial(), plan
        chosen = copy.copy(self)
        chosen.blocks = plan.size
        return chosen, plan

    def bounds(self, trajectory: Trajectory) -> list[int]:
        """The block boundaries for this trajectory."""
        n = trajectory.steps
        assert not isinstance(self.blocks, AutoWindow)  # made concrete by planned()
        blocks = min(n, max(1, round(2 * math.sqrt(n)))) if self.blocks is None else self.blocks
        return block_boundaries(n, blocks)

    def iterations_bound(self, trajectory: Trajectory) -> int:
        """At most one iteration per block."""
        blocks = len(self.bounds(trajectory)) - 1
        return blocks if self.max_iters is None else min(self.max_iters, blocks)

    def run(self, trajectory: Trajectory, progress: Progress | None,
            max_batch: int | None) -> tuple[pint.Solution, list[int] | None]:
        """Parareal over the blocks."""
        bounds = self.bounds(trajectory)
        t = trajectory.grid[bounds]
        transport = self.transport(trajectory)
        unsupported = progress is not None and (progress.callback is not None or
                                                progress.iterates is not None)
        solution = pint.parareal(
            trajectory.field, trajectory.y0, t, coarse=trajectory.coarse(t), fine=trajectory.fine,
            tol=self.tol, max_iters=self.max_iters, norm=final_rms(trajectory), stop=self.stop,
            pipelined=self.pipelined or transport is not None, vectorized=True, independent=True,
            # over processes a callback or store_iterates is refused by every rank at once
            callback=progress if transport is None or unsupported else None, max_batch=max_batch,
            transport=transport,
        )
        if transport is not None and progress is not None:
            progress.bar.update(solution.iterations + 1)
        return solution, bounds

    def where(self, error: pint.NonFiniteError, trajectory: Trajectory) -> str:
        """The block, and the step inside it, of a failure."""
        bounds = self.bounds(trajectory)
        where = error.location
        if where.label == "state":
            return f"block boundary {where.point} ({trajectory.describe(bounds[where.point])})"
        block = where.point
        first, last = bounds[block], bounds[block + 1] - 1
        step = first
        if where.label == "fine" and where.evaluation is not None:
            rounds = 0
            while step < last:
                rounds += trajectory.step_depths[step]
                if rounds > where.evaluation:
                    break
                step += 1
            return f"block {block} (steps {first}..{last}), {trajectory.describe(step)}"
        return f"the coarse step of block {block} (steps {first}..{last})"


def sample_srds(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: KCallback | None = None,
    disable: bool | None = None,
    *,
    blocks: int | str | AutoWindow | None = "auto",
    tol: float = DEFAULT_TOL,
    stop: pint.StopRule | None = None,
    solver: Solver | None = None,
    pipelined: bool = True,
    max_iters: int | None = None,
    return_info: bool = False,
    store_iterates: bool = False,
    group: Any = None,
    max_batch: int | str | None = "auto",
    drop_failed: bool = False,
) -> Tensor | tuple[Tensor, SamplerInfo]:
    """Sample with SRDS; a drop-in replacement for k-diffusion's ``sample_euler``.

    ``SRDS(blocks, tol, stop, pipelined, max_iters, group).sample(model, x, sigmas, ...)``: see
    :class:`SRDS` for the options and :meth:`Sampler.sample` for the rest.

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
    sampler = SRDS(blocks, tol, stop, pipelined, max_iters, group)
    return sampler.sample(model, x, sigmas, extra_args, callback, disable, solver=solver,
                          return_info=return_info, store_iterates=store_iterates,
                          max_batch=max_batch, drop_failed=drop_failed)
