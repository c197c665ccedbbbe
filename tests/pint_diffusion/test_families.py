"""Model calls per family, guidance, parameterizations and the flow denoiser view.

References: diffusers' DDIM step (its ``pred_original_sample`` for each prediction type), the
SD3 pipeline's own latents, and direct calls of the network.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

from pint_diffusion.adapters import FlowDenoiser
from pint_diffusion.families import FamilyCall, Guided, SD3Call, UNetCall, cat_tree
from pint_diffusion.parameterizations import (
    Epsilon,
    FlowVelocity,
    Sample,
    VPrediction,
    from_config,
)


def test_cat_tree_walks_dicts_lists_and_tuples():
    tree = {"a": torch.arange(2.0), "b": [torch.ones(2, 2), (torch.zeros(3), None)], "c": 7}
    both = cat_tree(tree, tree, 2)
    assert both["a"].tolist() == [0.0, 1.0, 0.0, 1.0] and both["b"][0].shape == (4, 2)
    assert both["b"][1][0].shape == (3,) and both["b"][1][1] is None  # not per sample
    assert both["c"] == 7
    with pytest.raises(ValueError, match="differ in keys"):
        cat_tree({"a": torch.ones(1)}, {"b": torch.ones(1)}, 1)


class Toy(FamilyCall):
    """A family in four lines: how a made-up network wants its inputs."""

    sample_key = "hidden_states"
    timestep_divisor = 1000
    shared_keys = ("scale",)


class ToyNet(torch.nn.Module):
    def forward(self, hidden_states, timestep, context, scale=1.0, return_dict=True):
        t = timestep.reshape(-1, 1)
        return (scale * torch.tanh(hidden_states * context + t),)


@pytest.mark.parametrize("batched", [True, False])
def test_guided_is_the_cfg_combination_of_direct_calls(batched):
    net = ToyNet()
    call = Toy(net, scale=2.0)
    cond = {"context": torch.tensor([[1.0], [2.0], [3.0]])}
    uncond = {"context": torch.tensor([[0.5], [0.0], [-1.0]])}
    guided = Guided(call, cond, 3, uncond=uncond, scale=4.0, batched=batched)
    x = torch.randn(4, 1)
    t = torch.tensor([500.0, 100.0, 500.0, 900.0])
    index = torch.tensor([2, 0, 1, 2])
    out = guided(x, t, index)
    c = net(x, t / 1000, cond["context"][index], scale=2.0)[0]
    u = net(x, t / 1000, uncond["context"][index], scale=2.0)[0]
    assert torch.allclose(out, u + 4.0 * (c - u), atol=1e-6)
    assert torch.allclose(Guided(call, cond, 3)(x, t, index), c)  # no guidance: one call


def test_from_call_splits_a_pipeline_call():
    net = ToyNet()
    call, cond = Toy.from_call(net, (torch.ones(2, 1),), dict(
        timestep=torch.tensor([3.0, 3.0]), context=torch.ones(2, 1), scale=0.5,
        return_dict=False))
    assert call.shared == {"scale": 0.5} and set(cond) == {"context"}
    assert call.timestep_dtype == torch.float32
    with pytest.raises(TypeError, match="shared arguments"):
        UNetCall(net, not_shared=1)


@pytest.mark.parametrize(("prediction_type", "param"), [
    ("epsilon", Epsilon()), ("v_prediction", VPrediction()), ("sample", Sample())])
def test_vp_parameterizations_match_diffusers_ddim(prediction_type, param):
    sched = DDIMScheduler(prediction_type=prediction_type, clip_sample=False)
    sched.set_timesteps(10)
    assert from_config(sched) == param
    x, out = torch.randn(2, 3), torch.randn(2, 3)
    t = sched.timesteps[3]
    x0 = sched.step(out, t, x).pred_original_sample
    abar = sched.alphas_cumprod[t]
    assert torch.allclose(param.denoise(x, out, abar.sqrt(), (1 - abar).sqrt()), x0, atol=1e-5)


def test_from_config():
    assert from_config(FlowMatchEulerDiscreteScheduler()) == FlowVelocity()
    assert from_config({"prediction_type": "original_sample"}) == Sample()
    with pytest.raises(ValueError, match="prediction_type='bogus'"):
        from_config({"prediction_type": "bogus"})


def test_flow_denoiser_runs_the_pf_ode_samplers_as_the_sd3_pipeline():
    from pint_diffusion import sample_serial, sample_srds
    from pint_diffusion.testing import tiny_sd3_pipeline

    pipe = tiny_sd3_pipeline(FlowMatchEulerDiscreteScheduler(shift=3.0))
    prompts, negative, steps = ["a cat", "a red house"], ["dog", ""], 6
    call = dict(num_inference_steps=steps, guidance_scale=3.0, height=16, width=16,
                max_sequence_length=16)
    serial = pipe(prompts, negative_prompt=negative, output_type="latent",
                  generator=torch.Generator().manual_seed(0), **call).images
    pe, npe, pp, npp = pipe.encode_prompt(prompts, prompts, prompts, negative_prompt=negative,
                                          negative_prompt_2=negative,
                                          negative_prompt_3=negative, max_sequence_length=16)
    latents = pipe.prepare_latents(2, 4, 16, 16, pe.dtype, "cpu",
                                   torch.Generator().manual_seed(0))
    pipe.scheduler.set_timesteps(steps)
    denoiser = FlowDenoiser(SD3Call(pipe.transformer), pipe.scheduler, guidance_scale=3.0)
    extra = dict(encoder_hidden_states=pe, pooled_projections=pp,
                 uncond_encoder_hidden_states=npe, uncond_pooled_projections=npp)
    euler = sample_serial(denoiser, latents, denoiser.sigmas, extra_args=extra, disable=True)
    srds = sample_srds(denoiser, latents, denoiser.sigmas, extra_args=extra, disable=True,
                       tol=0.0, blocks=3)
    scale = serial.abs().max()
    assert (euler - serial).abs().max() < 1e-4 * scale
    assert (srds - serial).abs().max() < 1e-4 * scale
    with pytest.raises(ValueError, match="not a point of the schedule"):
        denoiser(latents, torch.full((2,), 0.123), **extra)
    with pytest.raises(TypeError, match="flow-matching scheduler"):
        FlowDenoiser(SD3Call(pipe.transformer), DDIMScheduler())
