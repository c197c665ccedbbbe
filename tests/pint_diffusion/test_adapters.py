"""DiffusersDenoiser against its real peers: diffusers' pipelines and k-diffusion's samplers.

Euler (k-diffusion's ``sample_euler``, the real code) on the adapter's schedule must give the
latents of diffusers' own serial sampling loop within 1e-4, and the UNet must see exactly the
scheduler's timesteps.
"""

from __future__ import annotations

import sys

import pytest
import torch
from helpers import ddim as _ddim
from helpers import euler as _euler
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
)

from pint_diffusion.adapters import DiffusersDenoiser
from pint_diffusion.testing import (
    LATENT_CHANNELS,
    tiny_class_unet,
    tiny_sd_pipeline,
    tiny_unet,
)

TOL = 1e-4
STEPS = 8


class TimestepRecorder:
    """Records the ``timestep`` argument of every forward call of a module (a forward pre-hook)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls: list[torch.Tensor] = []
        self._handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        self.calls.append(torch.as_tensor(t).detach().clone())

    def remove(self) -> None:
        self._handle.remove()


SCHEDULERS = {
    "ddim-alpha1-false": lambda pt: _ddim(prediction_type=pt, set_alpha_to_one=False),
    "ddim-alpha1-true": lambda pt: _ddim(prediction_type=pt, set_alpha_to_one=True),
    "ddim-trailing": lambda pt: _ddim(prediction_type=pt, timestep_spacing="trailing"),
    "euler": lambda pt: _euler(prediction_type=pt),
    "euler-leading": lambda pt: _euler(prediction_type=pt, timestep_spacing="leading"),
    "euler-karras": lambda pt: _euler(prediction_type=pt, use_karras_sigmas=True),
}

MAX_DIFF: dict[str, float] = {}  # filled by the tests; printed with -s for the record


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and far faster than on two busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# every scheduler with guidance; guidance 1 (no uncond rows) on one DDIM and one Euler config
SD_CASES = [(name, 4.0) for name in SCHEDULERS] + [("ddim-alpha1-false", 1.0), ("euler", 1.0)]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize(("name", "guidance_scale"), SD_CASES)
def test_sd_pipeline_equals_k_diffusion_euler(
    k_sampling, components, name, prediction_type, guidance_scale
):
    pipe = tiny_sd_pipeline(SCHEDULERS[name](prediction_type), components=components)
    prompt = ["a cat", "the dog and a cat"]
    negative = ["dog", ""]
    noise = torch.randn(2, LATENT_CHANNELS, 8, 8, generator=torch.Generator().manual_seed(1))

    rec = TimestepRecorder(pipe.unet)
    with torch.no_grad():
        ref = pipe(
            prompt,
            negative_prompt=negative,
            num_inference_steps=STEPS,
            guidance_scale=guidance_scale,
            latents=noise.clone(),
            output_type="latent",
        ).images
    rec.remove()
    pipe_timesteps = pipe.scheduler.timesteps.clone()
    assert [t.item() for t in rec.calls] == pipe_timesteps.tolist()

    cfg = guidance_scale > 1
    cond, uncond = pipe.encode_prompt(prompt, "cpu", 1, cfg, negative)
    extra = {"encoder_hidden_states": cond}
    if cfg:
        extra["uncond_encoder_hidden_states"] = uncond

    denoiser = DiffusersDenoiser(pipe.unet, pipe.scheduler, guidance_scale=guidance_scale)
    sigmas = denoiser.sigmas(STEPS)
    assert torch.equal(denoiser.timesteps, pipe_timesteps)
    x = denoiser.to_ve(noise * denoiser.scheduler.init_noise_sigma, sigmas[0])
    rec = TimestepRecorder(pipe.unet)
    with torch.no_grad():
        x = k_sampling.sample_euler(denoiser, x, sigmas, extra_args=extra, disable=True)
    rec.remove()
    out = denoiser.from_ve(x, sigmas[-1])

    # the UNet saw exactly the scheduler's timesteps, in its dtype, one per step and row
    assert len(rec.calls) == STEPS
    for t_seen, t_ref in zip(rec.calls, pipe_timesteps, strict=True):
        assert t_seen.dtype == pipe_timesteps.dtype
        assert t_seen.shape == (2 * 2 if cfg else 2,)
        assert bool((t_seen == t_ref).all())

    diff = (out - ref).abs().max().item()
    MAX_DIFF[f"sd/{name}/{prediction_type}/g={guidance_scale}"] = diff
    assert out.shape == ref.shape
    assert diff <= TOL, diff


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("set_alpha_to_one", [False, True])
def test_class_conditional_unet_cfg_equals_ddim_loop(k_sampling, prediction_type, set_alpha_to_one):
    """UNet2DModel with class labels, CFG with a null class, against a scheduler.step loop."""
    unet = tiny_class_unet(num_classes=10)
    null = 10
    scheduler = DDIMScheduler(
        clip_sample=False, set_alpha_to_one=set_alpha_to_one, prediction_type=prediction_type
    )
    labels = torch.tensor([3, 7, 0])
    w = 2.5
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))

    scheduler.set_timesteps(STEPS)
    latents = noise.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = unet(
                torch.cat([latents, latents]),
                t,
                class_labels=torch.cat([torch.full_like(labels, null), labels]),
            ).sample
            out_u, out_c = out.chunk(2)
            out = out_u + w * (out_c - out_u)
            latents = scheduler.step(out, t, latents).prev_sample

    denoiser = DiffusersDenoiser(unet, scheduler, guidance_scale=w)
    sigmas = denoiser.sigmas(STEPS)
    x = denoiser.to_ve(noise, sigmas[0])
    calls = TimestepRecorder(unet)
    with torch.no_grad():
        x = k_sampling.sample_euler(
            denoiser,
            x,
            sigmas,
            disable=True,
            extra_args={
                "class_labels": labels,
                "uncond_class_labels": torch.full_like(labels, null),
            },
        )
    calls.remove()
    assert len(calls.calls) == STEPS  # one batched UNet call per step, uncond and cond rows
    assert all(c.shape == (6,) for c in calls.calls)
    diff = (denoiser.from_ve(x, sigmas[-1]) - latents).abs().max().item()
    MAX_DIFF[f"class/{prediction_type}/alpha1={set_alpha_to_one}"] = diff
    assert diff <= TOL, diff


# ------------------------------------------------------------------------- schedule
@pytest.mark.parametrize("set_alpha_to_one", [False, True])
@pytest.mark.parametrize("n", [1, 5, 10])
def test_ddim_sigmas(set_alpha_to_one, n):
    scheduler = _ddim(set_alpha_to_one=set_alpha_to_one)
    denoiser = DiffusersDenoiser(tiny_unet(), scheduler)
    sigmas = denoiser.sigmas(n, dtype=torch.float64)
    assert sigmas.shape == (n + 1,)
    assert bool((sigmas[1:] < sigmas[:-1]).all())
    ref = DDIMScheduler.from_config(scheduler.config)
    ref.set_timesteps(n)
    abar = ref.alphas_cumprod.double()
    expected = ((1 - abar[ref.timesteps]) / abar[ref.timesteps]).sqrt()
    torch.testing.assert_close(sigmas[:-1], expected, rtol=1e-12, atol=0)
    final = torch.as_tensor(ref.final_alpha_cumprod).double()
    assert sigmas[-1].item() == pytest.approx(((1 - final) / final).sqrt().item(), rel=1e-12)
    if set_alpha_to_one:
        assert sigmas[-1].item() == 0.0
    else:
        assert sigmas[-1].item() > 0.0
    assert torch.equal(denoiser.timesteps, ref.timesteps)
    assert torch.equal(denoiser.sigma_to_timestep(sigmas[:-1].float()), ref.timesteps)
    # the caller's scheduler is untouched: the denoiser works on a copy
    assert scheduler.num_inference_steps is None


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"timestep_spacing": "leading"},
        {"use_karras_sigmas": True},
        {"final_sigmas_type": "sigma_min"},
        {"interpolation_type": "log_linear"},
    ],
    ids=["linspace", "leading", "karras", "sigma_min", "log_linear"],
)
def test_euler_sigmas(config):
    scheduler = _euler(**config)
    denoiser = DiffusersDenoiser(tiny_unet(), scheduler)
    n = 7
    sigmas = denoiser.sigmas(n)
    ref = EulerDiscreteScheduler.from_config(scheduler.config)
    ref.set_timesteps(n)
    assert sigmas.shape == (n + 1,)
    assert bool((sigmas[1:-1] < sigmas[:-2]).all())
    if config.get("final_sigmas_type") == "sigma_min":  # last timestep 0: a 0-length last step
        assert sigmas[-1] == sigmas[-2] > 0
    else:
        assert sigmas[-1] < sigmas[-2]
    assert torch.equal(sigmas, ref.sigmas[: n + 1])
    if config.get("final_sigmas_type") != "sigma_min" and "interpolation_type" not in config:
        assert sigmas[-1].item() == 0.0
    assert torch.equal(denoiser.sigma_to_timestep(sigmas[:-1]), ref.timesteps)


def test_per_row_sigmas_in_one_call():
    """Rows at different schedule points in one batch give what separate calls give."""
    pipe_unet = tiny_unet()
    denoiser = DiffusersDenoiser(pipe_unet, _ddim(), guidance_scale=3.0)
    sigmas = denoiser.sigmas(10)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, LATENT_CHANNELS, 8, 8, generator=gen) * 3
    cond = torch.randn(1, 5, 32, generator=gen)
    uncond = torch.randn(1, 5, 32, generator=gen)
    row_sigmas = sigmas[[0, 4, 9]]
    rec = TimestepRecorder(pipe_unet)
    with torch.no_grad():
        batched = denoiser(
            x, row_sigmas, encoder_hidden_states=cond, uncond_encoder_hidden_states=uncond
        )
        single = torch.cat(
            [
                denoiser(
                    x[i : i + 1],
                    row_sigmas[i : i + 1],
                    encoder_hidden_states=cond,
                    uncond_encoder_hidden_states=uncond,
                )
                for i in range(3)
            ]
        )
    rec.remove()
    ts = denoiser.timesteps[[0, 4, 9]]
    assert torch.equal(rec.calls[0], torch.cat([ts, ts]))  # uncond rows, then cond rows
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-4)


def test_conditioning_tiles_over_slices():
    """A state batch of k*b rows uses b conditioning rows tiled, as flattening (k, b, ...)."""
    unet = tiny_class_unet()
    denoiser = DiffusersDenoiser(unet, DDIMScheduler(clip_sample=False), guidance_scale=2.0)
    sigmas = denoiser.sigmas(6)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 1, 8, 8, generator=gen)  # 2 slices of 3 samples
    labels = torch.tensor([1, 2, 3])
    null = torch.full_like(labels, 10)
    s = torch.stack([sigmas[1].expand(3), sigmas[3].expand(3)])
    with torch.no_grad():
        flat = denoiser(x.flatten(0, 1), s.flatten(), class_labels=labels, uncond_class_labels=null)
        per_slice = torch.cat(
            [denoiser(x[k], s[k], class_labels=labels, uncond_class_labels=null) for k in range(2)]
        )
    torch.testing.assert_close(flat, per_slice, rtol=1e-4, atol=1e-4)


def test_last_point_of_ddim_schedule_is_evaluable_when_it_is_a_training_level():
    denoiser = DiffusersDenoiser(tiny_class_unet(), _ddim(set_alpha_to_one=False))
    sigmas = denoiser.sigmas(4)
    assert denoiser.sigma_to_timestep(sigmas[-1]).item() == 0
    denoiser = DiffusersDenoiser(tiny_class_unet(), _ddim(set_alpha_to_one=True))
    sigmas = denoiser.sigmas(4)
    with pytest.raises(ValueError, match="not a point of the schedule"):
        denoiser.sigma_to_timestep(sigmas[-1])


def test_to_ve_from_ve_roundtrip():
    denoiser = DiffusersDenoiser(tiny_class_unet(), _ddim())
    sigmas = denoiser.sigmas(5)
    z = torch.randn(2, 1, 8, 8)
    x = denoiser.to_ve(z, sigmas[0])
    torch.testing.assert_close(x, z * (1 + sigmas[0] ** 2).sqrt())
    torch.testing.assert_close(denoiser.from_ve(x, sigmas[0]), z)
    torch.testing.assert_close(denoiser.from_ve(x, float(sigmas[0])), z)
    rows = sigmas[[0, 2]]
    torch.testing.assert_close(denoiser.from_ve(denoiser.to_ve(z, rows), rows), z)
    euler = DiffusersDenoiser(tiny_class_unet(), _euler())
    assert euler.to_ve(z, 14.6) is z and euler.from_ve(z, 0.0) is z


# ------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: DDIMScheduler(clip_sample=True), "clip_sample"),
        (lambda: DDIMScheduler(clip_sample=False, thresholding=True), "thresholding"),
        (lambda: DDIMScheduler(clip_sample=False, prediction_type="flow"), "prediction_type"),
        (lambda: _euler(prediction_type="flow"), "prediction_type"),
    ],
    ids=["clip_sample", "thresholding", "ddim-prediction_type", "euler-prediction_type"],
)
def test_refuses_options_that_break_the_ode(make, match):
    try:
        scheduler = make()
    except Exception:  # a diffusers version may refuse the option itself
        pytest.skip("diffusers refuses this config itself")
    with pytest.raises(ValueError, match=match):
        DiffusersDenoiser(tiny_class_unet(), scheduler)


def test_refuses_guidance_rescale():
    with pytest.raises(ValueError, match="guidance_rescale"):
        DiffusersDenoiser(tiny_class_unet(), _ddim(), guidance_scale=5.0, guidance_rescale=0.7)


def test_refuses_unsupported_scheduler():
    with pytest.raises(TypeError, match=r"DPMSolverMultistepScheduler.*DDIMScheduler"):
        DiffusersDenoiser(tiny_class_unet(), DPMSolverMultistepScheduler())


def test_refuses_sigma_not_on_schedule():
    denoiser = DiffusersDenoiser(tiny_class_unet(), _ddim())
    x = torch.randn(2, 1, 8, 8)
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="sigmas"):  # no schedule yet
        denoiser(x, torch.ones(2), class_labels=labels)
    sigmas = denoiser.sigmas(5)
    mid = (sigmas[1] + sigmas[2]) / 2
    with pytest.raises(ValueError, match="not a point of the schedule"):
        denoiser(x, torch.stack([sigmas[0], mid]), class_labels=labels)
    with pytest.raises(ValueError, match="not a point of the schedule"):
        denoiser(x, sigmas[0] * 1.001, class_labels=labels)


def test_refuses_ddim_steps_that_skip_schedule_points():
    denoiser = DiffusersDenoiser(tiny_class_unet(), _ddim(timestep_spacing="trailing"))
    assert denoiser.sigmas(10).shape == (11,)  # 10 divides 1000: consistent
    with pytest.raises(ValueError, match="timestep_spacing"):
        denoiser.sigmas(3)  # DDIM would step 999 -> 666 -> 333 but its timesteps are 666, 332
    denoiser = DiffusersDenoiser(tiny_class_unet(), _ddim(timestep_spacing="linspace"))
    with pytest.raises(ValueError, match="timestep_spacing"):
        denoiser.sigmas(10)


def test_refuses_missing_uncond_and_unknown_kwargs():
    denoiser = DiffusersDenoiser(tiny_class_unet(), _ddim(), guidance_scale=2.0)
    sigmas = denoiser.sigmas(4)
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"uncond_.*class_labels"):
        denoiser(x, sigmas[0].expand(2), class_labels=torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="prompt_embeds"):
        denoiser(x, sigmas[0].expand(2), prompt_embeds=torch.zeros(2, 3, 32))


def test_import_without_diffusers_is_lazy():
    import ast
    import inspect

    import pint_diffusion.adapters as adapters

    tree = ast.parse(inspect.getsource(adapters))
    top_level = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = {a.name.split(".")[0] for n in top_level for a in n.names}
    names |= {
        n.module.split(".")[0] for n in top_level if isinstance(n, ast.ImportFrom) and n.module
    }
    assert "diffusers" not in names and "transformers" not in names


def test_report_max_diffs():
    """Prints the max differences measured above (run with ``-s`` to see them)."""
    for key, value in sorted(MAX_DIFF.items()):
        print(f"{key:50s} {value:.3g}")


def test_k_sampling_is_the_installed_k_diffusion_file(k_sampling):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("k_diffusion")
    installed = Path(next(iter(spec.submodule_search_locations))) / "sampling.py"
    assert Path(k_sampling.__file__).resolve() == installed.resolve()
    assert "k_diffusion" not in sys.modules or hasattr(sys.modules["k_diffusion"], "sampling")


@settings(max_examples=40, deadline=None)
@given(steps=st.integers(1, 999), dtype=st.sampled_from([torch.float64, torch.float32,
                                                          torch.float16]),
       picks=st.lists(st.floats(0, 1), min_size=1, max_size=8),
       shift=st.sampled_from([0.0, 0.0, 1e-7, 1e-4, -1e-3]))
def test_sigma_lookup_agrees_with_comparing_every_schedule_point(steps, dtype, picks, shift):
    """The lookup's answer (index, "not a point", "several points") is the brute-force one:
    every schedule point within 4 eps(dtype) * sigma + 1e-12 of the query matches."""
    denoiser = DiffusersDenoiser(tiny_class_unet(), _ddim(set_alpha_to_one=False))
    sigmas = denoiser.sigmas(steps)
    table = denoiser.table.sigmas
    rows = [min(int(p * len(table)), len(table) - 1) for p in picks]
    query = (table[rows] * (1 + shift)).to(dtype)
    eps = max(torch.finfo(torch.float32).eps, torch.finfo(dtype).eps)
    near = (query.double()[:, None] - table[None, :]).abs() <= 4 * eps * table + 1e-12
    hits = near.sum(1)
    if bool((hits == 1).all()):
        expected = near.to(torch.int64).argmax(1)
        assert torch.equal(denoiser.table.index(query), expected)
        assert torch.equal(denoiser.sigma_to_timestep(query),
                           denoiser.table.timesteps[expected])
    else:
        reason = "not a point" if bool((hits == 0).any()) else "several schedule points"
        with pytest.raises(ValueError, match=reason):
            denoiser.table.index(query)
    assert len(sigmas) == steps + 1


def test_a_step_count_whose_timesteps_leave_the_training_range_is_refused():
    """DDIM with steps_offset=1 at 1000 of 1000 steps would evaluate timestep 1000."""
    denoiser = DiffusersDenoiser(tiny_class_unet(), _ddim())
    with pytest.raises(ValueError, match=r"num_inference_steps=1000: .* to 1000, outside its 1000"):
        denoiser.sigmas(1000)
    assert len(denoiser.sigmas(999)) == 1000


def test_conditioning_of_b_rows_serves_k_b_state_rows_tiled():
    """Row r of the state takes sample r % b of the conditioning (a leaf of one row is shared):
    the same output as conditioning repeated to every row."""
    denoiser = DiffusersDenoiser(tiny_class_unet(), _ddim(), guidance_scale=2.0)
    sigmas = denoiser.sigmas(4)
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    s = sigmas[1].expand(6)
    labels = torch.tensor([3, 7])
    full = denoiser(x, s, class_labels=labels.repeat(3), uncond_class_labels=torch.full((6,), 10))
    tiled = denoiser(x, s, class_labels=labels, uncond_class_labels=torch.tensor([10]))
    assert torch.equal(tiled, full)
    with pytest.raises(ValueError, match="class_labels has 4 rows, which does not divide the "
                                         "batch of 6"):
        denoiser(x, s, class_labels=torch.arange(4), uncond_class_labels=torch.tensor([10]))
