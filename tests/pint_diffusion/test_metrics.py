"""Tests of the digits sample-quality metric (pint_diffusion.metrics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pint_diffusion.metrics import (
    ClassifierConfig,
    DigitsMetric,
    MetricResult,
    default_cache_dir,
    frechet_distance,
    gaussian_frechet_distance,
)
from pint_diffusion.models.data import digits_split


@pytest.fixture(scope="module")
def split():
    return digits_split()


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_split_is_fixed_and_disjoint(split):
    assert split.train_images.shape == (1347, 1, 8, 8)
    assert split.test_images.shape == (450, 1, 8, 8)
    assert split.train_images.min() >= -1 and split.train_images.max() <= 1
    # every class present in both parts in the same proportion (stratified)
    assert torch.bincount(split.test_labels).min() >= 43
    again = digits_split()
    assert torch.equal(again.test_images, split.test_images)
    # no held-out image is (pixel for pixel) a training image by construction of the split indices;
    # load_digits has no exact duplicates across classes, so check the sets are disjoint as rows
    train_rows = {tuple(r) for r in split.train_images.flatten(1).tolist()}
    overlap = sum(tuple(r) in train_rows for r in split.test_images.flatten(1).tolist())
    assert overlap <= 2  # load_digits holds a couple of exact duplicate images


def test_gaussian_fd_identical_is_zero():
    rng = np.random.default_rng(0)
    mu, s = rng.standard_normal(5), _random_spd(rng, 5)
    assert gaussian_frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)


def test_gaussian_fd_diagonal_closed_form():
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = gaussian_frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gaussian_fd_matches_scipy_sqrtm_and_is_symmetric(seed):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(seed)
    d = 12
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert gaussian_frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert gaussian_frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-8)


def test_gaussian_fd_singular_covariances():
    # rank-deficient covariances (dead ReLU features) must not produce NaN or negative values
    s1 = np.diag([1.0, 0.0, 0.0])
    s2 = np.diag([0.0, 1.0, 0.0])
    assert gaussian_frechet_distance(np.zeros(3), s1, np.zeros(3), s2) == pytest.approx(2.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_frechet_distances_refuse_non_finite_inputs(bad):
    # a NaN mean came back as a NaN distance, non-finite features as numpy's LinAlgError
    # "Eigenvalues did not converge"
    mu, cov = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="mu2 must be finite"):
        gaussian_frechet_distance(mu, cov, np.array([0.0, bad, 0.0]), cov)
    with pytest.raises(ValueError, match="sigma1 must be finite"):
        gaussian_frechet_distance(mu, np.full((3, 3), bad), mu, cov)
    features = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    broken = features.clone()
    broken[4, 1] = bad
    with pytest.raises(ValueError, match="features1 must be finite"):
        frechet_distance(broken, features)
    with pytest.raises(ValueError, match="features2 must be finite"):
        frechet_distance(features, broken.numpy())


def test_frechet_distance_of_feature_sets_and_validation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 3, generator=g)
    y = torch.randn(4000, 3, generator=g) + torch.tensor([1.0, 0.0, 0.0])
    assert frechet_distance(x, y) == pytest.approx(1.0, abs=0.1)
    with pytest.raises(ValueError):
        frechet_distance(x[:1], y)
    with pytest.raises(ValueError):
        gaussian_frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_classifier_is_accurate_on_heldout(metric):
    assert metric.heldout_accuracy > 0.95


def test_real_heldout_digits_score_high(metric, split):
    n = 100
    result = metric.score(split.test_images[:n], split.test_labels[:n])
    assert isinstance(result, MetricResult)
    assert result.num_samples == n
    assert result.accuracy > 0.9
    reference = metric.reference_frechet_distance(n)
    assert result.reference_frechet_distance == reference
    # real unseen digits are as close to the held-out set as real training digits are
    assert result.frechet_distance < 2.0 * reference
    assert "accuracy" in str(result)


def test_reference_uses_training_digits(metric):
    ref = metric.reference(100)
    assert ref.num_samples == 100
    assert ref.frechet_distance == pytest.approx(metric.reference_frechet_distance(100))
    assert ref.accuracy > 0.95
    # FD is biased upwards for small samples: the reference shrinks with more samples
    assert metric.reference_frechet_distance(None) < metric.reference_frechet_distance(100)


@pytest.mark.parametrize("num_samples", [0, -3, 1, 2.5, True])
def test_reference_sample_counts_are_checked(metric, num_samples):
    # 0 and -3 silently used 2 digits
    for reference in (metric.reference, metric.reference_frechet_distance):
        with pytest.raises(ValueError, match="num_samples must be an integer >= 2"):
            reference(num_samples)


@pytest.mark.parametrize("kind", ["uniform", "gaussian", "constant"])
def test_noise_scores_low(metric, kind):
    g = torch.Generator().manual_seed(1)
    n = 100
    if kind == "uniform":
        images = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
    elif kind == "gaussian":
        images = torch.randn(n, 1, 8, 8, generator=g)
    else:
        images = torch.full((n, 1, 8, 8), -1.0) + 0.01 * torch.randn(n, 1, 8, 8, generator=g)
    labels = torch.arange(n) % 10
    result = metric.score(images, labels)
    # a fixed garbage distribution falls in (about) one class: accuracy near chance (0.1)
    assert result.accuracy < 0.3
    assert result.frechet_distance > 10.0 * result.reference_frechet_distance


def test_one_class_only_is_penalised_by_fd(metric, split):
    # mode collapse: perfectly "accurate" ones, but their features are far from the held-out set
    ones = split.test_images[split.test_labels == 1]
    result = metric.score(ones, 1)
    assert result.accuracy > 0.9
    assert result.frechet_distance > 5.0 * result.reference_frechet_distance


def test_inputs_accepted_and_validated(metric, split):
    x, y = split.test_images[:20], split.test_labels[:20]
    base = metric.score(x, y)
    # (n, H, W), float64, other resolution (resized), out-of-range values (clamped)
    assert metric.score(x[:, 0].double(), y.tolist()).accuracy == base.accuracy
    up = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    assert metric.score(up, y).accuracy >= 0.8
    assert metric.score(x * 1.5, y).accuracy >= 0.8
    assert torch.equal(metric.classify(x), metric.classify(x.clamp(-1, 1)))
    assert metric.features(x).shape == (20, ClassifierConfig().feature_dim)
    with pytest.raises(ValueError):
        metric.score(x, y[:5])
    with pytest.raises(ValueError):
        metric.score(x, torch.full((20,), 10))
    with pytest.raises(ValueError):
        metric.score(torch.full_like(x, float("nan")), y)
    with pytest.raises(ValueError):
        metric.score(x.repeat(1, 3, 1, 1), y)
    with pytest.raises(ValueError):
        metric.score(x[:1], y[:1])
    # non-integer labels were truncated to a class silently (2.7 -> 2)
    with pytest.raises(ValueError, match="labels must be integers"):
        metric.score(x, y.float() + 0.7)
    with pytest.raises(ValueError, match="labels must be integers"):
        metric.score(x, 2.5)
    assert metric.score(x, y.double()).accuracy == base.accuracy  # integral floats are fine


def test_classifier_cache_roundtrip(metric, cache_dir, split):
    files = list(cache_dir.glob("digits_classifier-*.safetensors"))
    assert len(files) == 1
    assert ClassifierConfig().digest() in files[0].name
    cached = DigitsMetric(cache_dir=cache_dir)  # loads, no retraining
    x = split.test_images[:50]
    assert torch.equal(cached.features(x), metric.features(x))
    # a corrupt cache entry is retrained and overwritten, not fatal
    files[0].write_bytes(b"not a safetensors file")
    repaired = DigitsMetric(cache_dir=cache_dir)
    assert torch.allclose(repaired.features(x), metric.features(x))


def test_default_cache_dir_respects_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PINT_DIFFUSION_CACHE", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("PINT_DIFFUSION_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "pint_diffusion"
