"""pint: parallel-in-time ODE solvers for PyTorch.

Solve ``dy/dt = f(t, y)`` by Parareal: a cheap coarse propagator sweeps the time
slices, then an accurate fine propagator refines all slices at once, in one batched
call per step, converging to the serial fine solution in few iterations::

    import torch, pint

    t = torch.linspace(0.0, 10.0, 65, dtype=torch.float64)  # 64 time slices
    sol = pint.parareal(f, y0, t, coarse=pint.RK4(1), fine=pint.RK4(100), tol=1e-8)
    sol.ys, sol.iterations, sol.stats.sequential_nfe

The public names: :func:`parareal`, :func:`serial`, :func:`predicted_depth`, the propagators
(:class:`Euler`, :class:`Midpoint`, :class:`Heun`, :class:`RK4`, :class:`RungeKutta`, the
implicit :class:`BackwardEuler` and :class:`SDIRK2` (:class:`NewtonError` when their Newton
solve fails), :class:`Torchdiffeq` and the :class:`Propagator` protocol), :class:`Solution`,
:class:`Stats`, :class:`NonFiniteError`, and the test problems in :mod:`pint.problems`.
"""

from . import problems
from .mgrit import FCFRelaxation, FCycle, FRelaxation, VCycle, mgrit
from .parareal import NonFiniteError, parareal, predicted_depth
from .propagators import (
    RK4,
    SDIRK2,
    BackwardEuler,
    ButcherTableau,
    Euler,
    Heun,
    Midpoint,
    NewtonError,
    Propagator,
    RungeKutta,
    Torchdiffeq,
)
from .serial import serial
from .solution import Solution, Stats

__all__ = [
    "RK4",
    "SDIRK2",
    "BackwardEuler",
    "ButcherTableau",
    "Euler",
    "FCFRelaxation",
    "FCycle",
    "FRelaxation",
    "Heun",
    "Midpoint",
    "NewtonError",
    "NonFiniteError",
    "Propagator",
    "RungeKutta",
    "Solution",
    "Stats",
    "Torchdiffeq",
    "VCycle",
    "mgrit",
    "parareal",
    "predicted_depth",
    "problems",
    "serial",
]

__version__ = "0.1.0"
