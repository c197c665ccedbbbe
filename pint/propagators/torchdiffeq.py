"""``torchdiffeq.odeint`` as a propagator, through a thread that turns its calls into requests."""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from ..engine import Propagation, Request

__all__ = ["Torchdiffeq"]


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
        requests.put(("eval", Request(t, y)))
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
    except BaseException:  # abandoned (GeneratorExit), interrupted (Ctrl-C) or failed
        _stop(thread, requests, results)
        raise
    finally:
        thread.join(_STOP_SECONDS)


_STOP_SECONDS = 5.0
"""How long an abandoned or interrupted propagation waits for its solver thread to end."""


def _stop(thread: threading.Thread, requests: queue.Queue, results: queue.Queue) -> None:
    """Tell the solver thread to end, and drain what it sends until it has, for at most
    :data:`_STOP_SECONDS` (the thread is a daemon: it cannot keep the process alive)."""
    with contextlib.suppress(queue.Full):
        results.put(("abort", None), timeout=_STOP_SECONDS)
    deadline = time.monotonic() + _STOP_SECONDS
    while thread.is_alive() and time.monotonic() < deadline:
        try:
            kind, _ = requests.get(timeout=0.05)
        except queue.Empty:
            continue
        if kind == "eval":  # it asked again before it saw the abort
            with contextlib.suppress(queue.Full):
                results.put_nowait(("abort", None))


class Torchdiffeq:
    """``torchdiffeq.odeint`` as a propagator: every slice of a propagation in one call.

    Each slice ``[t0, t1]`` is rescaled to ``s`` in ``[0, 1]``
    (``dy/ds = (t1 - t0) f(t0 + s (t1 - t0), y)``), so slices of different lengths and
    directions share one ``odeint`` solve whose error control spans them all. Step
    sizes in ``options`` (e.g. ``{"step_size": 0.1}`` for fixed-grid methods) are in
    units of ``s``, i.e. fractions of a slice.

    With an adaptive method (``dopri5``, ...) the steps a slice takes depend on the other
    slices of its solve, so an iterative solver at full iterations matches :func:`pint.serial`
    to the solver's accuracy, not to round-off (``pint.problems.lotka_volterra``, 32 slices,
    default tolerances: 1e-5 on values up to 6.9). A fixed-grid method (``"rk4"`` with
    ``options={"step_size": ...}``) matches it to round-off.

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
        for name, value in (("rtol", rtol), ("atol", atol)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if options is not None and not isinstance(options, Mapping):
            raise TypeError(f"options must be a dict of odeint options or None, got "
                            f"{type(options).__name__}")
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
