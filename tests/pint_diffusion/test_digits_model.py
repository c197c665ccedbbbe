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
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("diffusers")
pytest.importorskip("safetensors")

from pint_diffusion.models import DEFAULT_WEIGHTS, DigitsModel, load_digits_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model() -> DigitsModel:
    return load_digits_model()


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


# ----------------------------------------------------------------------------------------
# corrupted model files: refused with errors naming the file and the field, offline


@pytest.fixture
def model_copy(tmp_path) -> tuple[Path, dict]:
    """A copy of the bundled weights and a fresh dict of its metadata (to corrupt)."""
    path = tmp_path / "copy.safetensors"
    shutil.copy(DEFAULT_WEIGHTS, path)
    return path, json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())


def _write_meta(path: Path, metadata) -> Path:
    meta = path.with_suffix(".json")
    meta.write_text(json.dumps(metadata))  # json.dumps writes NaN for float("nan")
    return meta


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("load_digits_model tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize("section", ["unet_config", "scheduler_config"])
def test_string_config_is_refused_offline(model_copy, section, no_network):
    """A string config would be read by diffusers as a Hub repository id (a download)."""
    path, metadata = model_copy
    metadata[section] = "google/ddpm-cifar10-32"
    meta = _write_meta(path, metadata)
    with pytest.raises(ValueError) as info:
        load_digits_model(path=path)
    assert str(meta) in str(info.value) and repr(section) in str(info.value)
    assert "a JSON object" in str(info.value)


def _set(metadata: dict, dotted: str, value) -> None:
    *parents, key = dotted.split(".")
    for name in parents:
        metadata = metadata[name]
    if value is _DELETE:
        del metadata[key]
    else:
        metadata[key] = value


_DELETE = object()


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("format", _DELETE, "'pint_diffusion.digits_unet/1'"),
    ("unet_config.in_channels", "one", "an integer >= 1"),
    ("unet_config.in_channels", True, "an integer >= 1"),
    ("unet_config.block_out_channels", [32, -64, 64], "a non-empty list of integers >= 1"),
    ("unet_config.down_block_types", ["DownBlock2D"], "a list of 3 block types"),
    ("unet_config.norm_num_groups", 7, "a divisor of every block_out_channels entry"),
    ("unet_config.num_class_embeds", _DELETE, "is missing"),
    ("unet_config.not_an_argument", 1, "is not an argument of UNet2DModel"),
    ("unet_config.down_block_types", ["NoSuchBlock2D"] * 3, "does not describe a UNet2DModel"),
    # diffusers raised UnboundLocalError for an unknown time_embedding_type (was not caught)
    ("unet_config.time_embedding_type", "nope", "does not describe a UNet2DModel"),
    ("scheduler_config.beta_schedule", _DELETE, "is missing"),
    ("scheduler_config.beta_start", float("nan"), "a number in (0.0, 1.0)"),
    ("scheduler_config.beta_end", 0.00001, "greater than beta_start"),
    ("scheduler_config.prediction_type", "v_prediction", "one of 'epsilon'"),
    ("scheduler_config.num_train_timesteps", 0, "an integer >= 1"),
    # trained_betas replaces the beta schedule: one beta in (0, 1) per training timestep (a
    # shorter list loaded, and sampling then indexed past its end)
    ("scheduler_config.trained_betas", [0.01] * 10, "a list of 1000 numbers in (0, 1)"),
    ("scheduler_config.trained_betas", [0.01] * 999 + [1.5], "a list of 1000 numbers in (0, 1)"),
    ("data", [8, 1], "a JSON object"),
    ("data.image_size", 16, "unet_config.sample_size (8)"),
    ("data.data_range", [1.0, -1.0], "low < high"),
    ("data.data_range", [-1.0, float("inf")], "a list of two finite numbers"),
    ("conditioning.null_class", 3, "an integer in [10, 10]"),
    ("conditioning.num_classes", 11, "less than unet_config.num_class_embeds (11)"),
    ("evaluation.guidance_scale", "high", "a finite number >= 0"),
    ("evaluation.guidance_scale", float("nan"), "a finite number >= 0"),
])
def test_malformed_metadata_names_file_and_field(model_copy, field, value, expected, no_network):
    path, metadata = model_copy
    _set(metadata, field, value)
    meta = _write_meta(path, metadata)
    with pytest.raises(ValueError) as info:
        load_digits_model(path=path)
    message = str(info.value)
    assert message.startswith(f"{meta}: field "), message
    name = field if "does not describe" not in expected else field.split(".")[0]
    assert repr(name) in message and expected in message, message


@pytest.mark.parametrize(("text", "expected"), [
    ('{"format": "pint_diffusion.digits_unet/1", ', "not valid JSON"),
    ("[1, 2]", "the metadata must be a JSON object, got list"),
])
def test_unreadable_metadata_names_the_file(model_copy, text, expected):
    path, _ = model_copy
    path.with_suffix(".json").write_text(text)
    with pytest.raises(ValueError, match=expected) as info:
        load_digits_model(path=path)
    assert str(path.with_suffix(".json")) in str(info.value)


def test_metadata_is_checked_before_the_weights(model_copy):
    """A bad metadata file is reported even if the weights file is bad as well."""
    path, metadata = model_copy
    path.write_bytes(b"not safetensors")
    metadata["unet_config"]["sample_size"] = -8
    _write_meta(path, metadata)
    with pytest.raises(ValueError, match=r"'unet_config\.sample_size' must be an integer >= 1"):
        load_digits_model(path=path)


def test_bundled_metadata_passes_the_schema():
    from pint_diffusion.models import load_metadata, validate_metadata

    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert validate_metadata(meta) is meta
    assert load_metadata() == meta


def _refused_weights(model_copy, spoil):
    """Spoil one tensor of a copy of the bundled weights; the loader's error and its name."""
    from safetensors.torch import load_file, save_file

    path, metadata = model_copy
    state = load_file(str(DEFAULT_WEIGHTS))
    name = sorted(state)[len(state) // 2]
    state[name] = spoil(state[name].clone())
    save_file(state, str(path))
    _write_meta(path, metadata)
    with pytest.raises(ValueError) as info:
        load_digits_model(path=path)
    assert repr(name) in str(info.value) and str(path) in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_weights_are_refused(model_copy, bad):
    def spoil(weights):
        weights.view(-1)[3] = bad
        return weights

    assert "non-finite" in _refused_weights(model_copy, spoil)


def test_integer_weights_are_refused(model_copy):
    """An integer tensor (e.g. a file saved with the wrong dtype) was cast to float and loaded:
    a silently wrong model."""
    assert "torch.int8" in _refused_weights(model_copy, lambda weights: weights.to(torch.int8))


#: Every checked field of the metadata (the free-form ones, such as ``training`` and
#: ``data.split``, are not listed).
_CHECKED_FIELDS = [
    *(f"unet_config.{k}" for k in (
        "sample_size", "in_channels", "out_channels", "block_out_channels", "down_block_types",
        "up_block_types", "layers_per_block", "norm_num_groups", "num_class_embeds",
        "attention_head_dim", "add_attention")),
    *(f"scheduler_config.{k}" for k in (
        "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "clip_sample",
        "set_alpha_to_one", "steps_offset", "prediction_type", "timestep_spacing")),
    "data.image_size", "data.channels", "data.data_range", "conditioning.num_classes",
    "conditioning.null_class", "evaluation.guidance_scale",
]
#: Values that no checked field accepts (the strings avoid every allowed name).
_JUNK = st.one_of(
    st.text(max_size=4).map(lambda s: "x" + s),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), -1, -0.5, {}, [], ["x"]]),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@given(field=st.sampled_from(_CHECKED_FIELDS), value=_JUNK)
@settings(max_examples=150, deadline=None)
def test_any_bad_field_is_named(field, value):
    """Property: a wrong value in any checked field raises ValueError naming the file and that
    field (never another exception type, never a later field)."""
    from pint_diffusion.models import validate_metadata

    metadata = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    _set(metadata, field, value)
    with pytest.raises(ValueError) as info:
        validate_metadata(metadata, "some/model.json")
    assert str(info.value).startswith(f"some/model.json: field {field!r} must be ")
