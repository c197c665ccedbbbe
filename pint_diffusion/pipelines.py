"""SRDS inside diffusers: a Stable Diffusion pipeline called like the original.

Example::

    from diffusers import StableDiffusionPipeline
    from pint_diffusion.pipelines import StableDiffusionSRDSPipeline

    pipe = StableDiffusionPipeline.from_pretrained(path, local_files_only=True)
    srds = StableDiffusionSRDSPipeline.from_pipe(pipe)       # shares the components
    out = srds("a castle, matte painting", num_inference_steps=100, guidance_scale=7.5)
    out.images[0], out.srds.sequential_nfe
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput

from .adapters import DiffusersDenoiser
from .samplers import DEFAULT_TOL, sample_srds
from .samplers import SamplerInfo as SRDSInfo

__all__ = ["StableDiffusionSRDSPipeline", "StableDiffusionSRDSPipelineOutput"]

_UNSUPPORTED = {
    "timesteps": None, "sigmas": None, "ip_adapter_image": None, "ip_adapter_image_embeds": None,
    "callback_on_step_end": None, "eta": 0.0, "guidance_rescale": 0.0,
}


@dataclass
class StableDiffusionSRDSPipelineOutput(StableDiffusionPipelineOutput):
    """The output of :class:`StableDiffusionPipeline` plus ``srds``, the run's :class:`SRDSInfo`."""

    srds: SRDSInfo | None = None


class StableDiffusionSRDSPipeline(StableDiffusionPipeline):
    """``StableDiffusionPipeline`` sampling with SRDS instead of the scheduler's serial loop.

    Build it from a loaded pipeline with ``StableDiffusionSRDSPipeline.from_pipe(pipe)``
    (the components are shared, nothing is copied) and call it with the arguments of
    ``StableDiffusionPipeline.__call__`` (``prompt``, ``negative_prompt``,
    ``num_inference_steps``, ``guidance_scale``, ``generator``, ``latents``,
    ``prompt_embeds``, ``output_type``, ...), plus:

    - ``srds_blocks``: the number of blocks (default ``round(2 sqrt(num_inference_steps))``);
    - ``srds_tol``: the tolerance of :func:`pint_diffusion.sample_srds` (RMS change of
      each latent between iterations);
    - ``srds_pipelined``: the pipelined schedule (default ``True``);
    - ``srds_max_iters``: the most iterations (default: the number of blocks, which
      reproduces the serial pipeline's latents);
    - ``srds_group``: a ``torch.distributed`` process group (or ``"default"``) to spread
      the blocks over its ranks, each rank calling the pipeline with the same arguments
      (see :func:`pint_diffusion.sample_srds` and the distributed guide); ``None`` runs
      in this process.

    The scheduler must be a ``DDIMScheduler`` or ``EulerDiscreteScheduler`` in an ODE
    configuration (see :class:`pint_diffusion.DiffusersDenoiser`); options that the ODE
    view cannot honour (``eta``, ``guidance_rescale``, custom ``timesteps``/``sigmas``,
    IP-Adapter images, step-end callbacks) raise ``ValueError``. The output is a
    :class:`StableDiffusionSRDSPipelineOutput` carrying the run's statistics in ``srds``.
    """

    @torch.no_grad()
    def __call__(  # type: ignore[override]
        self,
        prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        clip_skip: int | None = None,
        *,
        srds_blocks: int | None = None,
        srds_tol: float = DEFAULT_TOL,
        srds_pipelined: bool = True,
        srds_max_iters: int | None = None,
        srds_group: Any = None,
        **unsupported: Any,
    ) -> StableDiffusionSRDSPipelineOutput | tuple:
        """Generate images with SRDS; see the class docstring for the arguments."""
        for key, value in unsupported.items():
            if key not in _UNSUPPORTED:
                raise TypeError(f"unexpected argument {key!r}")
            if value != _UNSUPPORTED[key]:
                raise ValueError(
                    f"{key}={value!r} is not supported by SRDS sampling (the probability-flow "
                    f"ODE view); leave it at {_UNSUPPORTED[key]!r}"
                )
        size = self.unet.config.sample_size
        height = height or (size if isinstance(size, int) else size[0]) * self.vae_scale_factor
        width = width or (size if isinstance(size, int) else size[1]) * self.vae_scale_factor
        self.check_inputs(prompt, height, width, None, negative_prompt, prompt_embeds,
                          negative_prompt_embeds)
        self._guidance_scale = guidance_scale
        self._guidance_rescale = 0.0
        self._clip_skip = clip_skip
        self._cross_attention_kwargs = cross_attention_kwargs
        self._interrupt = False
        if prompt is not None:
            batch = 1 if isinstance(prompt, str) else len(prompt)
        else:
            batch = prompt_embeds.shape[0]  # type: ignore[union-attr]
        device = self._execution_device
        guided = self.do_classifier_free_guidance
        cond, uncond = self.encode_prompt(
            prompt, device, num_images_per_prompt, guided, negative_prompt,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
            clip_skip=clip_skip,
        )
        denoiser = DiffusersDenoiser(self.unet, self.scheduler,
                                     guidance_scale=guidance_scale if guided else 1.0)
        sigmas = denoiser.sigmas(num_inference_steps, device=device, dtype=torch.float32)
        # the serial pipeline's own set_timesteps, so init_noise_sigma is what it would use
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        latents = self.prepare_latents(
            batch * num_images_per_prompt, self.unet.config.in_channels, height, width,
            cond.dtype, device, generator, latents,
        )
        extra: dict[str, Any] = {"encoder_hidden_states": cond}
        if guided:
            extra["uncond_encoder_hidden_states"] = uncond
        if cross_attention_kwargs is not None:
            extra["cross_attention_kwargs"] = cross_attention_kwargs
        x = denoiser.to_ve(latents, sigmas[0]).to(torch.float32)
        samples, info = sample_srds(
            denoiser, x, sigmas, extra_args=extra,
            disable=getattr(self, "_progress_bar_config", {}).get("disable", False),
            blocks=srds_blocks, tol=srds_tol,
            pipelined=srds_pipelined, max_iters=srds_max_iters, return_info=True,
            group=srds_group,
        )
        latents = denoiser.from_ve(samples, sigmas[-1]).to(cond.dtype)
        nsfw = None
        if output_type == "latent":
            image = latents
        else:
            image = self.vae.decode(latents / self.vae.config.scaling_factor,
                                    return_dict=False, generator=generator)[0]
            image, nsfw = self.run_safety_checker(image, device, cond.dtype)
            keep = [True] * image.shape[0] if nsfw is None else [not flag for flag in nsfw]
            image = self.image_processor.postprocess(image, output_type=output_type,
                                                     do_denormalize=keep)
        self.maybe_free_model_hooks()
        if not return_dict:
            return image, nsfw
        return StableDiffusionSRDSPipelineOutput(images=image, nsfw_content_detected=nsfw,
                                                 srds=info)
