"""The Picard-family samplers over a process group (``group=``): every rank gets the single
process's samples, iterations and depth bit for bit; a failing rank stops the others."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from harness import spawn, values

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")


def toy():
    """A nonlinear, conditioned denoiser on small images, its inputs and a Karras-like
    schedule."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 3, generator=g) * 0.5

    def denoiser(x, sigma, cond):
        mixed = torch.einsum("bchw,cd->bdhw", x, w)
        s = sigma.reshape(-1, 1, 1, 1)
        return x / (1 + s**2) + 0.5 * torch.tanh(mixed / (1 + s)) + cond.reshape(-1, 1, 1, 1)

    sigmas = torch.cat([torch.linspace(20.0, 0.05, 30), torch.zeros(1)])
    x = torch.randn(3, 3, 6, 6, generator=g) * 20.0
    return denoiser, x, sigmas, {"cond": torch.linspace(-0.5, 0.5, 3)}


def samplers_worker(rank, world):
    from pint_diffusion import sample_picard, sample_quasi_newton

    denoiser, x, sigmas, extra = toy()
    out = {}
    for name, sampler in (("picard", sample_picard), ("quasi-newton", sample_quasi_newton)):
        for window in (None, 8):
            kw = dict(extra_args=extra, disable=True, return_info=True, window=window)
            out[name, window] = (sampler(denoiser, x, sigmas, group="default", **kw),
                                 sampler(denoiser, x, sigmas, **kw))
    return out


@pytest.mark.parametrize("world", [2, 4])
def test_picard_samplers_over_a_group_equal_one_process(world, tmp_path):
    for result in values(spawn(samplers_worker, world, tmp_path, wait=240)):
        assert len(result) == 4
        for key, ((dist_x, dist_info), (x, info)) in result.items():
            assert torch.equal(dist_x, x), key
            assert torch.equal(dist_info.sample_iterations, info.sample_iterations), key
            assert dist_info.sequential_nfe == info.sequential_nfe, key
            assert dist_info.nfe == info.nfe, key
            assert dist_info.residuals == info.residuals, key
            assert dist_info.converged and info.iterations < 30, key  # stopped by tol


def refuse_worker(rank, world, case):
    from pint_diffusion import sample_quasi_newton

    denoiser, x, sigmas, extra = toy()
    calls = [0]

    def counted(x, sigma, cond):
        calls[0] += 1
        return denoiser(x, sigma, cond)

    options = dict(extra_args=extra, disable=True, group="default")
    if case == "x" and rank == 1:
        x = x + 1e-3
    if case == "window" and rank == 1:
        options["window"] = 8
    if case == "drop_failed":
        options["drop_failed"] = True
    try:
        sample_quasi_newton(counted, x, sigmas, **options)
    finally:
        assert calls[0] == 0  # refused before any model call


@pytest.mark.parametrize(("case", "match"), [
    ("x", "y0's values differ"),
    ("window", "options .* differ"),
    ("drop_failed", "drop_failed is not supported with group="),
])
def test_differing_inputs_are_refused_on_every_rank(case, match, tmp_path):
    import re

    for result in spawn(refuse_worker, 2, tmp_path, case).values():
        assert result is not None and result.get("error") == "ValueError", result
        assert re.search(match, result["message"]), result["message"]


def failing_worker(rank, world):
    from pint_diffusion import sample_quasi_newton

    denoiser, x, sigmas, extra = toy()
    calls = [0]

    def flaky(x, sigma, cond):
        calls[0] += 1
        if rank == 1 and calls[0] == 4:
            raise ZeroDivisionError("boom in the denoiser")
        return denoiser(x, sigma, cond)

    return sample_quasi_newton(flaky, x, sigmas, extra_args=extra, disable=True,
                               group="default", tol=0.0)


def test_a_rank_whose_model_raises_stops_the_others(tmp_path):
    results = spawn(failing_worker, 3, tmp_path, wait=60)
    assert results[1] is not None and results[1]["error"] == "ZeroDivisionError", results[1]
    for rank in (0, 2):
        assert results[rank] is not None and results[rank]["error"] == "RankFailed"
        assert "rank 1 failed with ZeroDivisionError" in results[rank]["message"]
        assert results[rank]["elapsed"] < 30
