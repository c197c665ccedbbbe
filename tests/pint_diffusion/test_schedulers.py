"""Diffusers schedulers as exact one-step maps (pint_diffusion.schedulers).

The reference everywhere is diffusers' own serial loop (``for t in timesteps: x =
scheduler.step(model(scale(x), t), t, x)``, written out in the test), with a cheap nonlinear
stand-in for the network so that the whole scheduler matrix runs in seconds. The pipelines'
tests (pint_diffusion/test_pipelines.py) repeat the check with real tiny networks and pipelines.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("diffusers")
import diffusers
from devices import DEVICES
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
)

import pint
import pint_diffusion
from pint_diffusion.schedulers import (
    SchedulerStep,
    check_deterministic,
    scheduler_trajectory,
)
from pint_diffusion.testing import SD_BETAS, sd_schedulers

#: Every scheduler the issue lists, in SD's configuration (the flow one in SD3's).
SCHEDULERS = {
    **sd_schedulers(),
    "flow": lambda: FlowMatchEulerDiscreteScheduler(shift=3.0),
}
STEPS = 7
SHAPE = (2, 3, 3)


def network(x: torch.Tensor, timesteps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """A nonlinear stand-in for a denoising network; per-sample via ``index``."""
    t = timesteps.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype) / 1000
    return torch.tanh(x) * (0.5 + t) + 0.1 * index.reshape(t.shape).to(x.dtype) - 0.2 * t


def diffusers_loop(scheduler, latents):
    """diffusers' serial sampling loop (what every pipeline does), on a copy."""
    sched = copy.deepcopy(scheduler)
    index = torch.arange(len(latents), device=latents.device)
    x = latents
    for t in sched.timesteps:
        x_in = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
        x = sched.step(network(x_in, t.expand(len(x)), index), t, x, return_dict=False)[0]
    return x


def ready(name):
    sched = SCHEDULERS[name]()
    sched.set_timesteps(STEPS)
    latents = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(0))
    return sched, latents * getattr(sched, "init_noise_sigma", 1.0)


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_parareal_at_full_iterations_is_the_serial_loop(name):
    sched, latents = ready(name)
    serial = diffusers_loop(sched, latents)
    trajectory = scheduler_trajectory(sched, network, latents)
    n = len(trajectory.grid) - 1
    t = trajectory.grid[[0, 1, n // 2, n - 1, n]]  # uneven blocks: rows at different steps
    sol = pint.parareal(trajectory.field, trajectory.y0, t, coarse=trajectory.coarse(t),
                        fine=trajectory.fine, tol=0, vectorized=True, independent=True)
    out = trajectory.output(sol.ys[-1])
    assert (out - serial).abs().max() <= 1e-5 * serial.abs().max()


@pytest.mark.parametrize("name", ["heun", "dpm3m", "unipc3", "pndm", "lms"])
def test_step_is_a_pure_function_of_step_state_and_output(name):
    sched, latents = ready(name)
    before = {k: v for k, v in vars(sched).items() if isinstance(v, int | float | None)}
    stepper = SchedulerStep(sched, latents.shape[1:])
    n = len(stepper.timesteps)
    # states along the serial loop, then every step recomputed from them in ONE mixed call
    states, outputs = [stepper.augment(latents)], []
    for j in range(n):
        steps = torch.full((len(latents),), j)
        x_in, ts = stepper.model_input(steps, states[-1])
        outputs.append(network(x_in, ts, torch.arange(len(latents))))
        states.append(stepper.step(steps, states[-1], outputs[-1]))
    assert (stepper.augment(latents)[:, 0] == latents).all()
    assert (states[-1][:, 0] - diffusers_loop(sched, latents)).abs().max() < 1e-6
    rows = [(j, r) for j in range(n) for r in range(len(latents))]
    steps = torch.tensor([j for j, _ in rows])
    state = torch.stack([states[j][r] for j, r in rows])
    out = torch.stack([outputs[j][r] for j, r in rows])
    mixed = stepper.step(steps, state, out)
    expected = torch.stack([states[j + 1][r] for j, r in rows])
    assert torch.equal(mixed, expected)
    # the caller's scheduler is untouched (counters, step index)
    assert {k: v for k, v in vars(sched).items() if isinstance(v, int | float | None)} == before


def test_history_is_found_by_name():
    sched, latents = ready("unipc3")
    assert set(SchedulerStep(sched, latents.shape[1:]).slots) == {
        "model_outputs[-1]", "model_outputs[-2]", "model_outputs[-3]", "last_sample"}
    sched, latents = ready("pndm")  # ets grows without bound; PNDM reads its last 4
    assert SchedulerStep(sched, latents.shape[1:]).rows == 1 + 1 + 4
    sched, latents = ready("euler")
    assert SchedulerStep(sched, latents.shape[1:]).slots == []


@pytest.mark.parametrize(("make", "match"), [
    (lambda: DDPMScheduler(**SD_BETAS), "DDPMScheduler is stochastic"),
    (lambda: EulerAncestralDiscreteScheduler(**SD_BETAS), "EulerAncestralDiscreteScheduler"),
    (lambda: DPMSolverMultistepScheduler(**SD_BETAS, algorithm_type="sde-dpmsolver++"),
     "algorithm_type='sde-dpmsolver\\+\\+'"),
    (lambda: FlowMatchEulerDiscreteScheduler(stochastic_sampling=True), "stochastic_sampling"),
])
def test_refuses_stochastic_schedulers(make, match):
    with pytest.raises(ValueError, match=match):
        check_deterministic(make())


def test_refuses_stochastic_step_options():
    with pytest.raises(ValueError, match=r"eta=0\.5"):
        check_deterministic(DDIMScheduler(**SD_BETAS), {"eta": 0.5})
    with pytest.raises(ValueError, match=r"s_churn=1\.0"):
        check_deterministic(EulerDiscreteScheduler(**SD_BETAS), {"s_churn": 1.0})
    check_deterministic(DDIMScheduler(**SD_BETAS), {"eta": 0.0})


def test_refuses_a_scheduler_that_draws_random_numbers():
    class NoisyEuler(EulerDiscreteScheduler):
        def step(self, model_output, timestep, sample, **kwargs):
            return super().step(model_output + 0.1 * torch.randn_like(model_output), timestep,
                                sample, **kwargs)

    sched = NoisyEuler(**SD_BETAS)
    sched.set_timesteps(4)
    with pytest.raises(ValueError, match=r"NoisyEuler\.step is not deterministic"):
        SchedulerStep(sched, SHAPE)
    if hasattr(diffusers, "DPMSolverSDEScheduler"):
        with pytest.raises(ValueError, match="DPMSolverSDEScheduler"):
            check_deterministic(DPMSolverSDEScheduler(**SD_BETAS))


def test_needs_set_timesteps():
    with pytest.raises(ValueError, match="set_timesteps"):
        SchedulerStep(EulerDiscreteScheduler(**SD_BETAS), SHAPE)


def test_describe_names_the_step():
    sched, latents = ready("dpm2m")
    trajectory = scheduler_trajectory(sched, network, latents)
    assert trajectory.describe(0) == (f"step 0 (timestep {int(sched.timesteps[0])}, "
                                      f"sigma {float(sched.sigmas[0]):.4g})")
    assert "end" in trajectory.describe(len(trajectory.grid) - 1)


@pytest.mark.parametrize("name", ["dpm2m", "unipc2", "flow"])
def test_half_precision_latents_keep_a_float32_state(name):
    sched, latents = ready(name)
    latents = latents.to(torch.bfloat16)
    serial = diffusers_loop(sched, latents)
    trajectory = scheduler_trajectory(sched, network, latents)
    assert trajectory.y0.dtype == trajectory.grid.dtype == torch.float32
    t = trajectory.grid[[0, 2, len(trajectory.grid) - 1]]
    sol = pint.parareal(trajectory.field, trajectory.y0, t, coarse=trajectory.coarse(t),
                        fine=trajectory.fine, tol=0, vectorized=True, independent=True)
    out = trajectory.output(sol.ys[-1])
    assert out.dtype == serial.dtype == torch.bfloat16
    assert torch.equal(out, serial)  # every step replayed exactly in the latents' dtype


@settings(max_examples=6, deadline=None)
@given(name=st.sampled_from(["dpm3m", "unipc3", "heun", "pndm"]),
       cuts=st.sets(st.integers(min_value=1, max_value=12), max_size=6),
       pipelined=st.booleans())
def test_any_block_boundaries_give_the_serial_loop(name, cuts, pipelined):
    sched, latents = ready(name)
    serial = diffusers_loop(sched, latents)
    trajectory = scheduler_trajectory(sched, network, latents)
    n = len(trajectory.grid) - 1
    points = sorted({0, n, *(c for c in cuts if c < n)})
    t = trajectory.grid[points]
    sol = pint.parareal(trajectory.field, trajectory.y0, t, coarse=trajectory.coarse(t),
                        fine=trajectory.fine, tol=0, pipelined=pipelined, vectorized=True,
                        independent=True)
    assert (trajectory.output(sol.ys[-1]) - serial).abs().max() <= 1e-5 * serial.abs().max()


@pytest.mark.parametrize("sampler", [
    pytest.param(lambda: pint_diffusion.SRDS(tol=0.0), id="srds"),
    pytest.param(lambda: pint_diffusion.Picard(tol=0.0), id="picard"),
    pytest.param(lambda: pint_diffusion.QuasiNewton(tol=0.0), id="quasi-newton"),
    pytest.param(lambda: pint_diffusion.Serial(), id="serial"),
])
@pytest.mark.parametrize("name", ["dpm2m-karras", "unipc3", "heun"])
def test_every_sampler_object_solves_a_scheduler_trajectory(sampler, name):
    sched, latents = ready(name)
    serial = diffusers_loop(sched, latents)
    samples, info = sampler().solve(scheduler_trajectory(sched, network, latents), disable=True)
    assert (samples - serial).abs().max() <= 1e-5 * serial.abs().max()
    assert info.converged


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["dpm3m", "flow"])
def test_on_every_device(device, name):
    sched, latents = ready(name)
    latents = latents.to(device)
    sched.set_timesteps(STEPS, device=device)
    serial = diffusers_loop(sched, latents)
    samples, _ = pint_diffusion.SRDS(tol=0.0, blocks=3).solve(
        scheduler_trajectory(sched, network, latents), disable=True)
    assert samples.device == serial.device
    assert (samples - serial).abs().max() <= 1e-5 * serial.abs().max()


def test_the_dry_run_leaves_the_random_stream_alone():
    sched, latents = ready("dpm2m")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    SchedulerStep(sched, latents.shape[1:])
    assert torch.equal(torch.rand(3), expected)


def test_an_attribute_that_is_history_only_at_some_steps_keeps_its_other_value():
    # PNDM's Runge-Kutta warm-up (skip_prk_steps=False) resets cur_model_output to the int 0
    # every 4th step and accumulates model outputs into it otherwise: the steps where it is 0
    # got None (a raw TypeError in step_prk: None += Tensor)
    sched = diffusers.PNDMScheduler(**SD_BETAS, skip_prk_steps=False)
    sched.set_timesteps(STEPS)
    latents = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(0))
    serial = diffusers_loop(sched, latents)
    samples, _ = pint_diffusion.SRDS(blocks=3, tol=0).solve(
        scheduler_trajectory(sched, network, latents), disable=True)
    assert (samples - serial).abs().max() <= 1e-5 * serial.abs().max()
