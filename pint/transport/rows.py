"""A batched call's rows shared out over the ranks of a process group.

:class:`SplitRows` wraps a function of row-batched tensors (a network: ``net(x, sigma,
**conditioning)``, every tensor with the ``R`` rows along its first axis): on each of the
``P`` ranks of a group it calls the function on that rank's contiguous share of the rows and
gathers the outputs, in rank order, on every rank. With batched classifier-free guidance (the
conditional rows, then the unconditional ones) on 2 ranks this is CFG-parallel: one rank
evaluates the conditional half, the other the unconditional half. It is exact (the same
output as the unsplit call, bit for bit when the network computes each row independently of
its batch) and combines with a sampler's own ``group=`` over another group of ranks.

Each call is two collectives over the group: every rank's status (its share ran, or raised),
then the outputs. A rank whose function raises still takes part in the first, so every other
rank raises :class:`pint.distributed.RankFailed` naming it instead of waiting; a rank that dies
breaks the collective (a :class:`pint.distributed.DistributedError`); a rank that hangs is
caught by the process group's own timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .distributed import DistributedError, RankFailed

__all__ = ["SplitRows"]


class SplitRows:
    """``fn`` with its rows shared out over the ranks of ``group`` (``None``: the default
    group) and the outputs gathered on every rank.

    Args:
        fn: a function of tensors batched along their first axis, returning one tensor with
            that many rows.
        group: the process group. Every rank calls the wrapper with the same row count.

    Example (2 ranks: CFG-parallel)::

        net = SplitRows(unet, group)        # each rank: one half of cat([cond, uncond]) rows
        out = net(torch.cat([x, x]), torch.cat([t, t]), context=torch.cat([c, u]))
    """

    def __init__(self, fn: Callable[..., Tensor], group: dist.ProcessGroup | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"SplitRows needs a callable, got {type(fn).__name__}")
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("SplitRows needs an initialized process group: call "
                               "torch.distributed.init_process_group() first")
        self.fn, self.group = fn, group
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)

    def __repr__(self) -> str:
        return f"SplitRows({self.fn!r}, rank={self.rank}, world={self.world})"

    def share(self, rows: int) -> slice:
        """This rank's rows of a call of ``rows`` rows (contiguous, near-equal in number)."""
        return slice(round(self.rank * rows / self.world),
                     round((self.rank + 1) * rows / self.world))

    def __call__(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """``fn(x, *args, **kwargs)``, each rank computing its share of the rows."""
        rows = x.shape[0]
        share = self.share(rows)
        out, error = None, None
        try:
            out = self.fn(*_rows((x, *args), rows, share), **_rows(kwargs, rows, share))
            if not isinstance(out, Tensor) or out.shape[0] != share.stop - share.start:
                raise ValueError(f"SplitRows: fn must return a tensor with one row per input "
                                 f"row ({share.stop - share.start}), got "
                                 f"{getattr(out, 'shape', type(out).__name__)}")
        except Exception as caught:
            error = caught
        status = torch.tensor([int(error is not None), rows], dtype=torch.int64,
                              device=x.device if dist.get_backend(self.group) == "nccl"
                              else "cpu")
        table = [torch.empty_like(status) for _ in range(self.world)]
        self._collective(dist.all_gather, table, status)
        if error is not None:
            raise error
        failed = [r for r, entry in enumerate(table) if int(entry[0])]
        if failed:
            raise RankFailed(failed[0], "an exception in the wrapped function", self.rank)
        counts = {int(entry[1]) for entry in table}
        if counts != {rows}:
            raise ValueError(f"SplitRows: the ranks called with different row counts "
                             f"{sorted(counts)}; every rank must pass the same rows")
        assert out is not None
        size = max(round((r + 1) * rows / self.world) - round(r * rows / self.world)
                   for r in range(self.world))
        padded = out.new_zeros((size, *out.shape[1:]))
        padded[: len(out)] = out
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        self._collective(dist.all_gather, parts, padded.contiguous())
        return torch.cat([part[: round((r + 1) * rows / self.world) - round(r * rows / self.world)]
                          for r, part in enumerate(parts)])

    def _collective(self, call: Callable[..., Any], *args: Any) -> None:
        try:
            call(*args, group=self.group)
        except Exception as error:
            raise DistributedError(f"SplitRows: rank {self.rank} failed in a collective (a rank "
                                   f"died or timed out): {error}") from error


def _rows(value: Any, rows: int, share: slice) -> Any:
    """``value`` with every tensor of ``rows`` rows cut to ``share`` (through tuples, lists and
    dicts); anything else as it is."""
    if isinstance(value, Tensor):
        return value[share] if value.ndim > 0 and value.shape[0] == rows else value
    if isinstance(value, dict):
        return {key: _rows(item, rows, share) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_rows(item, rows, share) for item in value)
    return value
