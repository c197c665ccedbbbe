"""The Picard-family samplers over a process group (``group=``): every rank gets the single
process's samples, iterations and depth bit for bit; a failing rank stops the others."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from helpers import conditioned_toy, refused, spawn, values

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")


def samplers_worker(rank, world):
    from pint_diffusion import sample_picard, sample_quasi_newton

    denoiser, x, sigmas, extra = conditioned_toy()
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

    denoiser, x, sigmas, extra = conditioned_toy()
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
    refused(spawn(refuse_worker, 2, tmp_path, case), match)


def failing_worker(rank, world):
    from pint_diffusion import sample_quasi_newton

    denoiser, x, sigmas, extra = conditioned_toy()
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


# -- CFG-parallel: a network call's rows over a group (pint.transport.rows.SplitRows) ---------
def guided_setup():
    """A row-wise toy network, a guided denoiser over it (one batched call of the conditional
    and the unconditional rows, guidance 2), and the counts of rows each net call saw."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 3, generator=g) * 0.5
    seen = []

    def net(x, sigma, cond):
        seen.append(len(x))
        mixed = torch.einsum("bchw,cd->bdhw", x, w)
        s = sigma.reshape(-1, 1, 1, 1)
        return x / (1 + s**2) + 0.5 * torch.tanh(mixed / (1 + s)) + cond.reshape(-1, 1, 1, 1)

    def guided(model):
        def denoiser(x, sigma, cond, uncond):
            both = model(torch.cat([x, x]), torch.cat([sigma, sigma]),
                         cond=torch.cat([cond, uncond]))
            c, u = both.chunk(2)
            return u + 2.0 * (c - u)

        return denoiser

    sigmas = torch.cat([torch.linspace(20.0, 0.05, 24), torch.zeros(1)])
    x = torch.randn(2, 3, 6, 6, generator=g) * 20.0
    extra = {"cond": torch.tensor([0.3, -0.2]), "uncond": torch.zeros(2)}
    return net, guided, x, sigmas, extra, seen


def cfg_worker(rank, world):
    """2 ranks: CFG-parallel. 4 ranks: CFG pairs {0, 1}, {2, 3} inside Picard groups {0, 2},
    {1, 3} (each rank: one Picard share, one CFG half)."""
    from pint.transport.rows import SplitRows
    from pint_diffusion import sample_quasi_newton

    net, guided, x, sigmas, extra, seen = guided_setup()
    kw = dict(extra_args=extra, disable=True, return_info=True, window=8)
    reference = sample_quasi_newton(guided(net), x, sigmas, **kw)
    calls = len(seen)
    if world == 2:
        cfg, rows = None, None
    else:
        pairs = [dist.new_group([0, 1]), dist.new_group([2, 3])]
        shares = [dist.new_group([0, 2]), dist.new_group([1, 3])]
        cfg, rows = pairs[rank // 2], shares[rank % 2]
    split = sample_quasi_newton(guided(SplitRows(net, cfg)), x, sigmas, group=rows, **kw)
    return reference, split, seen[:calls], seen[calls:]


@pytest.mark.parametrize("world", [2, 4])
def test_cfg_parallel_equals_one_process(world, tmp_path):
    total = 0
    for rank, result in enumerate(values(spawn(cfg_worker, world, tmp_path, wait=240))):
        (ref_x, ref_info), (x, info), ref_rows, rows = result
        assert torch.equal(x, ref_x), rank
        assert info.sequential_nfe == ref_info.sequential_nfe
        assert info.nfe == ref_info.nfe
        assert torch.equal(info.sample_iterations, ref_info.sample_iterations)
        # one net call per round (the initial guess: on the first Picard share's ranks only)
        assert len(ref_rows) - 1 <= len(rows) <= len(ref_rows)
        assert max(rows) <= max(ref_rows) // world  # a part of each call
        total += sum(rows)
    assert total == sum(ref_rows)  # every row once, over the ranks


def cfg_failing_worker(rank, world):
    from pint.transport.rows import SplitRows

    def net(x, sigma):
        if rank == 1:
            raise ZeroDivisionError("boom in the network")
        return x * sigma.reshape(-1, 1)

    return SplitRows(net)(torch.ones(4, 3), torch.ones(4))


def test_split_rows_a_raising_rank_is_named_by_the_others(tmp_path):
    results = spawn(cfg_failing_worker, 2, tmp_path, wait=60)
    assert results[1]["error"] == "ZeroDivisionError", results[1]
    assert results[0]["error"] == "RankFailed" and "rank 1" in results[0]["message"], results[0]
