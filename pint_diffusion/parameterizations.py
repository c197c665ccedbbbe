"""What a network predicts, as objects: epsilon, v, x0 (variance preserving) and flow velocity.

Every parameterization maps the network's output at a noisy input
``x = alpha * x0 + sigma * noise`` to the denoised estimate ``x0_hat`` (:meth:`denoise`):

=====================  ==============================  ========================================
object                 the network predicts            ``x0_hat``
=====================  ==============================  ========================================
:class:`Epsilon`       the noise                       ``(x - sigma * out) / alpha``
:class:`VPrediction`   ``alpha * noise - sigma * x0``  ``alpha * x - sigma * out`` (VP only)
:class:`Sample`        ``x0``                          ``out``
:class:`FlowVelocity`  ``noise - x0``                  ``x - sigma * out`` (``alpha = 1 - sigma``)
=====================  ==============================  ========================================

:func:`from_config` picks one from a diffusers scheduler's config (``prediction_type``; flow
matching schedulers give :class:`FlowVelocity`).

:class:`FlowDenoiser` is the denoiser view of a flow-matching model: ``D(x, sigma) = x - sigma
v(x, sigma)``, so that k-diffusion-style PF-ODE samplers (``sample_euler``,
:func:`pint_diffusion.sample_srds`) run SD3 and Flux unchanged: Euler on
``dx/dsigma = (x - D) / sigma = v`` over the scheduler's own sigmas IS
``FlowMatchEulerDiscreteScheduler``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = [
    "Epsilon",
    "FlowDenoiser",
    "FlowVelocity",
    "Parameterization",
    "Sample",
    "VPrediction",
    "from_config",
]


class Parameterization:
    """Base class: ``denoise(x, out, alpha, sigma) -> x0_hat`` (see the module table).

    ``alpha`` and ``sigma`` are the signal and noise scales of ``x`` (tensors broadcasting
    against ``x``, or floats).
    """

    name: ClassVar[str] = ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))

    def denoise(self, x: Tensor, out: Tensor, alpha: Any, sigma: Any) -> Tensor:
        """The denoised estimate ``x0_hat`` of ``x`` from the network output ``out``."""
        raise NotImplementedError


class Epsilon(Parameterization):
    """The network predicts the noise (DDPM; SD 1.x, SDXL)."""

    name = "epsilon"

    def denoise(self, x: Tensor, out: Tensor, alpha: Any, sigma: Any) -> Tensor:
        """``(x - sigma * out) / alpha``."""
        return (x - sigma * out) / alpha


class VPrediction(Parameterization):
    """The network predicts ``v = alpha * noise - sigma * x0`` (SD 2.x 768; needs
    ``alpha**2 + sigma**2 = 1``)."""

    name = "v_prediction"

    def denoise(self, x: Tensor, out: Tensor, alpha: Any, sigma: Any) -> Tensor:
        """``alpha * x - sigma * out``."""
        return alpha * x - sigma * out


class Sample(Parameterization):
    """The network predicts the clean sample."""

    name = "sample"

    def denoise(self, x: Tensor, out: Tensor, alpha: Any, sigma: Any) -> Tensor:
        """``out``."""
        return out


class FlowVelocity(Parameterization):
    """The network predicts the flow velocity ``noise - x0`` of ``x = (1 - sigma) x0 +
    sigma noise`` (rectified flow: SD3, Flux)."""

    name = "flow"

    def denoise(self, x: Tensor, out: Tensor, alpha: Any, sigma: Any) -> Tensor:
        """``x - sigma * out``."""
        return x - sigma * out


_BY_NAME: dict[str, type[Parameterization]] = {
    "epsilon": Epsilon, "v_prediction": VPrediction, "sample": Sample,
    "original_sample": Sample, "flow_prediction": FlowVelocity, "flow": FlowVelocity,
}


def from_config(config: Any) -> Parameterization:
    """The parameterization of a diffusers scheduler config (or scheduler).

    Flow-matching schedulers (``FlowMatch*``, or ``use_flow_sigmas``) give :class:`FlowVelocity`;
    others follow ``prediction_type``.

    Raises:
        ValueError: an unknown ``prediction_type``.
    """
    if not isinstance(config, dict) and hasattr(config, "config"):
        if type(config).__name__.startswith("FlowMatch"):
            return FlowVelocity()
        config = config.config
    if config.get("use_flow_sigmas", False):
        return FlowVelocity()
    name = config.get("prediction_type", "epsilon")
    if name not in _BY_NAME:
        raise ValueError(f"unsupported prediction_type={name!r}; supported: "
                         f"{', '.join(sorted(_BY_NAME))}")
    return _BY_NAME[name]()


class FlowDenoiser(nn.Module):
    """The k-diffusion denoiser view of a flow-matching model: ``D(x, sigma) = x - sigma v``.

    Args:
        call: the family call (:class:`pint_diffusion.families.SD3Call`,
            :class:`~pint_diffusion.families.FluxCall`, ...).
        scheduler: a ``FlowMatchEulerDiscreteScheduler`` after ``set_timesteps`` exactly as the
            pipeline calls it (static ``shift`` for SD3, ``mu`` for Flux); its ``sigmas`` are
            the schedule and its ``timesteps`` what the network sees (exact lookup).
        guidance_scale: classifier-free guidance weight; with ``> 1`` every conditioning key
            needs an ``uncond_`` counterpart.

    Attributes:
        sigmas: the schedule, ``N + 1`` values from about 1 down to 0.

    Calling it as ``denoiser(x, sigma, **cond)``: ``x`` the pipeline's latents (no change of
    variables), ``sigma`` of shape ``(R,)`` with values from :attr:`sigmas`, ``cond`` the
    network's per-row inputs (``encoder_hidden_states``, ``pooled_projections``, ...) and
    their ``uncond_`` counterparts.

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
        from .schedulers import check_deterministic

        check_deterministic(scheduler)
        self.call = call
        self.guidance_scale = float(guidance_scale)
        self.sigmas = scheduler.sigmas.detach().clone()
        self._timesteps = scheduler.timesteps.detach().clone()
        if len(self.sigmas) != len(self._timesteps) + 1:
            raise ValueError("the scheduler's sigmas must have one more entry than timesteps")

    def _lookup(self, sigma: Tensor) -> Tensor:
        table = self.sigmas[:-1].to(sigma.device, torch.float64)
        match = (sigma.to(torch.float64)[:, None] - table[None]).abs() <= 1e-6 * table.abs()
        if not bool((match.sum(1) == 1).all()):
            bad = sigma[match.sum(1) != 1][0].item()
            raise ValueError(f"sigma={bad:.9g} is not a point of the schedule (exact lookup; "
                             f"no interpolation)")
        return self._timesteps.to(sigma.device)[match.to(torch.int64).argmax(1)]

    def forward(self, x: Tensor, sigma: Tensor | float, **cond: Any) -> Tensor:
        """``x - sigma * v(x, t(sigma))``, guided."""
        from .families import Guided

        sigma_t = torch.as_tensor(sigma, device=x.device).reshape(-1).expand(x.shape[0])
        timesteps = self._lookup(sigma_t)
        uncond = {k[7:]: v for k, v in cond.items() if k.startswith("uncond_")}
        cond = {k: v for k, v in cond.items() if not k.startswith("uncond_")}
        if self.guidance_scale != 1.0 and set(uncond) != set(cond):
            raise ValueError(f"guidance_scale={self.guidance_scale} needs uncond_<key> for "
                             f"every conditioning key {sorted(cond)}")
        batched = getattr(self.call, "batched_guidance", True)
        guided = Guided(self.call, cond, x.shape[0], uncond=uncond or None,
                        scale=self.guidance_scale, batched=batched)
        v = guided(x, timesteps, torch.arange(x.shape[0], device=x.device))
        s = sigma_t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return FlowVelocity().denoise(x, v.to(x.dtype), 1 - s, s)
