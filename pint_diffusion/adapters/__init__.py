"""Adapters from diffusers networks and schedulers to k-diffusion denoisers.

k-diffusion's convention: the state ``x`` is variance exploding (VE) at noise level ``sigma``,
and a *denoiser* ``D(x, sigma, **extra) -> x0_hat`` takes ``sigma`` of shape ``(batch,)``; the
probability-flow ODE is ``dx/dsigma = (x - D(x, sigma)) / sigma``. Each adapter is assembled
from small parts, one module each:

- the schedule: :mod:`~pint_diffusion.adapters.schedule` (the VE schedule of DDIM/Euler, the
  change of variables) and :class:`~pint_diffusion.adapters.lookup.SigmaTable` (the exact
  sigma -> timestep lookup both adapters share);
- the network call of the family: :mod:`pint_diffusion.families` (``UNetCall``, ``SD3Call``,
  ``FluxCall``);
- classifier-free guidance and the conditioning-tree concatenation:
  :class:`pint_diffusion.families.Guided`;
- what the network predicts: :mod:`pint_diffusion.parameterizations`.

:class:`DiffusersDenoiser` (UNet + DDIM or Euler) and :class:`FlowDenoiser` (SD3, Flux) put them
together. Example::

    from pint_diffusion import sample_srds
    from pint_diffusion.adapters import DiffusersDenoiser

    denoiser = DiffusersDenoiser(pipe.unet, pipe.scheduler, guidance_scale=7.5)
    sigmas = denoiser.sigmas(50)
    x = denoiser.to_ve(latents, sigmas[0])  # latents as the pipeline prepares them
    x = sample_srds(denoiser, x, sigmas, extra_args={
        "encoder_hidden_states": prompt_embeds,
        "uncond_encoder_hidden_states": negative_prompt_embeds,
    })
    latents = denoiser.from_ve(x, sigmas[-1])  # what pipe(..., output_type="latent") returns

diffusers is imported lazily: importing this package does not need it.
"""

from .denoiser import CONDITIONING_KEYS, DiffusersDenoiser
from .flow import FlowDenoiser
from .lookup import SigmaTable
from .schedule import SUPPORTED_SCHEDULERS

__all__ = ["CONDITIONING_KEYS", "SUPPORTED_SCHEDULERS", "DiffusersDenoiser", "FlowDenoiser",
           "SigmaTable"]
