"""StableDiffusionSRDSPipeline against diffusers' own StableDiffusionPipeline (tiny, offline)."""

import pytest
import torch

from pint_diffusion.testing import LATENT_CHANNELS, tiny_sd_components, tiny_sd_pipeline

pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, EulerDiscreteScheduler

from pint_diffusion.pipelines import StableDiffusionSRDSPipeline

STEPS = 12


def ddim(prediction_type, set_alpha_to_one):
    return DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                         clip_sample=False, set_alpha_to_one=set_alpha_to_one,
                         prediction_type=prediction_type, steps_offset=1)


def euler(prediction_type, _):
    return EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                  beta_end=0.012, prediction_type=prediction_type)


@pytest.fixture(scope="module")
def components():
    return tiny_sd_components(0)


@pytest.mark.parametrize(("make", "set_alpha_to_one"),
                         [(ddim, False), (ddim, True), (euler, None)],
                         ids=["ddim", "ddim-alpha1", "euler"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_full_iterations_equal_the_serial_pipeline(components, make, set_alpha_to_one,
                                                    prediction_type):
    pipe = tiny_sd_pipeline(make(prediction_type, set_alpha_to_one), components=components)
    srds = StableDiffusionSRDSPipeline.from_pipe(pipe)
    srds.set_progress_bar_config(disable=True)
    assert srds.unet is pipe.unet  # components are shared, not copied
    noise = torch.randn(2, LATENT_CHANNELS, 8, 8, generator=torch.Generator().manual_seed(1))
    call = dict(prompt=["a cat", "a red house"], negative_prompt=["dog", ""],
                num_inference_steps=STEPS, guidance_scale=4.0, output_type="latent")
    serial = pipe(latents=noise.clone(), **call).images
    out = srds(latents=noise.clone(), srds_tol=0.0, srds_blocks=4, **call)
    assert (out.images - serial).abs().max() < 1e-4
    info = out.srds
    assert info.converged and info.iterations <= 4
    # the pipelined schedule's depth; for full iterations it equals serial (no free lunch)
    assert info.sequential_nfe == info.predicted_sequential_nfe
    # at the default tolerance: fewer sequential calls, latents still close
    fast = srds(latents=noise.clone(), srds_blocks=4, **call)
    assert fast.srds.sequential_nfe < STEPS
    assert (fast.images - serial).pow(2).mean().sqrt() < 1e-2


def test_images_and_generator(components):
    pipe = tiny_sd_pipeline(ddim("epsilon", False), components=components)
    srds = StableDiffusionSRDSPipeline.from_pipe(pipe)
    srds.set_progress_bar_config(disable=True)
    call = dict(num_inference_steps=STEPS, guidance_scale=3.0, output_type="np")
    serial = pipe("a cat", generator=torch.Generator().manual_seed(3), **call).images
    out = srds("a cat", generator=torch.Generator().manual_seed(3), srds_tol=0.0, **call)
    assert out.images.shape == serial.shape == (1, 16, 16, 3)
    assert abs(out.images - serial).max() < 1e-3


@pytest.mark.parametrize(("kwargs", "error"), [
    (dict(eta=0.5), ValueError), (dict(guidance_rescale=0.7), ValueError),
    (dict(callback_on_step_end=print), ValueError), (dict(not_an_option=1), TypeError),
])
def test_refuses_options_outside_the_ode_view(components, kwargs, error):
    srds = StableDiffusionSRDSPipeline.from_pipe(
        tiny_sd_pipeline(ddim("epsilon", False), components=components))
    with pytest.raises(error, match=next(iter(kwargs))):
        srds("a cat", num_inference_steps=4, output_type="latent", **kwargs)
