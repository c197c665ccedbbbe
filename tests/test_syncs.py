"""Few host-device synchronisations: an algorithm reads values back once per iteration (its
residual, its decision), never once per round of model calls: the engine's finiteness checks are
read back with the residual, and ``OnSchedule`` finds its rows' grid positions from host indices.

On CUDA the count is CUDA's own (``torch.cuda.set_sync_debug_mode``: every blocking read-back or
copy). On the CPU nothing synchronises, so the same tests count what would: every read of a
tensor's values into Python (``.item()``, ``bool(t)``, ``float(t)``, ``nonzero``, ``tolist``),
host tensors included, so the CPU count is an upper bound. Before the engine deferred its
finiteness checks, the serial sampler made 313 such reads over 60 steps here (now 14).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from devices import DEVICES
from torch.utils._python_dispatch import TorchDispatchMode

import pint
from pint_diffusion import sample_picard, sample_quasi_newton, sample_serial, sample_srds

READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default}
STEPS = 60


class _Reads(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func in READS
        return func(*args, **(kwargs or {}))


@contextmanager
def syncs(device: str) -> Iterator[list[int]]:
    """Counts the synchronisations (CUDA) or the value reads (CPU) inside the block."""
    count = [0]
    if device == "cuda":
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield count
            finally:
                torch.cuda.set_sync_debug_mode(0)
        count[0] = sum("synchroniz" in str(w.message) for w in seen)
    else:
        tolist = torch.Tensor.tolist
        lists = [0]

        def counted(self, *args, **kwargs):
            lists[0] += 1
            return tolist(self, *args, **kwargs)

        torch.Tensor.tolist = counted
        try:
            with _Reads() as reads:
                yield count
        finally:
            torch.Tensor.tolist = tolist
        count[0] = reads.count + lists[0]


def gaussian_denoiser(x, sigma, **_):
    """The exact denoiser of N(0, 0.5^2) data: no read-back of its own."""
    s = torch.as_tensor(sigma, device=x.device).reshape(-1, *[1] * (x.ndim - 1))
    return x * 0.25 / (s**2 + 0.25)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sampler", [sample_serial, sample_srds, sample_picard,
                                     sample_quasi_newton])
def test_samplers_read_back_per_iteration_not_per_round(device, sampler):
    """Serial: 60 rounds and no iteration; SRDS: 21 rounds in 2 iterations here. Every round
    used to read back several times (serial: 313 reads in all, SRDS 599)."""
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)).to(device) * 80
    sigmas = torch.linspace(80, 0.01, STEPS + 1, device=device)
    sampler(gaussian_denoiser, x, sigmas, disable=True)  # warm-up: lazy initialisation
    with syncs(device) as count:
        _, info = sampler(gaussian_denoiser, x, sigmas, disable=True, return_info=True)
    assert count[0] <= 12 * info.iterations + 24, (count[0], info.iterations,
                                                    info.sequential_nfe)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pipelined", [True, False])
def test_parareal_reads_back_per_iteration_not_per_round(device, pipelined):
    y0 = torch.ones(4, 3, dtype=torch.float64, device=device)
    t = torch.linspace(0, 2, 9, dtype=torch.float64, device=device)
    with syncs(device) as count:
        sol = pint.parareal(lambda t, y, index: -y, y0, t, coarse=pint.Euler(1),
                            fine=pint.RK4(8), tol=1e-10, pipelined=pipelined, independent=True)
    assert sol.stats.sequential_nfe > 4 * sol.iterations
    assert count[0] <= 10 * sol.iterations + 12, (count[0], sol.iterations)
