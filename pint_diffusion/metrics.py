"""Sample quality of digits from the bundled model, measured so that a sampler cannot game it.

The judge is a small convolutional classifier trained (fixed seed, a few seconds on a CPU) on the
TRAINING split of scikit-learn's digits, the same split the bundled diffusion model was trained on
(:func:`pint_diffusion.models.data.digits_split`). It never sees a sampler's output during training,
so the only way to score well is to produce digits that look like real, held-out digits:

* **conditioning accuracy**: the share of generated images that the classifier assigns to the class
  they were generated for (chance is 0.1);
* **Frechet distance (FD)**: the Frechet distance between Gaussians fitted to the classifier's
  penultimate-layer features of the generated images and of the real HELD-OUT digits (an FID
  with the Inception network replaced by the digits classifier). Lower is better;
* **the real-vs-real reference**: the same FD for *real training* digits against the held-out ones,
  with as many training images as generated ones (FD is biased upwards for small sample counts, so
  the reference is computed at the same count). A generator that reproduced its training
  distribution exactly would score this. The small-sample bias grows with the spread of the
  features, so with few samples a low-diversity generator (e.g. strongly guided) can score below the
  reference; compare FDs from several hundred samples (500 is used for the bundled model's record).

Example::

    from pint_diffusion.metrics import DigitsMetric

    metric = DigitsMetric()
    result = metric.score(images, labels)  # images in [-1, 1], shape (n, 1, 8, 8)
    print(result.accuracy, result.frechet_distance, result.reference_frechet_distance)

The classifier's weights are cached as safetensors under the user cache directory
(``$PINT_DIFFUSION_CACHE``, else ``$XDG_CACHE_HOME/pint_diffusion``, else
``~/.cache/pint_diffusion``), keyed by a hash of its configuration; if the cache cannot be read or
written it is retrained.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pint_diffusion.models.data import IMAGE_SIZE, NUM_CLASSES, SPLIT_INFO, digits_split

__all__ = [
    "ClassifierConfig",
    "DigitsClassifier",
    "DigitsMetric",
    "MetricResult",
    "default_cache_dir",
    "frechet_distance",
    "gaussian_frechet_distance",
]


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture and training recipe of the judging classifier (its hash keys the weight cache).

    Attributes:
        width: Channels of the first two convolutions (the third has twice as many).
        feature_dim: Size of the penultimate layer, the features the Frechet distance is taken over.
        epochs: Training epochs over the training split.
        batch_size: Minibatch size.
        lr: Adam learning rate (cosine-decayed to zero).
        weight_decay: Adam (decoupled) weight decay.
        noise_std: Standard deviation of Gaussian noise added to training images (robustness).
        max_shift: Training images are shifted by up to this many pixels in each direction.
        seed: Seed of the weight initialisation and the minibatch order.
    """

    width: int = 32
    feature_dim: int = 64
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    noise_std: float = 0.1
    max_shift: int = 1
    seed: int = 0

    def digest(self) -> str:
        """A short stable hash of this configuration, the data split and the format version."""
        payload = {"config": asdict(self), "split": SPLIT_INFO, "format": 1}
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


class DigitsClassifier(nn.Module):
    """A small CNN for 8x8 one-channel digits in ``[-1, 1]``.

    Three 3x3 convolutions with two 2x2 max-pools, then a fully connected feature layer of
    ``config.feature_dim`` units (ReLU) and a linear 10-way head.

    Args:
        config: The architecture (only ``width`` and ``feature_dim`` matter here).
    """

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        super().__init__()
        config = config or ClassifierConfig()
        w = config.width
        self.conv = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        spatial = (IMAGE_SIZE // 4) ** 2
        self.feature = nn.Sequential(nn.Linear(2 * w * spatial, config.feature_dim), nn.ReLU())
        self.head = nn.Linear(config.feature_dim, NUM_CLASSES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features, shape ``(n, feature_dim)``, of images ``(n, 1, 8, 8)``."""
        return self.feature(self.conv(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits, shape ``(n, 10)``, of images ``(n, 1, 8, 8)``."""
        return self.head(self.features(images))


@dataclass(frozen=True)
class MetricResult:
    """Scores of a set of generated digits.

    Attributes:
        accuracy: Share of images that the classifier assigns to their requested class (chance 0.1).
        frechet_distance: Frechet distance between classifier features of the images and of the real
            held-out digits. Lower is better.
        reference_frechet_distance: The same distance for ``num_samples`` real training digits
            against the held-out digits: what a perfect generator would score at this sample count.
        num_samples: Number of images scored.
    """

    accuracy: float
    frechet_distance: float
    reference_frechet_distance: float
    num_samples: int

    def __str__(self) -> str:
        return (
            f"accuracy {self.accuracy:.3f}, FD {self.frechet_distance:.3f} "
            f"(real-vs-real {self.reference_frechet_distance:.3f}, n={self.num_samples})"
        )


def default_cache_dir() -> Path:
    """The directory where the classifier weights are cached.

    ``$PINT_DIFFUSION_CACHE`` if set, else ``$XDG_CACHE_HOME/pint_diffusion``, else
    ``~/.cache/pint_diffusion``.
    """
    explicit = os.environ.get("PINT_DIFFUSION_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "pint_diffusion"


def gaussian_frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Frechet (2-Wasserstein squared) distance between two Gaussians.

    ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^(1/2) S2 S1^(1/2))^(1/2))``. The matrix square
    roots are taken by symmetric eigendecomposition (eigenvalues clipped at zero), which is exact
    for positive semi-definite covariances, including singular ones, and avoids the complex
    round-off of a general ``sqrtm(S1 @ S2)``.

    Args:
        mu1: Mean of the first Gaussian, shape ``(d,)``.
        sigma1: Its covariance, shape ``(d, d)``.
        mu2: Mean of the second Gaussian.
        sigma2: Its covariance.

    Returns:
        The distance (non-negative, up to round-off clipped to zero).

    Raises:
        ValueError: mismatched shapes, or a NaN or infinity in any argument (naming it).
    """
    mu1 = np.asarray(mu1, dtype=np.float64)
    mu2 = np.asarray(mu2, dtype=np.float64)
    s1 = np.asarray(sigma1, dtype=np.float64)
    s2 = np.asarray(sigma2, dtype=np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ValueError(
            f"shape mismatch: mu1 {mu1.shape}, sigma1 {s1.shape}, "
            f"mu2 {mu2.shape}, sigma2 {s2.shape}"
        )
    for name, value in (("mu1", mu1), ("sigma1", s1), ("mu2", mu2), ("sigma2", s2)):
        if not np.isfinite(value).all():
            raise ValueError(f"{name} must be finite (no NaN or infinity)")
    s1 = 0.5 * (s1 + s1.T)
    s2 = 0.5 * (s2 + s2.T)
    w1, v1 = np.linalg.eigh(s1)
    root1 = (v1 * np.sqrt(np.clip(w1, 0.0, None))) @ v1.T
    middle = root1 @ s2 @ root1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (middle + middle.T)), 0.0, None)).sum()
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * cross)
    return max(value, 0.0)


def _moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need at least 2 feature rows of shape (n, d), got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(
    features1: np.ndarray | torch.Tensor, features2: np.ndarray | torch.Tensor
) -> float:
    """Frechet distance between Gaussians fitted to two sets of feature vectors.

    Args:
        features1: Shape ``(n1, d)``, ``n1 >= 2``.
        features2: Shape ``(n2, d)``, ``n2 >= 2``.

    Returns:
        :func:`gaussian_frechet_distance` of the sample means and (unbiased) covariances.

    Raises:
        ValueError: fewer than 2 rows, not 2-D, or a NaN or infinity (naming the argument).
    """
    if isinstance(features1, torch.Tensor):
        features1 = features1.detach().cpu().double().numpy()
    if isinstance(features2, torch.Tensor):
        features2 = features2.detach().cpu().double().numpy()
    for name, value in (("features1", features1), ("features2", features2)):
        if not np.isfinite(np.asarray(value, dtype=np.float64)).all():
            raise ValueError(f"{name} must be finite (no NaN or infinity)")
    return gaussian_frechet_distance(*_moments(features1), *_moments(features2))


def _shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by a random offset in ``[-max_shift, max_shift]^2`` (background fill)."""
    if max_shift <= 0:
        return images
    n = images.shape[0]
    pad = F.pad(images, (max_shift,) * 4, value=-1.0)
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    out = torch.empty_like(images)
    for i in range(n):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        out[i] = pad[i, :, dy : dy + IMAGE_SIZE, dx : dx + IMAGE_SIZE]
    return out


def _train_classifier(config: ClassifierConfig) -> DigitsClassifier:
    split = digits_split()
    x, y = split.train_images, split.train_labels
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = DigitsClassifier(config)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    steps_per_epoch = -(-x.shape[0] // config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, config.epochs * steps_per_epoch
    )
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(x.shape[0], generator=generator)
        for start in range(0, x.shape[0], config.batch_size):
            idx = order[start : start + config.batch_size]
            xb = _shift(x[idx], config.max_shift, generator)
            if config.noise_std > 0:
                noise = torch.randn(xb.shape, generator=generator)
                xb = xb + config.noise_std * noise
            loss = F.cross_entropy(model(xb), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    return model


def _load_or_train(config: ClassifierConfig, cache_dir: Path | None) -> DigitsClassifier:
    from safetensors.torch import load_file, save_file

    path = (
        None
        if cache_dir is None
        else cache_dir / f"digits_classifier-{config.digest()}.safetensors"
    )
    if path is not None and path.is_file():
        try:
            model = DigitsClassifier(config)
            model.load_state_dict(load_file(str(path)), strict=True)
            return model.eval()
        except Exception:  # corrupt or stale cache entry: retrain and overwrite
            pass
    model = _train_classifier(config)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(tmp), metadata={"config": json.dumps(asdict(config))})
            os.replace(tmp, path)
        except OSError:
            pass  # read-only or missing home: the classifier simply is not cached
    return model


class DigitsMetric:
    """Conditioning accuracy and Frechet distance of generated digits (see the module docstring).

    Construction trains (or loads from the cache) the judging classifier and computes the features
    of the real held-out digits once; scoring is then cheap.

    Args:
        config: The classifier's architecture and training recipe; the default is what the project's
            reported numbers use.
        cache_dir: Where to cache the classifier's weights; ``None`` uses :func:`default_cache_dir`,
            ``False`` disables caching (the classifier is retrained, a few seconds).

    Attributes:
        classifier: The judging :class:`DigitsClassifier` (CPU, float32, eval mode, no gradients).
        heldout_accuracy: The classifier's accuracy on the real held-out digits.
    """

    def __init__(
        self, config: ClassifierConfig | None = None, cache_dir: str | Path | bool | None = None
    ) -> None:
        self.config = config or ClassifierConfig()
        if cache_dir is False:
            directory = None
        elif cache_dir is None or cache_dir is True:
            directory = default_cache_dir()
        else:
            directory = Path(cache_dir)
        self.classifier = _load_or_train(self.config, directory)
        self.classifier.requires_grad_(False)
        split = digits_split()
        self._train_images = split.train_images
        self._train_labels = split.train_labels
        self._test_images = split.test_images
        with torch.no_grad():
            test_logits = self.classifier(split.test_images)
            self._test_features = self.classifier.features(split.test_images).double().numpy()
        self._test_moments = _moments(self._test_features)
        self.heldout_accuracy = float((test_logits.argmax(1) == split.test_labels).float().mean())
        self._reference_cache: dict[int, float] = {}

    @staticmethod
    def _prepare(images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            images = torch.as_tensor(np.asarray(images))
        images = images.detach().to("cpu", torch.float32)
        if images.ndim == 3:
            images = images.unsqueeze(1)
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(
                f"images must have shape (n, 1, H, W) or (n, H, W), got {tuple(images.shape)}"
            )
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values")
        if images.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
            images = F.interpolate(
                images,
                size=(IMAGE_SIZE, IMAGE_SIZE),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        return images.clamp(-1.0, 1.0)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The classifier's penultimate-layer features of images.

        Args:
            images: Shape ``(n, 1, H, W)`` or ``(n, H, W)`` in ``[-1, 1]`` (values outside are
                clamped, as they would be when the image is displayed); sizes other than 8x8 are
                resized (bilinear, antialiased). Any device or dtype.

        Returns:
            A float32 CPU tensor of shape ``(n, feature_dim)``.
        """
        with torch.no_grad():
            return self.classifier.features(self._prepare(images))

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted class (0..9) of each image (input rules as in :meth:`features`)."""
        with torch.no_grad():
            return self.classifier(self._prepare(images)).argmax(dim=1)

    def score(
        self, images: torch.Tensor, labels: torch.Tensor | Sequence[int] | int
    ) -> MetricResult:
        """Score generated images against the class each was generated for.

        Args:
            images: Generated images, shape ``(n, 1, 8, 8)`` (or ``(n, 8, 8)``) in ``[-1, 1]``,
                ``n >= 2``; see :meth:`features` for the exact input rules.
            labels: The requested class of each image (``n`` integers in 0..9; integral floats
                are accepted), or one class for all.

        Returns:
            A :class:`MetricResult` with the accuracy, the Frechet distance to the held-out digits
            and the real-vs-real reference distance at the same sample count.
        """
        x = self._prepare(images)
        n = x.shape[0]
        if n < 2:
            raise ValueError("need at least 2 images to fit a covariance")
        y = torch.as_tensor(labels).flatten().cpu()
        if y.is_floating_point() and not bool((y == y.round()).all()):
            raise ValueError(f"labels must be integers (classes 0..{NUM_CLASSES - 1}), got "
                             f"non-integer values such as {y[y != y.round()][0].item()}")
        y = y.to(torch.int64)
        if y.numel() == 1:
            y = y.expand(n)
        if y.numel() != n:
            raise ValueError(f"got {n} images but {y.numel()} labels")
        if ((y < 0) | (y >= NUM_CLASSES)).any():
            raise ValueError(f"labels must lie in 0..{NUM_CLASSES - 1}")
        with torch.no_grad():
            feats = self.classifier.features(x)
            predicted = self.classifier.head(feats).argmax(dim=1)
        accuracy = float((predicted == y).float().mean())
        fd = gaussian_frechet_distance(*_moments(feats.double().numpy()), *self._test_moments)
        return MetricResult(accuracy, fd, self.reference_frechet_distance(n), n)

    def _subset_size(self, num_samples: object) -> int:
        """How many training digits ``num_samples`` asks for (all for ``None`` or more)."""
        total = self._train_images.shape[0]
        if num_samples is None:
            return total
        if isinstance(num_samples, bool) or not isinstance(num_samples, Integral) or (
                num_samples < 2):
            raise ValueError(f"num_samples must be an integer >= 2 (a covariance needs two "
                             f"samples) or None, got {num_samples!r}")
        return min(int(num_samples), total)

    def reference_frechet_distance(self, num_samples: int | None = None) -> float:
        """FD of ``num_samples`` real training digits (fixed random subset) to the held-out digits.

        Args:
            num_samples: How many training digits, at least 2; ``None`` (or more than the
                1347) uses all.

        Returns:
            The distance. Cached per sample count.

        Raises:
            ValueError: ``num_samples`` is not an integer >= 2 (or ``None``).
        """
        n = self._subset_size(num_samples)
        if n not in self._reference_cache:
            generator = torch.Generator().manual_seed(12345)
            idx = torch.randperm(len(self._train_images), generator=generator)[:n]
            feats = self.features(self._train_images[idx])
            self._reference_cache[n] = gaussian_frechet_distance(
                *_moments(feats.double().numpy()), *self._test_moments
            )
        return self._reference_cache[n]

    def reference(self, num_samples: int | None = None) -> MetricResult:
        """The real-vs-real reference: real training digits scored exactly like generated ones.

        Args:
            num_samples: How many training digits (a fixed random subset), at least 2; ``None``
                uses all 1347.

        Returns:
            A :class:`MetricResult` whose ``accuracy`` is the classifier's accuracy on those
            training digits and whose ``frechet_distance`` equals its
            ``reference_frechet_distance``. (:attr:`heldout_accuracy` gives the accuracy on unseen
            real digits.)

        Raises:
            ValueError: ``num_samples`` is not an integer >= 2 (or ``None``).
        """
        total = self._train_images.shape[0]
        n = self._subset_size(num_samples)
        generator = torch.Generator().manual_seed(12345)
        idx = torch.randperm(total, generator=generator)[:n]
        return self.score(self._train_images[idx], self._train_labels[idx])
