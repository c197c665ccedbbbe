"""The bundled small diffusion model: a class-conditional UNet for scikit-learn's 8x8 digits.

The weights (``digits_unet.safetensors``) and their description (``digits_unet.json``: the
``UNet2DModel`` config, the ``DDIMScheduler`` config, the data range, the train/held-out split and
the training and evaluation record) ship with the package; they were produced by
``python -m pint_diffusion.models.train_digits``. Loading works offline and never unpickles.

Example::

    from pint_diffusion.models import load_digits_model

    model = load_digits_model()
    eps = model.unet(x_t, t, class_labels=labels).sample  # labels 0..9, or model.null_class

Classifier-free guidance uses the extra class ``null_class`` (10) as the unconditional label.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # diffusers is optional: imported lazily by load_digits_model
    from diffusers import DDIMScheduler, UNet2DModel

__all__ = ["DEFAULT_WEIGHTS", "DigitsModel", "load_digits_model"]

#: The bundled weights file (its metadata is the ``.json`` file of the same name beside it).
DEFAULT_WEIGHTS: Path = Path(__file__).resolve().parent / "digits_unet.safetensors"


@dataclass
class DigitsModel:
    """The bundled digits diffusion model, ready to sample from.

    Attributes:
        unet: The epsilon-predicting ``diffusers.UNet2DModel`` (eval mode, ``requires_grad`` off).
            Call it as ``unet(x_t, t, class_labels=labels).sample``.
        scheduler: A fresh ``diffusers.DDIMScheduler`` built from the saved scheduler config
            (``clip_sample`` off, epsilon prediction, the training beta schedule).
        num_classes: Number of real classes (the digits 0..9).
        null_class: The class label meaning "no class", for classifier-free guidance.
        image_size: Side length of the (square, one-channel) images.
        data_range: The value range of the training images (``(-1.0, 1.0)``).
        guidance_scale: The classifier-free guidance scale the model was evaluated with
            (``eps_uncond + s * (eps_cond - eps_uncond)``; 1 means no guidance).
        metadata: The full contents of the model's JSON file (configs, split, training record,
            evaluation results).
    """

    unet: UNet2DModel
    scheduler: DDIMScheduler
    num_classes: int = 10
    null_class: int = 10
    image_size: int = 8
    data_range: tuple[float, float] = (-1.0, 1.0)
    guidance_scale: float = 2.0
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def in_channels(self) -> int:
        """Number of image channels (1)."""
        return int(self.unet.config.in_channels)

    @property
    def device(self) -> torch.device:
        """The device the UNet's weights are on."""
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the UNet's weights."""
        return next(self.unet.parameters()).dtype


def _resolve_path(path: str | Path | None) -> tuple[Path, Path]:
    if path is None:
        weights = DEFAULT_WEIGHTS
    else:
        if not isinstance(path, (str, Path)):
            raise ValueError(
                f"path must be a str or pathlib.Path to a .safetensors file, got {type(path)!r}"
            )
        weights = Path(path)
        if weights.suffix.lower() != ".safetensors":
            raise ValueError(
                f"path must be a .safetensors file (got {str(weights)!r}); pickle-based "
                "checkpoints (.pt, .pth, .bin, .ckpt, .pkl) are refused: loading them can run "
                "arbitrary code"
            )
    meta = weights.with_suffix(".json")
    if not weights.is_file():
        raise FileNotFoundError(f"model weights not found: {weights}")
    if not meta.is_file():
        raise FileNotFoundError(f"model metadata not found beside the weights: {meta}")
    return weights, meta


def load_digits_model(
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    path: str | Path | None = None,
) -> DigitsModel:
    """Load the bundled class-conditional digits UNet and its DDIM scheduler (offline).

    Args:
        device: Where to put the UNet; default CPU.
        dtype: The UNet's dtype; default ``torch.float32`` (the file stores float16 weights).
        path: A ``.safetensors`` weights file with its ``.json`` metadata beside it (same stem);
            default the bundled model. Any other kind of file (``.pt``, ``.bin``, ``.ckpt``, pickle)
            raises :class:`ValueError`: this function never unpickles.

    Returns:
        A :class:`DigitsModel`.

    Raises:
        ValueError: ``path`` is not a ``.safetensors`` file, or its contents are not a valid
            safetensors file matching the metadata.
        FileNotFoundError: The weights or the metadata file is missing.
        ImportError: diffusers or safetensors is missing (``pip install pint-parareal[diffusion]``).
    """
    weights, meta_path = _resolve_path(path)
    try:
        from diffusers import DDIMScheduler, UNet2DModel
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_digits_model needs diffusers and safetensors: "
            "pip install 'pint-parareal[diffusion]'"
        ) from exc

    metadata = json.loads(meta_path.read_text())
    try:
        unet_config = metadata["unet_config"]
        scheduler_config = metadata["scheduler_config"]
    except KeyError as exc:
        raise ValueError(
            f"{meta_path} lacks {exc.args[0]!r}; not a pint_diffusion model file"
        ) from exc

    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"path {str(weights)!r} is not a valid safetensors file: {exc}") from exc

    unet = UNet2DModel.from_config(unet_config)
    try:
        unet.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"weights in {str(weights)!r} do not match the UNet config: {exc}"
        ) from exc
    target = torch.float32 if dtype is None else dtype
    unet = (
        unet.to(device=device or "cpu")
        if target == torch.float32
        else unet.to(device or "cpu", target)
    )
    unet.eval()
    unet.requires_grad_(False)

    scheduler = DDIMScheduler.from_config(scheduler_config)
    data = metadata.get("data", {})
    conditioning = metadata.get("conditioning", {})
    evaluation = metadata.get("evaluation", {})
    low, high = data.get("data_range", (-1.0, 1.0))
    return DigitsModel(
        unet=unet,
        scheduler=scheduler,
        num_classes=int(conditioning.get("num_classes", 10)),
        null_class=int(conditioning.get("null_class", 10)),
        image_size=int(data.get("image_size", unet_config.get("sample_size", 8))),
        data_range=(float(low), float(high)),
        guidance_scale=float(evaluation.get("guidance_scale", 2.0)),
        metadata=metadata,
    )
