"""Defects that once gave silent wrong results, bad inputs that need clear errors, edge
shapes: one test each. (Interrupts: pint/test_interrupts.py; per-sample failures and denoiser
outputs: pint_diffusion/test_samplers.py; CLI and loader: pint_diffusion/test_cli.py,
pint_diffusion/test_digits_model.py; max_batch: pint/test_engine.py, pint/test_picard.py,
pint_diffusion/test_samplers.py.)"""

import math

import numpy as np
import pytest
import torch
from helpers import ToyDenoiser, karras

import pint
from pint_diffusion import QuasiNewton, sample_picard, sample_quasi_newton, sample_srds

F64 = torch.float64
T = torch.linspace(0, 1, 9, dtype=F64)


def test_f_returning_integers_or_lower_precision_is_refused():
    for dtype in (torch.int64, torch.float32):
        with pytest.raises(TypeError, match="returned dtype"):
            pint.parareal(lambda t, y, d=dtype: (-y).to(d), torch.ones(1, dtype=F64), T,
                          coarse=pint.Euler(1), fine=pint.RK4(4))


def test_a_callback_cannot_change_the_result():
    def vandal(k, ys, residual):
        ys.zero_()

    kw = dict(coarse=pint.Euler(1), fine=pint.RK4(4), tol=0.0)
    clean = pint.parareal(lambda t, y: -y, torch.ones(1, dtype=F64), T, **kw)
    touched = pint.parareal(lambda t, y: -y, torch.ones(1, dtype=F64), T, callback=vandal, **kw)
    assert torch.equal(clean.ys, touched.ys)
    x = torch.randn(2, 3, 4, 4) * 20
    samples = sample_srds(ToyDenoiser(), x, karras(8), disable=True,
                          callback=lambda state: state["x"].zero_())
    assert torch.equal(samples, sample_srds(ToyDenoiser(), x, karras(8), disable=True))


def test_a_negative_norm_is_refused_not_taken_as_converged():
    with pytest.raises(ValueError, match="norm must return finite values >= 0"):
        pint.parareal(lambda t, y: -y, torch.ones(1, dtype=F64), T, coarse=pint.Euler(1),
                      fine=pint.RK4(4), norm=lambda change: -change.abs().max())


@pytest.mark.parametrize("option", ["rtol", "atol"])
@pytest.mark.parametrize("value", [math.nan, -1.0, math.inf])
def test_torchdiffeq_tolerances_must_be_finite(option, value):
    with pytest.raises(ValueError, match=f"{option} must be a finite number"):
        pint.Torchdiffeq(**{option: value})


def test_torchdiffeq_options_must_be_a_dict():
    with pytest.raises(TypeError, match="options must be a dict of odeint options"):
        pint.Torchdiffeq("rk4", options=5)


@pytest.mark.parametrize("solve", [
    lambda f, cb: pint.serial(f, torch.ones(1, dtype=F64), T, method=pint.RK4(1), callback=cb),
    lambda f, cb: pint.parareal(f, torch.ones(1, dtype=F64), T, coarse=pint.Euler(1),
                                fine=pint.RK4(4), callback=cb),
    lambda f, cb: pint.picard(f, torch.ones(1, dtype=F64), T, step=pint.RK4(1), callback=cb),
    lambda f, cb: pint.mgrit(f, torch.ones(1, dtype=F64), T, propagator=pint.RK4(1),
                             coarsening=2, callback=cb),
])
def test_a_callback_that_cannot_be_called_is_refused_before_any_evaluation(solve):
    calls = []

    def f(t, y):
        calls.append(t)
        return -y

    with pytest.raises(TypeError, match="callback must be callable or None, got int"):
        solve(f, 3)
    assert calls == []


def test_a_propagator_class_instead_of_an_instance_says_so():
    with pytest.raises(TypeError, match=r"coarse must be a propagator instance, e\.g\. RK4\(1\)"):
        pint.parareal(lambda t, y: -y, torch.ones(1, dtype=F64), T, coarse=pint.RK4,
                      fine=pint.RK4(4))


def test_numpy_scalars_are_accepted():
    x = torch.randn(2, 3, 4, 4) * 20
    a = sample_srds(ToyDenoiser(), x, karras(16), blocks=np.int64(4), tol=np.float32(1e-3),
                    disable=True)
    b = sample_srds(ToyDenoiser(), x, karras(16), blocks=4, tol=1e-3, disable=True)
    assert torch.equal(a, b)


def test_empty_batch_is_a_clear_error():
    for sample in (sample_srds, sample_picard, sample_quasi_newton):
        with pytest.raises(ValueError, match="at least one sample"):
            sample(ToyDenoiser(), torch.zeros(0, 3, 4, 4), karras(8), disable=True)


def test_one_dimensional_samples_work_in_every_sampler():
    def denoiser(x, sigma):
        return x / (1 + sigma**2)

    x = torch.randn(5) * 20
    for sample in (sample_srds, sample_picard, sample_quasi_newton):
        out = sample(denoiser, x, karras(10), disable=True, tol=0.0)
        assert out.shape == (5,)


def test_non_finite_guidance_is_refused():
    from diffusers import DDIMScheduler

    from pint_diffusion import DiffusersDenoiser
    from pint_diffusion.testing import tiny_unet

    unet, scheduler = tiny_unet(), DDIMScheduler(set_alpha_to_one=False, clip_sample=False)
    for value in (math.nan, math.inf):
        with pytest.raises(ValueError, match="guidance_scale must be a finite number"):
            DiffusersDenoiser(unet, scheduler, guidance_scale=value)
    denoiser = DiffusersDenoiser(unet, scheduler, guidance_scale=2.0)
    with pytest.raises(ValueError, match="guidance_scale must be a finite number"):
        denoiser.guidance_scale = math.nan
    for steps in (0, -3, 10_000):
        with pytest.raises(ValueError, match="num_inference_steps must be an integer"):
            denoiser.sigmas(steps)


def test_shared_leading_one_conditioning_reaches_every_sample():
    model = ToyDenoiser()
    x = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 20
    shared = sample_quasi_newton(model, x, karras(10), {"cond": torch.tensor([0.3])},
                                 disable=True)
    each = sample_quasi_newton(model, x, karras(10), {"cond": torch.full((3,), 0.3)},
                               disable=True)
    torch.testing.assert_close(shared, each, rtol=0, atol=1e-6)


def test_nan_tolerances_are_refused_everywhere():
    for build in (lambda: QuasiNewton(tol=math.nan),
                  lambda: sample_srds(ToyDenoiser(), torch.ones(1, 3, 4, 4), karras(4),
                                      tol=math.nan)):
        with pytest.raises(ValueError, match="tol must be a finite number"):
            build()
