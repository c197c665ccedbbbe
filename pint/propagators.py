"""Propagators: the coarse and fine solvers that Parareal combines.

A propagator advances states across time slices. Parareal needs to interleave the
vector-field evaluations of many propagations (several slices, several iterations)
into one batched call per round, so a propagator is written as a *coroutine*: it
yields each evaluation it needs and receives the result::

    def propagate(self, t0, t1, y0):
        k = yield (t0, y0)          # ask for f(t0, y0), one row per slice
        return y0 + (t1 - t0)[:, None] * k

``t0`` and ``t1`` have shape ``(S,)`` (one entry per row), ``y0`` has shape
``(S, *state_shape)``. A request ``(t, y)`` is for all ``S`` rows; a request
``(t, y, rows)`` is for the subset ``rows`` (a 1-D index tensor), e.g. when some rows
need fewer steps than others.
The driver owns the vector field, counts evaluations and batches the requests of
all live propagations together; the propagator never sees ``f``.

Any object with such a ``propagate`` method is a :class:`Propagator`. Propagators that
know in advance how many evaluation rounds a slice costs also define ``depth`` (an int,
the same for every slice) or ``slice_depths(t)`` (one int per slice of the grid ``t``), so
that the solver can report the depth predicted by the pipelining recurrence.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

Request = tuple[Tensor, ...]
"""An evaluation request ``(t, y)`` or ``(t, y, rows)``: ``t`` of shape ``(R,)``, ``y`` of
shape ``(R, *state)``, ``rows`` the indices of these rows in the propagation."""

Propagation = Generator[Request, Tensor, Tensor]
"""A running propagation: yields requests, receives ``f(t, y)``, returns the end states."""

__all__ = [
    "RK4",
    "ButcherTableau",
    "Euler",
    "Heun",
    "Midpoint",
    "Propagation",
    "Propagator",
    "Request",
    "RungeKutta",
    "Torchdiffeq",
]


@runtime_checkable
class Propagator(Protocol):
    """The protocol every coarse and fine solver follows.

    ``propagate(t0, t1, y0)`` is a generator that advances the rows of ``y0`` from
    ``t0`` to ``t1`` (both of shape ``(S,)``; a row's ``t1`` may be smaller than its
    ``t0`` when integrating backwards in time). It yields evaluation requests
    ``(t, y)`` and receives ``f(t, y)`` for each; its return value is the array of
    end states, of the same shape as ``y0``.
    """

    def propagate(self, t0: Tensor, t1: Tensor, y0: Tensor) -> Propagation:
        """Advance ``y0`` from ``t0`` to ``t1``, yielding the evaluations it needs."""
        ...


def slice_depths(propagator: object, t: Tensor) -> list[int] | None:
    """Evaluation rounds the propagation of each slice of ``t`` costs; ``None`` if unknown."""
    per_slice = getattr(propagator, "slice_depths", None)
    if callable(per_slice):
        return list(per_slice(t))
    depth = getattr(propagator, "depth", None)
    return [depth] * (len(t) - 1) if isinstance(depth, int) else None


@dataclass(frozen=True)
class ButcherTableau:
    """The coefficients of an explicit Runge-Kutta method.

    Args:
        a: strictly lower-triangular stage matrix, one row per stage (row ``i``
            holds ``i`` entries).
        b: the weights of the stages in the update.
        c: the stage times, as fractions of the step.
        order: the classical order of the method (used by the tests).
    """

    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]
    order: int

    def __post_init__(self) -> None:
        stages = len(self.b)
        if len(self.c) != stages or len(self.a) != stages:
            raise ValueError(
                f"a, b and c must describe the same number of stages, got "
                f"{len(self.a)}, {len(self.b)} and {len(self.c)}"
            )
        for i, row in enumerate(self.a):
            if len(row) != i:
                raise ValueError(f"row {i} of a must have {i} entries (explicit method), got {row}")

    @property
    def stages(self) -> int:
        """The number of vector-field evaluations per step."""
        return len(self.b)


EULER_TABLEAU = ButcherTableau(a=((),), b=(1.0,), c=(0.0,), order=1)
MIDPOINT_TABLEAU = ButcherTableau(a=((), (0.5,)), b=(0.0, 1.0), c=(0.0, 0.5), order=2)
HEUN_TABLEAU = ButcherTableau(a=((), (1.0,)), b=(0.5, 0.5), c=(0.0, 1.0), order=2)
RK4_TABLEAU = ButcherTableau(
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    c=(0.0, 0.5, 0.5, 1.0),
    order=4,
)


def _combine(y: Tensor, h: Tensor, coefficients: Sequence[float], ks: Sequence[Tensor]) -> Tensor:
    """``y + h * sum(coefficients[j] * ks[j])``, skipping zero terms."""
    terms = [(c, k) for c, k in zip(coefficients, ks, strict=False) if c != 0.0]
    if not terms:
        return y
    c0, k0 = terms[0]
    increment = k0 if c0 == 1.0 else k0 * c0
    for c, k in terms[1:]:
        increment = increment + c * k
    return torch.addcmul(y, h, increment)


class RungeKutta:
    """An explicit Runge-Kutta method with ``steps`` equal substeps per slice.

    Args:
        tableau: the method's Butcher tableau.
        steps: substeps per slice (``m`` in the Parareal literature).

    Example:
        >>> import pint
        >>> fine = pint.RungeKutta(pint.propagators.RK4_TABLEAU, steps=10)  # same as pint.RK4(10)
        >>> fine.depth
        40
    """

    def __init__(self, tableau: ButcherTableau, steps: int = 1) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        self.tableau = tableau
        self.steps = steps

    @property
    def depth(self) -> int:
        """Evaluation rounds per slice: ``steps * stages``."""
        return self.steps * self.tableau.stages

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.steps})"

    def propagate(self, t0: Tensor, t1: Tensor, y0: Tensor) -> Propagation:
        """Advance ``y0`` from ``t0`` to ``t1`` with ``steps`` substeps."""
        tab = self.tableau
        h = (t1 - t0) / self.steps
        h_rows = h.reshape(-1, *([1] * (y0.ndim - 1)))
        y = y0
        for i in range(self.steps):
            # Substep start from t0 (not by accumulation) so the last substep ends at t1.
            t = t0 + (t1 - t0) * (i / self.steps) if i else t0
            ks: list[Tensor] = []
            for stage in range(tab.stages):
                y_stage = _combine(y, h_rows, tab.a[stage], ks)
                t_stage = t + tab.c[stage] * h if tab.c[stage] else t
                ks.append((yield (t_stage, y_stage)))
            y = _combine(y, h_rows, tab.b, ks)
        return y


class Euler(RungeKutta):
    """Forward Euler (order 1), ``steps`` substeps per slice."""

    def __init__(self, steps: int = 1) -> None:
        super().__init__(EULER_TABLEAU, steps)


class Midpoint(RungeKutta):
    """The explicit midpoint method (order 2), ``steps`` substeps per slice."""

    def __init__(self, steps: int = 1) -> None:
        super().__init__(MIDPOINT_TABLEAU, steps)


class Heun(RungeKutta):
    """Heun's method, the explicit trapezoidal rule (order 2), ``steps`` substeps per slice."""

    def __init__(self, steps: int = 1) -> None:
        super().__init__(HEUN_TABLEAU, steps)


class RK4(RungeKutta):
    """The classical fourth-order Runge-Kutta method, ``steps`` substeps per slice."""

    def __init__(self, steps: int = 1) -> None:
        super().__init__(RK4_TABLEAU, steps)


class _Abort(Exception):
    """Raised inside a bridged solver when its propagation is abandoned."""


def _bridge(solve: Callable[[Callable[[Tensor, Tensor], Tensor]], Tensor]) -> Propagation:
    """Turn ``solve(func)``, a solver that calls ``func(t, y)`` itself, into a propagation.

    The solver runs in a worker thread; each of its ``func`` calls is handed to the
    driver as a request and blocks until the driver sends the result back. Only one
    of the two threads runs at a time, so the result is deterministic.
    """
    requests: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=1)
    results: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=1)
    grad_enabled = torch.is_grad_enabled()

    def func(t: Tensor, y: Tensor) -> Tensor:
        requests.put(("eval", (t, y)))
        kind, value = results.get()
        if kind == "abort":
            raise _Abort
        return value  # type: ignore[return-value]

    def worker() -> None:
        try:
            with torch.set_grad_enabled(grad_enabled):
                requests.put(("done", solve(func)))
        except _Abort:
            requests.put(("aborted", None))
        except BaseException as error:  # handed to the driver's thread
            requests.put(("error", error))

    thread = threading.Thread(target=worker, daemon=True, name="pint-bridge")
    thread.start()
    try:
        while True:
            kind, value = requests.get()
            if kind == "done":
                return value  # type: ignore[return-value]
            if kind == "error":
                raise value  # type: ignore[misc]
            result = yield value  # type: ignore[misc]
            results.put(("ok", result))
    except GeneratorExit:
        results.put(("abort", None))
        requests.get()
        raise
    finally:
        thread.join()


class Torchdiffeq:
    """``torchdiffeq.odeint`` as a propagator: every slice of a propagation in one call.

    Each slice ``[t0, t1]`` is rescaled to ``s`` in ``[0, 1]``
    (``dy/ds = (t1 - t0) f(t0 + s (t1 - t0), y)``), so slices of different lengths and
    directions share one ``odeint`` solve whose error control spans them all. Step
    sizes in ``options`` (e.g. ``{"step_size": 0.1}`` for fixed-grid methods) are in
    units of ``s``, i.e. fractions of a slice.

    Args:
        method: any ``torchdiffeq`` method name, e.g. ``"dopri5"`` or ``"rk4"``.
        rtol: relative tolerance of adaptive methods.
        atol: absolute tolerance of adaptive methods.
        options: passed to ``odeint`` unchanged.

    ``torchdiffeq`` is imported when the first propagation starts.
    """

    depth = None

    def __init__(
        self,
        method: str = "dopri5",
        rtol: float = 1e-7,
        atol: float = 1e-9,
        options: dict[str, object] | None = None,
    ) -> None:
        if rtol < 0 or atol < 0:
            raise ValueError(f"rtol and atol must be non-negative, got {rtol} and {atol}")
        self.method = method
        self.rtol = rtol
        self.atol = atol
        self.options = dict(options or {})

    def __repr__(self) -> str:
        return f"Torchdiffeq(method={self.method!r}, rtol={self.rtol}, atol={self.atol})"

    def propagate(self, t0: Tensor, t1: Tensor, y0: Tensor) -> Propagation:
        """Advance ``y0`` from ``t0`` to ``t1`` with one ``torchdiffeq.odeint`` call."""
        from torchdiffeq import odeint

        span = (t1 - t0).reshape(-1, *([1] * (y0.ndim - 1)))

        def solve(func: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
            def rescaled(s: Tensor, y: Tensor) -> Tensor:
                return span * func(t0 + s * (t1 - t0), y)

            s = torch.tensor([0.0, 1.0], dtype=y0.dtype, device=y0.device)
            out = odeint(
                rescaled, y0, s, rtol=self.rtol, atol=self.atol,
                method=self.method, options=self.options or None,
            )
            return out[-1]

        return (yield from _bridge(solve))
