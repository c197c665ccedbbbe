"""sample_picard (ParaDiGMS-style) against k-diffusion and diffusers' ParaDiGMS pipeline."""

import pytest
import torch
from helpers import ToyDenoiser, ddim, karras

from pint_diffusion import DiffusersDenoiser, Euler, Heun, sample_picard
from pint_diffusion.testing import LATENT_CHANNELS


@pytest.mark.parametrize(("name", "solver"), [("euler", Euler()), ("heun", Heun())])
@pytest.mark.parametrize("window", [None, 7])
def test_tol_zero_reproduces_k_diffusion(k_sampling, name, solver, window):
    model = ToyDenoiser()
    sigmas = k_sampling.get_sigmas_karras(20, 0.02, 20.0)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 20.0
    reference = getattr(k_sampling, f"sample_{name}")(model, x, sigmas, disable=True)
    out, info = sample_picard(model, x, sigmas, solver=solver, window=window, tol=0.0,
                              disable=True, return_info=True)
    # the cumulative sum reassociates the serial additions: float32 round-off only
    assert (out - reference).abs().max() <= 1e-5 * reference.abs().max()
    assert info.iterations <= 20


def test_tolerance_trades_error_for_depth(k_sampling):
    model = ToyDenoiser()
    sigmas = k_sampling.get_sigmas_karras(50, 0.02, 20.0)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 20.0
    reference = k_sampling.sample_euler(model, x, sigmas, disable=True)
    depths, errors = [], []
    for tol in (1e-1, 1e-2, 1e-3, 0.0):
        out, info = sample_picard(model, x, sigmas, tol=tol, disable=True, return_info=True)
        depths.append(info.sequential_nfe)
        errors.append((out - reference).pow(2).mean().sqrt().item())
    assert depths == sorted(depths) and depths[0] < depths[-1]
    assert errors[-1] < 1e-5 < errors[0]


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(window=0), "window must be"), (dict(window=17), "window must be"),
    (dict(tol=-1.0), "tol must be"),
])
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_picard(ToyDenoiser(), torch.randn(1, 3, 4, 4), karras(16), disable=True, **kwargs)


def test_agrees_with_diffusers_paradigms_except_its_last_step(components):
    """diffusers' DDIMParallelScheduler steps to abar = 1 on the last step whatever
    ``set_alpha_to_one`` says. So ParaDiGMS with ``set_alpha_to_one=False`` matches our
    Picard on the ``set_alpha_to_one=True`` schedule (final sigma 0), and differs from the
    correct ``False`` schedule (final sigma = sigma(alphas_cumprod[0])) by a measurable amount."""
    from diffusers import (
        DDIMParallelScheduler,
        StableDiffusionParadigmsPipeline,
    )

    steps, guidance = 10, 4.0
    paradigms = StableDiffusionParadigmsPipeline(
        **components, scheduler=ddim(DDIMParallelScheduler), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    paradigms.set_progress_bar_config(disable=True)
    prompt = ["a cat", "a red house"]
    noise = torch.randn(2, LATENT_CHANNELS, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        theirs = paradigms(prompt, num_inference_steps=steps, parallel=steps, tolerance=1e-4,
                           guidance_scale=guidance, latents=noise.clone(),
                           output_type="latent").images
        cond, uncond = paradigms.encode_prompt(prompt, "cpu", 1, True, None)
    extra = {"encoder_hidden_states": cond, "uncond_encoder_hidden_states": uncond}

    def ours(set_alpha_to_one):
        denoiser = DiffusersDenoiser(components["unet"], ddim(set_alpha_to_one=set_alpha_to_one),
                                     guidance_scale=guidance)
        sigmas = denoiser.sigmas(steps)
        x = denoiser.to_ve(noise, sigmas[0])
        out = sample_picard(denoiser, x, sigmas, extra_args=extra, tol=1e-6, disable=True)
        return denoiser.from_ve(out, sigmas[-1]), sigmas

    matching, sigmas_true = ours(True)
    correct, sigmas_false = ours(False)
    assert float(sigmas_true[-1]) == 0.0 < float(sigmas_false[-1])
    assert (theirs - matching).abs().max() < 1e-3 * theirs.abs().max()
    gap = (theirs - correct).abs().max()
    print(f"ParaDiGMS vs ours(set_alpha_to_one=True) {(theirs - matching).abs().max():.2e}, "
          f"vs ours(False) {gap:.2e}, latent scale {theirs.abs().max():.2e}")
    assert gap > 10 * (theirs - matching).abs().max()
