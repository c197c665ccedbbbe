"""A diffusers UNet and its DDIM or Euler scheduler as a k-diffusion denoiser."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

from ..families import Guided, UNetCall
from ..parameterizations import FlowVelocity, from_config
from .lookup import SigmaTable
from .schedule import check_ode_config, scheduler_kind, ve_schedule, vp_scale

__all__ = ["CONDITIONING_KEYS", "DiffusersDenoiser"]

#: Conditioning keyword arguments of the UNet that the denoiser accepts. For classifier-free
#: guidance each has an unconditional counterpart with the prefix ``uncond_`` (for example
#: ``uncond_encoder_hidden_states``); ``added_cond_kwargs`` is a dict of tensors.
CONDITIONING_KEYS: tuple[str, ...] = (
    "encoder_hidden_states", "class_labels", "added_cond_kwargs", "encoder_attention_mask",
    "timestep_cond",
)
_SHARED_KEYS = ("cross_attention_kwargs",)


def _split(extra: dict[str, Any]) -> tuple[dict, dict, dict]:
    """``extra`` as (conditioning, unconditional conditioning, shared options); None dropped."""
    cond: dict[str, Any] = {}
    uncond: dict[str, Any] = {}
    shared: dict[str, Any] = {}
    for key, value in extra.items():
        if key in CONDITIONING_KEYS:
            part, name = cond, key
        elif key.startswith("uncond_") and key[7:] in CONDITIONING_KEYS:
            part, name = uncond, key[7:]
        elif key in _SHARED_KEYS:
            part, name = shared, key
        else:
            accepted = [*CONDITIONING_KEYS, *("uncond_" + k for k in CONDITIONING_KEYS),
                        *_SHARED_KEYS]
            raise TypeError(f"DiffusersDenoiser got an unexpected keyword argument {key!r}; "
                            f"accepted: {', '.join(accepted)}")
        if value is not None:
            part[name] = value
    return cond, uncond, shared


def _samples(tree: Any, batch: int, name: str = "conditioning") -> int:
    """The number of samples ``b`` the conditioning holds (its leaves have ``b`` or 1 rows);
    ``b`` must divide the ``batch`` state rows, which take it tiled (row ``r``: sample
    ``r % b``)."""
    sizes: dict[int, str] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}[{key!r}]" if path != name else key)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")
        elif isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] != 1:
            sizes.setdefault(value.shape[0], path)

    walk(tree, name)
    for rows, path in sizes.items():
        if len(sizes) > 1 or batch % rows:
            raise ValueError(f"{path} has {rows} rows, which does not divide the batch of "
                             f"{batch} state rows")
    return next(iter(sizes), 1)


class DiffusersDenoiser(nn.Module):
    """A k-diffusion denoiser ``D(x, sigma, **extra) -> x0_hat`` of a diffusers UNet + scheduler.

    Made of the parts every adapter shares: the VE schedule and its exact sigma -> timestep
    lookup (:func:`~pint_diffusion.adapters.schedule.ve_schedule`,
    :class:`~pint_diffusion.adapters.lookup.SigmaTable`), the network call
    (:class:`pint_diffusion.families.UNetCall`), guidance (:class:`pint_diffusion.families.Guided`)
    and the parameterisation (:mod:`pint_diffusion.parameterizations`). Euler steps on
    :meth:`sigmas` (``k_diffusion.sampling.sample_euler``, :func:`pint_diffusion.sample_srds`)
    reproduce the scheduler's own loop: DDIM (``eta=0``) through the change of variables
    ``sigma_t = sqrt((1 - abar_t) / abar_t)``, ``x_VE = x_VP * sqrt(1 + sigma_t**2)``, and
    ``EulerDiscreteScheduler`` directly. This is the probability-flow view that k-diffusion-style
    samplers need; the pipelines drive any deterministic scheduler through its own steps instead
    (:func:`pint_diffusion.schedulers.scheduler_trajectory`).

    Args:
        unet: a diffusers ``UNet2DModel`` or ``UNet2DConditionModel`` (any module called as
            ``unet(sample=..., timestep=..., **conditioning, return_dict=False)``).
        scheduler: a ``DDIMScheduler`` or ``EulerDiscreteScheduler`` (a private copy is kept).
        guidance_scale: classifier-free guidance weight ``w`` (``out_uncond + w * (out_cond -
            out_uncond)`` on the model output, one batched call, unconditional rows first);
            ``w <= 1`` disables guidance.
        guidance_rescale: must be ``0``; guidance rescaling is refused.

    Attributes:
        unet, scheduler: the network (a submodule) and the private scheduler copy.
        kind: ``"ddim"`` or ``"euler"``.
        parameterization: what the network predicts (``prediction_type``).
        prediction_type: its diffusers name.
        table: the :class:`SigmaTable` of the last :meth:`sigmas` call (``None`` before).
        timesteps: the scheduler's timesteps of the last :meth:`sigmas` call.

    Raises:
        TypeError: another scheduler class (see
            :data:`~pint_diffusion.adapters.schedule.SUPPORTED_SCHEDULERS`).
        ValueError: a stochastic option, ``clip_sample``/``thresholding``, a flow-matching or
            unknown ``prediction_type``, ``guidance_rescale != 0``, a non-finite guidance scale.

    Calling it (``denoiser(x, sigma, **extra)``): ``x`` the VE state ``(batch, C, H, W)``;
    ``sigma`` ``(batch,)`` or a scalar, every value a point of the last :meth:`sigmas` schedule
    (ValueError otherwise); ``extra`` the conditioning of :data:`CONDITIONING_KEYS`, their
    ``uncond_`` counterparts, and ``cross_attention_kwargs``. Conditioning of ``b`` rows serves
    ``k * b`` state rows tiled (row ``r`` takes sample ``r % b``).

    Example::

        denoiser = DiffusersDenoiser(unet, scheduler, guidance_scale=3.0)
        sigmas = denoiser.sigmas(10)
        x = denoiser.to_ve(torch.randn(2, 4, 8, 8) * scheduler.init_noise_sigma, sigmas[0])
        x = pint_diffusion.sample_srds(denoiser, x, sigmas, extra_args=dict(
            class_labels=labels, uncond_class_labels=torch.full_like(labels, null_class)))
        latents = denoiser.from_ve(x, sigmas[-1])
    """

    def __init__(self, unet: nn.Module, scheduler: Any, *, guidance_scale: float = 1.0,
                 guidance_rescale: float = 0.0) -> None:
        super().__init__()
        self.kind = scheduler_kind(scheduler)
        check_ode_config(scheduler)
        self.parameterization = from_config(scheduler.config)
        if self.parameterization == FlowVelocity():
            raise ValueError("a flow-matching prediction_type is not a DDIM/Euler model; use "
                             "pint_diffusion.adapters.FlowDenoiser")
        self.prediction_type = self.parameterization.name
        if guidance_rescale != 0:
            raise ValueError(f"guidance_rescale={guidance_rescale} is not supported by "
                             f"DiffusersDenoiser; use guidance_rescale=0")
        self.unet = unet
        self.scheduler = copy.deepcopy(scheduler)
        self.guidance_scale = guidance_scale
        self.table: SigmaTable | None = None
        self.timesteps: Tensor | None = None

    @property
    def guidance_scale(self) -> float:
        """The classifier-free guidance weight (finite; may be changed between calls)."""
        return self._guidance_scale

    @guidance_scale.setter
    def guidance_scale(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise ValueError(f"guidance_scale must be a finite number, got {value!r}")
        self._guidance_scale = float(value)

    def sigmas(self, num_inference_steps: int, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> Tensor:
        """The sampler's noise levels for ``num_inference_steps`` steps: N+1, decreasing.

        From the scheduler's own ``set_timesteps``: DDIM's ``sqrt((1 - abar) / abar)`` at its
        timesteps, ending at the abar its last step goes to (0 with ``set_alpha_to_one=True``);
        DDIM must step from each timestep to the next (``"leading"``, or ``"trailing"`` when N
        divides ``num_train_timesteps``; ValueError otherwise). Euler: its ``sigmas`` (Karras,
        exponential and beta sigmas as it made them). The call (re)builds :attr:`table`, the
        points the denoiser accepts. In one diffusers corner case (last timestep 0 and a
        schedule ending at ``sigma(alphas_cumprod[0])``) ``sigmas[-2] == sigmas[-1]``: diffusers
        spends an evaluation on that empty step, the samplers skip it.

        Args:
            num_inference_steps: N, in ``[1, num_train_timesteps]``.
            device, dtype: of the result (keep float32 or wider: the lookup is exact to it).
        """
        sig, self.table = ve_schedule(self.scheduler, num_inference_steps)
        self.timesteps = self.scheduler.timesteps.detach().cpu().clone()
        return sig.to(device=device, dtype=dtype)

    def _table(self) -> SigmaTable:
        if self.table is None:
            raise ValueError("no schedule yet: call denoiser.sigmas(num_inference_steps) and "
                             "sample on its values (the timestep of a sigma is looked up there)")
        return self.table

    def sigma_to_timestep(self, sigma: Tensor | float) -> Tensor:
        """The model timestep(s) of schedule point(s) ``sigma`` (exact lookup, CPU)."""
        return self._table().timesteps_of(sigma)

    def to_ve(self, latents: Tensor, sigma: Tensor | float) -> Tensor:
        """The VE state of the pipeline's initial latents (``noise * init_noise_sigma``) at
        ``sigma = sigmas[0]``: DDIM's VP latents times ``sqrt(1 + sigma**2)``; Euler's as
        they are."""
        return latents if self.kind == "euler" else latents * vp_scale(sigma, latents,
                                                                       inverse=True)

    def from_ve(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """The pipeline's latents of the VE state ``x`` at ``sigma`` (at ``sigmas[-1]``: what
        ``output_type="latent"`` returns): DDIM's ``x / sqrt(1 + sigma**2)``, Euler's ``x``."""
        return x if self.kind == "euler" else x * vp_scale(sigma, x, inverse=False)

    def forward(self, x: Tensor, sigma: Tensor | float, **extra: Any) -> Tensor:
        """``x0_hat = D(x, sigma)`` (see the class docs), shape and dtype of ``x``."""
        batch = x.shape[0]
        sigma_t = torch.as_tensor(sigma)
        sigma_t = (sigma_t.expand(batch) if sigma_t.ndim == 0 else sigma_t).reshape(-1)
        if sigma_t.shape[0] != batch:
            raise ValueError(f"sigma has {sigma_t.shape[0]} values for a batch of {batch} rows")
        table = self._table()
        at = table.index(sigma_t)
        bcast = (-1, *([1] * (x.ndim - 1)))
        s64 = table.sigmas[at].to(x.device, non_blocking=True)
        alpha = (1 + s64**2).rsqrt().to(x.dtype).reshape(bcast)  # sqrt(abar): VP input scale
        cond, uncond, shared = _split(extra)
        guided = self.guidance_scale > 1.0
        if guided and (not cond or set(cond) - set(uncond)):
            raise ValueError(f"guidance_scale={self.guidance_scale} > 1 needs unconditional "
                             f"conditioning: pass uncond_<key> for "
                             f"{sorted(set(cond) - set(uncond)) or list(CONDITIONING_KEYS)}")
        samples = _samples({**cond, **{"uncond_" + k: v for k, v in uncond.items() if guided}},
                           batch)
        model = Guided(UNetCall(self.unet, **shared), cond, samples,
                       uncond=uncond if guided else None, scale=self.guidance_scale)
        x_in = x * alpha
        dtype = getattr(self.unet, "dtype", x.dtype)
        out = model(x_in.to(dtype) if isinstance(dtype, torch.dtype) else x_in,
                    table.timesteps[at].to(x.device, non_blocking=True),
                    torch.arange(batch, device=x.device) % samples).to(x.dtype)
        if out.shape != x.shape:
            raise ValueError(f"the UNet output has shape {tuple(out.shape)}, the state "
                             f"{tuple(x.shape)} (learned-variance models are not supported)")
        return self.parameterization.denoise(x_in, out, alpha, s64.to(x.dtype).reshape(bcast)
                                             * alpha)

    def extra_repr(self) -> str:
        """Scheduler, prediction type and guidance scale (shown by ``print(denoiser)``)."""
        return (f"scheduler={type(self.scheduler).__name__}, "
                f"prediction_type={self.prediction_type!r}, guidance_scale={self.guidance_scale}")
