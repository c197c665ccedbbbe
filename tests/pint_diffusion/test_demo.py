"""The main job's report: both regimes, the summary sentence, the figures (reduced sizes)."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pint_diffusion.cli import build_parser, main
from pint_diffusion.demo import (
    DEFAULT_STEPS,
    DEFAULT_SWEEP,
    FULL_STEPS,
    FULL_SWEEP,
    LATENCY,
    THROUGHPUT,
    DemoResult,
    DemoRow,
    Point,
    crossovers,
    latency_figure,
    residual_figure,
    samplers,
    summary,
)
from pint_diffusion.demo.results import HEADER


def row(regime, method, steps, batch, wall):
    return DemoRow(regime, method, steps, batch, 1, 10 * batch, 5, wall, 0.0)


def test_rows_show_the_automatic_choice():
    auto = DemoRow(LATENCY, "quasi-Newton", 100, 1, 3, 300, 20, 1.0, 0.0, chosen="16",
                   predicted_speedup=2.5)
    cells = dict(zip(HEADER, auto.cells(2.0), strict=True))
    assert cells["window (auto)"] == "16" and cells["predicted speed"] == "2.50x"
    assert cells["speed vs serial"] == "2.00x"
    assert DemoResult.from_json(DemoResult([auto], [], "m", 1).to_json()).rows == [auto]


def test_summary_names_each_regimes_winner():
    # latency: SRDS takes half serial's time at 100 steps, serial wins at 25 steps;
    # throughput: serial wins everywhere
    rows = [row(LATENCY, "serial", 25, 1, 0.1), row(LATENCY, "SRDS", 25, 1, 0.2),
            row(LATENCY, "serial", 100, 1, 0.4), row(LATENCY, "SRDS", 100, 1, 0.2),
            row(THROUGHPUT, "serial", 25, 30, 0.3), row(THROUGHPUT, "SRDS", 25, 30, 1.5),
            row(THROUGHPUT, "serial", 100, 30, 1.2), row(THROUGHPUT, "SRDS", 100, 30, 6.0)]
    text = summary(DemoResult(rows, [], "test machine", 3))
    latency, throughput = text.split(";")
    assert "latency (one sample per call) serial wins at 25 steps" in latency
    assert "SRDS at 100 steps (2.0x serial's speed)" in latency
    assert "throughput (30 samples per call) serial wins at 25 and 100 steps" in throughput
    assert text.startswith("On this machine (test machine)") and text.endswith("steps.")


def test_a_default_that_ran_serially_does_not_win():
    # Picard's default ran the serial sampler and happened to be timed faster: serial wins
    ran_serially = DemoRow(THROUGHPUT, "Picard", 25, 20, 1, 200, 25, 0.9, 0.0, chosen="serial")
    rows = [row(THROUGHPUT, "serial", 25, 20, 1.0), ran_serially,
            row(LATENCY, "serial", 25, 1, 1.0), row(LATENCY, "Picard", 25, 1, 0.5)]
    text = summary(DemoResult(rows, [], "test machine", 3))
    assert "throughput (20 samples per call) serial wins at 25 steps" in text
    assert "latency (one sample per call) Picard wins at 25 steps (2.0x" in text


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.1, 10), min_size=4, max_size=4),
       st.lists(st.floats(0.1, 10), min_size=4, max_size=4))
def test_crossover_is_the_last_batch_of_the_leading_run(serial, parallel):
    batches = [1, 2, 4, 8]
    points = [Point("serial", 100, b, w) for b, w in zip(batches, serial, strict=True)]
    points += [Point("SRDS", 100, b, w) for b, w in zip(batches, parallel, strict=True)]
    limit = crossovers(points)["SRDS", 100]
    faster = [p < s for p, s in zip(parallel, serial, strict=True)]
    leading = next((i for i, f in enumerate(faster) if not f), len(faster))
    assert limit == (batches[leading - 1] if leading else 0)


def test_residual_plot_has_integer_iteration_ticks():
    iterates = [torch.full((2, 1, 8, 8), 2.0**-k) for k in range(8)]
    fig = residual_figure([0.5**k for k in range(1, 8)], iterates, torch.zeros(2, 1, 8, 8), 1e-3)
    ticks = fig.axes[0].get_xticks()
    assert len(ticks) >= 3 and all(float(t).is_integer() for t in ticks)


def test_latency_figure_ticks_are_the_batch_sizes():
    points = [Point(m, n, b, w * b ** (-0.5 if m == "serial" else -0.1))
              for n in (100, 1000) for b in (1, 2, 4, 30) for m, w in (("serial", 1.0),
                                                                       ("SRDS", 0.5))]
    fig = latency_figure(points, "test machine")
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert list(ax.get_xticks()) == [1, 2, 4, 30]
        assert ax.get_xscale() == ax.get_yscale() == "log"
        assert {t.get_text() for t in ax.get_legend().get_texts()} == {"serial", "SRDS"}
    assert "test machine" in fig._suptitle.get_text()


def test_samplers_table_starts_with_serial_and_configures_each_sampler(monkeypatch):
    import pint_diffusion

    table = samplers(1e-3)
    assert [s.name for s in table] == ["serial", "SRDS", "Picard", "quasi-Newton"]
    calls = []

    def spy(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
        calls.append(options)
        return x, None

    monkeypatch.setattr(pint_diffusion, "sample_quasi_newton", spy)
    samplers(1e-3)[-1](lambda x, sigma: x, torch.zeros(1, 2), torch.linspace(1, 0, 101), {})
    assert calls == [{"tol": 1e-3, "return_info": True}]  # the window: the default, "auto"


@pytest.mark.parametrize(("flags", "steps", "sweep"), [
    ([], DEFAULT_STEPS, DEFAULT_SWEEP), (["--full"], FULL_STEPS, FULL_SWEEP),
    (["--full", "--steps", "10", "--sweep"], (10,), {}),
])
def test_default_run_trims_the_1000_step_runs_and_full_restores_them(tmp_path, flags, steps,
                                                                      sweep):
    args = build_parser().parse_args(["demo", "--out", str(tmp_path), *flags])
    assert args.check(args) == []
    assert tuple(args.steps) == steps
    assert {n: tuple(b) for n, b in args.sweep} == sweep
    assert 1000 not in DEFAULT_STEPS and 1000 not in DEFAULT_SWEEP and 1000 in FULL_STEPS


@pytest.mark.slow
def test_demo_prints_both_tables_summary_and_writes_the_figure(tmp_path, capsys):
    torch.manual_seed(0)
    assert main(["demo", "--steps", "4", "--seeds", "1", "--repeats", "1",
                 "--sweep", "4:1,2", "--out", str(tmp_path), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Latency: one sample per call" in printed and "Throughput: 10 samples" in printed
    for name in ("serial", "SRDS", "Picard"):
        assert printed.count(f"| {name} | 4 |") == 2  # one row per regime
    summary_line = next(line for line in printed.splitlines() if line.startswith("On this"))
    assert "latency (one sample per call)" in summary_line
    assert "throughput (10 samples per call)" in summary_line
    with Image.open(tmp_path / "latency_vs_batch.png") as image:
        assert image.format == "PNG"
        image.verify()
    result = DemoResult.from_json((tmp_path / "results.json").read_text())
    assert sorted({p.batch for p in result.points}) == [1, 2]
    assert {r.regime for r in result.rows} == {LATENCY, THROUGHPUT}
    assert json.loads(result.to_json()) == json.loads((tmp_path / "results.json").read_text())


def test_sweep_option_is_checked(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--sweep", "100:0,2"])
    assert "--sweep entries must be STEPS:B1,B2,..." in capsys.readouterr().err
