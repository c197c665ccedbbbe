"""
Tutorial 3: SRDS on the bundled digits model
============================================

The package ships a small class-conditional diffusion model trained on scikit-learn's
8x8 digits (:func:`pint_diffusion.models.load_digits_model`; a diffusers ``UNet2DModel``
with a ``DDIMScheduler``). This page samples it with 50 DDIM steps and classifier-free
guidance, serially and with :func:`pint_diffusion.sample_srds`, and shows how SRDS refines
a rough sample into the serial sampler's output.
"""

# %%
# The model as a k-diffusion denoiser
# -----------------------------------
# :class:`pint_diffusion.DiffusersDenoiser` turns a diffusers UNet and its scheduler into a
# denoiser ``D(x, sigma, **extra)`` in k-diffusion's variance-exploding convention. Euler
# steps on ``denoiser.sigmas(N)`` are exactly the scheduler's DDIM steps. Classifier-free
# guidance is part of the denoiser: the conditional and unconditional rows go through one
# batched UNet call.
import itertools
import time

import matplotlib.pyplot as plt
import torch

from pint_diffusion import DiffusersDenoiser, sample_srds
from pint_diffusion.models import load_digits_model

torch.manual_seed(0)
model = load_digits_model()
denoiser = DiffusersDenoiser(model.unet, model.scheduler, guidance_scale=model.guidance_scale)
sigmas = denoiser.sigmas(50)  # 50 DDIM steps: 51 noise levels, decreasing to 0

labels = torch.arange(10)  # one sample of every digit
extra_args = {"class_labels": labels,
              "uncond_class_labels": torch.full_like(labels, model.null_class)}
noise = torch.randn(len(labels), 1, 8, 8)
x = denoiser.to_ve(noise, sigmas[0])  # DDIM's initial latents -> the VE state
print(f"{len(sigmas) - 1} steps, sigma from {sigmas[0]:.1f} to {sigmas[-1]:.1f}; "
      f"guidance scale {model.guidance_scale}")

# %%
# The serial sampler
# ------------------
# Euler on the probability-flow ODE :math:`dx/d\sigma = (x - D(x, \sigma))/\sigma`, one
# step after the other: this is k-diffusion's ``sample_euler`` and diffusers' DDIM loop.
# Its depth (denoiser calls one after the other) is the number of steps. Written out here
# in four lines; :func:`pint_diffusion.sample_serial` is the same loop with SRDS's statistics.


@torch.no_grad()
def serial_euler(model, x, sigmas, extra_args):
    for sigma, sigma_next in itertools.pairwise(sigmas):
        denoised = model(x, sigma * x.new_ones(len(x)), **extra_args)
        x = x + (sigma_next - sigma) * (x - denoised) / sigma
    return x


start = time.perf_counter()
serial = denoiser.from_ve(serial_euler(denoiser, x, sigmas, extra_args), sigmas[-1])
serial_time = time.perf_counter() - start

# %%
# SRDS
# ----
# The same call signature as k-diffusion's samplers. The 50 steps are split into
# ``round(2 sqrt(50)) = 14`` blocks (the default); a coarse pass takes one step per block,
# then every iteration runs all blocks' own steps in batched denoiser calls (pipelined) and
# corrects the coarse pass. We keep the final sample after every iteration to see the refinement.
start = time.perf_counter()
samples, info = sample_srds(denoiser, x, sigmas, extra_args=extra_args,
                            store_iterates=True, return_info=True, disable=True)
srds_time = time.perf_counter() - start
iterates = [denoiser.from_ve(it, sigmas[-1]) for it in info.iterates]
print(f"blocks (indices into sigmas): {info.blocks}")

shown = range(len(iterates))
fig, axes = plt.subplots(len(shown) + 1, 10, figsize=(8, 0.9 * len(shown) + 1.4))
for row, k in enumerate(shown):
    for col in range(10):
        ax = axes[row, col]
        ax.imshow(iterates[k][col, 0], cmap="gray_r", vmin=-1, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[row, 0].set_ylabel("coarse" if k == 0 else f"iter {k}", fontsize=8)
for col in range(10):
    axes[-1, col].imshow(serial[col, 0], cmap="gray_r", vmin=-1, vmax=1)
    axes[-1, col].set_xticks([])
    axes[-1, col].set_yticks([])
axes[-1, 0].set_ylabel("serial", fontsize=8)
fig.suptitle("SRDS refinement: the coarse pass, iterations, and the serial DDIM sample")
fig.tight_layout()

# %%
# The coarse pass (14 DDIM steps, one per block) is a rough sketch; each iteration brings the
# samples closer to the serial ones, and SRDS stops once the samples no longer change (had it
# run ``blocks`` iterations, they would equal the serial samples to round-off).
#
# The residual
# ------------
# SRDS stops a sample when the root-mean-square change of its final state between two
# iterations is at most ``tol``. Its residual falls with the error against the serial
# sample, which SRDS cannot see:
errors = [float((it - serial).pow(2).mean(dim=(1, 2, 3)).sqrt().max()) for it in iterates]
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.semilogy(range(1, len(info.residuals) + 1), info.residuals, "o-",
            label="residual (largest RMS change)")
ax.semilogy(range(len(errors)), [max(e, 1e-12) for e in errors], "s--",
            label="RMS error vs serial (largest)")
ax.axhline(1e-3, color="gray", lw=0.8, ls=":", label="default tol = 1e-3")
ax.set(xlabel="iteration", title="SRDS convergence on the digits model (N = 50, 14 blocks)")
ax.legend()
fig.tight_layout()

# %%
# Speed
# -----
# With the default tolerance SRDS stopped after a few iterations. Its cost in *sequential*
# denoiser calls is what a parallel device pays in time; the total number of calls is what
# it pays in throughput. (On this 2-core CPU without spare parallel capacity the wall-clock
# times say little; on a GPU a batched call of many rows costs about as much as one row.)
rms = float((iterates[-1] - serial).pow(2).mean().sqrt())
n = len(labels)
print(f"{'sampler':<16s} {'iterations':>10s} {'sequential':>10s} {'nfe/sample':>10s} "
      f"{'wall (s)':>8s} {'RMS vs serial':>13s}")
print(f"{'serial DDIM':<16s} {'-':>10s} {len(sigmas) - 1:10d} {len(sigmas) - 1:10d} "
      f"{serial_time:8.2f} {0:13.1e}")
print(f"{'SRDS (tol 1e-3)':<16s} {info.iterations:10d} {info.sequential_nfe:10d} "
      f"{info.nfe / n:10.0f} {srds_time:8.2f} {rms:13.1e}")

# %%
# SRDS needs fewer sequential calls than the serial sampler but more calls in total: it
# trades parallel work for latency. :doc:`/howto/blocks_tolerance` shows how ``blocks`` and
# ``tol`` move this trade-off.
