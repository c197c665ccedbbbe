"""Cost curves (pint.CostCurve, pint.measure_cost) and the automatic window (AutoWindow):
the choice on injected curves, equality with the explicit choice, bad input."""

import math
import time

import pytest
import torch
from helpers import ToyDenoiser, karras
from hypothesis import given
from hypothesis import strategies as st

import pint
from pint_diffusion import SRDS, AutoWindow, DepthModel, Picard, QuasiNewton, Serial

KNEE = 16
FLAT_THEN_LINEAR = {1: 1.0, 2: 1.0, 4: 1.0, 8: 1.0, KNEE: 1.0, 32: 2.0, 64: 4.0}
LINEAR = {1: 1.0, 2: 2.0, 4: 4.0, 8: 8.0}
FLAT = {1: 1.0, 4096: 1.0}


def sample(sampler, n=100, batch=1, **kwargs):
    x = torch.randn(batch, 3, 4, 4, generator=torch.Generator().manual_seed(3)) * 20.0
    return sampler.sample(ToyDenoiser(), x, karras(n), disable=True, return_info=True, **kwargs)


# -- the curve ----------------------------------------------------------------------------
def test_curve_interpolates_and_extrapolates_linearly():
    curve = pint.CostCurve.of({1: 0.046, 8: 0.047, 16: 0.058, 32: 0.100, 64: 0.192})
    assert curve(1) == 0.046 and curve(64) == 0.192
    assert curve(24) == pytest.approx((0.058 + 0.100) / 2)
    assert curve(128) == pytest.approx(0.192 + 64 * (0.192 - 0.100) / 32)  # the last slope
    assert curve.knee == 8
    assert pint.CostCurve((1,), (2.0,))(3) == 6.0  # one point: proportional beyond it
    capped = pint.CostCurve((1, 4), (1.0, 1.0), max_rows=4)
    assert capped(10) == 3.0  # two calls of 4 rows and one of 2


@given(st.lists(st.floats(0, 10), min_size=2, max_size=6), st.floats(1, 100))
def test_curve_between_its_neighbours(seconds, rows):
    curve = pint.CostCurve(tuple(2**i for i in range(len(seconds))), tuple(seconds))
    if rows <= curve.rows[-1]:
        i = next(i for i in range(1, len(curve.rows)) if rows <= curve.rows[i])
        low, high = sorted(curve.seconds[i - 1:i + 1])
        assert low - 1e-12 <= curve(rows) <= high + 1e-12


@pytest.mark.parametrize(("curve", "message"), [
    ({2: 1.0, 4: 2.0}, "starting at 1 row"),
    ({1: 1.0, 4: 2.0, 2: 3.0}, "strictly increasing"),
    ({1: 1.0, 2: math.nan}, "finite number >= 0"),
    ({1: 1.0, 2: -1.0}, "finite number >= 0"),
    ({1: 1.0, 2: math.inf}, "finite number >= 0"),
    ({}, "starting at 1 row"),
])
def test_bad_curve_is_refused_naming_it(curve, message):
    with pytest.raises(ValueError, match=f"cost curve.*{message}"):
        AutoWindow(curve)
    with pytest.raises(ValueError, match=message):
        QuasiNewton(window=AutoWindow(curve))


def test_bad_curve_type_and_options():
    with pytest.raises(TypeError, match="cost curve"):
        AutoWindow([1.0, 2.0])
    with pytest.raises(ValueError, match="margin"):
        AutoWindow(margin=1.5)
    with pytest.raises(ValueError, match="overhead"):
        AutoWindow(overhead=-1.0)
    with pytest.raises(ValueError, match="window must be"):
        QuasiNewton(window="fast")
    with pytest.raises(ValueError, match="max_batch must be"):
        sample(QuasiNewton(window=4), n=8, max_batch="big")


# -- the probe ------------------------------------------------------------------------------
def sleeper(knee_rows, seconds=2e-2, calls=None):
    """A batched function whose call sleeps ``seconds`` up to ``knee_rows`` rows, then
    proportionally more."""

    def f(t, y):
        if calls is not None:
            calls.append(len(y))
        time.sleep(seconds * max(1.0, len(y) / knee_rows))
        return y

    return f


def test_probe_doubles_until_a_few_times_one_row_and_caches():
    calls = []
    f = sleeper(4, calls=calls)
    curve = pint.measure_cost(f, torch.tensor(0.0), torch.zeros(2, 3), repeats=1)
    # 4 times one row's time at 16 rows (32 if sleeping overshoots by more than a few percent)
    assert curve.rows in ((1, 2, 4, 8, 16), (1, 2, 4, 8, 16, 32))
    assert curve.seconds[-1] >= 4 * curve.seconds[0] > curve.seconds[-2]
    seen = len(calls)
    assert pint.measure_cost(f, torch.tensor(0.0), torch.zeros(2, 3)) is curve
    assert len(calls) == seen  # cached: not called again
    other = pint.measure_cost(f, torch.tensor(0.0), torch.zeros(2, 5), repeats=1, max_rows=2)
    assert other.rows == (1, 2)  # another row shape: measured again, up to max_rows


def test_probe_stops_where_memory_runs_out():
    def f(t, y):
        if len(y) > 8:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return y

    curve = pint.measure_cost(f, torch.tensor(0.0), torch.zeros(1, 2), repeats=1)
    assert curve.rows[-1] == 8 and curve.max_rows == 8
    sampler = QuasiNewton(window=AutoWindow(curve))
    _, info = sample(sampler, n=20)
    assert info.plan.max_batch == 8  # max_batch="auto": the rows that fitted
    assert info.calls > info.sequential_nfe


def test_model_error_during_the_probe_is_named_before_any_sampling():
    class Broken(Exception):
        pass

    seen = []

    def model(x, sigma):
        raise Broken("the model's own error")

    with pytest.raises(Broken, match="the model's own error") as raised:
        QuasiNewton().sample(model, torch.ones(1, 2), karras(10), disable=True,
                             callback=seen.append)
    assert any("during the cost probe" in note for note in raised.value.__notes__)
    assert seen == []  # no iteration ran


# -- the choice -----------------------------------------------------------------------------
def test_flat_then_linear_chooses_a_window_near_the_knee():
    for sampler in (QuasiNewton(window=AutoWindow(FLAT_THEN_LINEAR)),
                    Picard(window=AutoWindow(FLAT_THEN_LINEAR))):
        _, info = sample(sampler, n=100)
        assert KNEE // 2 <= info.plan.size <= 2 * KNEE, info.plan.size
        assert info.sampler.startswith(f"{type(sampler).__name__}(window={info.plan.size},")
        assert info.plan.predicted_speedup > 1.5
    _, info = sample(QuasiNewton(window=AutoWindow(FLAT_THEN_LINEAR)), n=100, batch=4)
    assert KNEE // 8 <= info.plan.size <= KNEE // 2  # four samples: a quarter of the steps


def test_linear_from_one_row_runs_the_serial_sampler():
    for sampler in (QuasiNewton(window=AutoWindow(LINEAR)), Picard(window=AutoWindow(LINEAR)),
                    SRDS(blocks=AutoWindow(LINEAR))):
        out, info = sample(sampler, n=30)
        serial, _ = sample(Serial(), n=30)
        assert info.plan.size is None
        assert info.sampler.startswith(f"Serial() (chosen by {type(sampler).__name__}(")
        assert info.plan.predicted_speedup == 1.0
        assert info.sequential_nfe == 30
        torch.testing.assert_close(out, serial, rtol=0, atol=0)


def test_flat_everywhere_chooses_the_full_window():
    for sampler in (QuasiNewton(window=AutoWindow(FLAT)), Picard(window=AutoWindow(FLAT))):
        _, info = sample(sampler, n=40, batch=2)
        assert info.plan.size == 40
    _, info = sample(SRDS(blocks=AutoWindow(FLAT)), n=100)
    assert abs(info.plan.size - 20) <= 1  # 2 sqrt(N) when rows are free


@pytest.mark.parametrize("curve", [FLAT_THEN_LINEAR, FLAT])
@pytest.mark.parametrize("kind", [QuasiNewton, Picard, SRDS])
def test_auto_equals_the_explicit_choice_bit_for_bit(kind, curve):
    auto = kind(AutoWindow(curve), tol=1e-3)
    out, info = sample(auto, n=50, batch=2)
    explicit, explicit_info = sample(kind(info.plan.size, tol=1e-3), n=50, batch=2)
    torch.testing.assert_close(out, explicit, rtol=0, atol=0)
    assert info.sequential_nfe == explicit_info.sequential_nfe
    assert explicit_info.plan is None


def test_measured_default_on_a_cheap_model_keeps_the_full_window():
    # a toy model on the CPU: its rows are free next to the sampler's own per-call overhead
    out, info = sample(QuasiNewton(), n=30, batch=2)
    assert info.plan.size == 30 and info.plan.curve.rows[0] == 1
    assert info.speedup is not None and info.speedup > 0
    full, _ = sample(QuasiNewton(window=None), n=30, batch=2)
    torch.testing.assert_close(out, full, rtol=0, atol=0)


def test_max_batch_counts_in_the_rows():
    curve = AutoWindow(FLAT)  # free rows, but max_batch splits a call: the window shrinks
    _, free = sample(QuasiNewton(window=curve), n=64)
    _, capped = sample(QuasiNewton(window=curve), n=64, max_batch=8)
    assert free.plan.size == 64 and capped.plan.size < 64 and capped.plan.max_batch == 8


def test_max_batch_auto_is_no_cap_on_the_cpu():
    _, info = sample(QuasiNewton(window=4), n=12, batch=3)
    assert info.calls == info.sequential_nfe  # one call per round: nothing split


def test_depth_model_falls_with_the_window():
    for depth in (DepthModel.QUASI_NEWTON, DepthModel.PICARD):
        values = [depth(w, 100) for w in (1, 4, 8, 16, 100)]
        assert values == sorted(values, reverse=True) and values[0] <= 101
