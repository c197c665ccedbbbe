"""
Tutorial 4: SRDS for Stable Diffusion with diffusers
====================================================

:class:`pint_diffusion.StableDiffusionSRDSPipeline` is a ``StableDiffusionPipeline`` that
samples with SRDS instead of the scheduler's serial loop. Build it from a loaded pipeline
with ``from_pipe`` (the components are shared, nothing is copied or downloaded) and call it
with the original pipeline's arguments.

No weights can be downloaded while these docs are built, so this page uses a *tiny*
Stable Diffusion with random weights (the one the tests use): the images are noise, but
every number below is what the real model would report too, and the SRDS latents must
match the serial pipeline's. With a real model only the loading line changes::

    pipe = StableDiffusionPipeline.from_pretrained("path/to/stable-diffusion")
"""

# %%
# Loading, and ``from_pipe``
# --------------------------

import matplotlib.pyplot as plt
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

from pint_diffusion import DiffusersDenoiser, StableDiffusionSRDSPipeline
from pint_diffusion.testing import tiny_sd_pipeline  # the test suite's offline tiny model

sd_scheduler = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                    clip_sample=False, set_alpha_to_one=False, steps_offset=1)
pipe = tiny_sd_pipeline(DDIMScheduler(**sd_scheduler))  # a StableDiffusionPipeline
srds = StableDiffusionSRDSPipeline.from_pipe(pipe)
srds.set_progress_bar_config(disable=True)

# %%
# Sampling, with classifier-free guidance
# ---------------------------------------
# The call is the original pipeline's. ``guidance_scale > 1`` turns on classifier-free
# guidance; the conditional and unconditional UNet rows of every block go through one batched
# call. Extra arguments: ``srds_blocks`` (default ``round(2 sqrt(num_inference_steps))``),
# ``srds_tol`` (the RMS change of the latents between iterations at which a sample stops,
# default ``1e-3``), ``srds_pipelined`` and ``srds_max_iters``. The output carries the
# run's :class:`~pint_diffusion.SRDSInfo` in ``out.srds``.
prompts = ["a cat", "a dog"]  # the tiny tokenizer knows few words
call = dict(prompt=prompts, num_inference_steps=50, guidance_scale=7.5, output_type="latent")
serial = pipe(generator=torch.Generator().manual_seed(0), **call).images
out = srds(generator=torch.Generator().manual_seed(0), **call)
info = out.srds
print(f"serial: 50 sequential UNet calls; SRDS: {info.iterations} iterations, "
      f"{info.sequential_nfe} sequential calls, {info.nfe} UNet rows in total")
print(f"latents: max |value| {serial.abs().max():.1f}, "
      f"max |SRDS - serial| {(out.images - serial).abs().max():.1e}")

# %%
# ``output_type="pil"`` (the default) decodes with the VAE as usual; ``out.images`` is then a
# list of PIL images. Run to full iterations (``srds_max_iters=None, srds_tol=0``) and the
# latents equal the serial pipeline's up to float32 round-off.
exact = srds(generator=torch.Generator().manual_seed(0), srds_tol=0.0, **call)
print(f"tol=0: {exact.srds.iterations} iterations (= blocks), "
      f"max |SRDS - serial| {(exact.images - serial).abs().max():.1e}")

# %%
# How the depth scales with the number of steps
# ---------------------------------------------
# The serial pipeline's depth is the number of steps; SRDS's depth with pipelining is about
# ``blocks + iterations * (steps / blocks - 1)``: the coarse pass, then ``steps / blocks - 1``
# more calls per iteration.
steps_list = [16, 25, 50, 100]
depths = []
for steps in steps_list:
    run = srds(generator=torch.Generator().manual_seed(0), prompt=prompts,
               num_inference_steps=steps, guidance_scale=7.5, output_type="latent")
    depths.append(run.srds.sequential_nfe)
    print(f"{steps:4d} steps: {run.srds.iterations} iterations, depth {run.srds.sequential_nfe}"
          f" (predicted {run.srds.predicted_sequential_nfe})")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(steps_list, steps_list, "k--", label="serial pipeline")
ax.plot(steps_list, depths, "o-", label="SRDS (tol 1e-3)")
ax.set(xlabel="num_inference_steps", ylabel="sequential UNet calls",
       title="Depth of SRDS vs the serial pipeline")
ax.legend()
fig.tight_layout()

# %%
# Schedulers
# ----------
# SRDS integrates the probability-flow ODE, so it works with the schedulers that *are* ODE
# solvers of it, through :class:`~pint_diffusion.DiffusersDenoiser`:
#
# * ``DDIMScheduler`` with ``eta = 0`` (DDIM is Euler's method in variance-exploding
#   coordinates), timestep spacing ``"leading"``, ``"trailing"`` or ``"linspace"``;
# * ``EulerDiscreteScheduler`` (already in VE coordinates; Karras sigmas and the other
#   sigma schedules are taken as the scheduler makes them).
#
# Swap the scheduler as you would for the serial pipeline:
pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
srds = StableDiffusionSRDSPipeline.from_pipe(pipe)
srds.set_progress_bar_config(disable=True)
call = dict(prompt=prompts, num_inference_steps=25, guidance_scale=7.5, output_type="latent")
serial = pipe(generator=torch.Generator().manual_seed(0), **call).images
out = srds(generator=torch.Generator().manual_seed(0), **call)
print(f"EulerDiscrete: depth {out.srds.sequential_nfe} vs 25, "
      f"max |SRDS - serial| {(out.images - serial).abs().max():.1e}")

# %%
# v-prediction
# ------------
# Models trained with ``prediction_type="v_prediction"`` (Stable Diffusion 2.x at 768 px)
# and ``"sample"`` map to the denoiser in the same way as epsilon prediction; nothing else
# changes.
pipe.scheduler = DDIMScheduler(**sd_scheduler, prediction_type="v_prediction")
srds = StableDiffusionSRDSPipeline.from_pipe(pipe)
srds.set_progress_bar_config(disable=True)
serial = pipe(generator=torch.Generator().manual_seed(0), **call).images
out = srds(generator=torch.Generator().manual_seed(0), **call)
print(f"v-prediction: depth {out.srds.sequential_nfe} vs 25, "
      f"max |SRDS - serial| {(out.images - serial).abs().max():.1e}")

# %%
# What is refused
# ---------------
# Options that break the ODE view would make SRDS converge to something other than the
# serial sampler, so they raise a clear error instead of sampling something else silently:
# clipping or thresholding the predicted sample, a stochastic ``eta``, guidance rescaling,
# custom timesteps, and schedulers that are not one-step ODE solvers of the PF-ODE
# (multistep solvers such as DPM-Solver++). The pipeline checks its scheduler through
# :class:`~pint_diffusion.DiffusersDenoiser`, which also serves k-diffusion samplers
# (:ref:`sphx_glr_auto_examples_plot_5_k_diffusion.py`).
refused = {
    "clip_sample=True": DDIMScheduler(**(sd_scheduler | {"clip_sample": True})),
    "thresholding=True": DDIMScheduler(**(sd_scheduler | {"thresholding": True})),
    "DPM-Solver++": DPMSolverMultistepScheduler(),
}
for name, scheduler in refused.items():
    try:
        DiffusersDenoiser(pipe.unet, scheduler)
    except (TypeError, ValueError) as error:
        print(f"{name}: {type(error).__name__}: {error}")
pipe.scheduler = DDIMScheduler(**sd_scheduler)
srds = StableDiffusionSRDSPipeline.from_pipe(pipe)
for kwargs in ({"eta": 0.5}, {"guidance_rescale": 0.7}):
    try:
        srds(**call, **kwargs)
    except ValueError as error:
        print(f"{kwargs}: ValueError: {error}")
