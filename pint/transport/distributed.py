"""The points or rows of a solve spread over the ranks of a ``torch.distributed`` process group.

Points (Parareal): every rank owns a contiguous range of slices ``lo..hi-1`` (so the boundary
states ``lo..hi``) and runs the propagations of its slices locally, batched in one
:class:`pint.engine.Engine`.
Boundary ``lo`` of every iteration comes from the previous rank and boundary ``hi`` goes to the
next one; a rank works on an iteration as soon as its initial state arrives, so iterations flow
through the ranks like a pipeline. The convergence test of an iteration is an exchange, every
rank sending its share of the residual to every other one, so no rank waits for it while it has
work. Messages carry the depth at which their boundary was formed, so the depth of the whole
solve is that of its dependency graph (messages count as free), as in one process.

Everything after the up-front agreement is a point-to-point message (``isend``/``irecv``): a
fixed-size header (kind, iteration, depth, and for an abort the failing rank and its error)
followed by the payloads its kind implies. Each rank runs one listening thread per other rank,
which receives that rank's messages in the order they were sent, until its last one: ``done``
(with its statistics and its part of the result) at the end of a normal solve, ``abort`` when it
stops early. So a rank that fails, in ``f`` or anywhere else, tells every other rank at once;
those stop with :class:`RankFailed` as soon as their current round of evaluations ends, and
every message posted is matched, so no receive is left pending when the processes exit. There
is no collective after the agreement, so no rank can be stuck inside one when another stops.

torch.distributed cannot poll a pending receive, hence the threads. Messages always go through
``gloo`` (CPU tensors): with an NCCL group, pint makes a ``gloo`` group over the same ranks once
and stages the states through the CPU.

Rows (Picard, quasi-Newton): :meth:`Distributed.share` gives each rank a contiguous share of an
evaluation's rows, :meth:`Distributed.gather` posts the rank's rows to every other rank and
waits for theirs with the same messages (a ``rows`` header and its payload), and
:meth:`Distributed.total` exchanges the evaluation counts as each rank's last message; a rank
that fails, dies or hangs is reported exactly as above.

This module moves data; it contains no algorithm. :func:`pint.distributed.parareal` and
:func:`pint.distributed.picard` are the entry points.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import zlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Never

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["Distributed", "DistributedError", "RankFailed", "slice_ranges"]

_HEAD = 0x5049  # "PI": the tag of pint's headers
_DATA = 0x504A  # the tag of the payloads that follow a header
_FIELDS = 8  # int64 fields of a header: kind, k, clock, origin, primary, text length, rows
_TEXT = 448  # bytes of an abort's error text
_BOUNDARY, _RESIDUAL, _DONE, _ABORT, _ROWS = 1, 2, 3, 4, 5
_GRACE = 10.0  # seconds a stopping rank waits for the others to acknowledge


class DistributedError(RuntimeError):
    """A rank died, a message timed out, or a transfer failed.

    After this error the process group is in an undefined state (messages may be in flight):
    destroy it (``torch.distributed.destroy_process_group()``) or end the process.
    """


class RankFailed(DistributedError):
    """Another rank raised an exception during the solve (in ``f``, a
    :class:`pint.NonFiniteError`, a ``KeyboardInterrupt``, ...) and told this one.

    The failing rank itself raises its own exception; every other rank raises this error as soon
    as its current round of evaluations of ``f`` ends.

    Attributes:
        rank: the rank (in the solve's group) that failed.
        reason: its exception as text, ``"TypeName: message"`` (truncated to a few hundred
            bytes).
    """

    def __init__(self, rank: int, reason: str, observer: int) -> None:
        super().__init__(
            f"pint.distributed: rank {rank} failed with {reason} (rank {observer} stopped "
            f"because of it; see the traceback on rank {rank})"
        )
        self.rank, self.reason, self.observer = rank, reason, observer

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.rank, self.reason, self.observer)


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


_SIDE_GROUPS: dict[Any, Any] = {}  # an NCCL group -> the gloo group over the same ranks


def _gloo_group(group: dist.ProcessGroup | None) -> dist.ProcessGroup | None:
    """``group`` if it is a gloo group, else a gloo group over the same ranks (made once)."""
    if dist.get_backend(group) == "gloo":
        return group
    key = None if group is None else id(group)
    if key not in _SIDE_GROUPS:
        ranks = (list(range(dist.get_world_size())) if group is None
                 else dist.get_process_group_ranks(group))
        _SIDE_GROUPS[key] = dist.new_group(ranks, backend="gloo",
                                           use_local_synchronization=True)
    return _SIDE_GROUPS[key]


@dataclass
class _Message:
    """What a listening thread received from rank ``peer``."""

    peer: int
    kind: int
    fields: list[int]
    text: str
    payloads: list[Tensor]


@dataclass
class _Lost:
    """A listening thread's receive failed: rank ``peer`` died or the link broke."""

    peer: int
    error: Exception


def _header(kind: int, k: int = 0, clock: int = 0, origin: int = 0, primary: int = 0,
            text: str = "", rows: int = 0) -> Tensor:
    data = text.encode("utf-8", "replace")
    if len(data) > _TEXT:
        data = data[: _TEXT - 3] + b"..."
    head = torch.zeros(_FIELDS * 8 + _TEXT, dtype=torch.uint8)
    head[: _FIELDS * 8].view(torch.int64)[:7] = torch.tensor(
        [kind, k, clock, origin, primary, len(data), rows], dtype=torch.int64)
    if data:
        head[_FIELDS * 8: _FIELDS * 8 + len(data)] = torch.frombuffer(bytearray(data),
                                                                      dtype=torch.uint8)
    return head


class Distributed:
    """Slices over the ranks of ``group`` (``None``: the default group).

    Args:
        group: the process group; backend ``gloo`` (CPU tensors; CUDA states are staged
            through the CPU) or ``nccl`` (messages go through a ``gloo`` group over the same
            ranks, made once per group, with the states staged through the CPU).
        timeout: seconds (or a ``timedelta``) a rank may wait, idle, for a message before it
            fails with :class:`DistributedError`.
        device: unused (the states stay where ``y0`` is; messages go through the CPU); kept
            for compatibility.
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
        self.comm = _gloo_group(group)  # the group pint's messages go through
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        self.last = self.world - 1
        self.device = torch.device("cpu")
        self.ranges: list[tuple[int, int]] = []
        self.sends: list[tuple[Any, Tensor]] = []
        self.shared: dict[int, list[tuple[int, Any, Tensor]]] = {}  # k -> sends of our share
        self.inbox: queue.Queue[_Message | _Lost] = queue.Queue()
        self.listeners: list[threading.Thread] = []
        self.told: set[int] = set()  # ranks this one sent its last message to
        self.shares: dict[int, dict[int, Tensor]] = {}  # k -> rank -> share of the residual
        self.finals: dict[int, list[Tensor]] = {}  # rank -> [statistics, part of the result]
        self.layouts: dict[int, list[tuple[tuple[int, ...], torch.dtype]]] = {}
        self.shape: tuple[int, ...] = ()
        self.dtype = torch.float64
        self.labels: tuple[str, ...] = ()
        self.gathers = 0  # row exchanges so far
        self.parts: dict[int, dict[int, tuple[list[Tensor], int]]] = {}  # k -> rank -> rows
        self.posted: dict[int, list[tuple[Any, Tensor]]] = {}  # k -> sends of our rows

    def __repr__(self) -> str:
        return f"Distributed(rank={self.rank}, world={self.world})"

    # -- set-up ------------------------------------------------------------------------
    def agree(self, y0: Any, t: Any, options: tuple[Any, ...], error: Exception | None,
              values: bool = False) -> None:
        """One collective up front: every rank learns whether all ranks accept the same inputs
        (with ``values``, also the same values of ``y0``)."""
        fields = ["the local checks", "the number of slices", "y0's shape", "the dtype", "t",
                  "the options (tol, max_iters, norm, independent, stop, ...)", "y0's values"]
        if error is None:
            signature = [1, len(t) - 1, _crc(tuple(y0.shape)), _crc(str(y0.dtype)),
                         _crc(t.detach().cpu().numpy().tobytes()), _crc(options),
                         _crc(y0.detach().cpu().numpy().tobytes()) if values else 0]
        else:
            signature = [0] * len(fields)
        mine = torch.tensor(signature, dtype=torch.int64)
        gathered = [torch.empty_like(mine) for _ in range(self.world)]
        self._comm(dist.all_gather, gathered, mine, what="the inputs")
        table = torch.stack(gathered)
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
                    f"options{' and y0' if values else ''}"
                )
        self.ranges = slice_ranges(len(t) - 1, self.world) if not values else []
        self.dtype = y0.dtype

    def owned(self, n_slices: int) -> tuple[int, int]:
        """This rank's boundaries ``lo..hi``."""
        if not self.ranges:
            self.ranges = slice_ranges(n_slices, self.world)
        return self.ranges[self.rank]

    def begin(self, solver: Any) -> None:
        """Start one thread per other rank that receives its messages."""
        if self.listeners:
            raise RuntimeError("a Distributed transport serves one solve: make a new one")
        self.shape = tuple(solver.it.result.shape[1:])
        share = ((solver.it.batch,), torch.float64) if solver.it.norm is None else (
            (solver.n + 1, *self.shape), self.dtype)
        size = max(hi - lo for lo, hi in self.ranges) + 1
        self.layouts = {
            _BOUNDARY: [(self.shape, self.dtype)],
            _RESIDUAL: [share],
            _DONE: [((1 + len(solver.labels),), torch.int64), ((size, *self.shape), self.dtype)],
            _ABORT: [],
        }
        self._start_listeners()

    def _start_listeners(self) -> None:
        for peer in range(self.world):
            if peer != self.rank:
                thread = threading.Thread(target=self._listen, args=(peer,), daemon=True,
                                          name=f"pint-recv-{self.rank}-from-{peer}")
                thread.start()
                self.listeners.append(thread)

    # -- messages ------------------------------------------------------------------------
    def _peer(self, rank: int) -> int:
        return rank if self.comm is None else dist.get_global_rank(self.comm, rank)

    def _post(self, dst: int, head: Tensor, payloads: tuple[Tensor, ...] = (),
              into: list[Any] | None = None) -> None:
        """A header and its payloads to rank ``dst``; the sends complete in the background
        (their work objects and tensors are kept in ``self.sends``, or in ``into``)."""
        what = f"a message to rank {dst}"
        for tensor, tag in ((head, _HEAD), *((p, _DATA) for p in payloads)):
            work = self._comm(dist.isend, tensor, self._peer(dst), what=what, tag=tag)
            if into is None:
                self.sends.append((work, tensor))
            else:
                into.append((dst, work, tensor))

    def _listen(self, peer: int) -> None:
        """The thread for rank ``peer``: receive its messages in order until its last one."""
        src = self._peer(peer)
        try:
            while True:
                head = torch.empty(_FIELDS * 8 + _TEXT, dtype=torch.uint8)
                dist.irecv(head, src, group=self.comm, tag=_HEAD).wait()
                fields = head[: _FIELDS * 8].view(torch.int64).tolist()
                kind = fields[0]
                layout = ([((fields[6], *self.shape), self.dtype)] if fields[6] else []) if (
                    kind == _ROWS) else self.layouts[kind]
                payloads = [torch.empty(shape, dtype=dtype) for shape, dtype in layout]
                for payload in payloads:
                    dist.irecv(payload, src, group=self.comm, tag=_DATA).wait()
                text = bytes(head[_FIELDS * 8: _FIELDS * 8 + fields[5]].tolist()).decode(
                    "utf-8", "ignore")  # a character cut by the truncation is dropped
                self.inbox.put(_Message(peer, kind, fields, text, payloads))
                if kind in (_DONE, _ABORT):
                    return
        except Exception as error:  # handed to the main thread
            self.inbox.put(_Lost(peer, error))

    def _handle(self, solver: Any, item: _Message | _Lost) -> None:
        """Act on one received message; raise if it says a rank stopped."""
        if isinstance(item, _Lost):
            raise DistributedError(
                f"pint.distributed: rank {self.rank} lost its link to rank {item.peer} (the "
                f"process died or the connection failed): {item.error}"
            ) from item.error
        kind, (_, k, clock, origin, primary, _) = item.kind, item.fields[:6]
        if kind == _ABORT:
            if primary:
                raise RankFailed(origin, item.text, self.rank)
            raise DistributedError(f"pint.distributed: rank {item.peer} stopped: {item.text}")
        if kind == _DONE:
            self.finals[item.peer] = item.payloads
        elif kind == _ROWS:
            self.parts.setdefault(k, {})[item.peer] = (item.payloads, clock)
        elif kind == _RESIDUAL:
            self._release(item.peer, k)
            if not solver.it.done:
                self.shares.setdefault(k, {})[item.peer] = item.payloads[0]
        elif not solver.it.done:  # a boundary
            solver.receive(k, item.payloads[0].to(solver.t.device), clock)

    # -- boundaries ----------------------------------------------------------------------
    def send(self, solver: Any, k: int, value: Tensor, clock: int) -> None:
        """Boundary ``hi`` of iteration ``k`` to the next rank, with its depth."""
        payload = value.to(self.device, copy=True).contiguous()
        self._post(self.rank + 1, _header(_BOUNDARY, k, clock), (payload,))

    # -- the convergence test: every rank sends its share to every other ----------------------
    def residuals(self, solver: Any, k: int, change: Tensor) -> Tensor:
        """Send this rank's share of the change of iteration ``k`` to every rank: the largest
        entry per problem (default norm), or the whole change (a custom norm needs it)."""
        it = solver.it
        members = it.members(change.device)
        if it.norm is None:
            value = change.new_zeros(it.batch, dtype=torch.float64)
            value[members] = change.abs().transpose(0, 1).flatten(1).amax(1).double()
        else:
            lo, hi = self.ranges[self.rank]
            own = 1 if lo > 0 else 0
            value = change.new_zeros((solver.n + 1, it.batch, *change.shape[2:]))
            value[lo + own:hi + 1, members] = change
        value = value.to(self.device, copy=True).contiguous()
        self.shares.setdefault(k, {})[self.rank] = value
        head = _header(_RESIDUAL, k)
        sent = self.shared.setdefault(k, [])
        for peer in range(self.world):
            if peer != self.rank:
                self._post(peer, head, (value,), into=sent)
        return value

    def _release(self, peer: int, k: int) -> None:
        """Rank ``peer`` sent its share of iteration ``k``, so it has decided ``k - 1`` and
        received our shares up to there: drop those sends (a custom norm's share is large)."""
        for j in [j for j in self.shared if j < k]:
            keep = []
            for dst, work, tensor in self.shared[j]:
                if dst == peer:
                    self._comm(work.wait, what=f"the residuals to rank {peer}", group=False)
                else:
                    keep.append((dst, work, tensor))
            if keep:
                self.shared[j] = keep
            else:
                del self.shared[j]

    def _ready(self, solver: Any) -> bool:
        return solver.pending is not None and len(self.shares.get(solver.pending[0], ())) == (
            self.world)

    def _decide(self, solver: Any) -> None:
        """All shares of the pending test are in: reduce them (in rank order) and decide. The
        shares of the ranks do not overlap, so the maximum or the sum is exact."""
        k = solver.pending[0]
        shares = self.shares.pop(k)
        stacked = torch.stack([shares[r] for r in range(self.world)])
        it = solver.it
        members = it.members(torch.device("cpu"))
        if it.norm is None:
            residual = stacked.amax(0)[members]
            if not bool(torch.isfinite(residual).all()):
                raise ValueError(f"the residual norm must return finite values >= 0, got "
                                 f"{residual.tolist()}")
        else:
            value = stacked.sum(0).to(solver.t.device)
            residual = it.residual(value[:, members.to(solver.t.device)])
        solver.decide(k, residual)

    # -- events --------------------------------------------------------------------------
    def poll(self, solver: Any) -> bool:
        """Handle the messages that arrived and a complete convergence test."""
        handled = False
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
            self._handle(solver, item)
            handled = True
        if self._ready(solver):
            self._decide(solver)
            handled = True
        return handled

    def wait(self, solver: Any) -> None:
        """Nothing to compute: wait for a message, up to the timeout."""
        item = self._next(solver)
        self._handle(solver, item)

    def _next(self, solver: Any) -> _Message | _Lost:
        try:
            return self.inbox.get(timeout=self.timeout)
        except queue.Empty:
            pass
        self._timed_out(self._waits(solver))

    def _timed_out(self, waits: list[str]) -> Never:
        raise DistributedError(
            f"pint.distributed: rank {self.rank} waited {self.timeout:g} s for "
            f"{' or '.join(waits) or 'work'} without an answer: a rank died, hangs or is "
            f"slower than the timeout (raise `timeout`)"
        )

    def _waits(self, solver: Any) -> list[str]:
        """What a Parareal rank waits for."""
        waits = []
        if self.rank > 0 and not solver.it.done:
            waits.append(f"boundary {self.ranges[self.rank][0]} from rank {self.rank - 1}")
        if solver.pending is not None:
            missing = sorted(set(range(self.world)) - set(self.shares.get(solver.pending[0],
                                                                          ())))
            waits.append(f"the residuals of iteration {solver.pending[0]} from rank(s) "
                         f"{missing}")
        if solver.it.done:
            missing = sorted(set(range(self.world)) - set(self.finals) - {self.rank})
            waits.append(f"the results of rank(s) {missing}")
        return waits

    # -- rows: each rank computes a share of an evaluation's rows; all gather them ----------
    def open(self, row: tuple[int, ...], dtype: torch.dtype, labels: tuple[str, ...]) -> None:
        """A row-sharing solve starts: rows of shape ``row``; start the listening threads."""
        if self.listeners:
            raise RuntimeError("a Distributed transport serves one solve: make a new one")
        self.shape, self.dtype, self.labels = row, dtype, tuple(sorted(labels))
        self.layouts = {_DONE: [((len(self.labels),), torch.int64)], _ABORT: []}
        self._start_listeners()

    def leads(self) -> bool:
        """Rank 0 runs the work only one rank does."""
        return self.rank == 0

    def share(self, rows: int) -> tuple[int, int]:
        """Rank ``r``'s rows: contiguous, near-equal in number (none when there are fewer
        rows than ranks)."""
        return round(self.rank * rows / self.world), round((self.rank + 1) * rows / self.world)

    def gather(self, part: Tensor, rounds: int) -> tuple[Tensor, int]:
        """Send ``part`` to every rank and wait for theirs (up to the timeout; a rank that
        stops tells this one, which raises :class:`RankFailed`)."""
        k = self.gathers
        self.gathers += 1
        payload = part.detach().to(self.device, copy=True).contiguous()
        head = _header(_ROWS, k, clock=rounds, rows=len(payload))
        sent = self.posted.setdefault(k, [])
        for peer in range(self.world):
            if peer != self.rank:
                into: list[Any] = []
                self._post(peer, head, (payload,) if len(payload) else (), into=into)
                sent += [(work, tensor) for _, work, tensor in into]
        parts = self.parts.setdefault(k, {})
        while len(parts) < self.world - 1:
            try:
                item = self.inbox.get(timeout=self.timeout)
            except queue.Empty:
                missing = sorted(set(range(self.world)) - set(parts) - {self.rank})
                self._timed_out([f"the rows of exchange {k} from rank(s) {missing}"])
            self._handle(None, item)
        del self.parts[k]
        for j in [j for j in self.posted if j < k]:  # every rank has received those
            for work, _ in self.posted.pop(j):
                self._comm(work.wait, what="rows", group=False)
        pieces, deepest = [], rounds
        for r in range(self.world):
            if r == self.rank:
                pieces.append(payload)
            else:
                received, clock = parts[r]
                pieces += received
                deepest = max(deepest, clock)
        whole = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
        return whole.to(part.device), deepest

    def total(self, evaluations: dict[str, int]) -> dict[str, int]:
        """Exchange the evaluation counts with every rank (the last message of each) and sum
        them; wait for the messages in flight."""
        counts = torch.tensor([evaluations.get(label, 0) for label in self.labels],
                              dtype=torch.int64)
        self.finals[self.rank] = [counts]
        head = _header(_DONE)
        for peer in range(self.world):
            if peer != self.rank:
                self._post(peer, head, (counts,))
                self.told.add(peer)
        while len(self.finals) < self.world:
            try:
                item = self.inbox.get(timeout=self.timeout)
            except queue.Empty:
                missing = sorted(set(range(self.world)) - set(self.finals))
                self._timed_out([f"the results of rank(s) {missing}"])
            self._handle(None, item)
        self.sends += [sent for posted in self.posted.values() for sent in posted]
        self.posted.clear()
        self._settle()
        table = torch.stack([self.finals[r][0] for r in range(self.world)])
        return {label: int(table[:, i].sum()) for i, label in enumerate(self.labels)}

    # -- the end: exchange the results, or stop everyone -----------------------------------
    def finish(self, solver: Any, result: Tensor, evaluations: dict[str, int],
               depth: int) -> tuple[Tensor, dict[str, int], int]:
        """Exchange the result and the counts with all ranks; wait for the messages in flight."""
        labels = sorted(solver.labels)
        stats = torch.tensor([depth if self.rank == self.last else 0,
                              *(evaluations.get(label, 0) for label in labels)],
                             dtype=torch.int64)
        # The result: each rank contributes its own boundaries (lo+1..hi; rank 0 also 0).
        size = max(hi - lo for lo, hi in self.ranges) + 1
        own = result[(1 if self.rank > 0 else 0):]
        padded = own.new_zeros((size, *own.shape[1:]), device=self.device)
        padded[: len(own)] = own.to(self.device)
        self.finals[self.rank] = [stats, padded]
        head = _header(_DONE)
        for peer in range(self.world):
            if peer != self.rank:
                self._post(peer, head, (stats, padded))
                self.told.add(peer)
        while len(self.finals) < self.world:
            self._handle(solver, self._next(solver))
        self._settle()
        table = torch.stack([self.finals[r][0] for r in range(self.world)])
        parts = [self.finals[r][1] for r in range(self.world)]
        ys = torch.cat([parts[r][: hi - lo + (r == 0)] for r, (lo, hi) in enumerate(self.ranges)])
        totals = {label: int(table[:, 1 + i].sum()) for i, label in enumerate(labels)}
        return ys.to(result.device), totals, int(table[:, 0].max())

    def _settle(self) -> None:
        """Every rank has sent its last message: the threads end, the sends complete."""
        deadline = time.monotonic() + self.timeout
        for thread in self.listeners:
            thread.join(max(deadline - time.monotonic(), 0.001))
            if thread.is_alive():
                raise DistributedError(f"pint.distributed: rank {self.rank} timed out "
                                       f"receiving the last messages")
        shared = [(work, tensor) for sent in self.shared.values() for _, work, tensor in sent]
        for work, _ in self.sends + shared:
            left = timedelta(seconds=max(deadline - time.monotonic(), 0.001))
            self._comm(work.wait, left, what="the last messages", group=False)
        self.sends.clear()
        self.shared.clear()

    def abort(self, solver: Any, error: BaseException) -> None:
        """The solve stops with ``error`` on this rank: tell every rank not yet told, and wait
        (a few seconds at most) until every other rank has sent its last message, so that no
        receive is left pending. Never raises: the caller re-raises ``error``."""
        if isinstance(error, RankFailed):  # pass the news on, naming the rank that failed
            head = _header(_ABORT, origin=error.rank, primary=1, text=error.reason)
        elif isinstance(error, DistributedError):
            head = _header(_ABORT, origin=self.rank, primary=0, text=str(error))
        else:
            message = str(error)
            head = _header(_ABORT, origin=self.rank, primary=1,
                           text=type(error).__name__ + (f": {message}" if message else ""))
        for peer in range(self.world):
            if peer != self.rank and peer not in self.told:
                self.told.add(peer)
                try:
                    self._post(peer, head)
                except Exception:  # that rank is gone: nothing to tell
                    continue
        deadline = time.monotonic() + min(_GRACE, self.timeout)
        try:
            for thread in self.listeners:
                thread.join(max(deadline - time.monotonic(), 0.001))
        except BaseException:  # a second Ctrl-C: stop waiting
            pass

    def _comm(self, call: Any, *args: Any, what: str, group: bool = True,
              **kwargs: Any) -> Any:
        """``call(*args, group=self.comm, **kwargs)``, its failure a :class:`DistributedError`."""
        if group:
            kwargs["group"] = self.comm
        try:
            return call(*args, **kwargs)
        except Exception as error:
            raise DistributedError(
                f"pint.distributed: rank {self.rank} failed exchanging {what} (a rank died or "
                f"timed out): {error}"
            ) from error
