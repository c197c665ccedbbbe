"""The input checks every algorithm shares, each raising a ValueError or TypeError that names
the argument and the value expected."""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
from torch import Tensor

from ..propagators import Propagator

__all__ = ["check_callable", "check_grid", "check_options", "check_propagators", "signature"]


def check_grid(y0: object, t: object) -> None:
    """``y0`` a finite floating tensor; ``t`` a strictly monotone finite grid like it."""
    if not isinstance(y0, Tensor) or not y0.is_floating_point():
        raise TypeError(f"y0 must be a floating-point torch.Tensor, got {_describe(y0)}")
    if not isinstance(t, Tensor) or not t.is_floating_point():
        raise TypeError(f"t must be a floating-point torch.Tensor, got {_describe(t)}")
    if t.ndim != 1 or len(t) < 2:
        raise ValueError(f"t must be 1-D with at least 2 points, got shape {tuple(t.shape)}")
    if t.dtype != y0.dtype or t.device != y0.device:
        raise ValueError(
            f"t and y0 must share dtype and device, got t: {t.dtype} on {t.device}, "
            f"y0: {y0.dtype} on {y0.device}"
        )
    if not bool(torch.isfinite(t).all()):
        raise ValueError("t must be finite")
    steps = t.diff()
    if not (bool((steps > 0).all()) or bool((steps < 0).all())):
        raise ValueError("t must be strictly increasing or strictly decreasing")
    if not bool(torch.isfinite(y0).all()):
        raise ValueError("y0 must be finite")


def check_callable(name: str, value: object) -> None:
    """A TypeError naming ``name`` unless ``value`` is callable or ``None``."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")


def check_options(
    y0: Tensor, t: Tensor, *, tol: object, max_iters: object, norm: object, stop: object,
    independent: bool, limit: int, callback: object = None,
) -> int:
    """Validate the options every iterative solver takes; returns ``max_iters`` resolved
    (``None`` means ``limit``, the iterations after which the result is exact)."""
    check_grid(y0, t)
    if isinstance(tol, bool) or not isinstance(tol, Real) or not (
            tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if max_iters is None:
        max_iters = limit
    elif isinstance(max_iters, bool) or not isinstance(max_iters, Integral) or max_iters < 0:
        raise ValueError(f"max_iters must be a non-negative integer or None, got {max_iters!r}")
    check_callable("norm", norm)
    check_callable("callback", callback)
    from .driver import StopRule  # the driver re-exports these checks

    if not isinstance(stop, StopRule):
        raise TypeError(f"stop must be a stopping rule such as pint.Tolerance() or "
                        f"pint.Extrapolated(), got {stop!r}")
    if independent and y0.ndim == 0:
        raise ValueError("independent=True needs y0 with a leading batch axis, got a 0-d tensor")
    return min(int(max_iters), limit)


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of dtype {value.dtype}"
    return type(value).__name__


def check_propagators(**propagators: object) -> None:
    """Every argument must be a :class:`pint.Propagator` instance."""
    for name, prop in propagators.items():
        if isinstance(prop, type):
            raise TypeError(f"{name} must be a propagator instance, e.g. {prop.__name__}(1); "
                            f"got the class {prop.__name__}")
        if not isinstance(prop, Propagator):
            raise TypeError(f"{name} must be a pint.Propagator (an object with a "
                            f"propagate(t0, t1, y0) generator), e.g. pint.RK4(1); got "
                            f"{type(prop).__name__}")


def signature(value: object) -> str:
    """What identifies an option across processes: its ``repr`` where its class defines one,
    else its class's name (the default ``repr`` holds a memory address, different on every
    process)."""
    if type(value).__repr__ is object.__repr__:
        return type(value).__qualname__
    return repr(value)
