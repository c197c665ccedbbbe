"""Bad input gets a clear error that names what is wrong."""

import dataclasses

import pytest
import torch
from helpers import decay

import pint

F64 = torch.float64
Y0 = torch.ones(2, dtype=F64)
T = torch.linspace(0, 1, 5, dtype=F64)
OK = dict(coarse=pint.Euler(1), fine=pint.RK4(4))


@pytest.mark.parametrize(("t", "message"), [
    (torch.tensor([0.0, 1.0, 1.0, 2.0], dtype=F64), "strictly increasing or strictly decreasing"),
    (torch.tensor([0.0, 2.0, 1.0], dtype=F64), "strictly increasing or strictly decreasing"),
    (torch.tensor([0.0], dtype=F64), "at least 2 points"),
    (torch.zeros(2, 2, dtype=F64), "1-D"),
    (torch.tensor([0.0, float("nan")], dtype=F64), "t must be finite"),
    (torch.linspace(0, 1, 5, dtype=torch.float32), "share dtype and device"),
])
def test_bad_time_grid(t, message):
    with pytest.raises(ValueError, match=message):
        pint.parareal(decay, Y0, t, **OK)


def test_non_tensor_and_integer_inputs():
    with pytest.raises(TypeError, match="y0 must be a floating-point"):
        pint.parareal(decay, [1.0, 2.0], T, **OK)
    with pytest.raises(TypeError, match="t must be a floating-point"):
        pint.parareal(decay, Y0, torch.arange(5), **OK)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_mismatch():
    with pytest.raises(ValueError, match="share dtype and device"):
        pint.parareal(decay, Y0.cuda(), T, **OK)


@pytest.mark.parametrize("tol", [-1e-3, float("nan"), float("inf")])
def test_bad_tolerance(tol):
    with pytest.raises(ValueError, match="tol must be"):
        pint.parareal(decay, Y0, T, tol=tol, **OK)


@pytest.mark.parametrize("max_iters", [-1, 1.5, True])
def test_bad_max_iters(max_iters):
    with pytest.raises(ValueError, match="max_iters"):
        pint.parareal(decay, Y0, T, max_iters=max_iters, **OK)


@pytest.mark.parametrize("which", ["coarse", "fine"])
def test_non_propagator(which):
    kwargs = dict(OK)
    kwargs[which] = "rk4"
    with pytest.raises(TypeError, match=f"{which} must be a pint.Propagator"):
        pint.parareal(decay, Y0, T, **kwargs)


def test_f_returning_the_wrong_shape():
    with pytest.raises(ValueError, match="f returned shape"):
        pint.parareal(lambda t, y: y[:1], Y0, T, **OK)


def test_non_finite_state_names_iteration_and_slice():
    def blows_up(t, y):  # finite until y grows past 1e3, then infinite
        return torch.where(y.abs() < 1e3, 20.0 * y, torch.full_like(y, float("inf")))

    with pytest.raises(pint.NonFiniteError, match=r"point \d+ in iteration \d+") as info:
        pint.parareal(blows_up, Y0, T, coarse=pint.Euler(1), fine=pint.RK4(8))
    assert info.value.location.label in ("coarse", "fine")
    assert isinstance(info.value, ValueError)


def test_non_finite_initial_state():
    with pytest.raises(ValueError, match="y0 must be finite"):
        pint.parareal(decay, torch.tensor([float("nan")], dtype=F64), T, **OK)


def test_unvmappable_f_suggests_vectorized():
    def item_based(t, y):
        return y * float(t.item())

    with pytest.raises(RuntimeError) as info:
        pint.parareal(item_based, Y0, T, **OK)
    assert any("vectorized=True" in note for note in getattr(info.value, "__notes__", []))


def test_numpy_integers_are_accepted_where_an_integer_is():
    """docs/reliability.md: NumPy scalars are accepted where a number is. np.int64 for
    max_batch, steps, window, depth, sweeps or levels gives what the Python int gives."""
    np = pytest.importorskip("numpy")
    i = np.int64
    t = torch.linspace(0, 1, 9, dtype=F64)
    cases = [
        lambda n: pint.serial(decay, Y0, t, method=pint.RK4(n(3)), max_batch=n(1)),
        lambda n: pint.serial(decay, Y0, t, method=pint.BackwardEuler(n(2), max_iters=n(5))),
        lambda n: pint.parareal(decay, Y0, t, coarse=pint.Euler(n(1)), fine=pint.RK4(n(4)),
                                max_batch=n(3), max_iters=n(3)),
        lambda n: pint.picard(decay, Y0, t, step=pint.Heun(n(2)), window=n(4), max_batch=n(5),
                              jacobian=pint.Anderson(depth=n(2))),
        lambda n: pint.mgrit(decay, Y0, t, propagator=pint.Midpoint(n(2)), coarsening=n(2),
                             levels=n(3), relaxation=pint.FCFRelaxation(n(2))),
    ]
    for case in cases:
        expected, got = case(int), case(i)
        torch.testing.assert_close(got.ys, expected.ys, rtol=0, atol=0)
        assert got.stats == dataclasses.replace(expected.stats, wall_time=got.stats.wall_time)


def test_serial_independent_needs_a_batch_axis():
    """As parareal and picard: a ValueError naming independent, not len() of a 0-d tensor."""
    with pytest.raises(ValueError, match="independent=True needs y0 with a leading batch axis"):
        pint.serial(lambda t, y, i: -y, torch.tensor(1.0, dtype=F64), T, method=pint.RK4(1),
                    independent=True)


@pytest.mark.parametrize("solve", [
    lambda norm: pint.parareal(decay, Y0, T, norm=norm, **OK),
    lambda norm: pint.picard(decay, Y0, T, step=pint.RK4(1), norm=norm),
    lambda norm: pint.mgrit(decay, Y0, T, propagator=pint.RK4(1), coarsening=2, norm=norm),
], ids=["parareal", "picard", "mgrit"])
def test_a_norm_that_returns_more_than_one_value(solve):
    """norm must map a change to a scalar; an elementwise one (c.abs()) is a ValueError naming
    norm, not a raw expand/stack error from inside the solve."""
    with pytest.raises(ValueError, match=r"norm must return a scalar .* got shape \(.+\)"):
        solve(lambda change: change.abs())
