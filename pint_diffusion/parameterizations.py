"""What a network predicts, as objects: epsilon, v, x0 (variance preserving) and flow velocity.

Every parameterization maps the network's output at a noisy input
``x = alpha * x0 + sigma * noise`` to the denoised estimate ``x0_hat`` (:meth:`denoise`):

=====================  ==============================  ========================================
object                 the network predicts            ``x0_hat``
=====================  ==============================  ========================================
:class:`Epsilon`       the noise                       ``(x - sigma * out) / alpha``
:class:`VPrediction`   ``alpha * noise - sigma * x0``  ``alpha * x - sigma * out`` (VP only)
:class:`Sample`        ``x0``                          ``out``
:class:`FlowVelocity`  ``noise - x0``                  ``x - sigma * out`` (``alpha = 1 - sigma``)
=====================  ==============================  ========================================

:func:`from_config` picks one from a diffusers scheduler's config (``prediction_type``; flow
matching schedulers give :class:`FlowVelocity`).

The denoiser adapters (:mod:`pint_diffusion.adapters`) use them; the flow-matching one,
``FlowDenoiser``, lives there (``pint_diffusion.parameterizations.FlowDenoiser`` is its former
place, still importable).
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

__all__ = [
    "Epsilon",
    "FlowVelocity",
    "Parameterization",
    "Sample",
    "VPrediction",
    "from_config",
]


class Parameterization:
    """Base class: ``denoise(x, out, alpha, sigma) -> x0_hat`` (see the module table).

    ``alpha`` and ``sigma`` are the signal and noise scales of ``x`` (tensors broadcasting
    against ``x``, or floats).
    """

    name: ClassVar[str] = ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))

    def denoise(self, x: Tensor, out: Tensor, alpha: Any, sigma: Any) -> Tensor:
        """The denoised estimate ``x0_hat`` of ``x`` from the network output ``out``."""
        raise NotImplementedError


class Epsilon(Parameterization):
    """The network predicts the noise (DDPM; SD 1.x, SDXL)."""

    name = "epsilon"

    def denoise(self, x: Tensor, out: Tensor, alpha: Any, sigma: Any) -> Tensor:
        """``(x - sigma * out) / alpha``."""
        return (x - sigma * out) / alpha


class VPrediction(Parameterization):
    """The network predicts ``v = alpha * noise - sigma * x0`` (SD 2.x 768; needs
    ``alpha**2 + sigma**2 = 1``)."""

    name = "v_prediction"

    def denoise(self, x: Tensor, out: Tensor, alpha: Any, sigma: Any) -> Tensor:
        """``alpha * x - sigma * out``."""
        return alpha * x - sigma * out


class Sample(Parameterization):
    """The network predicts the clean sample."""

    name = "sample"

    def denoise(self, x: Tensor, out: Tensor, alpha: Any, sigma: Any) -> Tensor:
        """``out``."""
        return out


class FlowVelocity(Parameterization):
    """The network predicts the flow velocity ``noise - x0`` of ``x = (1 - sigma) x0 +
    sigma noise`` (rectified flow: SD3, Flux)."""

    name = "flow"

    def denoise(self, x: Tensor, out: Tensor, alpha: Any, sigma: Any) -> Tensor:
        """``x - sigma * out``."""
        return x - sigma * out


_BY_NAME: dict[str, type[Parameterization]] = {
    "epsilon": Epsilon, "v_prediction": VPrediction, "sample": Sample,
    "original_sample": Sample, "flow_prediction": FlowVelocity, "flow": FlowVelocity,
}


def from_config(config: Any) -> Parameterization:
    """The parameterization of a diffusers scheduler config (or scheduler).

    Flow-matching schedulers (``FlowMatch*``, or ``use_flow_sigmas``) give :class:`FlowVelocity`;
    others follow ``prediction_type``.

    Raises:
        ValueError: an unknown ``prediction_type``.
    """
    if not isinstance(config, dict) and hasattr(config, "config"):
        if type(config).__name__.startswith("FlowMatch"):
            return FlowVelocity()
        config = config.config
    if config.get("use_flow_sigmas", False):
        return FlowVelocity()
    name = config.get("prediction_type", "epsilon")
    if name not in _BY_NAME:
        raise ValueError(f"unsupported prediction_type={name!r}; supported: "
                         f"{', '.join(sorted(_BY_NAME))}")
    return _BY_NAME[name]()


def __getattr__(name: str) -> Any:
    if name == "FlowDenoiser":  # its former place; the adapters import this module
        from .adapters import FlowDenoiser

        return FlowDenoiser
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
