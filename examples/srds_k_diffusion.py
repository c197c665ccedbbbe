"""SRDS with a k-diffusion-style denoiser, against k-diffusion's own Euler and Heun samplers.

The denoiser is exact for Gaussian data, D(x, sigma) = (s^2 x + sigma^2 mu) / (s^2 + sigma^2),
so any callable ``model(x, sigma, **extra_args)`` works the same way (e.g. a
``k_diffusion.external.CompVisDenoiser``). Prints, for 25 and 100 Karras steps, the SRDS
iterations, model evaluations, sequential evaluations and the difference from the serial
sampler (k-diffusion's, when it is installed; pint's own serial solve otherwise).

Run: ``python examples/srds_k_diffusion.py``
"""

import itertools
import math
import sys
from pathlib import Path

import torch

import pint
from pint_diffusion import EulerSolver, HeunSolver, OnSchedule, sample_srds


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
                  rho: float = 7.0) -> torch.Tensor:
    """The schedule of Karras et al. (2022), eq. 5, with a final 0."""
    ramp = torch.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1)])


def gaussian_denoiser(mu: float = 0.3, s: float = 0.5):
    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sig2 = sigma.reshape(-1, *([1] * (x.ndim - 1))) ** 2
        return (s**2 * x + sig2 * mu) / (s**2 + sig2)

    return denoiser


def serial_sampler(name: str):
    """k-diffusion's sampler when available, else the same steps through pint.serial.

    ``import k_diffusion`` needs torchvision and more (its package ``__init__`` imports its
    training code), so k-diffusion's ``sampling.py`` is loaded by the tests' loader,
    ``tests/kdiffusion.py``, which works with a ``--no-deps`` install too.
    """
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from kdiffusion import load_k_sampling

        return getattr(load_k_sampling(), f"sample_{name}")
    except ImportError:
        solver = {"euler": EulerSolver(), "heun": HeunSolver()}[name]

        def sample(model, x, sigmas, disable=True):
            def field(t, y):
                return (y - model(y, t)) / t.reshape(-1, *([1] * (y.ndim - 1)))
            return pint.serial(field, x, sigmas, method=OnSchedule(solver, sigmas),
                               vectorized=True).ys[-1]

        return sample


def main() -> None:
    torch.manual_seed(0)
    model = gaussian_denoiser()
    source = serial_sampler("euler").__module__
    print("serial samplers: " + ("k-diffusion's" if "sampling" in source else "pint.serial"))
    for name, solver in (("euler", EulerSolver()), ("heun", HeunSolver())):
        for steps in (25, 100):
            sigmas = karras_sigmas(steps)
            x = torch.randn(8, 3, 16, 16) * sigmas[0]
            reference = serial_sampler(name)(model, x, sigmas, disable=True)
            samples, info = sample_srds(model, x, sigmas, solver=solver, disable=True,
                                        return_info=True)
            diff = samples - reference
            serial_depth = sum(solver.depth(float(a), float(b))
                               for a, b in itertools.pairwise(sigmas))
            print(f"{name:5s} N={steps:3d} blocks={len(info.blocks) - 1:2d}: "
                  f"{info.iterations} iterations, nfe {info.nfe}, sequential {info.sequential_nfe}"
                  f" (predicted {info.predicted_sequential_nfe}, serial {serial_depth}), "
                  f"max |SRDS - serial| {diff.abs().max():.2e}, "
                  f"RMS {math.sqrt(diff.pow(2).mean()):.2e}")


if __name__ == "__main__":
    main()
