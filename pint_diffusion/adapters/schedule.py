"""The variance-exploding schedule of a DDIM or Euler scheduler, and the change of variables.

``DDIMScheduler`` (``eta = 0``) is Euler's method on the probability-flow ODE in VE coordinates
``sigma = sqrt((1 - abar) / abar)``, ``x_VE = x_VP sqrt(1 + sigma**2)``;
``EulerDiscreteScheduler`` already works in them. :func:`ve_schedule` reads the schedule off the
scheduler's own ``set_timesteps`` and pairs every evaluable point with the timestep the scheduler
feeds the model there (a :class:`~pint_diffusion.adapters.lookup.SigmaTable`).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor

from .lookup import SigmaTable

__all__ = ["SUPPORTED_SCHEDULERS", "check_ode_config", "scheduler_kind", "ve_schedule",
           "vp_scale"]

#: Names of the diffusers scheduler classes the PF-ODE view accepts (any deterministic
#: scheduler runs through :func:`pint_diffusion.schedulers.scheduler_trajectory`).
SUPPORTED_SCHEDULERS: tuple[str, ...] = ("DDIMScheduler", "EulerDiscreteScheduler")


def scheduler_kind(scheduler: Any) -> str:
    """``"ddim"`` or ``"euler"`` (exact class: a subclass may step differently); TypeError
    for any other scheduler, pointing to the scheduler path that takes every one."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    kinds = {DDIMScheduler: "ddim", EulerDiscreteScheduler: "euler"}
    if type(scheduler) in kinds:
        return kinds[type(scheduler)]
    raise TypeError(
        f"DiffusersDenoiser does not support the scheduler {type(scheduler).__name__}; "
        f"supported schedulers: {', '.join(SUPPORTED_SCHEDULERS)}. Any deterministic "
        f"scheduler runs through pint_diffusion.pipelines.ParallelStableDiffusionPipeline (or "
        f"pint_diffusion.schedulers.scheduler_trajectory)")


def check_ode_config(scheduler: Any) -> None:
    """Refuse the options that break the ODE view: randomness
    (:func:`pint_diffusion.schedulers.check_deterministic`), ``thresholding``, ``clip_sample``,
    and DDIM timestep spacings other than leading, trailing and linspace."""
    from ..schedulers import check_deterministic

    check_deterministic(scheduler)
    config = scheduler.config
    for option, what in (("thresholding", "dynamic thresholding of the predicted x0"),
                         ("clip_sample", "clipping the predicted x0")):
        if config.get(option, False):
            raise ValueError(f"{option}=True ({what}) breaks the probability-flow ODE view; set "
                             f"{option}=False in the scheduler config")
    spacing = config.get("timestep_spacing", "leading")
    if scheduler_kind(scheduler) == "ddim" and spacing not in ("leading", "trailing", "linspace"):
        raise ValueError(f"unsupported timestep_spacing={spacing!r}")


def _train_sigmas(scheduler: Any) -> Tensor:
    abar = scheduler.alphas_cumprod.detach().cpu().to(torch.float64)
    return ((1 - abar) / abar).sqrt()


def _ddim(sched: Any, timesteps: Tensor, n_steps: int) -> tuple[Tensor, Tensor | None]:
    """DDIM's sigmas (its timesteps, then the abar its last step goes to) and the timestep of
    the last point when it is a training noise level."""
    abar = sched.alphas_cumprod.detach().cpu().to(torch.float64)
    final = torch.as_tensor(sched.final_alpha_cumprod).detach().cpu().to(torch.float64)
    ratio = sched.config.num_train_timesteps // sched.num_inference_steps
    ts = [int(t) for t in timesteps]
    if ts and not 0 <= min(ts) <= max(ts) < len(abar):
        raise ValueError(
            f"num_inference_steps={n_steps}: the scheduler's timesteps run from {min(ts)} "
            f"to {max(ts)}, outside its {len(abar)} training timesteps (steps_offset="
            f"{sched.config.get('steps_offset', 0)}); use fewer steps")
    for t, nxt in itertools.pairwise(ts):  # DDIMScheduler.step goes from t to t - ratio
        if t - ratio != nxt:
            raise ValueError(
                f"DDIMScheduler with timestep_spacing={sched.config.timestep_spacing!r} and "
                f"num_inference_steps={n_steps} steps from timestep {t} to {t - ratio}, not to "
                f"the next timestep {nxt}: that is not an ODE schedule. Use "
                "timestep_spacing='leading', or 'trailing' with a num_inference_steps that "
                "divides num_train_timesteps")
    abars = [abar[t] for t in ts]
    last = ts[-1] - ratio
    if last >= 0:
        abars.append(abar[last])
        last_t = torch.tensor(last, dtype=timesteps.dtype)
    else:  # set_alpha_to_one=False ends at training timestep 0
        abars.append(final)
        last_t = torch.tensor(0, dtype=timesteps.dtype) if bool(final == abar[0]) else None
    a = torch.stack([torch.as_tensor(v) for v in abars])
    return ((1 - a) / a).sqrt(), last_t


def _euler(sched: Any, timesteps: Tensor) -> tuple[Tensor, Tensor | None]:
    """Euler's first N+1 sigmas (so that log-linear interpolation ends where its N steps end);
    the last point's timestep is 0 when it is the smallest training noise level."""
    sig = sched.sigmas.detach().cpu().to(torch.float64)[: len(timesteps) + 1]
    if sched.config.get("timestep_type", "discrete") == "discrete" and sig[-1] > 0 and bool(
            torch.isclose(sig[-1], _train_sigmas(sched)[0], rtol=1e-6, atol=0.0)):
        return sig, torch.zeros((), dtype=timesteps.dtype)  # final_sigmas_type="sigma_min"
    return sig, None


def ve_schedule(scheduler: Any, num_inference_steps: int) -> tuple[Tensor, SigmaTable]:
    """The N+1 VE noise levels of ``scheduler.set_timesteps(num_inference_steps)`` (float64,
    CPU) and the table of its evaluable points; see
    :meth:`pint_diffusion.adapters.DiffusersDenoiser.sigmas`. ``scheduler`` is changed."""
    limit = scheduler.config.num_train_timesteps
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or (
            not 1 <= num_inference_steps <= limit):
        raise ValueError(f"num_inference_steps must be an integer in [1, {limit}] (the "
                         f"scheduler's training timesteps), got {num_inference_steps!r}")
    scheduler.set_timesteps(num_inference_steps)
    timesteps = scheduler.timesteps.detach().cpu()
    n = len(timesteps)
    if scheduler_kind(scheduler) == "ddim":
        sig, last_t = _ddim(scheduler, timesteps, num_inference_steps)
    else:
        sig, last_t = _euler(scheduler, timesteps)
    if len(sig) != n + 1:
        raise ValueError(f"the scheduler gave {n} timesteps but {len(sig)} sigmas")
    if not bool(torch.isfinite(sig).all()):
        raise ValueError(
            "the schedule has an infinite sigma (abar = 0, e.g. rescale_betas_zero_snr=True "
            "with a timestep at the end of training): not representable in VE coordinates")
    # strictly decreasing, but a last step from sigma(alphas_cumprod[0]) to itself may be 0 long
    if not bool((sig[1:-1] < sig[:-2]).all() and sig[-1] <= sig[-2]):
        raise ValueError(f"the scheduler's sigmas are not decreasing: {sig.tolist()}")
    table_s, table_t = sig[:n], timesteps
    if last_t is not None and 0 < sig[-1] < sig[-2]:
        table_s = torch.cat([table_s, sig[-1:]])
        table_t = torch.cat([table_t, last_t.reshape(1).to(timesteps.dtype)])
    hint = (f"; evaluate only the values of the last sigmas(num_inference_steps="
            f"{num_inference_steps}) call")
    return sig, SigmaTable(table_s, table_t, hint=hint)


def vp_scale(sigma: Tensor | float, like: Tensor, *, inverse: bool) -> Tensor | float:
    """``1 / sqrt(1 + sigma**2)`` (VE -> VP), or its inverse, shaped to broadcast against
    ``like`` from the batch axis."""
    if not isinstance(sigma, Tensor):
        s2 = 1.0 + float(sigma) ** 2
        return math.sqrt(s2) if inverse else 1.0 / math.sqrt(s2)
    s = sigma.to(device=like.device, dtype=torch.float64)
    scale = ((1 + s**2).sqrt() if inverse else (1 + s**2).rsqrt()).to(like.dtype)
    if scale.ndim == 1 and like.ndim > 1:
        scale = scale.reshape(-1, *([1] * (like.ndim - 1)))
    return scale
