"""Run a test's worker on several processes of a ``torch.distributed`` group (start method
"spawn"), each with one torch thread, and collect what each returned or raised."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


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
