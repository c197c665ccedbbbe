"""A flow-matching network (SD3, Flux) and its scheduler as a k-diffusion denoiser."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..families import Guided
from ..parameterizations import FlowVelocity, from_config
from .lookup import SigmaTable

__all__ = ["FlowDenoiser"]


class FlowDenoiser(nn.Module):
    """The k-diffusion denoiser view of a flow-matching model: ``D(x, sigma) = x - sigma v``.

    Euler on ``dx/dsigma = (x - D) / sigma = v`` over the scheduler's own sigmas IS
    ``FlowMatchEulerDiscreteScheduler``, so the PF-ODE samplers (``sample_euler``,
    :func:`pint_diffusion.sample_srds`) run SD3 and Flux unchanged. Made of the shared parts:
    the exact lookup (:class:`~pint_diffusion.adapters.lookup.SigmaTable`), the family call,
    guidance (:class:`pint_diffusion.families.Guided`), :class:`~pint_diffusion.
    parameterizations.FlowVelocity`.

    Args:
        call: the family call (:class:`pint_diffusion.families.SD3Call`,
            :class:`~pint_diffusion.families.FluxCall`, ...).
        scheduler: a flow-matching scheduler after ``set_timesteps`` exactly as the pipeline
            calls it (static ``shift`` for SD3, ``mu`` for Flux); its ``sigmas`` are the
            schedule and its ``timesteps`` what the network sees.
        guidance_scale: classifier-free guidance weight; with ``!= 1`` every conditioning key
            needs an ``uncond_`` counterpart.

    Attributes:
        sigmas: the schedule, ``N + 1`` values from about 1 down to 0.
        table: the :class:`SigmaTable` of its evaluable points (all but the last).

    Calling it as ``denoiser(x, sigma, **cond)``: ``x`` the pipeline's latents, ``sigma`` of
    shape ``(R,)`` with values from :attr:`sigmas`, ``cond`` the network's per-row inputs
    (``encoder_hidden_states``, ``pooled_projections``, ...) and their ``uncond_`` counterparts.

    Example::

        pipe.scheduler.set_timesteps(28)
        denoiser = FlowDenoiser(SD3Call(pipe.transformer), pipe.scheduler, guidance_scale=7)
        x = pint_diffusion.sample_srds(denoiser, latents, denoiser.sigmas, extra_args=dict(
            encoder_hidden_states=pe, pooled_projections=pp,
            uncond_encoder_hidden_states=npe, uncond_pooled_projections=npp))
    """

    def __init__(self, call: Any, scheduler: Any, *, guidance_scale: float = 1.0) -> None:
        super().__init__()
        if from_config(scheduler) != FlowVelocity():
            raise TypeError(f"FlowDenoiser needs a flow-matching scheduler, got "
                            f"{type(scheduler).__name__}")
        if getattr(scheduler, "timesteps", None) is None:
            raise ValueError("call scheduler.set_timesteps(...) first, as the pipeline does")
        from ..schedulers import check_deterministic

        check_deterministic(scheduler)
        self.call = call
        self.guidance_scale = float(guidance_scale)
        self.sigmas = scheduler.sigmas.detach().clone()
        timesteps = scheduler.timesteps.detach()
        if len(self.sigmas) != len(timesteps) + 1:
            raise ValueError("the scheduler's sigmas must have one more entry than timesteps")
        self.table = SigmaTable(self.sigmas[:-1], timesteps,
                                hint="; evaluate only the values of denoiser.sigmas")

    def forward(self, x: Tensor, sigma: Tensor | float, **cond: Any) -> Tensor:
        """``x - sigma * v(x, t(sigma))``, guided."""
        sigma_t = torch.as_tensor(sigma, device=x.device).reshape(-1).expand(x.shape[0])
        timesteps = self.table.timesteps_of(sigma_t).to(x.device)
        uncond = {k[7:]: v for k, v in cond.items() if k.startswith("uncond_")}
        cond = {k: v for k, v in cond.items() if not k.startswith("uncond_")}
        if self.guidance_scale != 1.0 and set(uncond) != set(cond):
            raise ValueError(f"guidance_scale={self.guidance_scale} needs uncond_<key> for "
                             f"every conditioning key {sorted(cond)}")
        guided = Guided(self.call, cond, x.shape[0], uncond=uncond or None,
                        scale=self.guidance_scale,
                        batched=getattr(self.call, "batched_guidance", True))
        v = guided(x, timesteps, torch.arange(x.shape[0], device=x.device))
        s = sigma_t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return FlowVelocity().denoise(x, v.to(x.dtype), 1 - s, s)
