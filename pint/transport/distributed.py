"""The points of a solve spread over the ranks of a ``torch.distributed`` process group.

Every rank owns a contiguous range of slices ``lo..hi-1`` (so the boundary states ``lo..hi``)
and runs the propagations of its slices locally, batched in one :class:`pint.engine.Engine`.
Boundary ``lo`` of every iteration comes from the previous rank and boundary ``hi`` goes to the
next one, with point-to-point messages (``isend``/``irecv``); a rank works on an iteration as
soon as its initial state arrives, so iterations flow through the ranks like a pipeline. The
convergence test is one ``all_reduce`` per iteration, issued asynchronously, so no rank waits
for it while it has work. Messages carry the sender's depth, so the depth of the whole solve
is a Lamport clock of evaluation rounds (messages count as free).

This module moves data; it contains no algorithm. :func:`pint.distributed.parareal` is the
entry point.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
import zlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["Distributed", "DistributedError", "slice_ranges"]

_TAG = 0x5049  # "PI": the tag of pint's boundary messages


class DistributedError(RuntimeError):
    """A rank died, a message or the convergence test timed out, or a transfer failed.

    After this error the process group is in an undefined state (messages may be in flight):
    destroy it (``torch.distributed.destroy_process_group()``) or end the process.
    """


def slice_ranges(n_slices: int, world_size: int) -> list[tuple[int, int]]:
    """The slices ``[lo, hi)`` each rank owns: contiguous and near-equal in number.

    Example:
        >>> slice_ranges(10, 4)
        [(0, 2), (2, 5), (5, 8), (8, 10)]
    """
    if world_size > n_slices:
        raise ValueError(
            f"{world_size} ranks but only {n_slices} time slices: every rank needs at least "
            f"one slice; use at most {n_slices} processes or more slices"
        )
    bounds = [round(r * n_slices / world_size) for r in range(world_size + 1)]
    return list(itertools.pairwise(bounds))


def _crc(value: object) -> int:
    data = value if isinstance(value, bytes) else repr(value).encode()
    return zlib.crc32(data)


class Distributed:
    """Slices over the ranks of ``group`` (``None``: the default group).

    Args:
        group: the process group; backend ``gloo`` (CPU tensors; CUDA states are staged
            through the CPU) or ``nccl`` (states on each rank's GPU).
        timeout: seconds (or a ``timedelta``) a rank may wait, idle, for a message or the
            convergence test before it fails with :class:`DistributedError`.
        device: where the states live (decides NCCL's device); default: the current CUDA
            device with NCCL.
    """

    distributed = True

    def __init__(self, group: dist.ProcessGroup | None = None,
                 timeout: float | timedelta = 300.0, device: torch.device | None = None) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "pint.distributed needs an initialized process group: call "
                "torch.distributed.init_process_group() first (e.g. in a script run by torchrun)"
            )
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        if not seconds > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self.group, self.timeout = group, seconds
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        self.last = self.world - 1
        if dist.get_backend(group) == "nccl":
            self.device = device if device is not None and device.type == "cuda" else (
                torch.device("cuda", torch.cuda.current_device()))
        else:
            self.device = torch.device("cpu")
        self.ranges: list[tuple[int, int]] = []
        self.sends: list[Any] = []
        self.posted = 0  # receives posted from the previous rank
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.waiting: queue.Queue[Any] = queue.Queue()
        self.waiter: threading.Thread | None = None
        self.shape: tuple[int, ...] = ()
        self.dtype = torch.float64

    def __repr__(self) -> str:
        return f"Distributed(rank={self.rank}, world={self.world})"

    # -- set-up ------------------------------------------------------------------------
    def agree(self, y0: Any, t: Any, options: tuple[Any, ...], error: Exception | None) -> None:
        """One collective up front: every rank learns whether all ranks accept the same inputs."""
        fields = ["the local checks", "the number of slices", "y0's shape", "the dtype", "t",
                  "the options (tol, max_iters, norm, independent, stop)"]
        if error is None:
            signature = [1, len(t) - 1, _crc(tuple(y0.shape)), _crc(str(y0.dtype)),
                         _crc(t.detach().cpu().numpy().tobytes()), _crc(options)]
        else:
            signature = [0] * len(fields)
        mine = torch.tensor(signature, dtype=torch.int64, device=self.device)
        gathered = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(gathered, mine, group=self.group)
        table = torch.stack(gathered).cpu()
        if error is not None:
            raise error
        refused = (table[:, 0] == 0).nonzero().flatten().tolist()
        if refused:
            raise ValueError(f"pint.distributed: rank(s) {refused} refused their inputs "
                             f"(see the error on those ranks); every rank must pass valid inputs")
        for i, name in enumerate(fields[1:], start=1):
            differ = (table[:, i] != table[0, i]).nonzero().flatten().tolist()
            if differ:
                detail = f": {tuple(y0.shape)} on rank {self.rank}" if i == 2 else ""
                raise ValueError(
                    f"pint.distributed: {name} differs between rank 0 and rank(s) "
                    f"{differ}{detail}; every rank must pass the same y0 shape, dtype, t and "
                    f"options"
                )
        self.ranges = slice_ranges(len(t) - 1, self.world)
        self.dtype = y0.dtype

    def owned(self, n_slices: int) -> tuple[int, int]:
        """This rank's boundaries ``lo..hi``."""
        if not self.ranges:
            self.ranges = slice_ranges(n_slices, self.world)
        return self.ranges[self.rank]

    def begin(self, solver: Any) -> None:
        """Start the thread that waits for boundaries from the previous rank."""
        self.shape = tuple(solver.it.result.shape[1:])
        if self.rank > 0:
            # torch.distributed cannot poll a pending receive: a thread waits for it
            self.waiter = threading.Thread(target=self._wait_loop, daemon=True,
                                           name=f"pint-recv-{self.rank}")
            self.waiter.start()
            self._post_receive()

    # -- boundaries ----------------------------------------------------------------------
    def _peer(self, rank: int) -> int:
        return rank if self.group is None else dist.get_global_rank(self.group, rank)

    def send(self, solver: Any, k: int, value: Tensor, clock: int) -> None:
        """Boundary ``hi`` of iteration ``k`` to the next rank, with its depth."""
        payload = value.to(self.device).contiguous()
        stamp = torch.tensor([k, clock], dtype=torch.int64, device=self.device)
        dst = self._peer(self.rank + 1)
        hi = self.ranges[self.rank][1]
        for tensor in (payload, stamp):
            work = self._comm(dist.isend, tensor, dst, what=f"boundary {hi} to rank "
                              f"{self.rank + 1}", tag=_TAG)
            self.sends.append((work, tensor))

    def _post_receive(self) -> None:
        value = torch.empty(self.shape, dtype=self.dtype, device=self.device)
        stamp = torch.empty(2, dtype=torch.int64, device=self.device)
        src = self._peer(self.rank - 1)
        lo = self.ranges[self.rank][0]
        works = [self._comm(dist.irecv, tensor, src, what=f"boundary {lo} from rank "
                            f"{self.rank - 1}", tag=_TAG) for tensor in (value, stamp)]
        self.posted += 1
        self.waiting.put((works, value, stamp))

    def _wait_loop(self) -> None:
        """The receiving thread: waits for each posted receive in turn. On a GPU (NCCL),
        ``wait`` only orders the current stream after the transfer: the thread waits on a
        stream of its own, so the main thread's computation does not wait with it."""
        cuda = self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if cuda else None
        while (item := self.waiting.get()) is not None:
            works, value, stamp = item
            try:
                with torch.cuda.stream(stream) if cuda else contextlib.nullcontext():
                    for work in works:
                        work.wait()
                    if stream is not None:
                        stream.synchronize()
            except Exception as error:  # handed to the main thread
                self.inbox.put(error)
                return
            self.inbox.put((value, stamp))

    def _received(self, solver: Any, item: Any) -> None:
        lo = self.ranges[self.rank][0]
        if isinstance(item, Exception):
            raise DistributedError(
                f"pint.distributed: rank {self.rank} lost its link to rank {self.rank - 1} "
                f"while waiting for boundary {lo}: {item}"
            ) from item
        value, stamp = item
        k, clock = (int(v) for v in stamp.tolist())
        if solver.it.done:
            return
        if k < min(lo, solver.it.max_iters):
            self._post_receive()
        solver.receive(k, value.to(solver.t.device), clock)

    # -- the convergence test: one all_reduce per iteration ---------------------------------
    def residuals(self, solver: Any, k: int, change: Tensor) -> Any:
        """Reduce this rank's share of the change of iteration ``k`` over all ranks: the
        largest entry per problem (default norm), or the whole change (a custom norm needs it)."""
        it = solver.it
        members = it.members(change.device)
        batch = it.batch
        if it.norm is None:
            value = change.new_zeros(batch, dtype=torch.float64)
            value[members] = change.abs().transpose(0, 1).flatten(1).amax(1).double()
            op = dist.ReduceOp.MAX
        else:
            lo, hi = self.ranges[self.rank]
            own = 1 if lo > 0 else 0
            value = change.new_zeros((solver.n + 1, batch, *change.shape[2:]))
            value[lo + own:hi + 1, members] = change
            op = dist.ReduceOp.SUM
        value = value.to(self.device)
        work = self._comm(dist.all_reduce, value, what=f"the convergence test of iteration {k}",
                          op=op, async_op=True)
        return work, value

    def _decide(self, solver: Any) -> None:
        k, (work, value) = solver.pending
        try:
            work.wait()
        except Exception as error:
            raise DistributedError(
                f"pint.distributed: the convergence test of iteration {k} failed on rank "
                f"{self.rank} (a rank died or timed out): {error}"
            ) from error
        it = solver.it
        members = it.members(torch.device("cpu"))
        if it.norm is None:
            residual = value.cpu()[members]
            if not bool(torch.isfinite(residual).all()):
                raise ValueError(f"the residual norm must return finite values >= 0, got "
                                 f"{residual.tolist()}")
        else:
            residual = it.residual(value.to(solver.t.device)[:, members.to(solver.t.device)])
        solver.decide(k, residual)

    # -- events --------------------------------------------------------------------------
    def poll(self, solver: Any) -> bool:
        """Handle the boundaries that arrived and a finished convergence test."""
        handled = False
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
            self._received(solver, item)
            handled = True
        if solver.pending is not None and solver.pending[1][0].is_completed():
            self._decide(solver)
            handled = True
        return handled

    def wait(self, solver: Any) -> None:
        """Nothing to compute: wait for a message or the convergence test, up to the timeout."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if solver.pending is not None and solver.pending[1][0].is_completed():
                return
            try:
                item = self.inbox.get(timeout=0.001 if solver.pending is not None else 0.05)
            except queue.Empty:
                continue
            self._received(solver, item)
            return
        waits = []
        if self.rank > 0:
            waits.append(f"boundary {self.ranges[self.rank][0]} from rank {self.rank - 1}")
        if solver.pending is not None:
            waits.append(f"the convergence test of iteration {solver.pending[0]}")
        raise DistributedError(
            f"pint.distributed: rank {self.rank} waited {self.timeout:g} s for "
            f"{' or '.join(waits) or 'work'} without an answer: a rank died, hangs or is "
            f"slower than the timeout (raise `timeout`)"
        )

    # -- the end: gather the result, settle the messages -----------------------------------
    def finish(self, solver: Any, result: Tensor, evaluations: dict[str, int],
               depth: int) -> tuple[Tensor, dict[str, int], int]:
        """Gather the result and the counts of all ranks; settle the messages in flight."""
        labels = sorted(solver.labels)
        mine = torch.tensor([len(self.sends) // 2, self.posted,
                             depth if self.rank == self.last else 0,
                             *(evaluations.get(label, 0) for label in labels)],
                            dtype=torch.int64, device=self.device)
        gathered = [torch.empty_like(mine) for _ in range(self.world)]
        self._comm(dist.all_gather, gathered, mine, what="the final statistics")
        stats = torch.stack(gathered).cpu()
        # The result: each rank contributes its own boundaries (lo+1..hi; rank 0 also 0).
        size = max(hi - lo for lo, hi in self.ranges) + 1
        own = result[(1 if self.rank > 0 else 0):]
        padded = own.new_zeros((size, *own.shape[1:]))
        padded[: len(own)] = own
        padded = padded.to(self.device)
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        self._comm(dist.all_gather, parts, padded, what="the result")
        ys = torch.cat([parts[r][: hi - lo + (r == 0)] for r, (lo, hi) in enumerate(self.ranges)])
        self._settle(stats)
        totals = {label: int(stats[:, 3 + i].sum()) for i, label in enumerate(labels)}
        return ys.to(result.device), totals, int(stats[:, 2].max())

    def _settle(self, stats: Tensor) -> None:
        """Receive (and drop) whatever was sent ahead to this rank, and match every receive
        posted downstream with a send."""
        if self.rank > 0:
            while self.posted < int(stats[self.rank - 1, 0]):
                self._post_receive()
            self.waiting.put(None)
        if self.rank < self.last:
            while len(self.sends) // 2 < int(stats[self.rank + 1, 1]):
                self.send(None, -1, torch.zeros(self.shape, dtype=self.dtype), 0)
            deadline = time.monotonic() + self.timeout
            for work, _ in self.sends:
                left = timedelta(seconds=max(deadline - time.monotonic(), 0.001))
                self._comm(work.wait, left, what=f"messages to rank {self.rank + 1}", group=False)
        if self.rank > 0:
            assert self.waiter is not None
            self.waiter.join(self.timeout)
            while not self.inbox.empty():
                item = self.inbox.get()
                if isinstance(item, Exception):
                    raise DistributedError(
                        f"pint.distributed: rank {self.rank} lost its link to rank "
                        f"{self.rank - 1}: {item}") from item
            if self.waiter.is_alive():
                raise DistributedError(f"pint.distributed: rank {self.rank} timed out "
                                       f"settling the messages from rank {self.rank - 1}")

    def _comm(self, call: Callable[..., Any], *args: Any, what: str, group: bool = True,
              **kwargs: Any) -> Any:
        """``call(*args, group=self.group, **kwargs)``, its failure a :class:`DistributedError`."""
        if group:
            kwargs["group"] = self.group
        try:
            return call(*args, **kwargs)
        except Exception as error:
            raise DistributedError(
                f"pint.distributed: rank {self.rank} failed exchanging {what} (a rank died or "
                f"timed out): {error}"
            ) from error
