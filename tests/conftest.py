"""Shared pytest fixtures.

Helper modules in this directory (``helpers``, ``devices``, ``kdiffusion``) are imported by
plain name (``from helpers import lotka``); this directory is put on ``sys.path`` so that works
whatever pytest's rootdir and import mode. Test modules (in ``pint/`` and ``pint_diffusion/``,
one folder per package) import only these, never each other.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

# `make test` runs two pytest workers on a 2-core machine: one thread each, or they fight.
torch.set_num_threads(1)

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from kdiffusion import k_diffusion_installed, load_k_sampling  # noqa: E402


@pytest.fixture(scope="session")
def k_sampling() -> types.ModuleType:
    """k-diffusion's REAL ``sampling`` module (skips the test if k-diffusion is not installed)."""
    if not k_diffusion_installed():
        pytest.skip("k-diffusion is not installed (pip install --no-deps k-diffusion)")
    return load_k_sampling()


@pytest.fixture(scope="module")
def components() -> dict:
    """A tiny Stable Diffusion's non-scheduler components (seed 0), built once per module."""
    from pint_diffusion.testing import tiny_sd_components

    return tiny_sd_components(0)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache folder for the digits metric's classifier, one per module."""
    return tmp_path_factory.mktemp("metric_cache")


@pytest.fixture(scope="module")
def metric(cache_dir: Path):
    """The digits metric (its classifier trained once per module into ``cache_dir``)."""
    from pint_diffusion.metrics import DigitsMetric

    return DigitsMetric(cache_dir=cache_dir)
