"""Load the REAL ``k_diffusion.sampling`` module for cross-checks, with or without torchvision.

k-diffusion's package ``__init__`` imports its training and evaluation code (torchvision, CLIP,
clean-fid, scikit-image), and ``k_diffusion/utils.py`` imports torchvision at the top, but
``sampling.py`` itself needs only torch, scipy, torchdiffeq, torchsde and tqdm, plus
``utils.append_dims``. So:

1. if ``import k_diffusion.sampling`` works, that module is used;
2. otherwise the installed ``sampling.py`` is executed under a synthetic parent package
   (``_kdiffusion_sampling_only``) whose ``utils`` submodule provides ``append_dims`` only. The real
   package ``__init__`` never runs and ``sys.modules["k_diffusion"]`` is left alone.

Usage in a test (the ``k_sampling`` fixture of ``conftest.py`` skips when k-diffusion is absent)::

    def test_x(k_sampling):
        x = k_sampling.sample_euler(denoiser, x, sigmas)

or directly ``from kdiffusion import load_k_sampling``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import torch

_SYNTHETIC = "_kdiffusion_sampling_only"


def _append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
    """Append trailing singleton dimensions to ``x`` until it has ``target_dims`` dimensions."""
    if x.ndim > target_dims:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
    return x[(...,) + (None,) * (target_dims - x.ndim)]


def k_diffusion_installed() -> bool:
    """Whether the k-diffusion distribution is installed (without importing it)."""
    return importlib.util.find_spec("k_diffusion") is not None


@functools.cache
def load_k_sampling() -> types.ModuleType:
    """Return k-diffusion's real ``sampling`` module (see the module docstring for how).

    Raises:
        ModuleNotFoundError: k-diffusion is not installed.
        ImportError: ``sampling.py`` itself cannot be loaded (e.g. torchsde or scipy missing).
    """
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        raise ModuleNotFoundError("k-diffusion is not installed", name="k_diffusion")
    try:
        return importlib.import_module("k_diffusion.sampling")
    except Exception:  # the package __init__ needs torchvision, clip, cleanfid, skimage, ...
        pass
    locations = list(spec.submodule_search_locations or [])
    if not locations:
        raise ImportError("k_diffusion is not a package")
    path = Path(locations[0]) / "sampling.py"

    package = types.ModuleType(_SYNTHETIC)
    package.__path__ = []  # a package with nothing to find: only the submodules set up here
    package.__package__ = _SYNTHETIC
    utils = types.ModuleType(f"{_SYNTHETIC}.utils")
    utils.append_dims = _append_dims
    package.utils = utils
    sys.modules.setdefault(_SYNTHETIC, package)
    sys.modules.setdefault(f"{_SYNTHETIC}.utils", utils)
    package = sys.modules[_SYNTHETIC]

    name = f"{_SYNTHETIC}.sampling"
    mod_spec = importlib.util.spec_from_file_location(name, path)
    if mod_spec is None or mod_spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[name] = module
    try:
        mod_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    package.sampling = module
    return module
