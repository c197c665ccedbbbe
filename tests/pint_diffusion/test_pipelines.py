"""The parallel pipelines (ParallelMixin) against diffusers' own pipelines: SD (and its former
name StableDiffusionSRDSPipeline), SDXL, SD3 and Flux, tiny random-weight components, offline."""

import pytest
import torch
from helpers import ddim, euler

pytest.importorskip("diffusers")
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    UniPCMultistepScheduler,
)

from pint_diffusion import SRDS, QuasiNewton
from pint_diffusion.pipelines import (
    PARALLEL_PIPELINES,
    DefaultSampler,
    ParallelFluxPipeline,
    ParallelStableDiffusion3Pipeline,
    ParallelStableDiffusionPipeline,
    ParallelStableDiffusionXLPipeline,
    StableDiffusionSRDSPipeline,
    default_sampler,
    pipeline_for_folder,
)
from pint_diffusion.schedulers import scheduler_trajectory
from pint_diffusion.testing import (
    LATENT_CHANNELS,
    SD_BETAS,
    sd_schedulers,
    tiny_flux_components,
    tiny_flux_pipeline,
    tiny_sd3_components,
    tiny_sd3_pipeline,
    tiny_sd_pipeline,
    tiny_sdxl_components,
    tiny_sdxl_pipeline,
)

STEPS = 12


# ------------------------------------------------------------------------------------------
# StableDiffusionSRDSPipeline: the former name, the same pipeline with srds_* arguments
# ------------------------------------------------------------------------------------------
def test_the_former_sd_name_is_the_parallel_pipeline():
    assert issubclass(StableDiffusionSRDSPipeline, ParallelStableDiffusionPipeline)
    # only __call__ (mapping srds_* onto sampler=SRDS(...)) is its own: no second loop
    assert set(vars(StableDiffusionSRDSPipeline)) - {"__doc__", "__module__", "__qualname__",
                                                     "__firstlineno__",
                                                     "__static_attributes__"} == {"__call__"}


@pytest.mark.parametrize(("make", "config"),
                         [(ddim, {}), (ddim, dict(set_alpha_to_one=True)), (euler, {})],
                         ids=["ddim", "ddim-alpha1", "euler"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_full_iterations_equal_the_serial_pipeline(components, make, config, prediction_type):
    pipe = tiny_sd_pipeline(make(prediction_type=prediction_type, **config), components=components)
    srds = StableDiffusionSRDSPipeline.from_pipe(pipe)
    srds.set_progress_bar_config(disable=True)
    assert srds.unet is pipe.unet  # components are shared, not copied
    noise = torch.randn(2, LATENT_CHANNELS, 8, 8, generator=torch.Generator().manual_seed(1))
    call = dict(prompt=["a cat", "a red house"], negative_prompt=["dog", ""],
                num_inference_steps=STEPS, guidance_scale=4.0, output_type="latent")
    serial = pipe(latents=noise.clone(), **call).images
    out = srds(latents=noise.clone(), srds_tol=0.0, srds_blocks=4, **call)
    assert (out.images - serial).abs().max() < 1e-4
    info = out.info
    assert info.converged and info.iterations <= 4
    # the pipelined schedule's depth; for full iterations it equals serial (no free lunch)
    assert info.sequential_nfe == info.predicted_sequential_nfe
    # at the default tolerance: fewer sequential calls, latents still close
    fast = srds(latents=noise.clone(), srds_blocks=4, **call)
    assert fast.info.sequential_nfe < STEPS
    assert (fast.images - serial).pow(2).mean().sqrt() < 1e-2


def test_images_and_generator(components):
    pipe = tiny_sd_pipeline(ddim(), components=components)
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
    (dict(sampler=SRDS()), TypeError),
])
def test_refuses_options_outside_the_ode_view(components, kwargs, error):
    srds = StableDiffusionSRDSPipeline.from_pipe(
        tiny_sd_pipeline(ddim(), components=components))
    with pytest.raises(error, match=next(iter(kwargs))):
        srds("a cat", num_inference_steps=4, output_type="latent", **kwargs)


def test_accepts_the_defaults_of_options_it_cannot_honour(components):
    # diffusers' own default callback_on_step_end_tensor_inputs was refused as unexpected
    srds = StableDiffusionSRDSPipeline.from_pipe(
        tiny_sd_pipeline(ddim(), components=components))
    srds.set_progress_bar_config(disable=True)
    call = dict(num_inference_steps=4, output_type="latent", srds_tol=0.0,
                generator=torch.Generator().manual_seed(0))
    plain = srds("a cat", **call).images
    call["generator"] = torch.Generator().manual_seed(0)
    same = srds("a cat", callback_on_step_end_tensor_inputs=["latents"], eta=0.0,
                guidance_rescale=0.0, timesteps=None, **call).images
    assert torch.equal(plain, same)


# ------------------------------------------------------------------------------------------
# SD, SDXL, SD3 and Flux against the originals
# ------------------------------------------------------------------------------------------
#: The variance-preserving schedulers SD and SDXL use (the issue's list).
VP_SCHEDULERS = sd_schedulers()
#: The issue's list (DDIM, Euler, Heun, DPM++ 2M Karras, UniPC, PNDM) runs by default for every
#: SD class; the rest of the schedulers, and SDXL beyond two, are slow.
FAST = {"sd": {"ddim", "euler", "heun", "dpm2m-karras", "unipc3", "pndm"},
        "sdxl": {"dpm3m", "euler"}}
PAR_STEPS = 6
EXACT = SRDS(blocks=3, tol=0.0)  # uneven blocks over 6 (or Heun's 11) steps


def _cases(family):
    return [pytest.param(name, marks=() if name in FAST[family] else pytest.mark.slow)
            for name in VP_SCHEDULERS]


@pytest.fixture(scope="module")
def sdxl_components():
    return tiny_sdxl_components(0)


@pytest.fixture(scope="module")
def sd3_components():
    return tiny_sd3_components(0)


@pytest.fixture(scope="module")
def flux_components():
    return tiny_flux_components(0)


def _relative_max(a, b):
    return float((a - b).abs().max() / b.abs().max())


def _compare(pipe, parallel_cls, call, sampler=EXACT):
    par = parallel_cls.from_pipe(pipe)
    par.set_progress_bar_config(disable=True)
    serial = pipe(generator=torch.Generator().manual_seed(0), **call).images
    out = par(generator=torch.Generator().manual_seed(0), sampler=sampler, **call)
    return out, serial


SD_CALL = dict(prompt=["a cat", "a red house"], negative_prompt=["dog", ""],
               num_inference_steps=PAR_STEPS, guidance_scale=4.0, output_type="latent")


@pytest.mark.parametrize("name", _cases("sd"))
@pytest.mark.parametrize("cls", [ParallelStableDiffusionPipeline, StableDiffusionSRDSPipeline])
def test_sd_parallel_equals_the_pipeline(components, name, cls):
    pipe = tiny_sd_pipeline(VP_SCHEDULERS[name](), components=components)
    if cls is StableDiffusionSRDSPipeline:  # the former name takes SRDS's options as srds_*
        par = cls.from_pipe(pipe)
        par.set_progress_bar_config(disable=True)
        serial = pipe(generator=torch.Generator().manual_seed(0), **SD_CALL).images
        out = par(generator=torch.Generator().manual_seed(0), srds_blocks=3, srds_tol=0.0,
                  **SD_CALL)
    else:
        out, serial = _compare(pipe, cls, SD_CALL)
    assert _relative_max(out.images, serial) < 1e-4
    assert out.info.converged and out.info.iterations <= 3


@pytest.mark.parametrize("name", _cases("sdxl"))
def test_sdxl_parallel_equals_the_pipeline(sdxl_components, name):
    pipe = tiny_sdxl_pipeline(VP_SCHEDULERS[name](), components=sdxl_components)
    out, serial = _compare(pipe, ParallelStableDiffusionXLPipeline,
                           dict(SD_CALL, height=16, width=16))
    assert _relative_max(out.images, serial) < 1e-4


FLOW_CALL = dict(prompt=["a cat", "a red house"], negative_prompt=["dog", ""], height=16,
                 width=16, num_inference_steps=PAR_STEPS, max_sequence_length=16,
                 output_type="latent")


@pytest.mark.parametrize("guidance_scale", [1.0, 4.0])
def test_sd3_parallel_equals_the_pipeline(sd3_components, guidance_scale):
    pipe = tiny_sd3_pipeline(FlowMatchEulerDiscreteScheduler(shift=3.0),
                             components=sd3_components)
    out, serial = _compare(pipe, ParallelStableDiffusion3Pipeline,
                           dict(FLOW_CALL, guidance_scale=guidance_scale))
    assert _relative_max(out.images, serial) < 1e-4


@pytest.mark.parametrize("true_cfg_scale", [1.0, 2.5])
def test_flux_parallel_equals_the_pipeline(flux_components, true_cfg_scale):
    # dynamic shifting (mu from the image size), distilled guidance input, true CFG as two calls
    pipe = tiny_flux_pipeline(components=flux_components)
    out, serial = _compare(pipe, ParallelFluxPipeline,
                           dict(FLOW_CALL, guidance_scale=3.5, true_cfg_scale=true_cfg_scale))
    assert out.images.shape == serial.shape and out.images.ndim == 3  # packed latents
    assert _relative_max(out.images, serial) < 1e-4


#: The other schedulers diffusers runs SD3 with (Flux: UniPC; its pipeline refuses Heun, and
#: DPM++ fails in diffusers itself on Flux's dynamic shifting).
FLOW_SIGMAS = dict(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0)
FLOW_SCHEDULERS = {
    "sd3-heun": lambda: FlowMatchHeunDiscreteScheduler(shift=3.0),
    "sd3-dpm2m": lambda: DPMSolverMultistepScheduler(**FLOW_SIGMAS),
    "sd3-unipc": lambda: UniPCMultistepScheduler(**FLOW_SIGMAS),
    "flux-unipc": lambda: UniPCMultistepScheduler(**FLOW_SIGMAS),
}


@pytest.mark.parametrize("name", list(FLOW_SCHEDULERS))
def test_flow_models_with_other_schedulers_equal_the_pipeline(sd3_components, flux_components,
                                                               name):
    if name.startswith("sd3"):
        pipe = tiny_sd3_pipeline(FLOW_SCHEDULERS[name](), components=sd3_components)
        cls, call = ParallelStableDiffusion3Pipeline, dict(FLOW_CALL, guidance_scale=4.0)
    else:
        pipe = tiny_flux_pipeline(FLOW_SCHEDULERS[name](), components=flux_components)
        cls, call = ParallelFluxPipeline, dict(FLOW_CALL, guidance_scale=3.5, true_cfg_scale=2.0)
    out, serial = _compare(pipe, cls, call)
    assert _relative_max(out.images, serial) < 1e-4


def test_decoded_images_equal_the_pipeline(flux_components):
    pipe = tiny_flux_pipeline(components=flux_components)
    out, serial = _compare(pipe, ParallelFluxPipeline, dict(FLOW_CALL, output_type="np"))
    assert out.images.shape == serial.shape == (2, 16, 16, 3)
    assert abs(out.images - serial).max() < 1e-4


def test_default_tolerance_saves_sequential_calls(components):
    steps = 16
    pipe = tiny_sd_pipeline(VP_SCHEDULERS["dpm2m-karras"](), components=components)
    call = dict(SD_CALL, num_inference_steps=steps)
    out, serial = _compare(pipe, ParallelStableDiffusionPipeline, call, SRDS(blocks=None))
    assert out.info.sequential_nfe < steps
    assert float((out.images - serial).pow(2).mean().sqrt()) < 1e-2


@pytest.mark.parametrize(("name", "kind"), [("euler", QuasiNewton), ("unipc3", SRDS)])
def test_the_default_sampler_follows_the_schedulers_history(name, kind):
    scheduler = VP_SCHEDULERS[name]()
    scheduler.set_timesteps(6)
    trajectory = scheduler_trajectory(scheduler, lambda x, t, index: x, torch.zeros(1, 4, 2, 2))
    chosen = default_sampler(trajectory, blocks=2, tol=0.0)
    assert type(chosen) is kind and chosen.tol == 0.0
    assert (chosen.blocks if kind is SRDS else chosen.window) == 2


def test_default_sampler_object_with_options_equals_the_pipeline(components):
    pipe = tiny_sd_pipeline(VP_SCHEDULERS["unipc3"](), components=components)
    out, serial = _compare(pipe, ParallelStableDiffusionPipeline, SD_CALL,
                           DefaultSampler(blocks=3, tol=0.0))
    assert _relative_max(out.images, serial) < 1e-4 and out.info.iterations <= 3


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(callback_on_step_end=print), "callback_on_step_end"),
    (dict(guidance_rescale=0.7), "guidance_rescale"),
    (dict(eta=0.5), "eta=0.5"),
])
def test_parallel_pipeline_refuses_options(components, kwargs, match):
    par = ParallelStableDiffusionPipeline.from_pipe(
        tiny_sd_pipeline(ddim(), components=components))
    with pytest.raises(ValueError, match=match):
        par("a cat", num_inference_steps=4, output_type="latent", **kwargs)


def test_parallel_pipeline_refuses_stochastic_schedulers_and_bad_samplers(sdxl_components):
    pipe = tiny_sdxl_pipeline(EulerAncestralDiscreteScheduler(**SD_BETAS),
                              components=sdxl_components)
    par = ParallelStableDiffusionXLPipeline.from_pipe(pipe)
    with pytest.raises(ValueError, match="EulerAncestralDiscreteScheduler is stochastic"):
        par("a cat", num_inference_steps=4, height=16, width=16, output_type="latent")
    with pytest.raises(ValueError, match="denoising_end"):
        par("a cat", num_inference_steps=4, denoising_end=0.8, output_type="latent")
    with pytest.raises(TypeError, match="sampler must be a sampler object"):
        par("a cat", num_inference_steps=4, sampler="srds", output_type="latent")
    assert par.unet is pipe.unet and par.scheduler is pipe.scheduler  # restored after errors


def test_a_sampler_class_is_refused_before_any_work(components):
    # the class passed the "has a callable solve" check and failed after the prompt encoding
    # and the first UNet call, with "Sampler.solve() missing 1 required positional argument"
    par = ParallelStableDiffusionPipeline.from_pipe(
        tiny_sd_pipeline(ddim(), components=components))
    calls = []
    handle = par.unet.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(TypeError, match=r"got the class SRDS; use SRDS\(\)"):
            par("a cat", num_inference_steps=4, output_type="latent", sampler=SRDS)
    finally:
        handle.remove()
    assert not calls


@pytest.mark.parametrize("option", [dict(timesteps=[900, 500, 100]),
                                    dict(sigmas=[10.0, 5.0, 1.0])])
def test_a_custom_schedule_the_scheduler_cannot_take_names_the_scheduler(components, option):
    # diffusers' own error named the loop's stand-in class instead of DDIMScheduler
    par = ParallelStableDiffusionPipeline.from_pipe(
        tiny_sd_pipeline(ddim(), components=components))
    key = next(iter(option))
    with pytest.raises(ValueError, match=f"{key}: DDIMScheduler.set_timesteps does not take"):
        par("a cat", output_type="latent", **option)


@pytest.mark.parametrize(("build", "option"), [
    ("srds", "guidance_scale"), ("sd", "guidance_scale"), ("flux", "guidance_scale"),
    ("flux", "true_cfg_scale")])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_guidance_is_refused_before_any_work(build, option, value, components,
                                                        flux_components):
    # the pipelines guide only when the weight exceeds 1: NaN silently turned guidance off
    if build == "flux":
        par, network = ParallelFluxPipeline.from_pipe(
            tiny_flux_pipeline(components=flux_components)), "transformer"
    else:
        pipe = tiny_sd_pipeline(ddim(), components=components)
        kind = StableDiffusionSRDSPipeline if build == "srds" else ParallelStableDiffusionPipeline
        par, network = kind.from_pipe(pipe), "unet"
    calls = []
    handle = getattr(par, network).register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(ValueError, match=f"{option} must be a finite number"):
            par("a cat", num_inference_steps=4, output_type="latent", **{option: value})
    finally:
        handle.remove()
    assert not calls


def test_pipeline_for_folder(components, tmp_path):
    pipe = tiny_sd_pipeline(ddim(), components=components)
    pipe.save_pretrained(tmp_path)
    par = pipeline_for_folder(tmp_path, scheduler="UniPCMultistepScheduler")
    assert type(par) is PARALLEL_PIPELINES["StableDiffusionPipeline"]
    assert type(par.scheduler).__name__ == "UniPCMultistepScheduler"
    with pytest.raises(ValueError, match="EulerAncestralDiscreteScheduler"):
        pipeline_for_folder(tmp_path, scheduler="EulerAncestralDiscreteScheduler")
    with pytest.raises(ValueError, match="scheduler must name"):
        pipeline_for_folder(tmp_path, scheduler="NoSuchScheduler")
    with pytest.raises(FileNotFoundError, match=r"model_index\.json"):
        pipeline_for_folder(tmp_path / "missing")


def test_pipeline_for_folder_checks_the_scheduler_before_loading(components, tmp_path,
                                                                 monkeypatch):
    # a wrong scheduler name was found only after the whole pipeline had loaded (minutes for a
    # real model), and a scheduler class instead of its name raised getattr's "attribute name
    # must be string"
    pipe = tiny_sd_pipeline(ddim(), components=components)
    pipe.save_pretrained(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("the pipeline was loaded before the scheduler was checked")

    monkeypatch.setattr(ParallelStableDiffusionPipeline, "from_pretrained", refuse)
    with pytest.raises(ValueError, match="scheduler must name"):
        pipeline_for_folder(tmp_path, scheduler="NoSuchScheduler")
    with pytest.raises(TypeError, match="scheduler must be the name of a diffusers scheduler"):
        pipeline_for_folder(tmp_path, scheduler=DDIMScheduler)


@pytest.mark.parametrize("sampler", ["Picard", "QuasiNewton", "Serial"])
def test_any_sampler_object_drives_the_pipeline(components, sampler):
    import pint_diffusion

    cls = getattr(pint_diffusion, sampler)
    pipe = tiny_sd_pipeline(VP_SCHEDULERS["unipc3"](), components=components)
    out, serial = _compare(pipe, ParallelStableDiffusionPipeline, SD_CALL,
                           cls() if sampler == "Serial" else cls(tol=0.0))
    assert _relative_max(out.images, serial) < 1e-4
    assert out.info.nfe >= PAR_STEPS * 2  # a SamplerInfo: one model row per sample and step


def test_picard_type_samplers_need_tol_0_with_multistep_schedulers(components):
    import pint_diffusion

    par = ParallelStableDiffusionPipeline.from_pipe(
        tiny_sd_pipeline(VP_SCHEDULERS["unipc3"](), components=components))
    for sampler in (pint_diffusion.QuasiNewton(), pint_diffusion.Picard()):
        with pytest.raises(ValueError, match="UniPCMultistepScheduler, which keeps history"):
            par("a cat", num_inference_steps=4, output_type="latent", sampler=sampler)
    # without history (Euler) a tolerance is fine
    euler = ParallelStableDiffusionPipeline.from_pipe(
        tiny_sd_pipeline(VP_SCHEDULERS["euler"](), components=components))
    out = euler("a cat", num_inference_steps=4, output_type="latent",
                sampler=pint_diffusion.QuasiNewton())
    assert out.info.sequential_nfe <= 4


def test_max_batch_caps_the_rows_of_a_call(components):
    pipe = tiny_sd_pipeline(VP_SCHEDULERS["dpm2m"](), components=components)
    out, serial = _compare(pipe, ParallelStableDiffusionPipeline, SD_CALL)
    capped = ParallelStableDiffusionPipeline.from_pipe(pipe)(
        generator=torch.Generator().manual_seed(0), sampler=EXACT, max_batch=2, **SD_CALL)
    assert torch.allclose(capped.images, out.images, atol=1e-5 * float(serial.abs().max()))
    assert capped.info.sequential_nfe == out.info.sequential_nfe
    assert capped.info.calls > out.info.calls
