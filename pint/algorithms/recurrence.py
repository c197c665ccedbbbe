"""The first-order linear recurrence ``d_{j+1} = a_j d_j + c_j`` (``d_0 = 0``) that every
Picard-family update solves along its window (:mod:`pint.algorithms.picard`).

Two ways, the same result to rounding:

- :func:`sequential`: ``W`` steps of three elementwise operations, the least arithmetic, but
  ``3 W`` kernel launches: on a GPU at large ``W`` the device waits on the host
  (``benchmarks/results/gpu_*``).
- :func:`parallel`: a Hillis-Steele scan of the affine maps ``d -> a_j d + c_j`` (composition
  ``(a2, c2) o (a1, c1) = (a2 a1, a2 c1 + c2)``), ``ceil(log2 W)`` rounds of whole-window
  operations: ``W log W`` arithmetic in a few dozen launches.

:func:`solve` picks the parallel scan on accelerators, where launches cost and arithmetic is
cheap, and the sequential loop on the CPU, where the opposite holds.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["parallel", "sequential", "solve"]


def sequential(a: Tensor, c: Tensor) -> Tensor:
    """``d_1 .. d_W`` of ``d_{j+1} = a_j d_j + c_j`` from ``d_0 = 0``, one step at a time.

    Args:
        a: the factors, ``(W, ...)``, broadcasting against ``c``'s entries.
        c: the increments, ``(W, ...)``.
    """
    if len(c) == 0:
        return c.clone()
    d, out = c[0], [c[0]]
    for j in range(1, len(c)):
        d = a[j] * d + c[j]
        out.append(d)
    return torch.stack(out)


def parallel(a: Tensor, c: Tensor) -> Tensor:
    """:func:`sequential` by a parallel (Hillis-Steele) scan: after the round with shift
    ``s``, entry ``j`` holds the composition of the maps ``j - 2s + 1 .. j``."""
    out, factor = c, a.expand(len(c), *a.shape[1:])
    shift = 1
    while shift < len(c):  # out of place: autograd differentiates through every round
        out = torch.cat([out[:shift], factor[shift:] * out[:-shift] + out[shift:]])
        factor = torch.cat([factor[:shift], factor[shift:] * factor[:-shift]])
        shift *= 2
    return out.clone() if out is c else out


def solve(a: Tensor, c: Tensor) -> Tensor:
    """:func:`parallel` off the CPU, :func:`sequential` on it."""
    return sequential(a, c) if c.device.type == "cpu" else parallel(a, c)
