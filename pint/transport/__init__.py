"""Transports: where the slices of a solve live and how their data moves.

An algorithm owns the grid points or the rows its transport gives it and asks the transport to
carry data; it contains no message passing itself. Two kinds of exchange:

- rows (Picard, quasi-Newton): :meth:`~Transport.share` says which of an evaluation's rows this
  process computes, :meth:`~Transport.gather` returns every process's rows, in order, with the
  deepest share's rounds, and :meth:`~Transport.total` sums the evaluations at the end;
- points (Parareal): :meth:`~Transport.owned` boundaries, sent to the next process, and the
  residuals of an iteration reduced over all processes (the methods taking ``solver``).

Two transports:

- :class:`Local`: one process owns every point; nothing moves (the default).
- :class:`pint.transport.distributed.Distributed`: the points are spread over the ranks of a
  ``torch.distributed`` process group (imported when used).
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor

__all__ = ["Local", "Transport"]


class Transport(Protocol):
    """What an algorithm needs from the place it runs in.

    ``solver`` below is the algorithm's per-process state: the transport hands it arrived
    boundaries (``solver.receive(k, value, clock)``) and decided residuals
    (``solver.decide(k, residual)`` for the test in ``solver.pending``).
    """

    distributed: bool

    def agree(self, y0: Tensor, t: Tensor, options: tuple[Any, ...],
              error: Exception | None, values: bool = False) -> None:
        """Raise ``error``, on every process if any process has one, or if the inputs differ
        (with ``values``, also ``y0``'s values)."""
        ...

    def open(self, row: tuple[int, ...], dtype: Any, labels: tuple[str, ...]) -> None:
        """A row-sharing solve starts: rows of shape ``row`` and ``dtype``, evaluations counted
        under ``labels``."""
        ...

    def leads(self) -> bool:
        """This process runs the work that only one process does."""
        ...

    def share(self, rows: int) -> tuple[int, int]:
        """The rows ``[lo, hi)`` of an evaluation of ``rows`` rows this process computes."""
        ...

    def gather(self, part: Tensor, rounds: int) -> tuple[Tensor, int]:
        """Every process's ``part`` (its share's rows), in order, and the most ``rounds``."""
        ...

    def total(self, evaluations: dict[str, int]) -> dict[str, int]:
        """The evaluations of all processes, per label (the end of a row-sharing solve)."""
        ...

    def owned(self, n_slices: int) -> tuple[int, int]:
        """The boundaries ``lo..hi`` (inclusive) this process owns."""
        ...

    def begin(self, solver: Any) -> None:
        """The solve starts."""
        ...

    def send(self, solver: Any, k: int, value: Tensor, clock: int) -> None:
        """Boundary ``hi`` of iteration ``k``, formed at depth ``clock``, to the next process."""
        ...

    def residuals(self, solver: Any, k: int, change: Tensor) -> Any:
        """Start the convergence test of iteration ``k`` from this process's ``change``; the
        result reaches ``solver.decide`` through :meth:`poll`."""
        ...

    def poll(self, solver: Any) -> bool:
        """Deliver what has arrived; ``True`` if anything did."""
        ...

    def wait(self, solver: Any) -> None:
        """Nothing to compute: block until something arrives (or fail after a timeout)."""
        ...

    def finish(self, solver: Any, result: Tensor, evaluations: dict[str, int],
               depth: int) -> tuple[Tensor, dict[str, int], int]:
        """The whole result, the evaluations of all processes and the depth of the solve."""
        ...

    def abort(self, solver: Any, error: BaseException) -> None:
        """The solve stops with ``error`` here (raised after this returns): tell the other
        processes, without raising."""
        ...


class Local:
    """Every point in this process; nothing to send."""

    distributed = False

    def __repr__(self) -> str:
        return "Local()"

    def agree(self, y0: Tensor, t: Tensor, options: tuple[Any, ...],
              error: Exception | None, values: bool = False) -> None:
        """Raise ``error`` if there is one."""
        if error is not None:
            raise error

    def open(self, row: tuple[int, ...], dtype: Any, labels: tuple[str, ...]) -> None:
        """Nothing to set up."""

    def leads(self) -> bool:
        """The only process."""
        return True

    def share(self, rows: int) -> tuple[int, int]:
        """All rows."""
        return 0, rows

    def gather(self, part: Tensor, rounds: int) -> tuple[Tensor, int]:
        """``part`` is all of it."""
        return part, rounds

    def total(self, evaluations: dict[str, int]) -> dict[str, int]:
        """This process's."""
        return evaluations

    def owned(self, n_slices: int) -> tuple[int, int]:
        """All boundaries ``0..N``."""
        return 0, n_slices

    def begin(self, solver: Any) -> None:
        """Nothing to set up."""

    def send(self, solver: Any, k: int, value: Tensor, clock: int) -> None:
        """Never called: this process owns the last boundary."""
        raise RuntimeError("a local solve has no next process")

    def residuals(self, solver: Any, k: int, change: Tensor) -> Tensor:
        """The residuals, computed at once."""
        return solver.it.residual(change)

    def poll(self, solver: Any) -> bool:
        """Decide a pending convergence test (it is always ready)."""
        if solver.pending is None:
            return False
        k, residual = solver.pending
        solver.decide(k, residual)
        return True

    def wait(self, solver: Any) -> None:
        """Nothing can arrive: a local solve with no work left is a bug."""
        raise RuntimeError("pint: the solve has no work left but has not finished")

    def finish(self, solver: Any, result: Tensor, evaluations: dict[str, int],
               depth: int) -> tuple[Tensor, dict[str, int], int]:
        """The result as it is; the depth is the engine's round count."""
        return result, evaluations, solver.engine.rounds

    def abort(self, solver: Any, error: BaseException) -> None:
        """No other process to tell."""
