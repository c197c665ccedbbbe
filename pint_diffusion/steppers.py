"""Probability-flow ODE steps over the noise level, as pint propagators.

In k-diffusion's convention the state ``x`` is variance exploding, ``sigma`` is the
noise level and a denoiser ``D(x, sigma)`` estimates the clean sample. The
probability-flow ODE is ``dx/dsigma = (x - D(x, sigma)) / sigma``; pint integrates it
in decreasing ``sigma``, with this derivative as the vector field.

A *solver* (:class:`EulerSolver`, :class:`HeunSolver`) is one step rule from ``sigma`` to
``sigma_next``; ``Euler`` and ``Heun`` are their former names, kept as aliases (``pint.Euler``
and ``pint.Heun`` are pint's Runge-Kutta propagators, a different thing). :class:`OnSchedule`
turns a solver and a grid of noise levels into a pint propagator that takes the grid's own
steps across each slice, so SRDS uses ``OnSchedule(solver, sigmas)`` as its fine propagator
(the sampler's own steps) and ``OnSchedule(solver, sigmas[boundaries])`` as its coarse one
(one step per block).
"""

from __future__ import annotations

import itertools
from collections.abc import Generator
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from pint.engine import Propagation, Request

__all__ = ["Euler", "EulerSolver", "Heun", "HeunSolver", "OnSchedule", "Solver",
           "denoised_to_derivative"]

Step = Generator[Request, Tensor, Tensor]


def _rows(values: Tensor, like: Tensor) -> Tensor:
    """Per-row scalars shaped to broadcast against states ``like``."""
    return values.reshape(-1, *([1] * (like.ndim - 1)))


@runtime_checkable
class Solver(Protocol):
    """A one-step rule for the probability-flow ODE.

    ``step(sigma, sigma_next, x)`` is a generator over rows: ``sigma`` and
    ``sigma_next`` have shape ``(R,)``, ``x`` has shape ``(R, *state)``. It yields requests
    ``Request(sigma, x)`` (or ``Request(sigma, x, rows)`` for a subset of rows), receives the
    ODE derivative ``(x - D(x, sigma)) / sigma`` for them, and returns the states at
    ``sigma_next``. ``depth(sigma, sigma_next)`` is the number of evaluation rounds a
    step costs.
    """

    def step(self, sigma: Tensor, sigma_next: Tensor, x: Tensor) -> Step:
        """One step of every row from ``sigma`` to ``sigma_next``."""
        ...

    def depth(self, sigma: float, sigma_next: float) -> int:
        """Evaluation rounds of one step."""
        ...


class EulerSolver:
    """Euler's method on the PF-ODE: k-diffusion's ``sample_euler`` step, and DDIM (eta 0)
    for variance-preserving models (Song et al., 2021; Karras et al., 2022, eq. 4)."""

    def __repr__(self) -> str:
        return "EulerSolver()"

    def depth(self, sigma: float, sigma_next: float) -> int:
        """One evaluation per step."""
        return 1

    def step(self, sigma: Tensor, sigma_next: Tensor, x: Tensor) -> Step:
        """``x + (sigma_next - sigma) * d(x, sigma)``."""
        d = yield Request(sigma, x)
        return x + d * _rows(sigma_next - sigma, x)


class HeunSolver:
    """Heun's second-order method (Karras et al., 2022, Algorithm 1, without churn).

    As in k-diffusion's ``sample_heun``, a step to ``sigma_next = 0`` is a plain Euler
    step (the derivative is undefined at zero noise).
    """

    def __repr__(self) -> str:
        return "HeunSolver()"

    def depth(self, sigma: float, sigma_next: float) -> int:
        """Two evaluations per step, one for a step to zero noise."""
        return 1 if sigma_next == 0 else 2

    def step(self, sigma: Tensor, sigma_next: Tensor, x: Tensor) -> Step:
        """The trapezoidal correction of an Euler predictor."""
        d = yield Request(sigma, x)
        dt = _rows(sigma_next - sigma, x)
        predicted = x + d * dt
        rows = (sigma_next != 0).nonzero().squeeze(1)
        if len(rows) == 0:
            return predicted
        if len(rows) == len(x):
            d2 = yield Request(sigma_next, predicted)
            return x + (d + d2) / 2 * dt
        d2 = yield Request(sigma_next[rows], predicted[rows], rows)
        corrected = x[rows] + (d[rows] + d2) / 2 * dt[rows]
        return predicted.index_copy(0, rows, corrected)


class OnSchedule:
    """A pint propagator that steps along a grid of noise levels with ``solver``.

    A slice from ``sigma_a`` to ``sigma_b`` (both points of ``grid``) takes the grid's
    steps between them, so no noise level off the schedule is ever evaluated. Slices of
    different step counts may share one propagation.

    Args:
        solver: the step rule, e.g. :class:`EulerSolver` or :class:`HeunSolver`.
        grid: the noise levels, strictly decreasing, 1-D.
    """

    def __init__(self, solver: Solver, grid: Tensor) -> None:
        if grid.ndim != 1 or len(grid) < 2 or not bool((grid.diff() < 0).all()):
            raise ValueError("grid must be 1-D, strictly decreasing, with at least 2 points")
        self.solver = solver
        self.grid = grid
        self._known: tuple[Tensor, list[int]] | None = None  # a grid t and its positions

    def __repr__(self) -> str:
        return f"OnSchedule({self.solver!r}, {len(self.grid) - 1} steps)"

    def _positions(self, *sigmas: Tensor) -> list[list[int]]:
        """The grid positions of each tensor of noise levels, read back in one transfer."""
        flat = torch.cat([s.reshape(-1) for s in sigmas])
        match = flat.reshape(-1, 1) == self.grid.to(flat).reshape(1, -1)
        found = torch.where(match.any(1), match.to(torch.int8).argmax(1), -1).tolist()
        if -1 in found:
            missing = [v for v, i in zip(flat.tolist(), found, strict=True) if i < 0][:3]
            raise ValueError(f"noise levels {missing} are not points of the schedule")
        out, at = [], 0
        for s in sigmas:
            out.append(found[at:at + s.numel()])
            at += s.numel()
        return out

    def slice_depths(self, t: Tensor) -> list[int]:
        """Evaluation rounds of each slice of ``t`` (noise levels on the grid)."""
        grid = self.grid.tolist()
        (positions,) = self._positions(t)
        return [
            sum(self.solver.depth(grid[i], grid[i + 1]) for i in range(a, b))
            for a, b in itertools.pairwise(positions)
        ]

    def propagate(self, t0: Tensor, t1: Tensor, y0: Tensor) -> Propagation:
        """Take the schedule's steps from ``t0`` to ``t1`` for every row (one read-back of the
        rows' grid positions; the steps themselves never wait for the device)."""
        start, end = self._positions(t0, t1)
        return self._steps(start, end, y0, self.grid.to(t0))

    def propagate_indexed(self, t: Tensor, start: Tensor, end: Tensor, y0: Tensor
                          ) -> Propagation:
        """:meth:`propagate` from ``t[start]`` to ``t[end]`` (host indices, see
        :func:`pint.propagators.propagation`): the positions of ``t`` on the schedule are read
        back once per grid ``t`` and kept, so starting a propagation never waits for the
        device."""
        if self._known is None or self._known[0] is not t:
            self._known = (t, self._positions(t)[0])
        at = self._known[1]  # .numpy(): the indices are host data (it refuses device tensors)
        return self._steps([at[i] for i in start.numpy()], [at[i] for i in end.numpy()], y0,
                           self.grid.to(t))

    def _steps(self, start: list[int], end: list[int], y0: Tensor, grid: Tensor
               ) -> Propagation:
        """Every row from grid position ``start`` to ``end``, a step at a time."""
        device = y0.device
        x = y0
        for j in range(max(b - a for a, b in zip(start, end, strict=True))):
            todo = [r for r, (a, b) in enumerate(zip(start, end, strict=True)) if b - a > j]
            every = len(todo) == len(start)
            rows = None if every else torch.tensor(todo).to(device, non_blocking=True)
            here = torch.tensor([start[r] + j for r in todo]).to(device, non_blocking=True)
            step = self.solver.step(grid[here], grid[here + 1], x if rows is None else x[rows])
            try:
                request = next(step)
                while True:
                    if rows is not None:  # translate the step's rows to the propagation's
                        sub = request.rows
                        request = Request(request.t, request.y, rows if sub is None else rows[sub])
                    request = step.send((yield request))
            except StopIteration as done:
                x = done.value if rows is None else x.index_copy(0, rows, done.value)
        return x


def denoised_to_derivative(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
    """The PF-ODE derivative ``(x - D) / sigma`` (k-diffusion's ``to_d``)."""
    return (x - denoised) / _rows(sigma, x)


Euler = EulerSolver
"""The former name of :class:`EulerSolver` (renamed: ``pint.Euler`` is pint's Runge-Kutta
propagator)."""

Heun = HeunSolver
"""The former name of :class:`HeunSolver` (renamed: ``pint.Heun`` is pint's Runge-Kutta
propagator)."""
