"""
Tutorial 4: SRDS for Stable Diffusion with diffusers
====================================================

:class:`pint_diffusion.StableDiffusionSRDSPipeline` (the former name of
:class:`~pint_diffusion.pipelines.ParallelStableDiffusionPipeline`, taking SRDS's options as
``srds_*`` arguments) is a ``StableDiffusionPipeline`` that samples with SRDS instead of the
scheduler's serial loop. Build it from a loaded pipeline
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
# run's :class:`~pint_diffusion.SamplerInfo` in ``out.info``.
prompts = ["a cat", "a dog"]  # the tiny tokenizer knows few words
call = dict(prompt=prompts, num_inference_steps=50, guidance_scale=7.5, output_type="latent")
serial = pipe(generator=torch.Generator().manual_seed(0), **call).images
out = srds(generator=torch.Generator().manual_seed(0), **call)
info = out.info
print(f"serial: 50 sequential UNet calls; SRDS: {info.iterations} iterations, "
      f"{info.sequential_nfe} sequential calls, {info.nfe} UNet rows in total")
print(f"latents: max |value| {serial.abs().max():.1f}, "
      f"max |SRDS - serial| {(out.images - serial).abs().max():.1e}")

# %%
# ``output_type="pil"`` (the default) decodes with the VAE as usual; ``out.images`` is then a
# list of PIL images. Run to full iterations (``srds_max_iters=None, srds_tol=0``) and the
# latents equal the serial pipeline's up to float32 round-off.
exact = srds(generator=torch.Generator().manual_seed(0), srds_tol=0.0, **call)
print(f"tol=0: {exact.info.iterations} iterations (= blocks), "
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
    depths.append(run.info.sequential_nfe)
    print(f"{steps:4d} steps: {run.info.iterations} iterations, depth {run.info.sequential_nfe}"
          f" (predicted {run.info.predicted_sequential_nfe})")

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
# The pipeline drives the scheduler's own ``step`` (its history, for multistep schedulers,
# is part of the state), so every deterministic diffusers scheduler works: DDIM, Euler,
# Heun, DPM++ 2M (Karras), UniPC, PNDM, ... At full iterations the latents are the serial
# pipeline's. Models trained with ``prediction_type="v_prediction"`` (Stable Diffusion 2.x at
# 768 px) or ``"sample"`` need nothing else either: the scheduler reads the model output as it
# always does. Swap the scheduler as you would for the serial pipeline:
call = dict(prompt=prompts, num_inference_steps=25, guidance_scale=7.5, output_type="latent")
for name, scheduler in {
    "EulerDiscrete": EulerDiscreteScheduler.from_config(pipe.scheduler.config),
    "DPM++ 2M Karras": DPMSolverMultistepScheduler.from_config(pipe.scheduler.config,
                                                               use_karras_sigmas=True),
    "DDIM, v-prediction": DDIMScheduler(**sd_scheduler, prediction_type="v_prediction"),
}.items():
    pipe.scheduler = scheduler
    srds = StableDiffusionSRDSPipeline.from_pipe(pipe)
    srds.set_progress_bar_config(disable=True)
    serial = pipe(generator=torch.Generator().manual_seed(0), **call).images
    out = srds(generator=torch.Generator().manual_seed(0), **call)
    print(f"{name}: depth {out.info.sequential_nfe} vs 25, "
          f"max |SRDS - serial| {(out.images - serial).abs().max():.1e}")

# %%
# What is refused
# ---------------
# Options that the parallel loop cannot honour raise a clear error instead of sampling
# something else silently: stochastic schedulers and options (``eta > 0``, ancestral
# schedulers), guidance rescaling, step-end callbacks. The k-diffusion view of a UNet
# (:class:`~pint_diffusion.DiffusersDenoiser`, for k-diffusion-style samplers, see
# :ref:`sphx_glr_auto_examples_plot_5_k_diffusion.py`) is stricter: it takes DDIM and Euler
# only, without clipping or thresholding the predicted sample.
pipe.scheduler = DDIMScheduler(**sd_scheduler)
srds = StableDiffusionSRDSPipeline.from_pipe(pipe)
srds.set_progress_bar_config(disable=True)
for kwargs in ({"eta": 0.5}, {"guidance_rescale": 0.7}):
    try:
        srds(**call, **kwargs)
    except ValueError as error:
        print(f"{kwargs}: ValueError: {error}")
refused = {
    "clip_sample=True": DDIMScheduler(**(sd_scheduler | {"clip_sample": True})),
    "DPM-Solver++": DPMSolverMultistepScheduler(),
}
for name, scheduler in refused.items():
    try:
        DiffusersDenoiser(pipe.unet, scheduler)
    except (TypeError, ValueError) as error:
        print(f"DiffusersDenoiser, {name}: {type(error).__name__}: {error}")
