"""pint_diffusion: parallel diffusion samplers on top of pint.

- Samplers, each a strategy object and a function with k-diffusion's sampler signature, for any
  denoiser ``model(x, sigma, **extra_args)``: :class:`QuasiNewton` /
  :func:`sample_quasi_newton` (secant-preconditioned Picard, the fastest), :class:`SRDS` /
  :func:`sample_srds` (Self-Refining Diffusion Samplers: Parareal), :class:`Picard` /
  :func:`sample_picard` (ParaDiGMS) and :class:`Serial` / :func:`sample_serial` (the serial
  sampler they converge to, k-diffusion's ``sample_euler``/``sample_heun``); all return a
  :class:`SamplerInfo`.
- :class:`EulerSolver` (DDIM) and :class:`HeunSolver`: the probability-flow ODE steps (formerly
  ``Euler`` and ``Heun``, still importable under those names), and :class:`OnSchedule`, which
  makes them pint propagators over a noise schedule.
- :class:`DiffusersDenoiser` (diffusers UNet + DDIM/Euler -> denoiser, see
  :mod:`pint_diffusion.adapters`), the parallel pipelines (:mod:`pint_diffusion.pipelines`:
  ``ParallelStableDiffusionPipeline`` and its former name :class:`StableDiffusionSRDSPipeline`,
  SDXL, SD3, Flux; ``from_pipe(pipe)``, called like the originals) and the digits model in
  :mod:`pint_diffusion.models` need diffusers, imported when first used.
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
from .steppers import Euler, EulerSolver, Heun, HeunSolver, OnSchedule, Solver

__all__ = [
    "DEFAULT_TOL",
    "SRDS",
    "AutoWindow",
    "DepthModel",
    "DiffusersDenoiser",
    "Euler",
    "EulerSolver",
    "Heun",
    "HeunSolver",
    "OnSchedule",
    "ParallelStableDiffusionPipeline",
    "Picard",
    "Plan",
    "QuasiNewton",
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

_LAZY = {"DiffusersDenoiser": "adapters", "ParallelStableDiffusionPipeline": "pipelines",
         "StableDiffusionSRDSPipeline": "pipelines"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:  # they need diffusers
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'pint_diffusion' has no attribute {name!r}")
