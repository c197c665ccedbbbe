"""The samplers: strategy objects over one front-end, and k-diffusion-signature functions.

- :class:`SRDS` / :func:`sample_srds`: Parareal over blocks of the schedule;
- :class:`QuasiNewton` / :func:`sample_quasi_newton`: secant-preconditioned Picard;
- :class:`Picard` / :func:`sample_picard`: ParaDiGMS;
- :class:`Serial` / :func:`sample_serial`: the serial sampler they all converge to.

The window of Picard and quasi-Newton and SRDS's block count default to ``"auto"``:
:class:`AutoWindow` chooses them from the model's measured cost curve (or the serial sampler).

Each sampler solves a :class:`Trajectory` (:func:`probability_flow` builds one from a k-diffusion
denoiser) and returns a :class:`SamplerInfo`.
"""

from .auto import AutoWindow, DepthModel, Plan
from .base import DEFAULT_TOL, Progress, Sampler, SamplerInfo
from .conditioning import conditioned
from .picard import Picard, QuasiNewton, sample_picard, sample_quasi_newton
from .serial import Serial, sample_serial
from .srds import SRDS, block_boundaries, sample_srds
from .trajectory import Trajectory, probability_flow

__all__ = [
    "DEFAULT_TOL",
    "SRDS",
    "AutoWindow",
    "DepthModel",
    "Picard",
    "Plan",
    "Progress",
    "QuasiNewton",
    "Sampler",
    "SamplerInfo",
    "Serial",
    "Trajectory",
    "block_boundaries",
    "conditioned",
    "probability_flow",
    "sample_picard",
    "sample_quasi_newton",
    "sample_serial",
    "sample_srds",
]
