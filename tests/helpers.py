"""Helpers shared by more than one test module (``from helpers import ...``; conftest.py puts
this directory on ``sys.path``). Test modules import from here, never from each other; shared
fixtures live in conftest.py."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pint import problems

F64 = torch.float64


# -- ODEs ------------------------------------------------------------------------------------
def decay(t, y):
    """``y' = -(1 + t) y``: exact solution ``y0 exp(-(t + t²/2))`` from ``t = 0``."""
    return -y * (1 + t)


def lotka(device="cpu", dtype=F64, slices=16):
    """Lotka-Volterra on ``[0, 4]``: the problem, its ``y0`` and ``slices + 1`` times."""
    p = problems.lotka_volterra(t1=4.0)
    return p, p.y0.to(device, dtype), p.times(slices + 1, dtype=dtype, device=device)


# -- diffusion -------------------------------------------------------------------------------
class ToyDenoiser:
    """A nonlinear, conditioned denoiser on small images (deterministic weights)."""

    def __init__(self, dtype=torch.float32, device="cpu"):
        g = torch.Generator().manual_seed(0)
        self.w = (torch.randn(3, 3, generator=g) * 0.5).to(device, dtype)

    def __call__(self, x, sigma, cond=None):
        s = sigma.reshape(-1, 1, 1, 1)
        mixed = torch.einsum("bchw,cd->bdhw", x, self.w)
        out = x / (1 + s**2) + 0.5 * torch.tanh(mixed / (1 + s))
        return out if cond is None else out + cond.reshape(-1, 1, 1, 1)


def karras(n, device="cpu", dtype=torch.float32, sigma_min=0.02, sigma_max=20.0, rho=7.0):
    """Karras et al.'s ``n`` noise levels, then 0 (as k-diffusion's ``get_sigmas_karras``)."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(device, dtype)


def ddim(cls: Any = None, **config: Any) -> Any:
    """Stable Diffusion's DDIM scheduler (``cls``: ``DDIMScheduler`` or a subclass such as
    ``DDIMParallelScheduler``), no clipping, ``set_alpha_to_one=False``; ``config`` overrides."""
    from diffusers import DDIMScheduler

    from pint_diffusion.testing import SD_BETAS

    cfg = dict(SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return (cls or DDIMScheduler)(**{**cfg, **config})


def euler(**config: Any) -> Any:
    """Stable Diffusion's Euler (discrete) scheduler; ``config`` overrides."""
    from diffusers import EulerDiscreteScheduler

    from pint_diffusion.testing import SD_BETAS

    return EulerDiscreteScheduler(**{**SD_BETAS, "steps_offset": 1, **config})


def conditioned_toy(samples: int = 3, steps: int = 30):
    """A nonlinear, conditioned denoiser on small images (``model(x, sigma, cond)``), its
    inputs ``x`` (``samples`` of them), a schedule of ``steps`` steps and the ``extra_args``."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 3, generator=g) * 0.5

    def denoiser(x, sigma, cond):
        mixed = torch.einsum("bchw,cd->bdhw", x, w)
        s = sigma.reshape(-1, 1, 1, 1)
        return x / (1 + s**2) + 0.5 * torch.tanh(mixed / (1 + s)) + cond.reshape(-1, 1, 1, 1)

    sigmas = torch.cat([torch.linspace(20.0, 0.05, steps), torch.zeros(1)])
    x = torch.randn(samples, 3, 6, 6, generator=g) * 20.0
    return denoiser, x, sigmas, {"cond": torch.linspace(-0.5, 0.5, samples)}


# -- several processes of a torch.distributed group (start method "spawn") ------------------
def _entry(worker, rank, world, store, out, backend, args):
    torch.set_num_threads(1)
    dist.init_process_group(backend, init_method=f"file://{store}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=60))
    if backend == "nccl":
        torch.cuda.set_device(rank)
    start = time.monotonic()
    try:
        result = {"value": worker(rank, world, *args)}
    except Exception as error:  # reported to the test
        result = {"error": type(error).__name__, "message": str(error)}
    result["elapsed"] = time.monotonic() - start
    result["ended_at"] = time.time()
    torch.save(result, out / f"{rank}.pt")
    os._exit(0)  # exit at once (a failed group may block a clean shutdown)


def spawn(worker, world, tmp_path, *args, backend="gloo", wait=60.0, may_hang=()):
    """Run ``worker(rank, world, *args)`` on ``world`` processes; their results by rank.
    The ranks in ``may_hang`` are killed as soon as all the others have finished."""
    out = tmp_path / f"out{time.monotonic_ns()}"
    out.mkdir()
    context = mp.get_context("spawn")
    procs = [context.Process(target=_entry, args=(worker, rank, world, out / "store", out,
                                                  backend, args)) for rank in range(world)]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + wait
    for rank, proc in enumerate(procs):
        if rank not in may_hang:
            proc.join(max(deadline - time.monotonic(), 0.1))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()
    results = {}
    for rank in range(world):
        path = out / f"{rank}.pt"
        results[rank] = torch.load(path, weights_only=False) if path.exists() else None
    return results


def values(results):
    for rank, result in results.items():
        assert result is not None and "error" not in result, f"rank {rank}: {result}"
    return [result["value"] for result in results.values()]


def refused(results, match):
    """Assert that every rank raised a ValueError whose message matches ``match``."""
    import re

    for rank, result in results.items():
        assert result is not None and result.get("error") == "ValueError", (rank, result)
        assert re.search(match, result["message"]), (rank, result["message"])
