"""The points or rows of a solve spread over the ranks of a ``torch.distributed`` process group.

:class:`Distributed` is the :class:`pint.transport.Transport` over processes. It moves values;
it knows no algorithm:

- points: rank ``r`` owns a contiguous range of grid points (:meth:`~Distributed.owned`,
  :func:`slice_ranges`); :meth:`~Distributed.send` hands a value to rank ``r + 1``,
  :meth:`~Distributed.post` gives one to every rank, and :meth:`~Distributed.poll` /
  :meth:`~Distributed.wait` deliver what arrived (:class:`pint.transport.Arrived`) and every
  rank's values once all have posted under a key (:class:`pint.transport.Gathered`). Parareal
  runs over these: boundaries go on to the next rank with the depth at which they were formed,
  and the residuals of an iteration are posted and reduced by the algorithm;
- rows: :meth:`~Distributed.share` gives each rank a contiguous share of a batched
  evaluation's rows and :meth:`~Distributed.gather` returns every rank's rows, in rank order.
  The :class:`pint.engine.Engine` evaluates each round's share and gathers the rest, so Picard,
  quasi-Newton and MGRIT run on every rank identically, bit for bit the single process.

Everything after the up-front agreement (:meth:`~Distributed.agree`, one collective) is a
point-to-point message (``isend``/``irecv``): a fixed-size header (its kind, key and depth, the
dtype and shape of its one payload, and for an abort the failing rank and its error) followed
by the payload. Each rank runs one listening thread per other rank, which receives that rank's
messages in the order they were sent, until its last one: ``done`` (its part of the result,
its evaluations and its depth) at the end of a normal solve, ``abort`` when it stops early. So
a rank that fails, in ``f`` or anywhere else, tells every other rank at once; those stop with
:class:`RankFailed` as soon as their current round of evaluations ends, and every message
posted is matched, so no receive is left pending when the processes exit. There is no
collective after the agreement, so no rank can be stuck inside one when another stops.

torch.distributed cannot poll a pending receive, hence the threads. Messages always go through
``gloo`` (CPU tensors): with an NCCL group, pint makes a ``gloo`` group over the same ranks once
and stages the values through the CPU.

:func:`pint.distributed.parareal`, :func:`pint.distributed.picard` and
:func:`pint.distributed.mgrit` are the entry points.
"""

from __future__ import annotations

import itertools
import json
import queue
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from . import Arrived, Closed, Event, Gathered

__all__ = ["Distributed", "DistributedError", "RankFailed", "slice_ranges"]

_HEAD = 0x5049  # "PI": the tag of pint's headers
_DATA = 0x504A  # the tag of the payload that follows a header
# int64 fields of a header: kind, key, clock, origin, primary, text length, the payload's
# dtype (an index into _DTYPES, -1: none) and number of dimensions, then its shape
_FIELDS, _DIMS = 16, 8
_TEXT = 448  # bytes of text: an abort's error, a done's evaluations
_POINT, _POST, _ROWS, _DONE, _ABORT = 1, 2, 3, 4, 5
_GRACE = 10.0  # seconds a stopping rank waits for the others to acknowledge
_IN_FLIGHT = 64  # sends kept unwaited; beyond, the oldest half is waited for
_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.complex64,
           torch.complex128, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8,
           torch.bool)


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
    key: int
    clock: int
    origin: int
    primary: int
    text: str
    payload: Tensor | None


@dataclass
class _Lost:
    """A listening thread's receive failed: rank ``peer`` died or the link broke."""

    peer: int
    error: Exception


def _header(kind: int, key: int = 0, clock: int = 0, origin: int = 0, primary: int = 0,
            text: str = "", payload: Tensor | None = None) -> Tensor:
    data = text.encode("utf-8", "replace")
    if len(data) > _TEXT:
        data = data[: _TEXT - 3] + b"..."
    fields = [kind, key, clock, origin, primary, len(data)]
    if payload is None:
        fields += [-1, 0]
    else:
        if payload.dtype not in _DTYPES or payload.ndim > _DIMS:
            raise ValueError(f"pint.distributed sends tensors of at most {_DIMS} dimensions "
                             f"and dtypes {[str(d) for d in _DTYPES]}; got "
                             f"{payload.dtype} of shape {tuple(payload.shape)}")
        fields += [_DTYPES.index(payload.dtype), payload.ndim, *payload.shape]
    head = torch.zeros(_FIELDS * 8 + _TEXT, dtype=torch.uint8)
    head[: _FIELDS * 8].view(torch.int64)[: len(fields)] = torch.tensor(fields,
                                                                       dtype=torch.int64)
    if data:
        head[_FIELDS * 8: _FIELDS * 8 + len(data)] = torch.frombuffer(bytearray(data),
                                                                      dtype=torch.uint8)
    return head


class Distributed:
    """The processes of a solve are the ranks of ``group`` (``None``: the default group).

    A transport serves one solve: make a new one for the next.

    Args:
        group: the process group; backend ``gloo`` (CPU tensors; CUDA states are staged
            through the CPU) or ``nccl`` (messages go through a ``gloo`` group over the same
            ranks, made once per group, with the values staged through the CPU).
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
        self.ranges: list[tuple[int, int]] = []
        self.sends: deque[Any] = deque()  # the work objects of the sends not yet waited for
        self.inbox: queue.Queue[_Message | _Lost] = queue.Queue()
        self.listeners: list[threading.Thread] = []
        self.told: set[int] = set()  # ranks this one sent its last message to
        self.ready: deque[Event] = deque()  # events found while doing something else
        self.posts: dict[int, dict[int, Tensor]] = {}  # key -> rank -> posted value
        self.rows: dict[int, dict[int, Tensor]] = {}  # exchange -> rank -> rows
        self.gathers = 0  # row exchanges so far
        self.finals: dict[int, _Message] = {}  # rank -> its done message

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
        if not values:  # the points are shared out: more ranks than slices is an error
            self.ranges = slice_ranges(len(t) - 1, self.world)

    def open(self) -> None:
        """Start one thread per other rank that receives its messages."""
        if self.listeners:
            raise RuntimeError("a Distributed transport serves one solve: make a new one")
        for peer in range(self.world):
            if peer != self.rank:
                thread = threading.Thread(target=self._listen, args=(peer,), daemon=True,
                                          name=f"pint-recv-{self.rank}-from-{peer}")
                thread.start()
                self.listeners.append(thread)

    def owned(self, n_intervals: int) -> tuple[int, int]:
        """This rank's points ``lo..hi`` (:func:`slice_ranges`)."""
        if not self.ranges:
            self.ranges = slice_ranges(n_intervals, self.world)
        return self.ranges[self.rank]

    def share(self, rows: int) -> tuple[int, int]:
        """Rank ``r``'s rows: contiguous, near-equal in number (none when there are fewer
        rows than ranks)."""
        return round(self.rank * rows / self.world), round((self.rank + 1) * rows / self.world)

    # -- messages ------------------------------------------------------------------------
    def _peer(self, rank: int) -> int:
        return rank if self.comm is None else dist.get_global_rank(self.comm, rank)

    def _post(self, dst: int, head: Tensor, payload: Tensor | None = None) -> None:
        """A header and its payload to rank ``dst``; the sends complete in the background.
        Receivers take messages as they come, so waiting for an old send is brief."""
        what = f"a message to rank {dst}"
        for tensor, tag in ((head, _HEAD), (payload, _DATA)):
            if tensor is not None and tensor.numel():
                self.sends.append(
                    (self._comm(dist.isend, tensor, self._peer(dst), what=what, tag=tag),
                     tensor))
        if len(self.sends) > _IN_FLIGHT:
            for _ in range(_IN_FLIGHT // 2):
                work, _ = self.sends.popleft()
                self._comm(work.wait, what=what, group=False)

    def _to_all(self, head: Tensor, payload: Tensor | None = None) -> None:
        for peer in range(self.world):
            if peer != self.rank:
                self._post(peer, head, payload)

    def _listen(self, peer: int) -> None:
        """The thread for rank ``peer``: receive its messages in order until its last one."""
        src = self._peer(peer)
        try:
            while True:
                head = torch.empty(_FIELDS * 8 + _TEXT, dtype=torch.uint8)
                dist.irecv(head, src, group=self.comm, tag=_HEAD).wait()
                fields = head[: _FIELDS * 8].view(torch.int64).tolist()
                kind, key, clock, origin, primary, length, code, ndim = fields[:8]
                payload = None
                if code >= 0:
                    payload = torch.empty(fields[8: 8 + ndim], dtype=_DTYPES[code])
                    if payload.numel():
                        dist.irecv(payload, src, group=self.comm, tag=_DATA).wait()
                text = bytes(head[_FIELDS * 8: _FIELDS * 8 + length].tolist()).decode(
                    "utf-8", "ignore")  # a character cut by the truncation is dropped
                self.inbox.put(_Message(peer, kind, key, clock, origin, primary, text, payload))
                if kind in (_DONE, _ABORT):
                    return
        except Exception as error:  # handed to the main thread
            self.inbox.put(_Lost(peer, error))

    def _take(self, item: _Message | _Lost) -> Event | None:
        """Act on one received message: the event it completes, if any; raise if it says a
        rank stopped."""
        if isinstance(item, _Lost):
            raise DistributedError(
                f"pint.distributed: rank {self.rank} lost its link to rank {item.peer} (the "
                f"process died or the connection failed): {item.error}"
            ) from item.error
        if item.kind == _ABORT:
            if item.primary:
                raise RankFailed(item.origin, item.text, self.rank)
            raise DistributedError(f"pint.distributed: rank {item.peer} stopped: {item.text}")
        assert item.payload is not None or item.kind == _DONE
        if item.kind == _DONE:
            self.finals[item.peer] = item
        elif item.kind == _ROWS:
            self.rows.setdefault(item.key, {})[item.peer] = item.payload  # type: ignore[assignment]
        elif item.kind == _POST:
            self.posts.setdefault(item.key, {})[item.peer] = item.payload  # type: ignore[assignment]
            return self._gathered(item.key)
        else:
            return Arrived(item.key, item.payload, item.clock)  # type: ignore[arg-type]
        return None

    def _gathered(self, key: int) -> Gathered | None:
        values = self.posts[key]
        if len(values) < self.world:
            return None
        del self.posts[key]
        return Gathered(key, [values[r] for r in range(self.world)])

    def _next(self, what: str) -> _Message | _Lost:
        """The next message, waiting up to the timeout."""
        try:
            return self.inbox.get(timeout=self.timeout)
        except queue.Empty:
            pass
        missing = [f"the values posted under key {key} by rank(s) "
                   f"{sorted(set(range(self.world)) - set(values))}"
                   for key, values in self.posts.items()]
        waits = " or ".join([what, *missing] if what else missing) or "work"
        raise DistributedError(
            f"pint.distributed: rank {self.rank} waited {self.timeout:g} s for {waits} "
            f"without an answer: a rank died, hangs or is slower than the timeout (raise "
            f"`timeout`)"
        )

    # -- points: values to the next rank, values to every rank ------------------------------
    def send(self, key: int, value: Tensor, clock: int) -> None:
        """``value``, formed at depth ``clock``, to rank ``r + 1``."""
        payload = value.detach().to("cpu", copy=True).contiguous()
        self._post(self.rank + 1, _header(_POINT, key, clock, payload=payload), payload)

    def post(self, key: int, value: Tensor) -> None:
        """``value`` to every rank, under ``key``."""
        payload = value.detach().to("cpu", copy=True).contiguous()
        self._to_all(_header(_POST, key, payload=payload), payload)
        self.posts.setdefault(key, {})[self.rank] = payload
        event = self._gathered(key)
        if event is not None:
            self.ready.append(event)

    def poll(self) -> Event | None:
        """The next event that has arrived, or ``None``."""
        if self.ready:
            return self.ready.popleft()
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return None
            event = self._take(item)
            if event is not None:
                return event

    def wait(self, what: str) -> Event:
        """The next event, waiting for it up to the timeout."""
        if self.ready:
            return self.ready.popleft()
        while True:
            event = self._take(self._next(what))
            if event is not None:
                return event

    # -- rows: each rank computes a share of an evaluation's rows; all gather them ----------
    def gather(self, part: Tensor) -> Tensor:
        """Send ``part`` to every rank and wait for theirs (up to the timeout; a rank that
        stops tells this one, which raises :class:`RankFailed`)."""
        key = self.gathers
        self.gathers += 1
        payload = part.detach().to("cpu", copy=True).contiguous()
        self._to_all(_header(_ROWS, key, payload=payload), payload)
        parts = self.rows.setdefault(key, {})
        while len(parts) < self.world - 1:
            missing = sorted(set(range(self.world)) - set(parts) - {self.rank})
            event = self._take(self._next(f"the rows of exchange {key} from rank(s) {missing}"))
            if event is not None:
                self.ready.append(event)
        del self.rows[key]
        parts[self.rank] = payload
        whole = torch.cat([parts[r] for r in range(self.world)])
        return whole.to(part.device)

    # -- the end: exchange the results, or stop everyone -----------------------------------
    def close(self, part: Tensor | None = None, evaluations: dict[str, int] | None = None,
              depth: int = 0) -> Closed:
        """Exchange the parts, the evaluations and the depths with every rank (the last
        message of each); wait for the messages in flight."""
        counts = dict(evaluations or {})
        payload = None if part is None else part.detach().to("cpu", copy=True).contiguous()
        head = _header(_DONE, clock=depth, text=json.dumps(counts), payload=payload)
        for peer in range(self.world):
            if peer != self.rank:
                self._post(peer, head, payload)
                self.told.add(peer)
        while len(self.finals) < self.world - 1:  # what else arrives is no longer needed
            missing = sorted(set(range(self.world)) - set(self.finals) - {self.rank})
            self._take(self._next(f"the results of rank(s) {missing}"))
        self._settle()
        parts, deepest = [], depth
        for r in range(self.world):
            final = None if r == self.rank else self.finals[r]
            value = payload if final is None else final.payload
            if value is not None:
                parts.append(value if part is None else value.to(part.device))
            if final is not None:
                for label, count in json.loads(final.text).items():
                    counts[label] = counts.get(label, 0) + count
                deepest = max(deepest, final.clock)
        return Closed(parts, counts, deepest)

    def _settle(self) -> None:
        """Every rank has sent its last message: the threads end, the sends complete."""
        deadline = time.monotonic() + self.timeout
        for thread in self.listeners:
            thread.join(max(deadline - time.monotonic(), 0.001))
            if thread.is_alive():
                raise DistributedError(f"pint.distributed: rank {self.rank} timed out "
                                       f"receiving the last messages")
        while self.sends:
            work, _ = self.sends.popleft()
            left = timedelta(seconds=max(deadline - time.monotonic(), 0.001))
            self._comm(work.wait, left, what="the last messages", group=False)

    def abort(self, error: BaseException) -> None:
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
