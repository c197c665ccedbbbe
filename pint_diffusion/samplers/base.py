"""The sampler front-end: what every sampler shares.

A sampler is a strategy object (:class:`pint_diffusion.SRDS`, :class:`~pint_diffusion.Picard`,
:class:`~pint_diffusion.QuasiNewton`, :class:`~pint_diffusion.Serial`) with one method to
implement, :meth:`Sampler.run`, which solves a :class:`Trajectory` with pint. Everything else is
here, once: building the trajectory from a k-diffusion denoiser (:meth:`Sampler.sample`), the
progress bar and the k-diffusion-style callback (:class:`Progress`), error messages in the
sampler's terms, and the :class:`SamplerInfo` every sampler returns.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real
from typing import Any

import torch
from torch import Tensor

import pint

from ..steppers import Solver
from .auto import Plan, auto_max_batch, speedup
from .trajectory import Trajectory, probability_flow

__all__ = ["DEFAULT_TOL", "Progress", "Sampler", "SamplerInfo", "check_tol"]

DEFAULT_TOL = 1e-3
"""Default tolerance of the parallel samplers: an RMS error of a sample's final state, in the
units of ``x`` (data in ``[-1, 1]`` for image models)."""

KCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class SamplerInfo:
    """What a sampler did and cost (``return_info=True``).

    Attributes:
        iterations: iterations run (after SRDS's coarse pass; the most any sample needed).
        sample_iterations: the iteration at which each sample stopped, shape ``(B,)``.
        converged: whether every sample met the tolerance (or was solved exactly).
        residuals: per iteration, the largest residual among the samples still iterating.
        nfe: model evaluations, one per sample row (classifier-free guidance done by the model
            itself counts once).
        sequential_nfe: batched model calls on the critical path (the depth); serial sampling
            with ``N`` Euler steps has depth ``N``.
        predicted_sequential_nfe: the depth the schedule's recurrence predicts, where one exists.
        wall_time: seconds.
        calls: calls of the model (more than ``sequential_nfe`` when ``max_batch`` splits them).
        blocks: SRDS's block boundaries, as indices into the schedule; ``None`` for the others.
        iterates: with ``store_iterates=True``: the samples after each iteration (SRDS: the
            coarse pass first), each like the result (NaN for dropped samples).
        failed: with ``drop_failed=True``: the samples whose model output became non-finite
            (returned as NaN, their ``sample_iterations`` -1); otherwise empty.
        sampler: the sampler that ran, as its ``repr`` (e.g. ``"QuasiNewton(window=8, ...)"``;
            ``"Serial() (chosen by QuasiNewton(...): ...)"`` where ``window="auto"`` predicted
            no window to beat it).
        plan: with ``window="auto"`` (SRDS: ``blocks="auto"``): what :class:`AutoWindow`
            chose (``plan.size``: the window or block count, ``None`` for serial), its
            ``predicted_speedup`` and the ``curve``; otherwise ``None``.
        speedup: with a plan, the measured speedup: serial's time predicted from the measured
            cost curve over this run's ``wall_time``.
    """

    iterations: int
    sample_iterations: Tensor
    converged: bool
    residuals: list[float]
    nfe: int
    sequential_nfe: int
    predicted_sequential_nfe: int | None
    wall_time: float
    calls: int = 0
    blocks: list[int] | None = None
    iterates: list[Tensor] | None = None
    failed: list[int] = dataclasses.field(default_factory=list)
    sampler: str = ""
    plan: Plan | None = None
    speedup: float | None = None

    @classmethod
    def of(cls, solution: pint.Solution, keep: Tensor, batch: int,
           blocks: list[int] | None = None, iterates: list[Tensor] | None = None,
           failed: list[int] | None = None, sampler: str = "",
           plan: Plan | None = None) -> SamplerInfo:
        """The info of a pint solution of the samples ``keep`` of a batch of ``batch``."""
        stats = solution.stats
        solved = solution.sample_iterations
        if solved is None:
            solved = torch.full((len(keep),), solution.iterations, dtype=torch.long)
        sample_iterations = torch.full((batch,), -1, dtype=torch.long)
        sample_iterations[keep.cpu()] = solved
        return cls(
            iterations=solution.iterations, sample_iterations=sample_iterations,
            converged=solution.converged, residuals=solution.residuals, nfe=stats.nfe,
            sequential_nfe=stats.sequential_nfe,
            predicted_sequential_nfe=stats.predicted_sequential_nfe,
            wall_time=stats.wall_time, calls=stats.calls, blocks=blocks, iterates=iterates,
            failed=failed or [], sampler=sampler, plan=plan,
            speedup=speedup(plan, stats.wall_time),
        )


def check_tol(tol: object) -> float:
    """A finite tolerance >= 0 (NumPy scalars welcome)."""
    if isinstance(tol, bool) or not isinstance(tol, Real) or not (
            float(tol) >= 0 and math.isfinite(float(tol))):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    return float(tol)


def final_rms(trajectory: Trajectory) -> Callable[[Tensor], Tensor]:
    """The residual of a sample: the root-mean-square change of its final *sample* (the
    trajectory's output of the final state: a scheduler's history does not count)."""

    def norm(change: Tensor) -> Tensor:
        return trajectory.output(change[-1:]).pow(2).mean().sqrt()

    return norm


class Progress:
    """The progress bar and the k-diffusion callback of an iterative sampler.

    ``progress(k, ys, residual)`` is a pint callback: it advances the bar, shows the largest
    residual, keeps the samples if ``store`` and calls the user's ``callback`` with
    ``{"x", "i", "sigma", "sigma_hat", "denoised", "residual"}``: the current samples (the
    final states, which are the sampler's denoised output), the iteration, the grid point of
    ``x`` (twice; the last one, unless ``point`` names another), the samples again and the
    per-sample residual (NaN where undefined). Samples and residuals always have the whole
    batch's rows: when ``keep`` (the samples still sampled, after ``drop_failed`` dropped
    some) is not all of them, the dropped samples' rows are NaN.
    """

    def __init__(self, trajectory: Trajectory, total: int, desc: str, disable: bool | None,
                 callback: KCallback | None, store: bool, keep: Tensor | None = None,
                 batch: int | None = None) -> None:
        from tqdm.auto import tqdm

        self.trajectory, self.callback = trajectory, callback
        self.keep, self.batch = keep, batch
        self.iterates: list[Tensor] | None = [] if store else None
        self.bar = tqdm(total=total, disable=disable, desc=desc, unit="it")

    def __call__(self, k: int, ys: Tensor, residual: Tensor, point: int = -1) -> None:
        self.bar.update(1)
        finite = residual[~torch.isnan(residual)]
        if len(finite):
            self.bar.set_postfix(residual=f"{float(finite.max()):.2e}")
        samples = self.whole(self.trajectory.output(ys[-1]))
        residual = self.whole(residual)
        if self.iterates is not None:
            self.iterates.append(samples.clone())
        if self.callback is not None:
            at = self.trajectory.grid[point]
            self.callback({"x": samples, "i": k, "sigma": at, "sigma_hat": at,
                           "denoised": samples, "residual": residual})

    def whole(self, rows: Tensor) -> Tensor:
        """``rows`` of the samples ``keep`` in the whole batch, NaN for the others."""
        if self.keep is None or self.batch is None or len(self.keep) == self.batch:
            return rows
        full = rows.new_full((self.batch, *rows.shape[1:]), math.nan)
        full[self.keep.to(rows.device)] = rows
        return full

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()


class Sampler:
    """A sampling algorithm. Subclasses implement :meth:`run`.

    Every sampler is used the same way: ``sampler.sample(model, x, sigmas, ...)`` for a
    k-diffusion denoiser, or ``sampler.solve(trajectory)`` for any :class:`Trajectory` (a
    diffusers scheduler's steps, flow matching), and by the pipelines, which take the sampler
    object.
    """

    name = "sampler"
    group: Any = None
    """A ``torch.distributed`` process group (``"default"``: the default group) over whose
    ranks the sampler shares its work; ``None``: this process alone."""

    def transport(self, trajectory: Trajectory) -> Any:
        """``None`` in one process, else the :class:`pint.distributed.Distributed` transport of
        :attr:`group` on the trajectory's device."""
        if self.group is None:
            return None
        from pint.distributed import Distributed

        group = None if isinstance(self.group, str) and self.group == "default" else self.group
        return Distributed(group, device=trajectory.y0.device)

    def run(self, trajectory: Trajectory, progress: Progress | None,
            max_batch: int | None) -> tuple[pint.Solution, list[int] | None]:
        """Solve ``trajectory``; returns pint's solution (with the states at the grid points
        the algorithm keeps, the last one final) and SRDS's block boundaries (or ``None``)."""
        raise NotImplementedError

    def iterations_bound(self, trajectory: Trajectory) -> int:
        """The most iterations (for the progress bar)."""
        return trajectory.steps

    def planned(self, trajectory: Trajectory,
                max_batch: int | None) -> tuple[Sampler, Plan | None]:
        """The sampler that runs ``trajectory`` (an ``"auto"`` choice made concrete) and the
        plan behind it; a sampler without an automatic choice runs as it is."""
        return self, None

    def solve(self, trajectory: Trajectory, callback: KCallback | None = None,
              disable: bool | None = None, *, store_iterates: bool = False,
              max_batch: int | str | None = "auto", drop_failed: bool = False,
              ) -> tuple[Tensor, SamplerInfo]:
        """Sample ``trajectory``: the samples and the :class:`SamplerInfo`.

        ``max_batch`` bounds the rows of one model call; ``"auto"`` (default): on CUDA the rows
        that fit in 80% of the free device memory (measured by the cost probe), elsewhere no
        bound (unless the probe ran out of memory).

        With ``drop_failed``, a sample whose model output becomes non-finite is dropped and the
        others are sampled again without it (samples are independent, so theirs is the result
        they would have had); it is returned as NaN and listed in ``info.failed``.

        Raises:
            TypeError: ``callback`` is neither callable nor ``None``, or ``drop_failed`` is not
                a bool.
            ValueError: without ``drop_failed``, the model returned a non-finite value (the
                message names the step, its noise level, the iteration and the samples).
        """
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable (it receives a dict) or None, got "
                            f"{callback!r}")
        if not isinstance(drop_failed, bool):
            raise TypeError(f"drop_failed must be True or False, got {drop_failed!r}")
        if drop_failed and self.group is not None:
            raise ValueError("drop_failed is not supported with group= (over processes, a rank "
                             "cannot sample again without the others)")
        if isinstance(max_batch, str):
            if max_batch != "auto":
                raise ValueError(f"max_batch must be a positive integer, None or \"auto\", got "
                                 f"{max_batch!r}")
            sampler, plan = self.planned(trajectory, None)
            max_batch = auto_max_batch(trajectory, None if plan is None else plan.curve)
            if max_batch is not None and plan is not None:
                sampler, plan = self.planned(trajectory, max_batch)
        else:
            sampler, plan = self.planned(trajectory, max_batch)
        batch = trajectory.batch
        keep = torch.arange(batch)
        failed: list[int] = []
        while True:
            part = trajectory if len(keep) == batch else trajectory.subset(keep)
            progress = Progress(part, sampler.iterations_bound(part) + 1, sampler.name, disable,
                                callback, store_iterates, keep, batch)
            try:
                with torch.no_grad():
                    solution, blocks = sampler.run(part, progress, max_batch)
                break
            except pint.NonFiniteError as error:
                lost = keep[error.problems].tolist()
                if not drop_failed:
                    error.problems = lost  # in the caller's numbering
                    raise ValueError(sampler.located(error, part)) from error
                failed += lost
                keep = keep[~torch.isin(keep, torch.tensor(lost))]
                if len(keep) == 0:
                    raise ValueError(f"every sample failed: {sampler.located(error, part)}"
                                     ) from error
            finally:
                progress.close()
        solved = part.output(solution.ys[-1])
        samples = solved.new_full((batch, *solved.shape[1:]), math.nan)
        samples[keep.to(samples.device)] = solved
        name = repr(sampler) if plan is None or plan.size is not None else (
            f"{sampler!r} (chosen by {self!r}: no window predicted to beat it)")
        return samples, SamplerInfo.of(solution, keep, batch, blocks, progress.iterates,
                                       sorted(failed), name, plan)

    def located(self, error: pint.NonFiniteError, trajectory: Trajectory) -> str:
        """The failure in the sampler's words."""
        where = error.location
        samples = f"sample{'s' if len(error.problems) > 1 else ''} " + ", ".join(
            map(str, error.problems))
        what = "the model returned a non-finite value" if where.evaluation is not None else (
            "a state became non-finite")
        return (f"{what} at {self.where(error, trajectory)}, iteration {where.iteration}, "
                f"for {samples}")

    def where(self, error: pint.NonFiniteError, trajectory: Trajectory) -> str:
        """The grid point of a failure in words."""
        return trajectory.describe(error.location.point)

    def sample(
        self,
        model: Callable[..., Tensor],
        x: Tensor,
        sigmas: Tensor,
        extra_args: dict[str, Any] | None = None,
        callback: KCallback | None = None,
        disable: bool | None = None,
        *,
        solver: Solver | None = None,
        return_info: bool = False,
        store_iterates: bool = False,
        max_batch: int | str | None = "auto",
        drop_failed: bool = False,
    ) -> Tensor | tuple[Tensor, SamplerInfo]:
        """Sample with a k-diffusion denoiser; k-diffusion's sampler signature.

        Args:
            model: a denoiser ``model(x, sigma, **extra_args) -> denoised`` with ``sigma`` of
                shape ``(rows,)``; it is called with rows of several grid points at once.
            x: the initial noise, already scaled by ``sigmas[0]``; shape ``(B, ...)``.
            sigmas: the schedule, strictly decreasing, ``N + 1`` values (usually ending in 0);
                a last step of length 0 (``sigmas[-2] == sigmas[-1] > 0``, as
                :meth:`~pint_diffusion.DiffusersDenoiser.sigmas` can end) leaves the samples
                unchanged and is skipped.
            extra_args: keyword arguments for ``model``; every tensor in it (nested in dicts,
                lists and tuples too) whose leading axis is the batch is split per sample, a
                leading axis of 1 is shared by all samples.
            callback: k-diffusion-style callback, see :class:`Progress`.
            disable: disable the progress bar.
            solver: :class:`pint_diffusion.Euler` (default; DDIM for VP models) or ``Heun``.
            return_info: also return a :class:`SamplerInfo`.
            store_iterates: keep the samples after each iteration in the info.
            max_batch: the most rows in one model call (bounds the memory of a call; same
                samples and depth, more calls); ``"auto"`` (default): what fits in the device's
                free memory on CUDA, no bound elsewhere (see :meth:`solve`).
            drop_failed: a sample whose model output becomes non-finite is returned as NaN
                (listed in ``info.failed``) and the others complete; by default the call
                raises, naming the samples.

        Returns:
            The samples (like ``x``), or ``(samples, info)``.
        """
        trajectory = probability_flow(model, x, sigmas, extra_args, solver)
        samples, info = self.solve(trajectory, callback, disable, store_iterates=store_iterates,
                                   max_batch=max_batch, drop_failed=drop_failed)
        return (samples, info) if return_info else samples
