"""pint_diffusion: parallel diffusion samplers on top of pint.

- Samplers, each a strategy object and a function with k-diffusion's sampler signature, for any
  denoiser ``model(x, sigma, **extra_args)``: :class:`QuasiNewton` /
  :func:`sample_quasi_newton` (secant-preconditioned Picard, the fastest), :class:`SRDS` /
  :func:`sample_srds` (Self-Refining Diffusion Samplers: Parareal), :class:`Picard` /
  :func:`sample_picard` (ParaDiGMS) and :class:`Serial` / :func:`sample_serial` (the serial
  sampler they converge to, k-diffusion's ``sample_euler``/``sample_heun``); all return a
  :class:`SamplerInfo`.
- :class:`Euler` (DDIM) and :class:`Heun`: the probability-flow ODE steps, and
  :class:`OnSchedule`, which makes them pint propagators over a noise schedule.
- :class:`DiffusersDenoiser` (diffusers UNet + scheduler -> denoiser),
  :class:`StableDiffusionSRDSPipeline` (``from_pipe(pipe)``, called like the original) and the
  digits model in :mod:`pint_diffusion.models` need diffusers, imported when first used.
"""

from typing import Any

from .samplers import (
    DEFAULT_TOL,
    SRDS,
    AutoWindow,
    DepthModel,
    Picard,
    Plan,
    QuasiNewton,
    Sampler,
    SamplerInfo,
    Serial,
    Trajectory,
    block_boundaries,
    probability_flow,
    sample_picard,
    sample_quasi_newton,
    sample_serial,
    sample_srds,
)
from .steppers import Euler, Heun, OnSchedule, Solver

SRDSInfo = SamplerInfo
"""The former name of :class:`SamplerInfo`."""

__all__ = [
    "DEFAULT_TOL",
    "SRDS",
    "AutoWindow",
    "DepthModel",
    "DiffusersDenoiser",
    "Euler",
    "Heun",
    "OnSchedule",
    "Picard",
    "Plan",
    "QuasiNewton",
    "SRDSInfo",
    "Sampler",
    "SamplerInfo",
    "Serial",
    "Solver",
    "StableDiffusionSRDSPipeline",
    "Trajectory",
    "block_boundaries",
    "probability_flow",
    "sample_picard",
    "sample_quasi_newton",
    "sample_serial",
    "sample_srds",
]


def __getattr__(name: str) -> Any:
    if name == "DiffusersDenoiser":
        from .adapters import DiffusersDenoiser

        return DiffusersDenoiser
    if name == "StableDiffusionSRDSPipeline":
        from .pipelines import StableDiffusionSRDSPipeline

        return StableDiffusionSRDSPipeline
    raise AttributeError(f"module 'pint_diffusion' has no attribute {name!r}")
