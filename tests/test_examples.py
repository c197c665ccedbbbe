"""The examples do what their docstrings (and the README) say."""

import importlib.util
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_srds_k_diffusion_compares_with_k_diffusion(k_sampling: ModuleType) -> None:
    """With k-diffusion installed, also without torchvision (``make`` installs it with
    ``--no-deps``, so ``import k_diffusion`` fails), the example's reference is k-diffusion's own
    sampler, not pint's serial solve."""
    example = load_example("srds_k_diffusion")
    for name in ("euler", "heun"):
        assert example.serial_sampler(name) is getattr(k_sampling, f"sample_{name}")
