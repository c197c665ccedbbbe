"""Transports: which process does which part of a solve, and how values move between them.

A transport speaks no algorithm. It knows processes, the points or rows each one owns, and
values keyed by an integer; the algorithms (:mod:`pint.algorithms`) decide what the values
mean. Its words:

- ownership: :meth:`~Transport.owned` gives a process a contiguous range of grid points,
  :meth:`~Transport.share` a contiguous share of a batched evaluation's rows;
- rows: :meth:`~Transport.gather` returns every process's rows, in process order (the
  :class:`pint.engine.Engine` shares each round's rows this way, so Picard, quasi-Newton and
  MGRIT run over processes with no code of their own for it);
- points: :meth:`~Transport.send` hands a value to the process that owns the next points,
  :meth:`~Transport.post` gives one to every process (the start of an all-gather: a
  reduction's inputs), and :meth:`~Transport.poll` / :meth:`~Transport.wait` deliver what
  arrived, one event at a time, in the order it arrived: :class:`Arrived` or
  :class:`Gathered`;
- the ends: :meth:`~Transport.agree` up front, :meth:`~Transport.open` when the solve
  starts, :meth:`~Transport.close` (every process's part, the summed evaluations, the
  deepest depth) when it ends, :meth:`~Transport.abort` when it fails.

Two transports:

- :class:`Local`: one process owns every point and every row; nothing moves (the default).
- :class:`pint.transport.distributed.Distributed`: the processes are the ranks of a
  ``torch.distributed`` process group (imported when used).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from torch import Tensor

__all__ = ["Arrived", "Closed", "Event", "Gathered", "Local", "Transport"]


@dataclass(frozen=True)
class Arrived:
    """A value the previous process sent (:meth:`Transport.send`).

    Attributes:
        key: the sender's key (Parareal: the iteration).
        value: the value, on the CPU for a distributed transport.
        clock: the depth at which the sender formed it.
    """

    key: int
    value: Tensor
    clock: int


@dataclass(frozen=True)
class Gathered:
    """Every process posted a value under ``key`` (:meth:`Transport.post`).

    Attributes:
        key: the key.
        values: the values, in process order.
    """

    key: int
    values: list[Tensor]


Event = Arrived | Gathered
"""What :meth:`Transport.poll` and :meth:`Transport.wait` deliver."""


class Closed(NamedTuple):
    """What :meth:`Transport.close` returns, the same on every process.

    Attributes:
        parts: every process's part, in process order (empty where none was given).
        evaluations: the evaluations of all processes, summed per label.
        depth: the deepest of the processes' depths.
    """

    parts: list[Tensor]
    evaluations: dict[str, int]
    depth: int


class Transport(Protocol):
    """Where the parts of a solve live and how values move between them."""

    distributed: bool
    """More than this process may take part (the solve must agree up front)."""

    def agree(self, y0: Tensor, t: Tensor, options: tuple[Any, ...],
              error: Exception | None, values: bool = False) -> None:
        """Raise ``error``, on every process if any process has one, or if the inputs differ
        (with ``values``, also ``y0``'s values)."""
        ...

    def open(self) -> None:
        """The solve starts: values may arrive from now on."""
        ...

    def owned(self, n_intervals: int) -> tuple[int, int]:
        """The points ``lo..hi`` (inclusive) of ``0..n_intervals`` this process owns; ``hi``
        is the next process's ``lo``."""
        ...

    def share(self, rows: int) -> tuple[int, int]:
        """The rows ``[lo, hi)`` of ``rows`` this process computes."""
        ...

    def gather(self, part: Tensor) -> Tensor:
        """Every process's ``part`` (its share's rows), concatenated in process order."""
        ...

    def send(self, key: int, value: Tensor, clock: int) -> None:
        """``value``, formed at depth ``clock``, to the process that owns the next points."""
        ...

    def post(self, key: int, value: Tensor) -> None:
        """``value`` to every process; once all have posted under ``key``, :meth:`poll`
        delivers :class:`Gathered`."""
        ...

    def poll(self) -> Event | None:
        """The next event, or ``None`` when nothing is ready."""
        ...

    def wait(self, what: str) -> Event:
        """Nothing to compute: block until the next event (or fail after a timeout, saying
        that ``what`` did not come)."""
        ...

    def close(self, part: Tensor | None = None, evaluations: dict[str, int] | None = None,
              depth: int = 0) -> Closed:
        """The solve ends here: exchange the parts, the evaluations and the depths (a solve
        whose processes hold everything gives none: its last message tells the others that it
        ended)."""
        ...

    def abort(self, error: BaseException) -> None:
        """The solve stops with ``error`` here (raised after this returns): tell the other
        processes, without raising."""
        ...


class Local:
    """Every point and row in this process; nothing to send."""

    distributed = False

    def __init__(self) -> None:
        self.events: deque[Event] = deque()

    def __repr__(self) -> str:
        return "Local()"

    def agree(self, y0: Tensor, t: Tensor, options: tuple[Any, ...],
              error: Exception | None, values: bool = False) -> None:
        """Raise ``error`` if there is one."""
        if error is not None:
            raise error

    def open(self) -> None:
        """Nothing to set up."""

    def owned(self, n_intervals: int) -> tuple[int, int]:
        """Every point."""
        return 0, n_intervals

    def share(self, rows: int) -> tuple[int, int]:
        """Every row."""
        return 0, rows

    def gather(self, part: Tensor) -> Tensor:
        """``part`` is all of it."""
        return part

    def send(self, key: int, value: Tensor, clock: int) -> None:
        """Never called: this process owns the last point."""
        raise RuntimeError("a local solve has no next process")

    def post(self, key: int, value: Tensor) -> None:
        """The only value: gathered at once."""
        self.events.append(Gathered(key, [value]))

    def poll(self) -> Event | None:
        """The next gathered value, if any."""
        return self.events.popleft() if self.events else None

    def wait(self, what: str) -> Event:
        """Nothing can arrive: a local solve with no work left is a bug."""
        raise RuntimeError(f"pint: the solve has no work left but waits for {what}")

    def close(self, part: Tensor | None = None, evaluations: dict[str, int] | None = None,
              depth: int = 0) -> Closed:
        """This process's."""
        return Closed([] if part is None else [part], dict(evaluations or {}), depth)

    def abort(self, error: BaseException) -> None:
        """No other process to tell."""
