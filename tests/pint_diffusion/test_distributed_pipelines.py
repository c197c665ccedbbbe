"""The parallel pipelines with ``cfg_group=`` (CFG-parallel through
:class:`pint.transport.rows.SplitRows`) on gloo ranks: every rank gets the single process's
latents (to float32 round-off: the UNet runs on half the rows), alone and combined with a
sampler's ``group=``; a rank whose UNet raises is named by the others; bad inputs are
refused."""

from __future__ import annotations

import time

import pytest
import torch
import torch.distributed as dist
from helpers import spawn, values

pytest.importorskip("diffusers")

from pint_diffusion import SRDS, QuasiNewton
from pint_diffusion.pipelines import ParallelStableDiffusionPipeline

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")

STEPS = 8
CALL = dict(prompt=["a cat", "a red house"], negative_prompt=["dog", ""],
            num_inference_steps=STEPS, guidance_scale=4.0, output_type="latent")


def pipeline(scheduler: str):
    """The tiny SD pipeline (seed 0: the same weights on every rank) as the parallel one, a
    list that records the rows of each UNet call, and the noise (the same on every rank)."""
    from pint_diffusion.testing import LATENT_CHANNELS, sd_schedulers, tiny_sd_pipeline

    pipe = ParallelStableDiffusionPipeline.from_pipe(
        tiny_sd_pipeline(sd_schedulers()[scheduler]()))
    pipe.set_progress_bar_config(disable=True)
    rows: list[int] = []
    pipe.unet.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(len(args[0] if args else kwargs["sample"])),
        with_kwargs=True)
    noise = torch.randn(2, LATENT_CHANNELS, 8, 8, generator=torch.Generator().manual_seed(1))
    return pipe, rows, noise


def equal_worker(rank, world):
    """Each case: the one-process run, the cfg_group run, and the UNet rows each saw. With 4
    ranks, CFG pairs {0, 1}, {2, 3} and quasi-Newton row groups {0, 2}, {1, 3}."""
    if world == 2:
        cases = {  # the default sampler under cfg_group: quasi-Newton, the full window
            "ddim": (QuasiNewton(window=None), None, "default"),
            "dpm2m": (SRDS(blocks=3), SRDS(blocks=3), "default"),
        }
    else:
        pairs = [dist.new_group([0, 1]), dist.new_group([2, 3])]
        shares = [dist.new_group([0, 2]), dist.new_group([1, 3])]
        cases = {"ddim": (QuasiNewton(window=None),
                          QuasiNewton(window=None, group=shares[rank % 2]), pairs[rank // 2])}
    out = {}
    for scheduler, (reference, sampler, group) in cases.items():
        pipe, rows, noise = pipeline(scheduler)
        one = pipe(latents=noise.clone(), sampler=reference, **CALL)
        one_rows = list(rows)
        rows.clear()
        split = pipe(latents=noise.clone(), sampler=sampler, cfg_group=group, **CALL)
        out[scheduler] = (one.images, split.images, one.info.sequential_nfe,
                          split.info.sequential_nfe, one_rows, list(rows))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_cfg_group_equals_one_process(world, tmp_path):
    results = values(spawn(equal_worker, world, tmp_path, wait=300))
    for rank, result in enumerate(results):
        assert set(result) == ({"ddim", "dpm2m"} if world == 2 else {"ddim"})
        for name, (one, split, one_depth, depth, one_rows, rows) in result.items():
            # to round-off, not bit for bit: the tiny UNet on CPU (float32, one thread) is not
            # row-independent of its batch, its output on 2 rows differs from that on 4 by 1-2
            # ulp (3.6e-7 at |out| <= 1.6, measured); after 8 steps the latents differed by
            # 2.2e-7 of max |x| (DDIM and DPM++ 2M, 2 ranks) and 5.7e-7 (4 ranks), with the
            # same depth. 1e-5 relative: a 17x margin; swapped halves would reverse guidance.
            error = (split - one).abs().max() / one.abs().max()
            assert error < 1e-5, (rank, name, error)
            assert depth == one_depth, (rank, name)
            # every UNet call had the rows of guidance (uncond, cond): each rank ran half of them
            assert one_rows and all(n % 4 == 0 for n in one_rows), one_rows
            if world == 2:
                assert rows == [n // 2 for n in one_rows], (rank, name)
            else:  # the window's rows shared over 2 ranks, then the CFG halves over 2
                assert sum(rows) < sum(one_rows) and max(rows) <= max(one_rows) // 2
    assert results[0]["ddim"][1].abs().sum() > 0


def refusal_worker(rank, world):
    """Each case: the exception's type and message, the seconds it took, and the UNet calls
    made before it."""
    pipe, rows, noise = pipeline("ddim")
    calls = {
        "guidance off": dict(sampler=QuasiNewton(window=None), guidance_scale=1.0),
        "auto window": dict(sampler=QuasiNewton(window="auto")),
        "failing rank": dict(sampler=QuasiNewton(window=None)),
    }
    out = {}
    for case, options in calls.items():
        if case == "failing rank" and rank == 1:
            def boom(module, args, kwargs):
                raise ZeroDivisionError("boom in the UNet")

            pipe.unet.register_forward_pre_hook(boom, with_kwargs=True)
        rows.clear()
        start = time.monotonic()
        try:
            pipe(latents=noise.clone(), cfg_group="default", **{**CALL, **options})
            out[case] = (None, "", 0.0, len(rows))
        except Exception as error:
            out[case] = (type(error).__name__, str(error), time.monotonic() - start, len(rows))
    return out


@pytest.mark.slow
def test_cfg_group_refusals_and_a_failing_rank(tmp_path):
    results = values(spawn(refusal_worker, 2, tmp_path, wait=120))
    for result in results:
        kind, message, _, calls = result["guidance off"]
        assert kind == "ValueError" and "cfg_group" in message and "guidance" in message
        assert calls == 0
        kind, message, _, calls = result["auto window"]
        assert kind == "ValueError" and "cfg_group" in message and "'auto'" in message
        assert calls == 0
    kind, message, _, _ = results[1]["failing rank"]
    assert kind == "ZeroDivisionError" and "boom in the UNet" in message
    kind, message, seconds, _ = results[0]["failing rank"]
    assert kind == "RankFailed" and "rank 1" in message, message
    assert seconds < 30  # at the first split call, not the group's 60 s timeout


@pytest.fixture(scope="module")
def sd():
    return pipeline("ddim")


@pytest.mark.parametrize(("group", "error", "match"), [
    ("default", ValueError, "cfg_group needs an initialized process group"),
    ("world", ValueError, "cfg_group must be None, \"default\" or a process group"),
    (2, TypeError, "cfg_group must be None, \"default\" or a torch.distributed process group"),
])
def test_cfg_group_bad_values_are_refused_before_any_unet_call(sd, group, error, match):
    assert not dist.is_initialized()
    pipe, rows, noise = sd
    rows.clear()
    with pytest.raises(error, match=match):
        pipe(latents=noise, cfg_group=group, **CALL)
    assert rows == []


def test_cfg_group_is_refused_on_flux_true_cfg():
    from pint_diffusion.pipelines import ParallelFluxPipeline
    from pint_diffusion.testing import tiny_flux_pipeline

    pipe = ParallelFluxPipeline.from_pipe(tiny_flux_pipeline())
    with pytest.raises(ValueError, match="cfg_group is not supported with FluxCall"):
        pipe("a cat", negative_prompt="dog", true_cfg_scale=2.0, num_inference_steps=2,
             cfg_group="default")
