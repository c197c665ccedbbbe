"""SRDS against the real k-diffusion samplers, an analytic PF-ODE, and the theory."""

import itertools
import math

import pytest
import torch
from devices import DEVICES
from helpers import ToyDenoiser, karras

import pint
from pint_diffusion import SRDS, Euler, Heun, block_boundaries, sample_srds

SOLVERS = {"euler": Euler, "heun": Heun}
K_SAMPLERS = {"euler": "sample_euler", "heun": "sample_heun"}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["euler", "heun"])
@pytest.mark.parametrize("pipelined", [False, True])
def test_full_iterations_reproduce_k_diffusion(k_sampling, device, name, pipelined):
    """tol=0 runs until the result is the serial sampler's. The bound is float32
    round-off: rows are evaluated in batches of other sizes than k-diffusion's, which
    may change the last bits of a batched kernel's result (here they agree exactly)."""
    model = ToyDenoiser(device=device)
    sigmas = k_sampling.get_sigmas_karras(25, 0.02, 20.0, device=device)
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(4, 3, 8, 8, generator=g) * 20.0).to(device)
    cond = torch.linspace(-0.5, 0.5, 4, device=device)
    reference = getattr(k_sampling, K_SAMPLERS[name])(model, x, sigmas,
                                                      extra_args={"cond": cond}, disable=True)
    out, info = sample_srds(model, x, sigmas, extra_args={"cond": cond}, solver=SOLVERS[name](),
                            tol=0.0, pipelined=pipelined, disable=True, return_info=True)
    assert (out - reference).abs().max() <= 1e-5 * reference.abs().max()
    assert info.converged


@pytest.mark.parametrize("name", ["euler", "heun"])
def test_default_tolerance_is_close_to_serial(k_sampling, name):
    model = ToyDenoiser()
    sigmas = k_sampling.get_sigmas_karras(100, 0.02, 20.0)
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 20.0
    reference = getattr(k_sampling, K_SAMPLERS[name])(model, x, sigmas, disable=True)
    out, info = sample_srds(model, x, sigmas, solver=SOLVERS[name](), disable=True,
                            return_info=True)
    rms = (out - reference).pow(2).flatten(1).mean(1).sqrt()
    # a sample stops when its final state changed by at most tol (RMS); Parareal contracts,
    # so the remaining error is below the last change
    assert rms.max() <= info.residuals[-1] + 1e-6 and rms.max() <= 1e-3
    assert info.iterations < 20  # stopped early: the default blocks are 2 sqrt(100) = 20
    assert info.sequential_nfe < info.predicted_sequential_nfe + 1
    assert info.sequential_nfe == info.predicted_sequential_nfe


@pytest.mark.parametrize("n_steps", [7, 25, 30])
@pytest.mark.parametrize("name", ["euler", "heun"])
def test_pipelined_depth_follows_the_recurrence(name, n_steps):
    """Measured depth equals the pipelined recurrence of docs/algorithm.md with per-block depths
    (unequal blocks, Heun's last step to sigma 0 costs one evaluation)."""
    model = ToyDenoiser()
    sigmas = karras(n_steps)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3)) * 20.0
    blocks = 4
    _out, info = sample_srds(model, x, sigmas, solver=SOLVERS[name](), blocks=blocks,
                            max_iters=2, tol=0.0, disable=True, return_info=True)
    bounds = block_boundaries(n_steps, blocks)
    solver = SOLVERS[name]()
    grid = sigmas.tolist()

    def depth(a, b):
        return sum(solver.depth(grid[i], grid[i + 1]) for i in range(a, b))

    fine = [depth(a, b) for a, b in itertools.pairwise(bounds)]
    coarse = [solver.depth(grid[a], grid[b]) for a, b in itertools.pairwise(bounds)]
    t = {(n, 0): sum(coarse[:n]) for n in range(blocks + 1)}
    for k in range(info.iterations):
        for n in range(k + 1):
            t[n, k + 1] = t[n, k]
        t[k + 1, k + 1] = t[k, k] + fine[k]
        for n in range(k + 1, blocks):
            t[n + 1, k + 1] = max(t[n, k + 1] + coarse[n], t[n, k] + fine[n])
    assert info.sequential_nfe == t[blocks, info.iterations] == info.predicted_sequential_nfe


def test_samples_converge_on_their_own():
    """A batch of samples of unequal difficulty: each stops at its own iteration, and its
    result is what SRDS gives it alone."""
    model = ToyDenoiser()
    sigmas = karras(36)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(4)) * 20.0
    x[0] *= 0.01  # a near-zero start converges sooner
    cond = torch.tensor([0.0, 0.3, -0.3, 0.6])
    out, info = sample_srds(model, x, sigmas, extra_args={"cond": cond}, tol=1e-4,
                            disable=True, return_info=True)
    assert len(set(info.sample_iterations.tolist())) > 1
    for b in range(4):
        alone, alone_info = sample_srds(model, x[b:b + 1], sigmas,
                                        extra_args={"cond": cond[b:b + 1]}, tol=1e-4,
                                        disable=True, return_info=True)
        assert alone_info.iterations == info.sample_iterations[b]
        torch.testing.assert_close(out[b:b + 1], alone, rtol=1e-5, atol=1e-5)


class GaussianData:
    """Data ~ N(mu, s^2) per entry: D(x, sigma) = (s^2 x + sigma^2 mu) / (s^2 + sigma^2), and
    the PF-ODE carries x to mu + (x - mu) sqrt(s^2 + sigma_b^2) / sqrt(s^2 + sigma_a^2)."""

    def __init__(self, mu=0.3, s=0.5):
        self.mu, self.s = mu, s

    def __call__(self, x, sigma):
        sig2 = sigma.reshape(-1, *([1] * (x.ndim - 1))) ** 2
        return (self.s**2 * x + sig2 * self.mu) / (self.s**2 + sig2)

    def exact(self, x, sigma_a, sigma_b):
        ratio = math.sqrt(self.s**2 + sigma_b**2) / math.sqrt(self.s**2 + sigma_a**2)
        return self.mu + (x - self.mu) * ratio


@pytest.mark.parametrize("name", ["euler", "heun"])
def test_serial_solvers_converge_to_the_exact_pf_ode_at_their_order(name):
    data = GaussianData()
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * 10
    errors, steps = [], [16, 32, 64, 128]
    for n in steps:
        sigmas = karras(n, dtype=torch.float64, sigma_min=0.05, sigma_max=10.0)[:-1]
        serial = pint.serial(lambda t, y: (y - data(y, t)) / t.reshape(-1, 1),
                             x, sigmas, method=_on_schedule(name, sigmas), vectorized=True)
        exact = data.exact(x, float(sigmas[0]), float(sigmas[-1]))
        errors.append((serial.ys[-1] - exact).abs().max().item())
    order = {"euler": 1, "heun": 2}[name]
    slopes = [math.log2(a / b) for a, b in itertools.pairwise(errors)]
    assert abs(slopes[-1] - order) < 0.3, slopes
    # SRDS converges to the serial solver, from a coarse pass that is far from it
    sigmas = karras(64, dtype=torch.float64, sigma_min=0.05, sigma_max=10.0)
    serial = pint.serial(lambda t, y: (y - data(y, t)) / t.reshape(-1, 1), x, sigmas[:-1],
                         method=_on_schedule(name, sigmas[:-1]), vectorized=True).ys[-1]
    _out, info = sample_srds(data, x, sigmas[:-1], solver=SOLVERS[name](), tol=1e-10,
                            disable=True, return_info=True, store_iterates=True)
    errors = [(it - serial).abs().max().item() for it in info.iterates]
    assert errors[0] > 1e-3 and errors[-1] < 1e-9
    assert all(b <= a for a, b in itertools.pairwise(errors))


def _on_schedule(name, sigmas):
    from pint_diffusion import OnSchedule

    return OnSchedule(SOLVERS[name](), sigmas)


def test_callback_and_progress(capsys):
    model = ToyDenoiser()
    sigmas = karras(16)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(6)) * 20.0
    seen = []
    out, info = sample_srds(model, x, sigmas, callback=seen.append, return_info=True,
                            disable=False)
    assert [c["i"] for c in seen] == list(range(info.iterations + 1))
    assert set(seen[0]) == {"x", "i", "sigma", "sigma_hat", "denoised", "residual"}
    torch.testing.assert_close(seen[-1]["x"], out)
    assert "SRDS" in capsys.readouterr().err


BAD = [
    (dict(sigmas=torch.tensor([1.0, 2.0, 0.0])), "strictly decreasing"),
    (dict(sigmas=torch.tensor([1.0])), "at least 2"),
    (dict(sigmas=torch.tensor([1.0, -0.5])), "non-negative"),
    (dict(blocks=0), "blocks must be a positive integer"),
    (dict(blocks=17), "blocks must be an integer in"),
    (dict(tol=-1.0), "tol must be"),
    (dict(extra_args={"cond": torch.zeros(3)}), r"extra_args\['cond'\] has leading size 3"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD)
def test_bad_input(kwargs, message):
    model = ToyDenoiser()
    args = dict(sigmas=karras(16), extra_args=None)
    args.update(kwargs)
    x = torch.randn(2, 3, 4, 4) * 20.0
    with pytest.raises(ValueError, match=message):
        sample_srds(model, x, args.pop("sigmas"), disable=True, **args)


def test_pipelined_must_be_a_bool():
    # a string such as 'no' (or StableDiffusionSRDSPipeline's srds_pipelined='no') counted as True
    with pytest.raises(TypeError, match="pipelined must be True or False, got 'no'"):
        sample_srds(ToyDenoiser(), torch.randn(2, 3, 4, 4) * 20.0, karras(16), disable=True,
                    pipelined="no")


def test_drop_failed_is_refused_over_processes():
    # a rank that dropped a sample would sample again alone while the others stop
    calls = []

    def model(x, sigma):
        calls.append(1)
        return ToyDenoiser()(x, sigma)

    with pytest.raises(ValueError, match="drop_failed is not supported with group="):
        SRDS(group="default").sample(model, torch.randn(2, 3, 4, 4) * 20.0, karras(16),
                                     disable=True, drop_failed=True)
    assert not calls


def test_unknown_solver():
    with pytest.raises(TypeError, match="solver must be"):
        sample_srds(ToyDenoiser(), torch.randn(1, 3, 4, 4), karras(4), solver="ddim",
                    disable=True)


def test_non_finite_denoiser_output_names_block_step_and_iteration():
    model = ToyDenoiser()
    sigmas = karras(16)

    def broken(x, sigma):  # fails only at one noise level, inside block 2's fine steps
        out = model(x, sigma)
        bad = (sigma == sigmas[9]).reshape(-1, 1, 1, 1)
        return torch.where(bad, torch.full_like(out, float("nan")), out)

    with pytest.raises(ValueError, match=r"block 2 \(steps 8..11\), step 9 .*iteration 0"):
        sample_srds(broken, torch.randn(2, 3, 4, 4), sigmas, blocks=4, disable=True)


@pytest.mark.parametrize("name", ["euler", "heun"])
def test_sample_serial_is_k_diffusions_sampler(k_sampling, name):
    from pint_diffusion import sample_serial

    model = ToyDenoiser()
    sigmas = k_sampling.get_sigmas_karras(12, 0.02, 20.0)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(7)) * 20.0
    cond = torch.tensor([0.1, -0.2, 0.3])
    reference = getattr(k_sampling, K_SAMPLERS[name])(model, x, sigmas,
                                                      extra_args={"cond": cond}, disable=True)
    steps = []
    out, info = sample_serial(model, x, sigmas, extra_args={"cond": cond},
                              solver=SOLVERS[name](), callback=steps.append, disable=True,
                              return_info=True)
    assert torch.equal(out, reference)
    assert [s["i"] for s in steps] == list(range(12))
    assert info.sequential_nfe == info.predicted_sequential_nfe == {"euler": 12, "heun": 23}[name]
    assert info.nfe == 3 * info.sequential_nfe
