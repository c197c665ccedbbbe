"""pint_diffusion: Self-Refining Diffusion Samplers (SRDS) on top of pint.

- :func:`sample_srds`: SRDS with k-diffusion's sampler signature, for any denoiser
  ``model(x, sigma, **extra_args)``.
- :func:`sample_serial`: the serial sampler SRDS converges to (k-diffusion's
  ``sample_euler``/``sample_heun``), with the same statistics.
- :func:`sample_picard`: ParaDiGMS-style sliding-window Picard iterations, the peer
  SRDS is benchmarked against, with the same signature.
- :class:`Euler` (DDIM) and :class:`Heun`: the probability-flow ODE steps it uses, and
  :class:`OnSchedule`, which makes them pint propagators over a noise schedule.
- :class:`DiffusersDenoiser` (diffusers UNet + scheduler -> denoiser),
  :class:`StableDiffusionSRDSPipeline` (``from_pipe(pipe)``, called like the original) and
  the digits model in :mod:`pint_diffusion.models` need diffusers, imported when first used.
"""

from typing import Any

from .picard import sample_picard
from .serial import sample_serial
from .srds import DEFAULT_TOL, SRDSInfo, block_boundaries, sample_srds
from .steppers import Euler, Heun, OnSchedule, Solver

__all__ = [
    "DEFAULT_TOL",
    "DiffusersDenoiser",
    "Euler",
    "Heun",
    "OnSchedule",
    "SRDSInfo",
    "Solver",
    "StableDiffusionSRDSPipeline",
    "block_boundaries",
    "sample_picard",
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
