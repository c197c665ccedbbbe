"""Parareal with the time slices spread over processes and GPUs (``torch.distributed``).

Every rank of a process group owns a contiguous range of slices ``lo..hi-1`` (so the
boundary states ``lo..hi``) and runs the coarse and fine propagations of its slices
locally, batched in one :class:`pint._rounds.Rounds` engine. Boundary ``lo`` of every
iteration comes from the previous rank, boundary ``hi`` goes to the next one, with
point-to-point messages (``isend``/``irecv``); a rank starts the propagations of an
iteration as soon as its initial state arrives, so iterations flow through the ranks
like a pipeline. The convergence test is one ``all_reduce`` per iteration, issued
asynchronously, so no rank waits for it while it has work. The iterates are those of
:func:`pint.parareal`: the same propagations of the same states combined in the same
order, so the exactness guarantees hold on any number of ranks.

Launch with ``torchrun`` (see the docs page *Distributed Parareal*)::

    torch.distributed.init_process_group("gloo")  # "nccl" on GPUs
    sol = pint.distributed.parareal(f, y0, t, coarse=pint.RK4(1), fine=pint.RK4(100))
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

from ._rounds import NonFiniteError, Rounds, Task, VectorField
from .parareal import Norm, _check_inputs, _vmapped, boundary_update, predicted_depth
from .propagators import Propagator, slice_depths
from .solution import Solution, Stats

__all__ = ["DistributedError", "parareal", "slice_ranges"]

_TAG = 0x5049  # "PI": the tag of pint's boundary messages
_STATS = 5  # sent, posted, coarse rows, fine rows, depth


class DistributedError(RuntimeError):
    """A rank died, a message or the convergence test timed out, or a transfer failed.

    After this error the process group is in an undefined state (messages may be in
    flight): destroy it (``torch.distributed.destroy_process_group()``) or end the process.
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


def parareal(
    f: Callable[..., Tensor],
    y0: Tensor,
    t: Tensor,
    *,
    coarse: Propagator,
    fine: Propagator,
    tol: float = 1e-6,
    max_iters: int | None = None,
    norm: Norm | None = None,
    vectorized: bool = False,
    independent: bool = False,
    group: dist.ProcessGroup | None = None,
    timeout: float | timedelta = 300.0,
) -> Solution:
    """:func:`pint.parareal` with the time slices spread over the ranks of ``group``.

    Every rank of ``group`` calls this function with the same arguments (``f``, the
    propagators and the norm on every rank; ``y0`` and ``t`` of equal shape and dtype,
    ``t`` of equal values; the initial state is rank 0's ``y0``). Rank ``r`` owns the
    slices ``slice_ranges(N, world_size)[r]``; iterations are pipelined across the ranks
    (the schedule of ``pint.parareal(pipelined=True)``).

    Args:
        f, y0, t, coarse, fine, tol, max_iters, vectorized, independent: as in
            :func:`pint.parareal`. With ``independent=True`` each problem stops when it
            converges, exactly as in :func:`pint.parareal`.
        norm: as in :func:`pint.parareal`. The default (max) norm costs one scalar per
            problem in the per-iteration ``all_reduce``; a custom norm needs the change of
            all boundary states on every rank, so that ``all_reduce`` carries
            ``(N + 1) * y0.numel()`` values.
        group: the process group (default: the default group, from
            ``torch.distributed.init_process_group``). Backend ``gloo`` (CPU tensors; CUDA
            states are staged through the CPU) or ``nccl`` (states on each rank's GPU).
        timeout: seconds (or a ``timedelta``) a rank may wait, idle, for a message or the
            convergence test before it gives up with :class:`DistributedError`. A rank
            that dies makes its neighbours fail at once (the connection closes); the
            timeout bounds the rest. Set it above the longest stretch of computation a
            rank may wait on (e.g. the coarse sweep of all previous ranks).

    Returns:
        On every rank, the same :class:`pint.Solution` as :func:`pint.parareal` (``ys``
        equal to round-off, bit-equal when ``f`` computes each row independently of the
        batch it is in), with ``iterates=None``. ``stats`` counts the evaluations of
        all ranks; ``sequential_nfe`` is the depth of this run, a Lamport clock of
        evaluation rounds across the ranks (messages count as free);
        ``wall_time`` is this rank's.

    Raises:
        ValueError: invalid arguments on any rank (every rank raises), arguments that
            differ between ranks (shapes, dtypes, ``t``, options), or more ranks than slices.
        DistributedError: a rank died or did not answer within ``timeout``.
        pint.NonFiniteError: as in :func:`pint.parareal`, on the rank where it happened;
            the others fail with :class:`DistributedError` when that process exits (or
            after ``timeout``).

    Example (run with ``torchrun --nproc-per-node 2 script.py``)::

        import torch, torch.distributed as dist, pint, pint.distributed
        dist.init_process_group("gloo")
        t = torch.linspace(0, 1, 9, dtype=torch.float64)
        sol = pint.distributed.parareal(lambda t, y: -y, torch.ones(1, dtype=torch.float64),
                                        t, coarse=pint.Euler(1), fine=pint.RK4(20))
        dist.destroy_process_group()
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "pint.distributed.parareal needs an initialized process group: call "
            "torch.distributed.init_process_group() first (e.g. in a script run by torchrun)"
        )
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
    if not seconds > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    device = _comm_device(group, y0)
    error: Exception | None = None
    try:
        max_iters = _check_inputs(y0, t, coarse, fine, tol, max_iters, norm, independent)
    except (TypeError, ValueError) as caught:
        error = caught
    _agree(group, rank, world, device, y0, t, tol, max_iters, norm, independent, error)
    ranges = slice_ranges(len(t) - 1, world)
    solver = _Rank(
        f=f if vectorized else _vmapped(f), y0=y0 if independent else y0.unsqueeze(0), t=t,
        coarse=coarse, fine=fine, tol=float(tol), max_iters=min(max_iters, len(t) - 1),  # type: ignore[arg-type]
        norm=norm, squeeze=not independent, group=group, rank=rank, ranges=ranges,
        device=device, timeout=seconds,
    )
    return solver.run()


def _comm_device(group: dist.ProcessGroup | None, y0: object) -> torch.device:
    """Where messages live: the states' GPU with NCCL, the CPU otherwise."""
    if dist.get_backend(group) == "nccl":
        if isinstance(y0, Tensor) and y0.is_cuda:
            return y0.device
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _crc(value: object) -> int:
    data = value if isinstance(value, bytes) else repr(value).encode()
    return zlib.crc32(data)


def _agree(
    group: dist.ProcessGroup | None, rank: int, world: int, device: torch.device, y0: Any,
    t: Any, tol: float, max_iters: Any, norm: Any, independent: bool, error: Exception | None,
) -> None:
    """One collective up front: every rank learns whether all ranks accept the same inputs."""
    fields = ["the local checks", "the number of slices", "y0's shape", "the dtype",
              "t", "tol, max_iters, norm or independent"]
    if error is None:
        signature = [1, len(t) - 1, _crc(tuple(y0.shape)), _crc(str(y0.dtype)),
                     _crc(t.detach().cpu().numpy().tobytes()),
                     _crc((float(tol), max_iters, norm is None, independent))]
    else:
        signature = [0] * len(fields)
    mine = torch.tensor(signature, dtype=torch.int64, device=device)
    gathered = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(gathered, mine, group=group)
    table = torch.stack(gathered).cpu()
    if error is not None:
        raise error
    refused = (table[:, 0] == 0).nonzero().flatten().tolist()
    if refused:
        raise ValueError(f"pint.distributed.parareal: rank(s) {refused} refused their inputs "
                         f"(see the error on those ranks); every rank must pass valid inputs")
    for i, name in enumerate(fields[1:], start=1):
        differ = (table[:, i] != table[0, i]).nonzero().flatten().tolist()
        if differ:
            detail = f": {tuple(y0.shape)} on rank {rank}" if i == 2 else ""
            raise ValueError(
                f"pint.distributed.parareal: {name} differs between rank 0 and rank(s) "
                f"{differ}{detail}; every rank must pass the same y0 shape, dtype, t and options"
            )
    if world > len(t) - 1:
        slice_ranges(len(t) - 1, world)  # raises the ValueError


class _Rank:
    """One rank's share of a distributed Parareal solve, driven by its events: the
    completion of a local propagation, a boundary state from the previous rank, and the
    result of an iteration's convergence test."""

    def __init__(
        self, *, f: VectorField, y0: Tensor, t: Tensor, coarse: Propagator, fine: Propagator,
        tol: float, max_iters: int, norm: Norm | None, squeeze: bool,
        group: dist.ProcessGroup | None, rank: int, ranges: list[tuple[int, int]],
        device: torch.device, timeout: float,
    ) -> None:
        self.t, self.coarse, self.fine, self.n = t, coarse, fine, len(t) - 1
        self.tol, self.max_iters, self.norm, self.squeeze = tol, max_iters, norm, squeeze
        self.group, self.rank, self.ranges, self.device = group, rank, ranges, device
        self.timeout = timeout
        self.lo, self.hi = ranges[rank]
        self.last = len(ranges) - 1
        self.batch = y0.shape[0]
        self.rounds = Rounds(f, with_index=not squeeze)
        self.active: Tensor | None = None  # problems still iterating; None: all
        local = y0.unsqueeze(0).expand(self.hi - self.lo + 1, *y0.shape)
        self.tables: dict[int, Tensor] = {0: local.clone()}  # k -> local boundaries lo..hi
        self.result = local.clone()
        self.coarse_out: dict[tuple[int, int], Tensor] = {}
        self.fine_out: dict[tuple[int, int], Tensor] = {}
        self.formed: set[tuple[int, int]] = set()
        self.complete: set[int] = set()  # iterations whose local boundaries are all formed
        self.formed_at: dict[int, int] = {}  # k -> clock when boundary hi was formed
        self.decided = 0  # the last iteration whose convergence test is known
        self.pending: tuple[int, Any, Tensor] | None = None  # the test in flight
        self.sample_iterations = torch.zeros(self.batch, dtype=torch.long)
        self.residuals: list[float] = []
        self.converged = False
        self.finished = False
        self.sends: list[Any] = []
        self.posted = 0  # receives posted from the previous rank
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.waiting: queue.Queue[Any] = queue.Queue()
        self.waiter: threading.Thread | None = None

    # -- running ---------------------------------------------------------------------
    def run(self) -> Solution:
        start = time.perf_counter()
        if self.rank > 0:
            # torch.distributed cannot poll a pending receive: a thread waits for it
            self.waiter = threading.Thread(target=self._wait_loop, daemon=True,
                                           name=f"pint-recv-{self.rank}")
            self.waiter.start()
            self._post_receive()
        try:
            if self.rank == 0:
                self._form(0, 0, self.tables[0][0])
            while not self.finished:
                if self._poll():
                    continue
                if self.rounds.live:
                    self.rounds.step()
                else:
                    self._idle()
        finally:
            self.rounds.close()
        stats, ys = self._finish()
        iterations = int(self.sample_iterations.max())
        c_depth, f_depth = slice_depths(self.coarse, self.t), slice_depths(self.fine, self.t)
        predicted = None
        if c_depth is not None and f_depth is not None:
            predicted = predicted_depth(self.n, iterations, c_depth, f_depth, True)
        return Solution(
            ys=ys[:, 0] if self.squeeze else ys,
            iterations=iterations,
            converged=self.converged,
            residuals=self.residuals,
            stats=Stats(
                nfe=int(stats[:, 2].sum() + stats[:, 3].sum()),
                sequential_nfe=int(stats[:, 4].max()),
                coarse_nfe=int(stats[:, 2].sum()),
                fine_nfe=int(stats[:, 3].sum()),
                wall_time=time.perf_counter() - start,
                predicted_sequential_nfe=predicted,
            ),
            sample_iterations=None if self.squeeze else self.sample_iterations,
        )

    def _poll(self) -> bool:
        """Handle the events that have happened; ``True`` if there were any."""
        handled = False
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
            self._received(item)
            handled = True
        if self.pending is not None and self.pending[1].is_completed():
            self._decide()
            handled = True
        return handled

    def _idle(self) -> None:
        """Nothing to compute: wait for a message or the convergence test, up to the timeout."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.pending is not None and self.pending[1].is_completed():
                return
            try:
                item = self.inbox.get(timeout=0.001 if self.pending is not None else 0.05)
            except queue.Empty:
                continue
            self._received(item)
            return
        waits = []
        if self.rank > 0:
            waits.append(f"boundary {self.lo} from rank {self.rank - 1}")
        if self.pending is not None:
            waits.append(f"the convergence test of iteration {self.pending[0]}")
        raise DistributedError(
            f"pint.distributed: rank {self.rank} waited {self.timeout:g} s for "
            f"{' or '.join(waits) or 'work'} without an answer: a rank died, hangs or is "
            f"slower than the timeout (raise `timeout`)"
        )

    # -- messages --------------------------------------------------------------------
    def _peer(self, rank: int) -> int:
        return rank if self.group is None else dist.get_global_rank(self.group, rank)

    def _send(self, k: int, value: Tensor, stamp: int) -> None:
        payload = value.to(self.device).contiguous()
        clock = torch.tensor([k, stamp], dtype=torch.int64, device=self.device)
        dst = self._peer(self.rank + 1)
        for tensor in (payload, clock):
            work = self._comm(dist.isend, tensor, dst, what=f"boundary {self.hi} to rank "
                              f"{self.rank + 1}", tag=_TAG)
            self.sends.append((work, tensor))

    def _post_receive(self) -> None:
        value = torch.empty(self.result.shape[1:], dtype=self.t.dtype, device=self.device)
        clock = torch.empty(2, dtype=torch.int64, device=self.device)
        src = self._peer(self.rank - 1)
        works = [self._comm(dist.irecv, tensor, src, what=f"boundary {self.lo} from rank "
                            f"{self.rank - 1}", tag=_TAG) for tensor in (value, clock)]
        self.posted += 1
        self.waiting.put((works, value, clock))

    def _wait_loop(self) -> None:
        """The receiving thread: waits for each posted receive in turn. On a GPU (NCCL),
        ``wait`` only orders the current stream after the transfer: the thread waits on
        a stream of its own, so the main thread's computation does not wait with it."""
        cuda = self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if cuda else None
        while (item := self.waiting.get()) is not None:
            works, value, clock = item
            try:
                with torch.cuda.stream(stream) if cuda else contextlib.nullcontext():
                    for work in works:
                        work.wait()
                    if stream is not None:
                        stream.synchronize()
            except Exception as error:  # handed to the main thread
                self.inbox.put(error)
                return
            self.inbox.put((value, clock))

    def _received(self, item: Any) -> None:
        if isinstance(item, Exception):
            raise DistributedError(
                f"pint.distributed: rank {self.rank} lost its link to rank {self.rank - 1} "
                f"while waiting for boundary {self.lo}: {item}"
            ) from item
        value, clock = item
        k, stamp = (int(v) for v in clock.tolist())
        if self.finished:
            return
        if k < min(self.lo, self.max_iters):
            self._post_receive()
        self.rounds.rounds = max(self.rounds.rounds, stamp)  # Lamport clock of rounds
        self._form(self.lo, k, self._take(value.to(self.t.device)))

    # -- the dependency graph (as in pint.parareal, restricted to lo..hi) ------------------
    def _take(self, states: Tensor) -> Tensor:
        return states if self.active is None else states[self.active]

    def _table(self, k: int) -> Tensor:
        return self.tables[min(k, self.hi)]  # after iteration hi the local part is exact

    def _form(self, m: int, k: int, value: Tensor) -> None:
        if not bool(torch.isfinite(value).all()):
            raise NonFiniteError(
                f"the state at slice boundary {m} became non-finite in iteration {k}",
                kind=None, slice=m, iteration=k, evaluation=None,
            )
        table = self.tables.get(k)
        if table is None:  # first boundary of iteration k here: carry the exact prefix over
            table = self.tables[k] = self.tables[k - 1].clone()
        if self.active is None:
            table[m - self.lo] = value
        else:
            table[m - self.lo].index_copy_(0, self.active, value)
        self.formed.add((m, k))
        if k > 0:
            self.coarse_out.pop((m - 1, k - 1), None)
            self.fine_out.pop((m - 1, k - 1), None)
        if m < self.hi:
            self._start("coarse", m, k)
            if k < self.max_iters:
                self._start("fine", m, k)
            return
        self.formed_at[k] = self.rounds.rounds
        if self.rank < self.last:
            self._send(k, table[-1], self.rounds.rounds)
        self.complete.add(k)
        if k == 0 and self.max_iters == 0:
            self._stop(0, torch.ones(self.batch, dtype=torch.bool))
        self._reduce_next()

    def _start(self, kind: str, n: int, k: int) -> None:
        samples = self.active
        y0 = self._take(self.tables[k][n - self.lo])
        rows = len(y0)
        index = torch.full((rows,), n, device=self.t.device)
        members = samples if samples is not None else torch.arange(rows, device=y0.device)

        def on_done(y1: Tensor) -> None:
            full = y1
            if samples is not None:
                full = y1.new_zeros((self.batch, *y1.shape[1:])).index_copy_(0, samples, y1)
            (self.coarse_out if kind == "coarse" else self.fine_out)[n, k] = full
            if kind == "coarse":
                self._try_form(n + 1, k)
            self._try_form(n + 1, k + 1)

        self.rounds.start(Task(
            propagation=(self.coarse if kind == "coarse" else self.fine).propagate(
                self.t[index], self.t[index + 1], y0),
            kind=kind, iteration=k, slices=index.cpu(), problems=members, on_done=on_done,
        ))

    def _try_form(self, m: int, k: int) -> None:
        if self.finished or k > self.max_iters or m < k or (m, k) in self.formed:
            return
        value = boundary_update(m, k, self.coarse_out, self.fine_out, self._take)
        if value is not None:
            self._form(m, k, value)

    # -- the convergence test: one all_reduce per iteration --------------------------
    def _reduce_next(self) -> None:
        """Start the test of the next undecided iteration once it is complete here."""
        k = self.decided + 1
        if self.finished or self.pending is not None or k > self.max_iters:
            return
        if k not in self.complete and not (self.hi in self.complete and k > self.hi):
            return
        own = slice(1 if self.rank > 0 else 0, None)  # boundary lo belongs to the previous rank
        change = (self._table(k) - self._table(k - 1))[own]
        mask = torch.zeros(self.batch, dtype=torch.bool, device=change.device)
        mask[slice(None) if self.active is None else self.active] = True
        if self.norm is None:
            value = torch.where(mask, change.abs().transpose(0, 1).flatten(1).amax(1), 0).double()
            op = dist.ReduceOp.MAX
        else:
            change = torch.where(mask.view(1, -1, *[1] * (change.ndim - 2)), change, 0)
            value = change.new_zeros((self.n + 1, *change.shape[1:]))
            value[self.lo + own.start:self.hi + 1] = change
            op = dist.ReduceOp.SUM
        value = value.to(self.device)
        work = self._comm(dist.all_reduce, value, what=f"the convergence test of iteration {k}",
                          op=op, async_op=True)
        self.pending = (k, work, value)

    def _decide(self) -> None:
        k, work, value = self.pending  # type: ignore[misc]
        self.pending = None
        try:
            work.wait()
        except Exception as error:
            raise DistributedError(
                f"pint.distributed: the convergence test of iteration {k} failed on rank "
                f"{self.rank} (a rank died or timed out): {error}"
            ) from error
        samples = slice(None) if self.active is None else self.active.cpu()
        if self.norm is None:
            res = value.cpu()[samples]
        else:
            change = value.to(self.t.device)
            res = torch.stack([torch.as_tensor(self.norm(change[:, int(i)])) for i in
                               torch.arange(self.batch)[samples]]).to("cpu", torch.float64)
        self.residuals.append(float(res.max()))
        if not bool(torch.isfinite(res).all()):
            raise ValueError(f"norm returned a non-finite residual in iteration {k}: {res}")
        self._stop(k, (res <= self.tol) | torch.tensor(k >= self.n))

    def _stop(self, k: int, stopping: Tensor) -> None:
        """Iteration ``k`` is decided: record it; the ``stopping`` problems leave."""
        self.decided = k
        samples = torch.arange(self.batch) if self.active is None else self.active.cpu()
        self.sample_iterations[samples] = k
        if k == self.max_iters or bool(stopping.all()):
            self.converged = (k > 0 and bool(stopping.all())) or k >= self.n
            stopping = torch.ones_like(stopping)
        leaving = samples[stopping].to(self.result.device)
        if len(leaving):
            self.result.index_copy_(1, leaving, self._table(k).index_select(1, leaving))
        keep = samples[~stopping]
        if len(keep) == 0:
            self.finished = True
        elif len(leaving):
            self.active = keep.to(self.t.device)
        for old in [j for j in self.tables if j < min(k, self.hi)]:
            del self.tables[old]
        self._reduce_next()

    # -- the end: gather the result, settle the messages ---------------------------------
    def _finish(self) -> tuple[Tensor, Tensor]:
        world = self.last + 1
        depth = self.formed_at.get(int(self.sample_iterations.max()), 0)
        if self.rank != self.last:
            depth = 0
        mine = torch.tensor([len(self.sends) // 2, self.posted, self.rounds.rows["coarse"],
                             self.rounds.rows["fine"], depth], dtype=torch.int64,
                            device=self.device)
        gathered = [torch.empty_like(mine) for _ in range(world)]
        self._comm(dist.all_gather, gathered, mine, what="the final statistics")
        stats = torch.stack(gathered).cpu()
        # The result: each rank contributes its own boundaries (lo+1..hi; rank 0 also 0).
        size = max(hi - lo for lo, hi in self.ranges) + 1
        own = self.result[(1 if self.rank > 0 else 0):]
        padded = own.new_zeros((size, *own.shape[1:]))
        padded[: len(own)] = own
        padded = padded.to(self.device)
        parts = [torch.empty_like(padded) for _ in range(world)]
        self._comm(dist.all_gather, parts, padded, what="the result")
        ys = torch.cat([parts[r][: hi - lo + (r == 0)] for r, (lo, hi) in enumerate(self.ranges)])
        # Settle the messages: receive (and drop) whatever was sent ahead to this rank,
        # and match every receive posted downstream with a send.
        if self.rank > 0:
            while self.posted < int(stats[self.rank - 1, 0]):
                self._post_receive()
            self.waiting.put(None)
        if self.rank < self.last:
            while len(self.sends) // 2 < int(stats[self.rank + 1, 1]):
                self._send(-1, self.result[-1], 0)
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
                    self._received(item)
            if self.waiter.is_alive():
                raise DistributedError(f"pint.distributed: rank {self.rank} timed out "
                                       f"settling the messages from rank {self.rank - 1}")
        return stats, ys.to(self.t.device)

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

