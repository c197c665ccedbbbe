"""The bundled small diffusion model: a class-conditional UNet for scikit-learn's 8x8 digits.

The weights (``digits_unet.safetensors``) and their description (``digits_unet.json``: the
``UNet2DModel`` config, the ``DDIMScheduler`` config, the data range, the train/held-out split and
the training and evaluation record) ship with the package; they were produced by
``python -m pint_diffusion.models.train_digits``. Loading works offline (it builds the
model from the metadata with the diffusers constructors, never from a Hub id) and never
unpickles; the metadata is checked against a schema (:func:`validate_metadata`) and the
weights must be floating point and finite.

Example::

    from pint_diffusion.models import load_digits_model

    model = load_digits_model()
    eps = model.unet(x_t, t, class_labels=labels).sample  # labels 0..9, or model.null_class

Classifier-free guidance uses the extra class ``null_class`` (10) as the unconditional label.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # diffusers is optional: imported lazily by load_digits_model
    from diffusers import DDIMScheduler, UNet2DModel

__all__ = ["DEFAULT_WEIGHTS", "FORMAT", "DigitsModel", "load_digits_model", "load_metadata",
           "validate_metadata"]

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


#: The ``format`` value of the metadata files this loader reads.
FORMAT = "pint_diffusion.digits_unet/1"


@dataclass(frozen=True)
class _Field:
    """One metadata field: a predicate on its value and, for errors, what it should be."""

    ok: Callable[[Any], bool]
    expected: str
    required: bool = True


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _int(low: int, required: bool = True) -> _Field:
    return _Field(lambda v: _is_int(v) and v >= low, f"an integer >= {low}", required)


def _number(low: float, high: float | None = None, required: bool = True) -> _Field:
    if high is None:
        return _Field(lambda v: _is_number(v) and v >= low, f"a finite number >= {low}",
                      required)
    return _Field(lambda v: _is_number(v) and low < v < high,
                  f"a number in ({low}, {high})", required)


def _bool(required: bool = True) -> _Field:
    return _Field(lambda v: isinstance(v, bool), "true or false", required)


def _choice(*values: str) -> _Field:
    return _Field(lambda v: v in values, "one of " + ", ".join(map(repr, values)))


def _list(item: Callable[[Any], bool], expected: str, length: int | None = None) -> _Field:
    def ok(value: Any) -> bool:
        return (isinstance(value, list) and len(value) >= 1
                and (length is None or len(value) == length) and all(map(item, value)))

    return _Field(ok, expected)


_SCHEMA: dict[str, dict[str, _Field]] = {
    "unet_config": {
        "sample_size": _int(1),
        "in_channels": _int(1),
        "out_channels": _int(1),
        "block_out_channels": _list(lambda v: _is_int(v) and v >= 1,
                                    "a non-empty list of integers >= 1"),
        "down_block_types": _list(lambda v: isinstance(v, str), "a non-empty list of strings"),
        "up_block_types": _list(lambda v: isinstance(v, str), "a non-empty list of strings"),
        "layers_per_block": _int(1),
        "norm_num_groups": _int(1),
        "num_class_embeds": _int(2),
        "attention_head_dim": _Field(lambda v: v is None or (_is_int(v) and v >= 1),
                                     "an integer >= 1 or null", required=False),
        "add_attention": _bool(required=False),
    },
    "scheduler_config": {
        "num_train_timesteps": _int(1),
        "beta_start": _number(0.0, 1.0),
        "beta_end": _number(0.0, 1.0),
        "beta_schedule": _choice("linear", "scaled_linear", "squaredcos_cap_v2"),
        "clip_sample": _bool(),
        "set_alpha_to_one": _bool(),
        "steps_offset": _int(0),
        "prediction_type": _choice("epsilon"),
        "timestep_spacing": _choice("leading", "trailing", "linspace"),
    },
    "data": {
        "image_size": _int(1, required=False),
        "channels": _int(1, required=False),
        "data_range": _Field(_list(_is_number, "", length=2).ok,
                             "a list of two finite numbers [low, high]", required=False),
    },
    "conditioning": {
        "num_classes": _int(1, required=False),
        "null_class": _int(0, required=False),
    },
    "evaluation": {
        "guidance_scale": _number(0.0, required=False),
    },
}
#: Sections that may be absent (their fields then take defaults).
_OPTIONAL_SECTIONS = ("data", "conditioning", "evaluation")
#: Sections whose extra keys are passed to a constructor: they must be its arguments.
_CONSTRUCTED = ("unet_config", "scheduler_config")


def _json_value_ok(value: Any) -> bool:
    """A plain JSON value without NaN or infinities."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(map(_json_value_ok, value))
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_value_ok(v) for k, v in value.items())
    return value is None or isinstance(value, (str, int, bool))


def validate_metadata(metadata: Any, source: str | Path = "metadata") -> dict[str, Any]:
    """Check a model's metadata against the schema of ``FORMAT``; return it unchanged.

    Every field is checked for presence, type and range, and the fields that must agree
    (UNet and data sizes, block lists, class labels, the beta range, an optional
    ``trained_betas`` list and ``num_train_timesteps``) are checked against each other.
    ``unet_config`` and ``scheduler_config`` must be JSON objects (a string would name a Hub
    repository: refused, loading never goes to the network); their other keys, besides the
    required ones, must be plain JSON values without NaN (:func:`load_digits_model` further
    checks that they are arguments of ``UNet2DModel`` / ``DDIMScheduler``). Other top-level
    sections (``training``, ...) are free-form.

    Args:
        metadata: The parsed JSON.
        source: The file it came from, for the error messages.

    Raises:
        ValueError: ``"<source>: field 'unet_config.in_channels' must be an integer >= 1,
            got 'one'"`` and the like.
    """

    def fail(name: str, expected: str, value: Any) -> ValueError:
        return ValueError(f"{source}: field {name!r} must be {expected}, got {value!r}")

    if not isinstance(metadata, dict):
        raise ValueError(f"{source}: the metadata must be a JSON object, got "
                         f"{type(metadata).__name__}")
    if metadata.get("format") != FORMAT:
        raise fail("format", repr(FORMAT), metadata.get("format"))
    for section, fields in _SCHEMA.items():
        if section not in metadata and section in _OPTIONAL_SECTIONS:
            continue
        values = metadata.get(section)
        if not isinstance(values, dict):
            raise fail(section, "a JSON object", values)
        for key, spec in fields.items():
            if key not in values:
                if spec.required:
                    raise ValueError(f"{source}: field {f'{section}.{key}'!r} is missing "
                                     f"(expected {spec.expected})")
                continue
            if not spec.ok(values[key]):
                raise fail(f"{section}.{key}", spec.expected, values[key])
        if section in _CONSTRUCTED:
            for key, value in values.items():
                if not _json_value_ok(value):
                    raise fail(f"{section}.{key}", "a plain JSON value (no NaN)", value)
    _cross_check(metadata, fail)
    return metadata


def _cross_check(metadata: dict[str, Any], fail: Callable[[str, str, Any], ValueError]) -> None:
    unet, scheduler = metadata["unet_config"], metadata["scheduler_config"]
    channels = unet["block_out_channels"]
    for key in ("down_block_types", "up_block_types"):
        if len(unet[key]) != len(channels):
            raise fail(f"unet_config.{key}", f"a list of {len(channels)} block types (one per "
                       "block_out_channels entry)", unet[key])
    groups = unet["norm_num_groups"]
    if any(c % groups for c in channels):
        raise fail("unet_config.norm_num_groups", "a divisor of every block_out_channels entry "
                   f"{channels}", groups)
    if scheduler["beta_end"] <= scheduler["beta_start"]:
        raise fail("scheduler_config.beta_end",
                   f"greater than beta_start ({scheduler['beta_start']})", scheduler["beta_end"])
    betas, steps = scheduler.get("trained_betas"), scheduler["num_train_timesteps"]
    if betas is not None and not (isinstance(betas, list) and len(betas) == steps and all(
            _is_number(b) and 0 < b < 1 for b in betas)):
        raise fail("scheduler_config.trained_betas",
                   f"null or a list of {steps} numbers in (0, 1) (one per training timestep)",
                   betas)
    if scheduler["steps_offset"] >= scheduler["num_train_timesteps"]:
        raise fail("scheduler_config.steps_offset",
                   f"less than num_train_timesteps ({scheduler['num_train_timesteps']})",
                   scheduler["steps_offset"])
    data = metadata.get("data", {})
    if data.get("image_size", unet["sample_size"]) != unet["sample_size"]:
        raise fail("data.image_size", f"unet_config.sample_size ({unet['sample_size']})",
                   data["image_size"])
    if data.get("channels", unet["in_channels"]) != unet["in_channels"]:
        raise fail("data.channels", f"unet_config.in_channels ({unet['in_channels']})",
                   data["channels"])
    low, high = data.get("data_range", (-1.0, 1.0))
    if not low < high:
        raise fail("data.data_range", "[low, high] with low < high", data["data_range"])
    embeds = unet["num_class_embeds"]
    conditioning = metadata.get("conditioning", {})
    num_classes = conditioning.get("num_classes", embeds - 1)
    null_class = conditioning.get("null_class", embeds - 1)
    if num_classes >= embeds:
        raise fail("conditioning.num_classes",
                   f"less than unet_config.num_class_embeds ({embeds}): one embedding is the "
                   "null class", num_classes)
    if not num_classes <= null_class < embeds:
        raise fail("conditioning.null_class",
                   f"an integer in [{num_classes}, {embeds - 1}] (not a real class, below "
                   "unet_config.num_class_embeds)", null_class)


def load_metadata(path: str | Path | None = None) -> dict[str, Any]:
    """The validated metadata (the ``.json`` file) of a model's weights file; default the
    bundled model. Reads no weights and imports neither diffusers nor safetensors.

    Raises:
        FileNotFoundError: The weights or the metadata file is missing.
        ValueError: ``path`` is not a ``.safetensors`` file, or the metadata is not valid JSON or
            fails :func:`validate_metadata` (the message names the file and the field).
    """
    _, meta_path = _resolve_path(path)
    return _read_metadata(meta_path)


def _read_metadata(meta_path: Path) -> dict[str, Any]:
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{meta_path}: not valid JSON ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"{meta_path}: not a UTF-8 text file ({exc})") from exc
    return validate_metadata(metadata, meta_path)


def _constructor_kwargs(section: dict[str, Any], cls: type, name: str, meta_path: Path
                        ) -> dict[str, Any]:
    """``section`` minus diffusers' private keys (``_class_name``, ...), every other key an
    argument of ``cls``."""
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
    kwargs = {k: v for k, v in section.items() if not k.startswith("_")}
    for key in kwargs:
        if key not in allowed:
            raise ValueError(f"{meta_path}: field {f'{name}.{key}'!r} is not an argument of "
                             f"{cls.__name__}")
    return kwargs


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

    The metadata is checked first (:func:`validate_metadata`: every field's presence, type and
    range, with errors naming the file and the field); the UNet and the scheduler are then built
    by their constructors from those checked keyword arguments (never ``from_config`` or
    ``from_pretrained``, so a malformed file cannot turn into a Hub download), and every
    tensor of the weights must be floating point and finite.

    Raises:
        ValueError: ``path`` is not a ``.safetensors`` file; the metadata is not valid JSON or
            fails the schema; its contents are not a valid safetensors file matching the
            metadata; or a tensor is not floating point or holds NaN or infinity (the message
            names the tensor).
        FileNotFoundError: The weights or the metadata file is missing.
        ImportError: diffusers or safetensors is missing (``pip install pint-parareal[diffusion]``).
    """
    weights, meta_path = _resolve_path(path)
    metadata = _read_metadata(meta_path)
    try:
        from diffusers import DDIMScheduler, UNet2DModel
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_digits_model needs diffusers and safetensors: "
            "pip install 'pint-parareal[diffusion]'"
        ) from exc

    # the constructors themselves, with keyword arguments: no from_config / from_pretrained,
    # nothing that could read a Hub id or open a connection
    unet_kwargs = _constructor_kwargs(metadata["unet_config"], UNet2DModel, "unet_config",
                                      meta_path)
    scheduler_kwargs = _constructor_kwargs(metadata["scheduler_config"], DDIMScheduler,
                                           "scheduler_config", meta_path)
    # any exception of a constructor is the metadata's fault (diffusers raises UnboundLocalError
    # for an unknown time_embedding_type, for example)
    try:
        unet = UNet2DModel(**unet_kwargs)
    except Exception as exc:
        raise ValueError(f"{meta_path}: field 'unet_config' does not describe a UNet2DModel: "
                         f"{exc}") from exc
    try:
        scheduler = DDIMScheduler(**scheduler_kwargs)
    except Exception as exc:
        raise ValueError(f"{meta_path}: field 'scheduler_config' does not describe a "
                         f"DDIMScheduler: {exc}") from exc

    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"path {str(weights)!r} is not a valid safetensors file: {exc}") from exc
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            raise ValueError(f"{weights}: tensor {name!r} has dtype {tensor.dtype}; the weights "
                             f"must be floating point (the file is corrupt)")
        if not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"{weights}: tensor {name!r} has {bad} non-finite value(s) "
                             f"(NaN or infinity) of {tensor.numel()}; the weights are corrupt")
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

    unet_config = metadata["unet_config"]
    embeds = unet_config["num_class_embeds"]
    data = metadata.get("data", {})
    conditioning = metadata.get("conditioning", {})
    evaluation = metadata.get("evaluation", {})
    low, high = data.get("data_range", (-1.0, 1.0))
    return DigitsModel(
        unet=unet,
        scheduler=scheduler,
        num_classes=int(conditioning.get("num_classes", embeds - 1)),
        null_class=int(conditioning.get("null_class", embeds - 1)),
        image_size=int(unet_config["sample_size"]),
        data_range=(float(low), float(high)),
        guidance_scale=float(evaluation.get("guidance_scale", 2.0)),
        metadata=metadata,
    )
