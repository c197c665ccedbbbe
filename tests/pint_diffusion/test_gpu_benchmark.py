"""The GPU benchmark's CPU smoke mode: it runs, writes its two files and they hold what the
full mode will report (``benchmarks/gpu.py --smoke``)."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_mode_writes_and_checks_its_results(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--threads", "1",
         "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    [json_path] = tmp_path.glob("gpu_*.json")
    md_path = json_path.with_suffix(".md")
    assert md_path.is_file()
    payload = json.loads(json_path.read_text())
    assert payload["smoke"] and payload["machine"]["device"] == "cpu"
    assert payload["machine"]["device_name"] in md_path.read_text()

    curve = [r for r in payload["tables"]["cost_curve"] if r["status"] == "ok"]
    assert {r["model"] for r in curve} == {"digits model fp32", "tiny SD UNet fp32",
                                           "tiny SD UNet bf16"}
    assert all(r["rows"] in (1, 2, 4) and r["ms"] > 0 for r in curve)
    assert all(r["peak_mib"] is None for r in curve)  # no device memory on the CPU

    wall = payload["tables"]["wall_clock"]
    assert all(r["status"] == "ok" for r in wall), [r["status"] for r in wall]
    for r in wall:
        assert 0 < r["model_s"] <= r["instrumented_s"]
        assert math.isclose(r["outside_s"], r["instrumented_s"] - r["model_s"])
    serial = [r for r in wall if r["method"] == "serial"]
    # serial DDIM makes one denoiser call of `batch` rows per step (independent of our code)
    assert serial and all(r["calls"] == r["steps"] and r["rows"] == r["steps"] * r["batch"]
                          for r in serial)
    # the digits model converges: the parallel samplers agree with serial DDIM (tol 1e-3)
    digits = [r for r in wall if r["model"].startswith("digits") and r["method"] != "serial"]
    assert digits and all(r["rms_vs_serial"] < 1e-3 for r in digits)
    # the SD UNet's parallel runs are capped by their stated, committed iteration counts
    fixed = [r for r in wall if r["model"].startswith("tiny SD") and r["method"] != "serial"]
    sources = {(s["model"], s["steps"], s["method"]): s for s in payload["iteration_sources"]}
    for r in fixed:
        source = sources[r["model"], r["steps"], r["method"]]
        assert "digits model" in source["source"]
        if r["method"].endswith(" auto"):  # the prior's depth at the window it chose
            assert r["stop"] == "fixed: the depth prior at the chosen window"
            assert r["chosen"] == "serial" or 1 <= r["chosen"] <= r["steps"]
            continue
        assert r["stop"] == f"fixed: {source['iterations']} iterations"
        assert r["iterations"] <= source["iterations"]
    # every automatic default says what it chose and what it predicted
    auto = [r for r in wall if r["method"].endswith(" auto")]
    assert {r["method"] for r in auto} == {"SRDS auto", "Picard auto", "quasi-Newton auto"}
    assert all("chosen" in r and r["predicted_vs_serial"] >= 1.0 for r in auto)
    assert payload["tables"]["compile"]


def test_self_check_reports_broken_files(tmp_path):
    """The check that makes the smoke run fail: empty tables and non-finite numbers."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    good = {"machine": {"device_name": "x"}, "tables": {
        "cost_curve": [{"status": "ok", "ms": 1.0}], "wall_clock": [{"status": "ok"}],
        "compile": [{"status": "error: no compiler"}]}}
    markdown = "## Cost of one UNet call\n## Wall clock\n## Time outside\n## torch.compile\n"

    def problems(payload: dict, text: str = markdown) -> list[str]:
        (tmp_path / "r.json").write_text(json.dumps(payload))
        (tmp_path / "r.md").write_text(text)
        return gpu.check_outputs(tmp_path, "r")

    assert problems(good) == []
    bad = json.loads(json.dumps(good))
    bad["tables"]["cost_curve"][0]["ms"] = float("inf")
    bad["tables"]["wall_clock"] = [{"status": "out of memory"}]
    bad["tables"]["compile"] = []
    found = problems(bad, "## Wall clock\n")
    assert any("inf" in p for p in found)
    assert any("'wall_clock' has no measured row" in p for p in found)
    assert any("'compile' has no rows" in p for p in found)
    assert any("Cost of one UNet call" in p for p in found)
    assert problems(good, "") and gpu.check_outputs(tmp_path / "missing", "r")


def test_sd15_config_has_the_published_size():
    """The config builds Stable Diffusion 1.5's UNet: 859,520,964 parameters (the model
    card's ~860M), counted on the meta device without allocating them."""
    diffusers = pytest.importorskip("diffusers")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**gpu.SD15_UNET)
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964


def test_parts_are_checked_and_kept_in_order_of_importance():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))

    assert gpu.parts("dtypes, digits") == ("digits", "dtypes")
    for bad in ("", "digits,gpu", " , "):
        with pytest.raises(argparse.ArgumentTypeError, match="comma-separated subset"):
            gpu.parts(bad)
