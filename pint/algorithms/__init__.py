"""The algorithms, each a module over :mod:`pint.engine` and the shared iteration driver
(:mod:`pint.algorithms.driver`):

- :mod:`~pint.algorithms.parareal`: Parareal, batched and pipelined schedules, any transport;
- :mod:`~pint.algorithms.picard`: Picard and quasi-Newton Picard over a (sliding) window;
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
    "Tolerance",
    "VCycle",
    "mgrit",
    "parareal",
    "picard",
    "predicted_depth",
    "serial",
]
