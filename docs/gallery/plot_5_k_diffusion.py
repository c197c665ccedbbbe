"""
Tutorial 5: k-diffusion samplers and denoisers
==============================================

:func:`pint_diffusion.sample_srds` has the signature of k-diffusion's samplers,
``sampler(model, x, sigmas, extra_args=None, callback=None, disable=None)``, where ``model``
is a *denoiser* ``model(x, sigma, **extra_args) -> denoised`` in the variance-exploding
convention and ``x`` is the initial noise already scaled by ``sigmas[0]``. So it replaces
``k_diffusion.sampling.sample_euler`` (or ``sample_heun`` with ``solver=HeunSolver()``) in
existing code, with any k-diffusion denoiser (``k_diffusion.external.CompVisDenoiser``,
``DiscreteEpsDDPMDenoiser``, a Karras-preconditioned model, ...). pint_diffusion does not
import k-diffusion: a denoiser is just a callable.
"""

# %%
# A denoiser and a schedule
# -------------------------
# For data distributed as :math:`N(\mu, s^2)` the ideal denoiser is a closed form, which
# makes a good stand-in for a network:
# :math:`D(x, \sigma) = (s^2 x + \sigma^2 \mu) / (s^2 + \sigma^2)`.
# The schedule is Karras et al.'s (k-diffusion's ``get_sigmas_karras``), with a final 0.
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import pint_diffusion
from pint_diffusion import DiffusersDenoiser, EulerSolver, HeunSolver, sample_srds
from pint_diffusion.models import load_digits_model


def gaussian_denoiser(x, sigma, mu=0.3, s=0.5):
    sig2 = sigma.reshape(-1, *([1] * (x.ndim - 1))) ** 2
    return (s**2 * x + sig2 * mu) / (s**2 + sig2)


def karras_sigmas(n, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    ramp = torch.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1)])


torch.manual_seed(0)
sigmas = karras_sigmas(100)
x = torch.randn(8, 3, 16, 16) * sigmas[0]

# %%
# k-diffusion's own samplers
# --------------------------
# We cross-check against the real ``k_diffusion.sampling`` module. Its package
# ``__init__`` imports training code (torchvision, CLIP); the test suite's loader runs only
# ``sampling.py``. Without k-diffusion installed, ``pint_diffusion.sample_serial`` (the same
# steps, one after the other) stands in.
# the repository's tests/ folder, beside the package
sys.path.insert(0, str(Path(pint_diffusion.__file__).resolve().parents[1] / "tests"))
try:
    from kdiffusion import load_k_sampling

    K = load_k_sampling()
    sample_euler, sample_heun = K.sample_euler, K.sample_heun
    source = "k_diffusion.sampling"
except ImportError:
    from pint_diffusion import sample_serial

    def sample_euler(model, x, sigmas, disable=None):
        return sample_serial(model, x, sigmas, disable=disable, solver=EulerSolver())

    def sample_heun(model, x, sigmas, disable=None):
        return sample_serial(model, x, sigmas, disable=disable, solver=HeunSolver())

    source = "pint_diffusion.sample_serial"
print(f"serial samplers from {source}")

# %%
# SRDS as a drop-in replacement
# -----------------------------
# The default tolerance stops a sample when its RMS change between iterations is at most
# ``1e-3`` in the units of ``x``; ``tol=0`` iterates until the result *is* the serial
# sampler's (``blocks`` iterations at most).
reference = {"euler": sample_euler(gaussian_denoiser, x, sigmas, disable=True),
             "heun": sample_heun(gaussian_denoiser, x, sigmas, disable=True)}
serial_depth = {"euler": 100, "heun": 199}
residuals = {}
for name, solver in (("euler", EulerSolver()), ("heun", HeunSolver())):
    for tol in (1e-3, 0.0):
        out, info = sample_srds(gaussian_denoiser, x, sigmas, solver=solver, tol=tol,
                                disable=True, return_info=True)
        diff = (out - reference[name]).abs().max()
        print(f"{name:5s} tol={tol:<6g}: {info.iterations:2d} iterations, depth "
              f"{info.sequential_nfe:3d} (serial {serial_depth[name]}), nfe {info.nfe:5d}, "
              f"max |SRDS - k-diffusion| {diff:.1e}")
        if tol == 0:
            residuals[name] = info.residuals

# %%
# Heun costs two denoiser calls per step (one for the last step, to :math:`\sigma = 0`, as
# in k-diffusion), so its serial depth is 199 for 100 steps. Its residual falls faster per
# iteration because its coarse pass (one Heun step per block) is more accurate:
fig, ax = plt.subplots(figsize=(7, 3.5))
for name, values in residuals.items():
    ax.semilogy(range(1, len(values) + 1), [max(v, 1e-12) for v in values], "o-", label=name)
ax.axhline(1e-3, color="gray", lw=0.8, ls=":", label="default tol")
ax.set(xlabel="iteration", ylabel="largest RMS change of a sample",
       title="SRDS residual, 100 Karras steps, 20 blocks, tol = 0")
ax.legend()
fig.tight_layout()

# %%
# Euler is DDIM
# -------------
# DDIM with ``eta = 0`` on a variance-preserving model *is* Euler's method on the
# probability-flow ODE :math:`dx/d\sigma = (x - D(x, \sigma))/\sigma` after the change of
# variables
#
# .. math::
#
#     \sigma_t = \sqrt{(1 - \bar\alpha_t)/\bar\alpha_t}, \qquad
#     x_\mathrm{VE} = x_\mathrm{VP} \sqrt{1 + \sigma_t^2}, \qquad
#     D(x, \sigma) = x - \sigma\, \epsilon_\theta\!\left(x / \sqrt{1 + \sigma^2}, t\right).
#
# :class:`~pint_diffusion.DiffusersDenoiser` applies it to a diffusers UNet and scheduler,
# mapping each sigma back to the scheduler's own timestep. Here we run diffusers' own DDIM
# loop on the bundled digits model and k-diffusion's ``sample_euler`` on the adapter:
model = load_digits_model()
labels = torch.arange(10)
null = torch.full_like(labels, model.null_class)
w = model.guidance_scale
noise = torch.randn(10, 1, 8, 8)

scheduler = model.scheduler
scheduler.set_timesteps(25)
latents = noise * scheduler.init_noise_sigma
with torch.no_grad():
    for t in scheduler.timesteps:
        eps = model.unet(torch.cat([latents, latents]), t,
                         class_labels=torch.cat([null, labels])).sample
        eps_uncond, eps_cond = eps.chunk(2)
        latents = scheduler.step(eps_uncond + w * (eps_cond - eps_uncond), t, latents).prev_sample

denoiser = DiffusersDenoiser(model.unet, model.scheduler, guidance_scale=w)
sigmas = denoiser.sigmas(25)
extra_args = {"class_labels": labels, "uncond_class_labels": null}
x = denoiser.to_ve(noise, sigmas[0])
with torch.no_grad():
    euler = denoiser.from_ve(
        sample_euler(lambda x, s: denoiser(x, s, **extra_args), x, sigmas, disable=True),
        sigmas[-1])
srds_out = denoiser.from_ve(
    sample_srds(denoiser, x, sigmas, extra_args=extra_args, tol=0.0, disable=True), sigmas[-1])
print(f"max |diffusers DDIM - k-diffusion Euler| = {(latents - euler).abs().max():.1e}")
print(f"max |diffusers DDIM - SRDS (tol 0)|      = {(latents - srds_out).abs().max():.1e}")

# %%
# The last DDIM step goes to ``final_alpha_cumprod``, which is not zero noise unless the
# scheduler has ``set_alpha_to_one=True``; the adapter's schedule ends at exactly that noise
# level, so the equivalence holds to round-off on every step, including the last.
fig, axes = plt.subplots(2, 10, figsize=(8, 1.9))
for col in range(10):
    for row, images in enumerate((latents, srds_out)):
        axes[row, col].imshow(images[col, 0], cmap="gray_r", vmin=-1, vmax=1)
        axes[row, col].set_xticks([])
        axes[row, col].set_yticks([])
    axes[0, col].set_title(str(col), fontsize=8)
axes[0, 0].set_ylabel("DDIM", fontsize=8)
axes[1, 0].set_ylabel("SRDS", fontsize=8)
fig.tight_layout()
