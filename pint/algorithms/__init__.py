"""The algorithms, each a module over :mod:`pint.engine`, run by the one loop of
:func:`pint.algorithms.driver.drive` (each supplies its ``begin``/``step``/``end``), with the
input checks of :mod:`pint.algorithms.checks`:

- :mod:`~pint.algorithms.parareal`: Parareal, batched and pipelined schedules, any transport;
- :mod:`~pint.algorithms.picard`: Picard and quasi-Newton Picard over a (sliding) window, a
  package of its strategies and the solver, over any transport;
- :mod:`~pint.algorithms.mgrit`: multigrid reduction in time (two levels with F-relaxation
  are Parareal);
- :mod:`~pint.algorithms.serial`: the serial solve they converge to.
"""

from .driver import Extrapolated, InstabilityWarning, StopRule, Tolerance
from .mgrit import FCFRelaxation, FCycle, FRelaxation, VCycle, mgrit
from .parareal import parareal, predicted_depth
from .picard import (
    Anderson,
    Constant,
    DiagonalSecant,
    ExactFront,
    Extrapolate,
    Freeze,
    Identity,
    Secant,
    Tangent,
    picard,
)
from .serial import serial

__all__ = [
    "Anderson",
    "Constant",
    "DiagonalSecant",
    "ExactFront",
    "Extrapolate",
    "Extrapolated",
    "FCFRelaxation",
    "FCycle",
    "FRelaxation",
    "Freeze",
    "Identity",
    "InstabilityWarning",
    "Secant",
    "StopRule",
    "Tangent",
    "Tolerance",
    "VCycle",
    "mgrit",
    "parareal",
    "picard",
    "predicted_depth",
    "serial",
]
