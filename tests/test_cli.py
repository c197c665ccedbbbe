"""Smoke runs of the ``pint-diffusion`` command with few steps."""

import pytest
import torch
from PIL import Image

from pint_diffusion.cli import build_parser, main


def test_help_everywhere(capsys):
    for argv in (["--help"], ["demo", "--help"], ["sample", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
    assert "--sampler" in capsys.readouterr().out


@pytest.mark.parametrize("sampler", ["serial", "srds", "picard"])
def test_sample_writes_a_png(tmp_path, sampler, capsys):
    out = tmp_path / "digits.png"
    assert main(["sample", "--class", "3", "--num", "2", "--steps", "6", "--sampler", sampler,
                 "--out", str(out), "--quiet"]) == 0
    image = Image.open(out)
    image.verify()
    assert image.size[0] > 8 and image.size[1] > 8
    assert f"{sampler}:" in capsys.readouterr().out


def test_sample_refuses_bad_class(tmp_path):
    with pytest.raises(SystemExit, match=r"--class must be in 0\.\.9"):
        main(["sample", "--class", "12", "--out", str(tmp_path / "x.png"), "--quiet"])


def test_demo_writes_table_and_figures(tmp_path, capsys):
    torch.manual_seed(0)
    assert main(["demo", "--steps", "6", "--seeds", "1", "--repeats", "1", "--sweep",
                 "--out", str(tmp_path), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| SRDS | 6 |" in printed and "| serial | 6 |" in printed
    for name in ("samples_serial_6.png", "samples_srds_6.png", "samples_picard_6.png",
                 "refinement_6.png", "residuals_6.png"):
        Image.open(tmp_path / name).verify()
    assert not (tmp_path / "latency_vs_batch.png").exists()  # --sweep with no sizes: no figure


def test_parser_defaults():
    args = build_parser().parse_args(["demo"])
    assert args.steps == [25, 100, 1000] and args.seeds == 3 and args.repeats == 3
    assert dict(args.sweep) == {100: [1, 2, 4, 8, 16, 30], 1000: [1, 2, 4, 30]}
