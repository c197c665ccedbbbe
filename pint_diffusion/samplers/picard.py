"""Picard-family samplers: ParaDiGMS's Picard iterations and quasi-Newton Picard.

Both evaluate the model at every point of a window of the schedule in ONE batched call per
iteration and update the trajectory by the linearised recurrence of :func:`pint.picard`.

- :class:`Picard`: ParaDiGMS (Shih, Belkhale, Ermon, Sadigh & Anari, *Parallel Sampling of
  Diffusion Models*, NeurIPS 2023; diffusers' ``StableDiffusionParadigmsPipeline``): ``A_j = I``,
  the trajectory starts at the noise, points whose change falls below the tolerance are accepted
  and the window slides past them.
- :class:`QuasiNewton`: a diagonal secant estimate of each step's Jacobian per sample (for the
  DDIM step ``A_j = r_j + (1 - r_j) c_j``, ``c_j`` the denoiser's slope along the last change,
  per component where the component changed, else along the whole change), the
  trajectory starts on DDIM's prediction from one evaluation, and a sample stops when the error
  of its final state, extrapolated from the contraction, is below the tolerance: no point is
  ever frozen, so no wrong state is locked in.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from torch import Tensor

import pint

from ..steppers import Solver
from .auto import AutoWindow, DepthModel, Plan, check_window, over_group
from .base import DEFAULT_TOL, KCallback, Progress, Sampler, SamplerInfo, check_tol, final_rms
from .serial import Serial
from .trajectory import Trajectory

__all__ = ["Picard", "QuasiNewton", "sample_picard", "sample_quasi_newton"]

Window = int | str | AutoWindow | None
"""A window: a positive integer, ``None`` (all ``N`` steps), ``"auto"`` or an
:class:`AutoWindow`."""


class Windowed(Sampler):
    """A sampler with a sliding window, chosen by :class:`AutoWindow` when it is ``"auto"``."""

    window: int | AutoWindow | None
    depth: DepthModel

    def planned(self, trajectory: Trajectory,
                max_batch: int | None) -> tuple[Sampler, Plan | None]:
        """With an :class:`AutoWindow`: this sampler with the chosen window, or :class:`Serial`
        where no window is predicted to beat it."""
        if not isinstance(self.window, AutoWindow):
            return self, None
        plan = self.window.window(trajectory, self.depth, max_batch)
        if plan.size is None:
            return Serial(), plan
        chosen = copy.copy(self)
        chosen.window = plan.size
        return chosen, plan


def data_rms(trajectory: Trajectory) -> Callable[[Tensor, Tensor], Tensor]:
    """A point norm for :class:`pint.Freeze`: the RMS change of each point and sample in the
    model's data scale (divided by the trajectory's ``scale``, e.g. ``sqrt(1 + sigma^2)``)."""

    def norm(change: Tensor, t: Tensor) -> Tensor:
        where = (trajectory.grid.reshape(1, -1) == t.reshape(-1, 1)).float().argmax(1)
        rms = change.pow(2).reshape(*change.shape[:2], -1).mean(2).sqrt()
        return rms / trajectory.scale[where].reshape(-1, 1)

    return norm


class Picard(Windowed):
    """Sliding-window Picard iterations with ParaDiGMS's acceptance.

    Args:
        window: how many steps are iterated at once (ParaDiGMS's ``parallel``); ``None``: all
            ``N``; ``"auto"`` (default): chosen from the model's measured cost curve by
            :class:`AutoWindow` (the serial sampler where no window is predicted to beat it).
        tol: a point is accepted when the RMS change of its state in the last iteration is at
            most ``tol`` in the model's data scale (the change divided by ``sqrt(1 + sigma^2)``,
            i.e. in variance-preserving units), for every sample.
        max_iters: the most iterations (default ``N``: then the result is exact).
        group: a ``torch.distributed`` process group (or ``"default"``) over whose ranks each
            iteration's rows are shared out (:func:`pint.distributed.picard`): every rank
            samples with the same arguments (and its own copy of the model) and gets the same
            samples, iterations and depth as one process, bit for bit when the model computes
            each row independently of its batch. No ``drop_failed``. With a group,
            ``window="auto"`` without a given curve is the full window (each rank would time
            its own probe, and the ranks must agree).
    """

    name = "Picard"
    depth = DepthModel.PICARD

    def __init__(self, window: Window = "auto", tol: float = DEFAULT_TOL,
                 max_iters: int | None = None, group: Any = None) -> None:
        self.window, self.group = over_group(check_window(window), group), group
        self.tol, self.max_iters = check_tol(tol), max_iters

    def __repr__(self) -> str:
        return f"Picard(window={self.window}, tol={self.tol:g})"

    def run(self, trajectory: Trajectory, progress: Progress | None,
            max_batch: int | None) -> tuple[pint.Solution, list[int] | None]:
        """:func:`pint.picard` with :class:`pint.Freeze` on the data-scale RMS change."""
        assert not isinstance(self.window, AutoWindow)  # made concrete by planned()
        solution = pint.picard(
            trajectory.field, trajectory.y0, trajectory.grid, step=trajectory.fine,
            window=self.window, tol=self.tol, max_iters=self.max_iters,
            acceptance=pint.Freeze(data_rms(trajectory)), vectorized=True, independent=True,
            callback=progress, max_batch=max_batch, transport=self.transport(trajectory),
        )
        return solution, None


class QuasiNewton(Windowed):
    """Quasi-Newton (secant-preconditioned) Picard: the fastest exact parallel sampler here.

    Args:
        window: how many steps one iteration evaluates: ``None``: all ``N``; ``"auto"``
            (default): chosen from the model's measured cost curve by :class:`AutoWindow` (the
            serial sampler where no window is predicted to beat it); a window bounds the
            work per iteration (about ``window`` rows per sample per call) at some extra depth.
            With a window shorter than ``N`` the window slides past its front points once they
            change by less than ``tol / 3`` (data-scale RMS, for every sample), as ParaDiGMS
            does with ``tol``; the points beyond the window are predicted again after every
            iteration by DDIM from the window's last denoiser output
            (:meth:`pint.Tangent.ahead`), and a sample stops by the extrapolated stop once
            the window reaches the last step, or when the front gets there.
        tol: a sample stops when twice its final state's error, extrapolated from the
            contraction of its RMS changes (:class:`pint.Extrapolated` with ``safety=2``), is
            at most ``tol`` (units of ``x``).
        stop: the stopping rule (default ``pint.Extrapolated(safety=2.0)``).
        max_iters: the most iterations (default ``N``: then the result is exact).
        jacobian: the Jacobian model; default the diagonal secant
            (:meth:`pint.Secant.diagonal`) of the trajectory's stepping
            (:func:`probability_flow` builds the DDIM one: ``A_j = r_j + (1 - r_j) c_j`` per
            component, ``c_j`` clipped to ``[0, 1.5]``), or a scalar :class:`pint.Secant` for a
            stepping without one; :class:`pint.Identity` gives Picard,
            :class:`pint.Anderson` triangular Anderson acceleration (ParaTAA). The diagonal
            secant keeps one factor per step, sample and state entry (memory like the
            trajectory's); ``trajectory.secant`` itself is the scalar one.
        initial: the initial guess; default :class:`pint.Tangent` (DDIM's prediction of
            every point from the first model output).
        group: as in :class:`Picard`.
    """

    name = "quasi-Newton"
    depth = DepthModel.QUASI_NEWTON

    def __init__(self, window: Window = "auto", tol: float = DEFAULT_TOL,
                 stop: pint.StopRule | None = None, max_iters: int | None = None,
                 jacobian: pint.algorithms.picard.JacobianModel | None = None,
                 initial: pint.algorithms.picard.InitialGuess | None = None,
                 group: Any = None) -> None:
        self.window, self.group = over_group(check_window(window), group), group
        self.tol = check_tol(tol)
        self.stop = pint.Extrapolated(safety=2.0) if stop is None else stop
        self.max_iters, self.jacobian, self.initial = max_iters, jacobian, initial

    def __repr__(self) -> str:
        return f"QuasiNewton(window={self.window}, tol={self.tol:g})"

    def run(self, trajectory: Trajectory, progress: Progress | None,
            max_batch: int | None) -> tuple[pint.Solution, list[int] | None]:
        """:func:`pint.picard` with a secant Jacobian and no freezing."""
        jacobian = self.jacobian
        if jacobian is None:  # the stepping's own model, per component; else a scalar secant
            jacobian = (trajectory.secant.diagonal() if trajectory.secant is not None
                        else pint.Secant())
        assert not isinstance(self.window, AutoWindow)  # made concrete by planned()
        sliding = self.window is not None and self.window < trajectory.steps
        acceptance = (pint.Freeze(data_rms(trajectory), tol=self.tol / 3, stop=True) if sliding
                      else None)
        solution = pint.picard(
            trajectory.field, trajectory.y0, trajectory.grid, step=trajectory.fine,
            window=self.window, tol=self.tol, max_iters=self.max_iters, norm=final_rms(trajectory),
            stop=self.stop, jacobian=jacobian, acceptance=acceptance,
            initial=pint.Tangent() if self.initial is None else self.initial,
            vectorized=True, independent=True, callback=progress, max_batch=max_batch,
            transport=self.transport(trajectory),
        )
        return solution, None


def sample_picard(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: KCallback | None = None,
    disable: bool | None = None,
    *,
    window: Window = "auto",
    tol: float = DEFAULT_TOL,
    solver: Solver | None = None,
    max_iters: int | None = None,
    return_info: bool = False,
    store_iterates: bool = False,
    max_batch: int | str | None = "auto",
    drop_failed: bool = False,
    group: Any = None,
) -> Tensor | tuple[Tensor, SamplerInfo]:
    """Sample with sliding-window Picard iterations (ParaDiGMS), k-diffusion's signature.

    ``Picard(window, tol, max_iters, group).sample(model, x, sigmas, ...)``: see
    :class:`Picard` and :meth:`Sampler.sample`.
    """
    return Picard(window, tol, max_iters, group).sample(
        model, x, sigmas, extra_args, callback, disable, solver=solver, return_info=return_info,
        store_iterates=store_iterates, max_batch=max_batch,
        drop_failed=drop_failed)


def sample_quasi_newton(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: KCallback | None = None,
    disable: bool | None = None,
    *,
    window: Window = "auto",
    tol: float = DEFAULT_TOL,
    stop: pint.StopRule | None = None,
    solver: Solver | None = None,
    max_iters: int | None = None,
    return_info: bool = False,
    store_iterates: bool = False,
    max_batch: int | str | None = "auto",
    drop_failed: bool = False,
    group: Any = None,
) -> Tensor | tuple[Tensor, SamplerInfo]:
    """Sample with quasi-Newton Picard, k-diffusion's signature.

    ``QuasiNewton(window, tol, stop, max_iters, group=group).sample(model, x, sigmas, ...)``: see
    :class:`QuasiNewton` and :meth:`Sampler.sample`.

    Example:
        >>> import torch
        >>> from pint_diffusion import sample_quasi_newton
        >>> def denoiser(x, sigma):  # data distributed as N(0, 1)
        ...     return x / (1 + sigma[:, None] ** 2)
        >>> sigmas = torch.linspace(10.0, 0.0, 101)
        >>> x = torch.randn(4, 3) * sigmas[0]
        >>> samples, info = sample_quasi_newton(denoiser, x, sigmas, disable=True,
        ...                                     return_info=True)
        >>> info.sequential_nfe < 20
        True
    """
    return QuasiNewton(window, tol, stop, max_iters, group=group).sample(
        model, x, sigmas, extra_args, callback, disable, solver=solver, return_info=return_info,
        store_iterates=store_iterates, max_batch=max_batch,
        drop_failed=drop_failed)


