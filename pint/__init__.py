"""pint: parallel-in-time ODE solvers for PyTorch.

Solve ``dy/dt = f(t, y)`` by Parareal (a cheap coarse propagator sweeps the time slices, then an
accurate fine propagator refines all slices at once, in one batched call per step) or by
Picard-family iterations over the whole grid, converging to the serial solution in few
sequential rounds::

    import torch, pint

    t = torch.linspace(0.0, 10.0, 65, dtype=torch.float64)  # 64 time slices
    sol = pint.parareal(f, y0, t, coarse=pint.RK4(1), fine=pint.RK4(100), tol=1e-8)
    sol.ys, sol.iterations, sol.stats.sequential_nfe

The layers: :mod:`pint.engine` (batched rounds of evaluations), :mod:`pint.propagators`
(the solvers of one slice, explicit and implicit), :mod:`pint.algorithms` (Parareal, Picard,
serial over one driver), :mod:`pint.transport` (one process, or :mod:`pint.distributed` over
torch.distributed).
"""

from . import problems
from .algorithms import (
    Anderson,
    Constant,
    DiagonalSecant,
    ExactFront,
    Extrapolate,
    Extrapolated,
    FCFRelaxation,
    FCycle,
    Freeze,
    FRelaxation,
    Identity,
    InstabilityWarning,
    Secant,
    StopRule,
    Tangent,
    Tolerance,
    VCycle,
    mgrit,
    parareal,
    picard,
    predicted_depth,
    serial,
)
from .cost import CostCurve, measure_cost
from .engine import Location, NonFiniteError
from .propagators import (
    RK4,
    SDIRK2,
    Autodiff,
    BackwardEuler,
    Banded,
    ButcherTableau,
    Euler,
    FiniteDifferences,
    Heun,
    Midpoint,
    NewtonError,
    NewtonKrylov,
    Propagator,
    RungeKutta,
    SlowNewtonWarning,
    Torchdiffeq,
)
from .solution import Solution, Stats

__all__ = [
    "RK4",
    "SDIRK2",
    "Anderson",
    "Autodiff",
    "BackwardEuler",
    "Banded",
    "ButcherTableau",
    "Constant",
    "CostCurve",
    "DiagonalSecant",
    "Euler",
    "ExactFront",
    "Extrapolate",
    "Extrapolated",
    "FCFRelaxation",
    "FCycle",
    "FRelaxation",
    "FiniteDifferences",
    "Freeze",
    "Heun",
    "Identity",
    "InstabilityWarning",
    "Location",
    "Midpoint",
    "NewtonError",
    "NewtonKrylov",
    "NonFiniteError",
    "Propagator",
    "RungeKutta",
    "Secant",
    "SlowNewtonWarning",
    "Solution",
    "Stats",
    "StopRule",
    "Tangent",
    "Tolerance",
    "Torchdiffeq",
    "VCycle",
    "measure_cost",
    "mgrit",
    "parareal",
    "picard",
    "predicted_depth",
    "problems",
    "serial",
]

__version__ = "0.2.0"
