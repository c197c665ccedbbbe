"""The sampler front-end: per-sample conditioning trees, the quasi-Newton sampler against
k-diffusion, sampler objects, the extrapolated stop, max_batch."""

import pytest
import torch
from helpers import ToyDenoiser, karras

import pint
from pint_diffusion import (
    SRDS,
    Euler,
    Heun,
    Picard,
    QuasiNewton,
    Serial,
    sample_quasi_newton,
    sample_serial,
    sample_srds,
)
from pint_diffusion.samplers import conditioned

# Picard accepts points for the whole batch (ParaDiGMS): only its exact run is per-sample.
SAMPLERS = [SRDS(blocks=6, tol=1e-2), QuasiNewton(tol=1e-2), Picard(tol=0.0)]


class NestedDenoiser(ToyDenoiser):
    """Conditioning as SDXL passes it: tensors inside a dict inside a list, plus a shared one."""

    def __call__(self, x, sigma, cond=None):
        out = super().__call__(x, sigma)
        scale = cond["added"]["scale"].reshape(-1, 1, 1, 1)
        shift = cond["pairs"][0][:, :, None, None]  # (rows, 3): one shift per channel
        shared = cond["pairs"][1].reshape(-1, 3, 1, 1)  # leading 1: the same for every sample
        assert cond["note"] == "kept"
        return out * scale + shift + shared


def nested(batch):
    g = torch.Generator().manual_seed(3)
    return {"cond": {"added": {"scale": torch.linspace(0.5, 1.5, batch)},
                     "pairs": [torch.randn(batch, 3, generator=g), torch.randn(1, 3, generator=g)],
                     "note": "kept"}}


def select(args, i):
    """Sample ``i``'s conditioning, the shared leaves kept."""
    cond = args["cond"]
    return {"cond": {"added": {"scale": cond["added"]["scale"][i:i + 1]},
                     "pairs": [cond["pairs"][0][i:i + 1], cond["pairs"][1]], "note": "kept"}}


@pytest.mark.parametrize("sampler", SAMPLERS, ids=repr)
def test_nested_per_sample_conditioning_follows_each_sample(sampler):
    """Samples converge at different iterations and leave the batch: each must still get its
    own conditioning, so each equals its single-sample run."""
    model = NestedDenoiser()
    sigmas = karras(20)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 4, 4, generator=g) * 20.0
    x[0] *= 0.01  # a sample that converges early
    args = nested(4)
    out, info = sampler.sample(model, x, sigmas, args, disable=True, return_info=True)
    for i in range(4):
        alone = sampler.sample(model, x[i:i + 1], sigmas, select(args, i), disable=True)
        torch.testing.assert_close(out[i:i + 1], alone, rtol=0, atol=1e-5)
    if not isinstance(sampler, Picard):  # Picard's window is shared by the batch
        assert len(set(info.sample_iterations.tolist())) > 1


def test_a_bad_leading_size_names_the_leaf():
    with pytest.raises(ValueError, match=r"extra_args\['cond'\]\['pairs'\]\[0\] has leading "
                                         r"size 2 but x has batch size 4"):
        conditioned(lambda x, s, **k: x, {"cond": {"pairs": [torch.zeros(2, 3)]}}, 4)


@pytest.mark.parametrize("name", ["euler", "heun"])
def test_quasi_newton_at_full_iterations_is_k_diffusions_sampler(k_sampling, name):
    model = ToyDenoiser()
    sigmas = k_sampling.get_sigmas_karras(30, 0.02, 20.0)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 20.0
    cond = torch.tensor([-0.3, 0.0, 0.4])
    sampler = getattr(k_sampling, {"euler": "sample_euler", "heun": "sample_heun"}[name])
    reference = sampler(model, x, sigmas, extra_args={"cond": cond}, disable=True)
    solver = {"euler": Euler, "heun": Heun}[name]()
    out, info = sample_quasi_newton(model, x, sigmas, {"cond": cond}, solver=solver, tol=0.0,
                                    disable=True, return_info=True)
    assert (out - reference).abs().max() <= 1e-5 * reference.abs().max()
    assert info.converged


def test_quasi_newton_default_tolerance_is_met_in_few_sequential_calls():
    """The tolerance is an RMS error of the final state; the extrapolated stop must deliver
    it (never a wrong sample marked converged), in far fewer calls than N."""
    model = ToyDenoiser()
    sigmas = karras(100)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(5)) * 20.0
    serial = sample_serial(model, x, sigmas, disable=True)
    out, info = sample_quasi_newton(model, x, sigmas, disable=True, return_info=True)
    rms = (out - serial).pow(2).flatten(1).mean(1).sqrt()
    assert info.converged and bool((rms <= 1e-3).all())
    _, srds = sample_srds(model, x, sigmas, disable=True, return_info=True)
    assert info.sequential_nfe < srds.sequential_nfe < 100


def test_sampler_objects_equal_the_functions():
    model = ToyDenoiser()
    sigmas = karras(16)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(4)) * 20.0
    assert torch.equal(SRDS(blocks=4).sample(model, x, sigmas, disable=True),
                       sample_srds(model, x, sigmas, blocks=4, disable=True))
    assert torch.equal(Serial().sample(model, x, sigmas, disable=True),
                       sample_serial(model, x, sigmas, disable=True))


def test_srds_extrapolated_stop_is_within_tolerance_and_not_later():
    model = ToyDenoiser()
    sigmas = karras(50)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(6)) * 20.0
    serial = sample_serial(model, x, sigmas, disable=True)
    plain = SRDS(tol=1e-3).sample(model, x, sigmas, disable=True, return_info=True)
    extra = SRDS(tol=1e-3, stop=pint.Extrapolated()).sample(model, x, sigmas, disable=True,
                                                            return_info=True)
    rms = (extra[0] - serial).pow(2).flatten(1).mean(1).sqrt()
    assert bool((rms <= 1e-3).all())
    assert extra[1].iterations <= plain[1].iterations


# fixed windows: an "auto" window prices max_batch's split calls, so it may choose another one
@pytest.mark.parametrize("sampler", [SRDS(blocks=6, tol=1e-2), QuasiNewton(window=None, tol=1e-2),
                                     Picard(window=None, tol=0.0), Serial()], ids=repr)
def test_max_batch_changes_calls_not_samples(sampler):
    model = ToyDenoiser()
    sigmas = karras(12)
    x = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(7)) * 20.0
    a, ia = sampler.sample(model, x, sigmas, disable=True, return_info=True)
    b, ib = sampler.sample(model, x, sigmas, disable=True, return_info=True, max_batch=2)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert ia.sequential_nfe == ib.sequential_nfe and ib.calls > ia.calls


def test_non_finite_model_output_names_the_step_and_the_samples():
    def model(x, sigma):
        out = x / (1 + sigma.reshape(-1, 1) ** 2)
        out[(sigma < 1.0) & (x[:, 0] > 0)] = float("nan")
        return out

    sigmas = karras(10)
    x = torch.tensor([[1.0], [-1.0], [2.0]]) * 20.0
    for sampler in (QuasiNewton(), Serial(), SRDS()):
        with pytest.raises(ValueError, match=r"(step \d+ \(sigma|block \d) .*samples? 0"):
            sampler.sample(model, x, sigmas, disable=True)


@pytest.mark.parametrize("sampler", [*SAMPLERS, Serial()], ids=repr)
def test_drop_failed_returns_the_other_samples_and_names_the_failed(sampler):
    model = ToyDenoiser()

    def flaky(x, sigma, cond=None):  # sample 1 (cond 9) fails below sigma 1
        out = model(x, sigma)
        bad = (cond == 9.0) & (sigma < 1.0)
        return torch.where(bad.reshape(-1, 1, 1, 1), torch.full_like(out, float("nan")), out)

    sigmas = karras(12)
    x = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(8)) * 20.0
    cond = torch.tensor([0.0, 9.0, 0.0])
    with pytest.raises(ValueError, match=r"for sample 1$"):
        sampler.sample(flaky, x, sigmas, {"cond": cond}, disable=True)
    seen = []
    out, info = sampler.sample(flaky, x, sigmas, {"cond": cond}, disable=True,
                               return_info=True, drop_failed=True, store_iterates=True,
                               callback=seen.append)
    assert info.failed == [1] and bool(out[1].isnan().all())
    assert info.sample_iterations[1] == -1
    alone = sampler.sample(model, x[[0, 2]], sigmas, disable=True)
    torch.testing.assert_close(out[[0, 2]], alone, rtol=0, atol=1e-5)
    # what the callback and the iterates show keeps the batch's rows: the dropped one is NaN
    assert info.iterates and all(it.shape == x.shape for it in info.iterates)
    torch.testing.assert_close(info.iterates[-1], out, rtol=0, atol=0, equal_nan=True)
    last = seen[-1]
    assert last["x"].shape == x.shape and bool(last["x"][1].isnan().all())
    assert last["residual"].shape == (3,) and bool(last["residual"][1].isnan())


@pytest.mark.parametrize("returned", [
    lambda x: x[:, :1],  # broadcasts in (x - D) / sigma
    lambda x: x.sum(),
    lambda x: x.to(torch.float64),
    lambda x: (x,),
    lambda x: None,
])
def test_a_denoiser_returning_the_wrong_thing_is_named(returned):
    with pytest.raises(TypeError, match=r"the model \(denoiser\) must return"):
        sample_srds(lambda x, sigma: returned(x), torch.randn(2, 3, 4, 4) * 20, karras(6),
                    disable=True)


def test_windowed_quasi_newton_slides_and_meets_the_tolerance():
    model = ToyDenoiser()
    sigmas = karras(60)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(9)) * 20.0
    serial = sample_serial(model, x, sigmas, disable=True)
    out, info = QuasiNewton(window=12).sample(model, x, sigmas, disable=True, return_info=True)
    rms = (out - serial).pow(2).flatten(1).mean(1).sqrt()
    assert info.converged and bool((rms <= 1e-3).all())
    assert info.sequential_nfe < 60 - 12  # the window slid faster than one step per iteration
    assert info.nfe < 60 * 3 * 12  # never more than a window of rows per sample per call


@pytest.mark.parametrize("solver", [Euler(), Heun()], ids=repr)
def test_serial_callback_names_the_noise_level_of_its_x(solver):
    """After step ``i`` the serial callback's ``x`` lies at ``sigmas[i + 1]``, and ``sigma`` says
    so (k-diffusion's convention: ``sigma`` is the noise level of ``x``), not the end of the
    schedule at every step."""
    model = ToyDenoiser()
    sigmas = karras(5)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(4)) * 20.0
    seen = []
    sample_serial(model, x, sigmas, callback=seen.append, solver=solver, disable=True)
    assert [s["i"] for s in seen] == list(range(5))
    for s in seen:
        assert float(s["sigma"]) == float(s["sigma_hat"]) == float(sigmas[s["i"] + 1])
        alone = sample_serial(model, x, sigmas[:s["i"] + 2], solver=solver, disable=True)
        torch.testing.assert_close(s["x"], alone, rtol=0, atol=0)


@pytest.mark.parametrize("sampler", [Serial(), *SAMPLERS], ids=repr)
def test_named_tuples_in_the_conditioning_follow_each_sample(sampler):
    """A namedtuple leaf container is rebuilt as its own type (it was called with one generator
    argument: a raw TypeError from its constructor)."""
    from collections import namedtuple

    Pair = namedtuple("Pair", "shift label")
    model = ToyDenoiser()

    def denoiser(x, sigma, cond):
        assert isinstance(cond, Pair) and cond.label == "kept"
        return model(x, sigma, cond.shift)

    sigmas = karras(6)
    x = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(2)) * 20.0
    shift = torch.tensor([0.1, -0.2, 0.3])
    out = sampler.sample(denoiser, x, sigmas, {"cond": Pair(shift, "kept")}, disable=True)
    expected = sampler.sample(model, x, sigmas, {"cond": shift}, disable=True)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    (dict(extra_args=[1]), TypeError, "extra_args must be a dict"),
    (dict(callback=3), TypeError, "callback must be callable"),
    (dict(drop_failed="no"), TypeError, "drop_failed must be True or False"),
])
def test_bad_extra_args_and_callback_are_named_before_sampling(kwargs, error, message):
    calls = []

    def model(x, sigma):
        calls.append(1)
        return ToyDenoiser()(x, sigma)

    for sampler in [Serial(), *SAMPLERS]:
        with pytest.raises(error, match=message):
            sampler.sample(model, torch.randn(2, 3, 4, 4) * 20.0, karras(4), disable=True,
                           **kwargs)
    assert not calls


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_a_zero_length_last_step_is_accepted_like_k_diffusion(k_sampling, solver):
    """``DiffusersDenoiser.sigmas`` ends ``sigmas[-2] == sigmas[-1] > 0`` for DDIM with
    ``set_alpha_to_one=False, steps_offset=0`` (documented: a step that leaves the state
    unchanged); every sampler refused its own adapter's schedule as not strictly decreasing."""
    from diffusers import DDIMScheduler

    from pint_diffusion import DiffusersDenoiser
    from pint_diffusion.testing import tiny_class_unet

    schedule = DiffusersDenoiser(tiny_class_unet(), DDIMScheduler(
        set_alpha_to_one=False, steps_offset=0, clip_sample=False)).sigmas(5)
    assert schedule[-1] == schedule[-2] > 0
    model = ToyDenoiser()
    sigmas = torch.cat([karras(6)[:-1], karras(6)[-2:-1]])  # ... 0.02, 0.02
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * 20.0
    reference = getattr(k_sampling, f"sample_{solver}")(model, x, sigmas, disable=True)
    step = {"euler": Euler, "heun": Heun}[solver]()
    for sampler in [Serial(), SRDS(tol=0), QuasiNewton(tol=0), Picard(tol=0)]:
        out = sampler.sample(model, x, sigmas, solver=step, disable=True)
        torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)
    for bad in [torch.tensor([2.0, 1.0, 1.0, 0.5]), torch.tensor([2.0, 0.0, 0.0]),
                torch.tensor([1.0, 1.0])]:
        with pytest.raises(ValueError, match="strictly decreasing"):
            sample_serial(model, x, bad, disable=True)
