"""Bad input gets a clear error that names what is wrong."""

import pytest
import torch

import pint

F64 = torch.float64
Y0 = torch.ones(2, dtype=F64)
T = torch.linspace(0, 1, 5, dtype=F64)
OK = dict(coarse=pint.Euler(1), fine=pint.RK4(4))


def decay(t, y):
    return -y


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
