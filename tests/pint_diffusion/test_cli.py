"""The ``pint-diffusion`` command: smoke runs with few steps, argument checking before any
model work, atomic output writes, ``--quiet`` and ``--num`` with a local diffusers folder."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pint_diffusion.demo
import pint_diffusion.models
from pint_diffusion.cli import build_parser, main
from pint_diffusion.files import atomic_path, check_image_path, save_image


def test_help_everywhere(capsys):
    for argv in (["--help"], ["demo", "--help"], ["sample", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
    assert "--sampler" in capsys.readouterr().out


@pytest.mark.parametrize("sampler", ["serial", "srds", "picard", "quasi-newton"])
def test_sample_writes_a_png(tmp_path, sampler, capsys):
    out = tmp_path / "digits.png"
    assert main(["sample", "--class", "3", "--num", "2", "--steps", "6", "--sampler", sampler,
                 "--out", str(out), "--quiet"]) == 0
    image = Image.open(out)
    image.verify()
    assert image.size[0] > 8 and image.size[1] > 8
    assert f"{sampler}:" in capsys.readouterr().out
    assert os.listdir(tmp_path) == ["digits.png"]  # no temporary file left behind


def test_demo_writes_table_and_figures(tmp_path, capsys):
    torch.manual_seed(0)
    assert main(["demo", "--steps", "6", "--seeds", "1", "--repeats", "1", "--sweep",
                 "--out", str(tmp_path), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| SRDS | 6 |" in printed and "| serial | 6 |" in printed
    for name in ("samples_serial_6.png", "samples_srds_6.png", "samples_picard_6.png"):
        Image.open(tmp_path / name).verify()
    # SRDS's figures come from its throughput run: none where blocks="auto" ran serially
    srds = next(r for r in json.loads((tmp_path / "results.json").read_text())["rows"]
                if r["method"] == "SRDS" and r["regime"] == "throughput")
    for name in ("refinement_6.png", "residuals_6.png"):
        assert (tmp_path / name).exists() == (srds["chosen"] != "serial")
    assert not (tmp_path / "latency_vs_batch.png").exists()  # --sweep with no sizes: no figure


def test_parser_defaults(tmp_path):
    args = build_parser().parse_args(["demo", "--out", str(tmp_path)])
    assert args.check(args) == []
    assert args.steps == [25, 100] and args.seeds == 2 and args.repeats == 3
    assert dict(args.sweep) == {100: [1, 2, 4, 8, 20]}


# ----------------------------------------------------------------------------------------
# every bad argument: argparse's usage error (exit status 2), before any model work


@pytest.fixture
def no_model_work(monkeypatch):
    """Loading the model or running the demo fails the test: checks must come first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("model work started before the arguments were checked")

    monkeypatch.setattr(pint_diffusion.models, "load_digits_model", forbidden)
    monkeypatch.setattr(pint_diffusion.demo, "run_demo", forbidden)


def _usage_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: pint-diffusion" in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(("argv", "message"), [
    (["sample", "--steps", "0"], "argument --steps: expected a positive integer"),
    (["sample", "--steps", "-5"], "argument --steps: expected a positive integer"),
    (["sample", "--steps", "ten"], "argument --steps: expected an integer, got 'ten'"),
    (["sample", "--num", "0"], "argument --num: expected a positive integer"),
    (["sample", "--num", "-3"], "argument --num: expected a positive integer"),
    (["sample", "--blocks", "0"], "argument --blocks: expected a positive integer"),
    (["sample", "--tol", "nan"], "argument --tol: expected a finite number, got 'nan'"),
    (["sample", "--tol", "-0.001"], "argument --tol: expected a finite number >= 0"),
    (["sample", "--guidance", "nan"], "argument --guidance: expected a finite number"),
    (["sample", "--guidance", "inf"], "argument --guidance: expected a finite number"),
    (["sample", "--seed", str(2**64)], "argument --seed: expected an integer in"),
    (["sample", "--class", "-1"], "argument --class: expected an integer >= 0"),
    (["sample", "--class", "12"], "argument --class: must be in 0..9, got 12"),
    (["sample", "--steps", "1001"], "--steps: 1001 exceeds the model's 1000 training"),
    (["sample", "--sampler", "srds", "--steps", "10", "--blocks", "11"],
     "--blocks: the blocks (11) cannot exceed"),
    (["sample", "--steps", "10", "--blocks", "11"], "--blocks: the window (11) cannot exceed"),
    (["sample", "--sampler", "picard", "--steps", "4", "--blocks", "5"], "the window (5)"),
    (["sample", "--prompt", "a cat"], "--prompt needs --model PATH"),
    (["demo", "--seeds", "0"], "argument --seeds: expected a positive integer"),
    (["demo", "--steps", "25", "0"], "argument --steps: expected a positive integer"),
    (["demo", "--steps", "2000"], "--steps: 2000 exceeds the model's 1000 training"),
    (["demo", "--tol", "nan"], "argument --tol: expected a finite number"),
])
def test_bad_numbers_are_usage_errors(argv, message, tmp_path, capsys, no_model_work):
    out = tmp_path / ("x.png" if argv[0] == "sample" else "figures")
    assert message in _usage_error([*argv, "--out", str(out), "--quiet"], capsys)
    assert not out.exists()


def test_bundled_model_limits_are_its_metadata(capsys, tmp_path, no_model_work):
    """The class and step limits come from the model's own metadata (not from the code)."""
    meta = pint_diffusion.models.load_metadata()
    classes = meta["conditioning"]["num_classes"]
    limit = meta["scheduler_config"]["num_train_timesteps"]
    out = str(tmp_path / "x.png")
    assert f"got {classes}" in _usage_error(["sample", "--class", str(classes), "--out", out],
                                            capsys)
    assert f"{limit + 1} exceeds" in _usage_error(
        ["sample", "--steps", str(limit + 1), "--out", out], capsys)


@pytest.fixture
def places(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("not a folder")
    return tmp_path


@pytest.mark.parametrize(("out", "message"), [
    ("folder", "is a folder; give an image file name"),
    ("sample", "has no file extension"),
    ("image.xyz", "'.xyz' is not an image type PIL can write"),
    ("image.msp", "PIL cannot write a mode-L image as MSP"),  # a writer without mode L
    ("file.txt/sample.png", "is a file, not a folder"),
    ("file.txt/deeper/sample.png", "is a file, not a folder"),
])
def test_bad_out_is_refused_before_sampling(places, out, message, capsys, no_model_work):
    err = _usage_error(["sample", "--steps", "1000", "--out", str(places / out)], capsys)
    assert "argument --out:" in err and message in err


@pytest.mark.parametrize(("out", "message"), [
    ("file.txt", "is a file, not a folder"),
    ("file.txt/figures", "is a file, not a folder"),
])
def test_bad_demo_folder_is_refused(places, out, message, capsys, no_model_work):
    err = _usage_error(["demo", "--out", str(places / out)], capsys)
    assert "argument --out:" in err and message in err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root can write in read-only folders")
def test_unwritable_folder_is_refused(tmp_path, capsys, no_model_work):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        err = _usage_error(["sample", "--out", str(locked / "x.png")], capsys)
    finally:
        locked.chmod(stat.S_IRWXU)
    assert "cannot write in folder" in err


def test_missing_folders_are_created(tmp_path, capsys):
    out = tmp_path / "a" / "b" / "digits.png"
    assert main(["sample", "--num", "1", "--steps", "2", "--sampler", "serial", "--out",
                 str(out), "--quiet"]) == 0
    Image.open(out).verify()


# ----------------------------------------------------------------------------------------
# atomic writes


def _interrupted_save(monkeypatch):
    """Make PIL's file writes stop half-way with a 'disk full' error (in-memory saves work)."""
    real_save = Image.Image.save

    def save(self, fp, format=None, **params):
        if not isinstance(fp, (str, os.PathLike)):
            return real_save(self, fp, format=format, **params)
        buffer = io.BytesIO()
        fmt = format or Image.registered_extensions()[Path(fp).suffix.lower()]
        real_save(self, buffer, format=fmt, **params)
        with open(fp, "wb") as handle:
            handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", save)


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    out = tmp_path / "digits.png"
    Image.new("L", (5, 7), 200).save(out)
    before = out.read_bytes()
    _interrupted_save(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        main(["sample", "--num", "1", "--steps", "2", "--sampler", "serial", "--out", str(out),
              "--quiet"])
    assert out.read_bytes() == before
    assert os.listdir(tmp_path) == ["digits.png"]
    with Image.open(out) as image:
        assert image.size == (5, 7)


def test_atomic_path(tmp_path):
    out = tmp_path / "a.bin"
    out.write_bytes(b"old")
    out.chmod(0o640)
    with pytest.raises(KeyboardInterrupt), atomic_path(out) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".bin" and tmp != out
        tmp.write_bytes(b"ne")
        raise KeyboardInterrupt
    assert out.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.bin"]
    with atomic_path(out) as tmp:
        tmp.write_bytes(b"new")
        assert out.read_bytes() == b"old"  # nothing visible until the block ends
    assert out.read_bytes() == b"new" and os.listdir(tmp_path) == ["a.bin"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o640  # the replaced file's permissions


def test_save_image_round_trips_and_checks(tmp_path):
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8))
    for name in ("g.png", "g.tif", "g.bmp"):
        path = check_image_path(tmp_path / name, mode="L")
        save_image(image, path)
        with Image.open(path) as back:
            assert np.array_equal(np.asarray(back), np.asarray(image))
    with pytest.raises(ValueError, match="no file extension"):
        save_image(image, tmp_path / "g")


# ----------------------------------------------------------------------------------------
# --model PATH: a local diffusers folder (the tiny offline Stable Diffusion)


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    from diffusers import DDIMScheduler

    from pint_diffusion.testing import tiny_sd_pipeline

    folder = tmp_path_factory.mktemp("tiny_sd")
    pipe = tiny_sd_pipeline(DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False,
                                          set_alpha_to_one=False, steps_offset=1))
    pipe.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("sampler", ["serial", "srds", "quasi-newton"])
def test_quiet_silences_the_pipeline(sd_folder, sampler, tmp_path, capfd):
    out = tmp_path / "sd.png"
    capfd.readouterr()
    assert main(["sample", "--model", str(sd_folder), "--prompt", "a cat", "--steps", "3",
                 "--num", "1", "--sampler", sampler, "--out", str(out), "--quiet"]) == 0
    captured = capfd.readouterr()
    assert "%|" not in captured.err and "it/s" not in captured.err  # no tqdm bar
    assert "Loading" not in captured.err
    assert captured.out.startswith(f"{sampler}:")
    Image.open(out).verify()


def test_num_is_honoured_with_model_path(sd_folder, tmp_path):
    """``--num 3`` writes a grid of the 3 images diffusers' own pipeline draws for
    ``num_images_per_prompt=3`` with the same seed."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    out = tmp_path / "grid.png"
    assert main(["sample", "--model", str(sd_folder), "--prompt", "a cat", "--steps", "3",
                 "--num", "3", "--sampler", "serial", "--seed", "5", "--out", str(out),
                 "--quiet"]) == 0
    pipe = StableDiffusionPipeline.from_pretrained(sd_folder, local_files_only=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe("a cat", num_inference_steps=3, num_images_per_prompt=3,
                    generator=torch.Generator().manual_seed(5)).images
    assert len(expected) == 3
    grid = np.asarray(Image.open(out).convert("RGB"))
    w, h = expected[0].size
    pad = 2
    assert grid.shape == (h + 2 * pad, 3 * (w + pad) + pad, 3)
    for i, image in enumerate(expected):
        x0 = pad + i * (w + pad)
        assert np.array_equal(grid[pad:pad + h, x0:x0 + w], np.asarray(image))


def test_model_path_must_be_a_diffusers_folder(tmp_path, capsys):
    err = _usage_error(["sample", "--model", str(tmp_path), "--prompt", "a cat", "--out",
                        str(tmp_path / "x.png")], capsys)
    assert "no model_index.json" in err


def test_model_path_needs_a_prompt_and_a_known_scheduler(sd_folder, tmp_path, capsys):
    out = str(tmp_path / "x.png")
    assert "--prompt is required" in _usage_error(
        ["sample", "--model", str(sd_folder), "--out", out], capsys)
    assert "argument --scheduler: 'NoSuchScheduler' is not one of" in _usage_error(
        ["sample", "--model", str(sd_folder), "--prompt", "a", "--scheduler", "NoSuchScheduler",
         "--out", out], capsys)


@pytest.mark.parametrize(("argv", "ran"), [
    ([], "QuasiNewton"),  # DDIM keeps no history: the fastest safe default
    (["--scheduler", "DPMSolverMultistepScheduler"], "SRDS"),  # history: SRDS
    (["--sampler", "picard"], "picard"),
])
def test_model_path_runs_every_sampler_and_scheduler(sd_folder, tmp_path, capsys, argv, ran):
    out = tmp_path / "x.png"
    assert main(["sample", "--model", str(sd_folder), "--prompt", "a cat", "--steps", "4",
                 "--num", "1", "--out", str(out), "--quiet", *argv]) == 0
    # the sampler, or "Serial() (chosen by QuasiNewton(...): ...)" where "auto" ran serially
    assert ran in capsys.readouterr().out.split(": ")[0]
    Image.open(out).verify()


@pytest.mark.parametrize(("argv", "ran"), [
    ([], "QuasiNewton(window=2, tol=0)"),
    (["--scheduler", "DPMSolverMultistepScheduler"], "SRDS(blocks=2, tol=0)"),
])
def test_model_path_default_sampler_honours_tol_and_blocks(sd_folder, tmp_path, capsys, argv,
                                                           ran):
    """Without --sampler the pipeline's default sampler runs, with the --tol and --blocks given
    (they were silently dropped: the default tolerance and window ran)."""
    out = tmp_path / "x.png"
    assert main(["sample", "--model", str(sd_folder), "--prompt", "a cat", "--steps", "4",
                 "--num", "1", "--out", str(out), "--quiet", "--tol", "0", "--blocks", "2",
                 *argv]) == 0
    assert capsys.readouterr().out.startswith(ran + ":")


@pytest.mark.parametrize(("argv", "message"), [
    (["--solver", "heun"], "argument --solver: "),
    (["--class", "3"], "argument --class: "),
])
def test_bundled_only_options_are_refused_with_model_path(sd_folder, tmp_path, capsys, argv,
                                                          message):
    """--solver and --class act on the bundled model only; with --model PATH they were silently
    ignored (the pipeline steps with its scheduler and is conditioned on --prompt)."""
    err = _usage_error(["sample", "--model", str(sd_folder), "--prompt", "a cat", "--out",
                        str(tmp_path / "x.png"), *argv], capsys)
    assert message in err


@pytest.mark.parametrize("option", [["--blocks", "4"], ["--tol", "0.01"]])
def test_blocks_and_tol_are_refused_for_the_serial_sampler(option, tmp_path, capsys,
                                                         no_model_work):
    """The serial sampler has no blocks, window or tolerance: they were silently ignored."""
    err = _usage_error(["sample", "--sampler", "serial", *option, "--out",
                        str(tmp_path / "x.png")], capsys)
    assert f"argument {option[0]}: " in err
