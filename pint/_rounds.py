"""Runs many propagations at once, one batched vector-field call per round."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .propagators import Propagation

VectorField = Callable[..., Tensor]


class NonFiniteError(FloatingPointError, ValueError):
    """A vector-field evaluation or a state became NaN or infinite.

    Attributes:
        kind: ``"coarse"`` or ``"fine"`` (``None`` for a boundary state).
        slice: index of the time slice whose propagation failed (or the boundary).
        iteration: the Parareal iteration (0 is the initial coarse sweep).
        evaluation: index of the failing evaluation within the propagation.
    """

    def __init__(
        self, message: str, *, kind: str | None, slice: int, iteration: int,
        evaluation: int | None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.slice = slice
        self.iteration = iteration
        self.evaluation = evaluation


@dataclass
class Task:
    """A running propagation with what to do when it ends."""

    propagation: Propagation
    kind: str
    iteration: int
    slices: Tensor  # slice index of every row (on the CPU, for messages)
    problems: Tensor  # problem (sample) index of every row, on the states' device
    on_done: Callable[[Tensor], None]
    request: tuple[Tensor, ...] | None = None
    evaluations: int = 0


@dataclass
class Rounds:
    """Drives tasks in lock step: each round gathers the pending request of every live
    task, evaluates them in one call of the batched vector field and hands each task its
    rows of the result. Tasks started during a round join the next one, so the round in
    which a value becomes available is exactly its depth on the critical path."""

    f: VectorField
    with_index: bool = False  # call f(t, y, index) with each row's problem index
    check_finite: bool = True
    rounds: int = 0
    rows: dict[str, int] = field(default_factory=lambda: {"coarse": 0, "fine": 0})
    live: list[Task] = field(default_factory=list)
    _finished: deque[tuple[Task, Tensor]] = field(default_factory=deque)
    _draining: bool = False

    def start(self, task: Task) -> None:
        """Start a task; it evaluates for the first time in the next round.

        A propagation that needs no evaluation at all completes at once: its ``on_done``
        runs before ``start`` returns (or, when ``start`` is called from another task's
        ``on_done``, right after that one, so chains of such tasks do not recurse).
        """
        try:
            task.request = next(task.propagation)
        except StopIteration as stop:
            self._finished.append((task, stop.value))
            self._drain()
            return
        self.live.append(task)

    def _drain(self) -> None:
        """Run the completions of finished tasks, first in, first out."""
        if self._draining:
            return
        self._draining = True
        try:
            while self._finished:
                task, value = self._finished.popleft()
                task.on_done(value)
        finally:
            self._draining = False

    def close(self) -> None:
        """Abandon all live tasks (their work is no longer needed)."""
        for task in self.live:
            task.propagation.close()
        self.live.clear()

    def step(self) -> None:
        """Run one round: one batched evaluation, then advance every live task."""
        if not self.live:
            raise RuntimeError("no live propagation to advance")
        requests = [task.request for task in self.live]
        sizes = [len(request[1]) for request in requests]  # type: ignore[index]
        t = _cat([request[0] for request in requests])  # type: ignore[index]
        y = _cat([request[1] for request in requests])  # type: ignore[index]
        if self.with_index:
            index = _cat([_rows(task.problems, task.request) for task in self.live])
            out = self.f(t, y, index)
        else:
            out = self.f(t, y)
        if out.shape != y.shape:
            raise ValueError(
                f"f returned shape {tuple(out.shape[1:])} for states of shape "
                f"{tuple(y.shape[1:])}; f(t, y) must return dy/dt with the shape of y"
            )
        if self.check_finite and not bool(torch.isfinite(out).all()):
            self._raise_non_finite(out, sizes)
        self.rounds += 1
        parts = out.split(sizes) if len(sizes) > 1 else (out,)
        still_live = []
        for task, part in zip(self.live, parts, strict=True):
            self.rows[task.kind] += len(part)
            task.evaluations += 1
            try:
                task.request = task.propagation.send(part)
                still_live.append(task)
            except StopIteration as stop:
                self._finished.append((task, stop.value))
        self.live = still_live
        self._drain()

    def _raise_non_finite(self, out: Tensor, sizes: list[int]) -> None:
        bad_rows = (~torch.isfinite(out.flatten(1))).any(1)
        for task, bad in zip(self.live, bad_rows.split(sizes), strict=True):
            if bool(bad.any()):
                row = int(_rows(task.slices, task.request)[int(bad.nonzero()[0])])
                n, k = row, task.iteration
                self.close()
                raise NonFiniteError(
                    f"f returned a non-finite value in evaluation {task.evaluations} of the "
                    f"{task.kind} propagation of slice {n} in iteration {k}",
                    kind=task.kind, slice=n, iteration=k, evaluation=task.evaluations,
                )


def _cat(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _rows(values: Tensor, request: tuple[Tensor, ...] | None) -> Tensor:
    """``values`` (one per row of the propagation) for the rows of ``request``."""
    if request is not None and len(request) == 3 and request[2] is not None:
        return values[request[2].to(values.device)]
    return values
