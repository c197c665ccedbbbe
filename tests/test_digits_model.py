"""Tests of the bundled digits diffusion model (pint_diffusion.models)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("safetensors")

from pint_diffusion.models import DEFAULT_WEIGHTS, DigitsModel, load_digits_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model() -> DigitsModel:
    return load_digits_model()


@pytest.fixture(scope="module")
def metric(tmp_path_factory: pytest.TempPathFactory):
    from pint_diffusion.metrics import DigitsMetric

    return DigitsMetric(cache_dir=tmp_path_factory.mktemp("metric_cache"))


def test_weights_and_metadata_are_bundled():
    assert DEFAULT_WEIGHTS.is_file()
    assert DEFAULT_WEIGHTS.stat().st_size < 5_000_000
    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert meta["unet_config"]["num_class_embeds"] == 11
    assert meta["scheduler_config"]["clip_sample"] is False
    assert meta["data"]["split"]["random_state"] == 0
    training = meta["training"]
    assert training["steps"] > 0 and training["seed"] == 0 and training["wall_time_s"] > 0
    results = meta["evaluation"]["results"]
    chosen = [r for r in results if r["guidance_scale"] == meta["evaluation"]["guidance_scale"]]
    assert chosen and chosen[0]["accuracy"] >= 0.9


def test_loads_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("load_digits_model tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    m = load_digits_model()
    from diffusers import DDIMScheduler, UNet2DModel

    assert isinstance(m.unet, UNet2DModel)
    assert isinstance(m.scheduler, DDIMScheduler)
    assert not m.unet.training
    assert all(not p.requires_grad for p in m.unet.parameters())
    assert (m.num_classes, m.null_class, m.image_size, m.in_channels) == (10, 10, 8, 1)
    assert m.data_range == (-1.0, 1.0)
    assert m.dtype == torch.float32 and m.device.type == "cpu"
    assert m.scheduler.config.clip_sample is False
    assert m.scheduler.config.prediction_type == "epsilon"
    assert 1.0 <= m.guidance_scale <= 5.0


def test_fresh_scheduler_per_load(model):
    other = load_digits_model()
    assert other.scheduler is not model.scheduler
    model.scheduler.set_timesteps(10)
    assert other.scheduler.num_inference_steps is None


def test_forward_is_deterministic(model):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, 8, 8, generator=g)
    t = torch.randint(0, 1000, (16,), generator=g)
    labels = torch.arange(16) % 11
    with torch.no_grad():
        a = model.unet(x, t, class_labels=labels).sample
        b = model.unet(x, t, class_labels=labels).sample
        c = load_digits_model().unet(x, t, class_labels=labels).sample
    assert a.shape == x.shape
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert torch.equal(a, c)
    # conditioning matters
    with torch.no_grad():
        d = model.unet(x, t, class_labels=torch.full_like(labels, 10)).sample
    assert not torch.allclose(a, d)


def test_dtype_argument():
    m = load_digits_model(dtype=torch.float64)
    assert m.dtype == torch.float64
    x = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        out = m.unet(x, torch.tensor([10, 500]), class_labels=torch.tensor([3, 10])).sample
    assert out.dtype == torch.float64


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device():
    m = load_digits_model(device="cuda")
    assert m.device.type == "cuda"


class _Exploit:
    """Unpickling this creates a marker directory: proof that pickle data was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt", ".pkl", ""])
def test_refuses_pickle_paths(tmp_path, suffix):
    marker = tmp_path / "pickle_was_executed"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps(_Exploit(marker)))
    shutil.copy(DEFAULT_WEIGHTS.with_suffix(".json"), path.with_suffix(".json"))
    with pytest.raises(ValueError, match="path"):
        load_digits_model(path=path)
    with pytest.raises(ValueError, match="path"):
        load_digits_model(path=str(path))
    assert not marker.exists()


def test_refuses_pickle_disguised_as_safetensors(tmp_path):
    marker = tmp_path / "pickle_was_executed"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(_Exploit(marker)))
    shutil.copy(DEFAULT_WEIGHTS.with_suffix(".json"), path.with_suffix(".json"))
    with pytest.raises(ValueError, match="path"):
        load_digits_model(path=path)
    assert not marker.exists()


def test_explicit_safetensors_path(tmp_path):
    path = tmp_path / "copy.safetensors"
    shutil.copy(DEFAULT_WEIGHTS, path)
    with pytest.raises(FileNotFoundError):  # metadata json missing
        load_digits_model(path=path)
    shutil.copy(DEFAULT_WEIGHTS.with_suffix(".json"), path.with_suffix(".json"))
    m = load_digits_model(path=path)
    assert m.image_size == 8
    with pytest.raises(FileNotFoundError):
        load_digits_model(path=tmp_path / "missing.safetensors")


def test_guided_ddim_serial_sampling_is_conditional(model, metric):
    """Short serial sampling: 20 DDIM steps (eta = 0), guidance 2, 2 samples per class.

    The bundled model scores 1.0 with 100 steps and 50 samples per class (see its JSON). With 20
    steps and 20 samples the threshold is 0.8 (at most 4 misses): far above chance (0.1, what a
    model that ignored its labels would get) yet with room for the coarser schedule and sample
    noise.
    """
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(model.scheduler.config)
    scheduler.set_timesteps(20)
    labels = torch.arange(10).repeat_interleave(2)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 1, 8, 8, generator=g)
    cond = torch.cat([labels, torch.full_like(labels, model.null_class)])
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps_c, eps_u = model.unet(torch.cat([x, x]), t, class_labels=cond).sample.chunk(2)
            eps = eps_u + model.guidance_scale * (eps_c - eps_u)
            x = scheduler.step(eps, t, x, eta=0.0).prev_sample
    assert torch.isfinite(x).all()
    assert x.abs().max() < 3.0
    result = metric.score(x, labels)
    assert result.accuracy >= 0.8, result


def test_import_does_not_need_diffusers():
    code = (
        "import sys\n"
        "import pint_diffusion.models, pint_diffusion.models.data, pint_diffusion.metrics\n"
        "assert 'diffusers' not in sys.modules, 'diffusers imported eagerly'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env, timeout=120)


def test_training_script_help():
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-m", "pint_diffusion.models.train_digits", "--help"],
        check=True,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    for option in ("--out", "--steps", "--seed"):
        assert option in out.stdout


def test_training_is_deterministic():
    from pint_diffusion.models.train_digits import train

    a, rec_a = train(steps=3, batch_size=16, warmup=1, log_every=0)
    b, _ = train(steps=3, batch_size=16, warmup=1, log_every=0)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert rec_a["steps"] == 3 and rec_a["seed"] == 0
