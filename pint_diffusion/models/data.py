"""The scikit-learn digits data set and the project's one fixed train / held-out split.

Both the bundled model's training script (:mod:`pint_diffusion.models.train_digits`) and the
sample-quality metric (:mod:`pint_diffusion.metrics`) take their data from :func:`digits_split`,
so the model never sees the held-out digits that the metric compares samples against.

The data ship with scikit-learn (no network access is needed).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

__all__ = [
    "DATA_RANGE",
    "IMAGE_SIZE",
    "NUM_CLASSES",
    "SPLIT_INFO",
    "DigitsSplit",
    "digits_split",
    "from_pixels",
    "to_pixels",
]

#: Side length of a digits image in pixels (images are ``IMAGE_SIZE x IMAGE_SIZE``, one channel).
IMAGE_SIZE: int = 8

#: Number of digit classes (0..9).
NUM_CLASSES: int = 10

#: The value range of images as the model and the metric see them.
DATA_RANGE: tuple[float, float] = (-1.0, 1.0)

#: Largest raw pixel value in :func:`sklearn.datasets.load_digits` (pixels are integers 0..16).
_RAW_MAX: float = 16.0

#: How the held-out split is drawn; recorded in the model's metadata.
SPLIT_INFO: dict[str, object] = {
    "dataset": "sklearn.datasets.load_digits",
    "function": "sklearn.model_selection.train_test_split",
    "test_size": 0.25,
    "random_state": 0,
    "stratify": "labels",
}


@dataclass(frozen=True)
class DigitsSplit:
    """The digits data set split into a training and a held-out part.

    Images are float32 tensors of shape ``(n, 1, 8, 8)`` in ``[-1, 1]`` (raw pixel ``p`` in
    ``0..16`` maps to ``p / 8 - 1``); labels are int64 tensors of shape ``(n,)`` with values 0..9.

    Attributes:
        train_images: The training images (1347 of them).
        train_labels: Their labels.
        test_images: The held-out images (450 of them); never used for training.
        test_labels: Their labels.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def from_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """Map raw digits pixels (``0..16``) to the model's range ``[-1, 1]``.

    Args:
        pixels: Raw pixel values, any shape.

    Returns:
        A float32 tensor of the same shape with values in ``[-1, 1]``.
    """
    return pixels.to(torch.float32) * (2.0 / _RAW_MAX) - 1.0


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """Map images in ``[-1, 1]`` back to raw digits pixel values (``0..16``), clamping the range.

    Args:
        images: Images in the model's range, any shape.

    Returns:
        A float tensor of the same shape with values in ``[0, 16]``.
    """
    return ((images.float().clamp(-1.0, 1.0) + 1.0) * (_RAW_MAX / 2.0)).clamp(0.0, _RAW_MAX)


@lru_cache(maxsize=1)
def _split_arrays() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.images,
        data.target,
        test_size=SPLIT_INFO["test_size"],
        random_state=SPLIT_INFO["random_state"],
        stratify=data.target,
    )

    def images(x: object) -> torch.Tensor:
        return from_pixels(torch.as_tensor(x)).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE).contiguous()

    def labels(y: object) -> torch.Tensor:
        return torch.as_tensor(y, dtype=torch.int64).contiguous()

    return images(x_train), labels(y_train), images(x_test), labels(y_test)


def digits_split() -> DigitsSplit:
    """Return the project's fixed train / held-out split of :func:`sklearn.datasets.load_digits`.

    The split is ``train_test_split(test_size=0.25, random_state=0, stratify=labels)``
    (see :data:`SPLIT_INFO`): 1347 training and 450 held-out images, every class in the same
    proportion in both parts. The result is cached; fresh tensor copies are returned each call,
    so callers may modify them.

    Returns:
        The :class:`DigitsSplit`.
    """
    x_train, y_train, x_test, y_test = _split_arrays()
    return DigitsSplit(x_train.clone(), y_train.clone(), x_test.clone(), y_test.clone())
