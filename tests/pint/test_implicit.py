"""Implicit propagators: orders, stability functions, Newton paths and failures, batching."""

import math

import numpy as np
import pytest
import torch
from devices import DEVICES
from hypothesis import given, settings
from hypothesis import strategies as st

import pint
from pint import problems
from pint.engine import Engine, Task
from pint.propagators import BACKWARD_EULER_TABLEAU, DIRK, SDIRK2_TABLEAU, DIRKTableau

F64 = torch.float64
GAMMA = 1 - 1 / math.sqrt(2)


def propagate(prop, f, t0, t1, y0, **engine_options):
    """Run one propagation of all rows on the engine; returns (end states, engine)."""
    out = []
    engine = Engine(f, **engine_options)
    engine.start(Task(prop.propagate(t0, t1, y0), on_done=out.append))
    engine.run()
    return out[0], engine


def stability_function(tableau, z):
    """R(z) = det(I - zA + z 1 b^T) / det(I - zA) (Hairer & Wanner IV.3), from the tableau."""
    s = tableau.stages
    a = np.zeros((s, s))
    for i, row in enumerate(tableau.a):
        a[i, : len(row)] = row
    b = np.array(tableau.b)
    eye = np.eye(s)
    return np.linalg.det(eye - z * a + z * np.outer(np.ones(s), b)) / np.linalg.det(eye - z * a)


# -- order -------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [pint.BackwardEuler, pint.SDIRK2])
@pytest.mark.parametrize("problem", [problems.logistic, problems.van_der_pol])
def test_empirical_order_matches_the_tableau(method, problem):
    p = problem()
    t = p.times(3)[:2]  # one slice of half the interval
    exact = p.reference(t)
    steps = [8, 16, 32, 64] if method is pint.SDIRK2 else [32, 64, 128, 256]
    errors = [(pint.serial(p.f, p.y0, t, method=method(m), vectorized=True).ys - exact)
              .abs().max().item() for m in steps]
    slope = np.polyfit(np.log([1.0 / m for m in steps]), np.log(errors), 1)[0]
    assert abs(slope - method(1).tableau.order) < 0.3, (slope, errors)


def test_sdirk2_tableau_is_alexanders():
    """Order 2 conditions, stiff accuracy and L-stability: R(z) -> 0 as z -> -infinity."""
    tab = SDIRK2_TABLEAU
    assert sum(tab.b) == pytest.approx(1.0, abs=1e-15)
    a = np.array([[GAMMA, 0.0], [1 - GAMMA, GAMMA]])
    assert np.array(tab.b) @ a.sum(1) == pytest.approx(0.5, abs=1e-15)  # b . c = 1/2
    np.testing.assert_allclose(a.sum(1), tab.c, atol=1e-15)
    assert tab.stiffly_accurate
    assert abs(stability_function(tab, -1e12)) < 1e-10
    z = -3.7
    assert stability_function(tab, z) == pytest.approx((1 + (1 - 2 * GAMMA) * z)
                                                       / (1 - GAMMA * z) ** 2, rel=1e-13)


# -- stability ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [pint.BackwardEuler, pint.SDIRK2])
@pytest.mark.parametrize("path", ["finite differences", "matrix", "linear"])
def test_very_stiff_decay_follows_the_stability_function(method, path):
    lam = -1e6
    options = {"finite differences": {}, "matrix": {"jacobian": torch.tensor([[lam]], dtype=F64)},
               "linear": {"jacobian": torch.tensor([[lam]], dtype=F64), "linear": True}}[path]
    t = torch.linspace(0, 1, 5, dtype=F64)  # steps of 0.25: lam h = -250000
    sol = pint.serial(lambda t, y: lam * y, torch.ones(1, dtype=F64), t,
                      method=method(1, **options))
    y = sol.ys[:, 0]
    assert torch.isfinite(y).all()
    assert (y[1:].abs() < 1e-4).all() and (y[1:].abs().diff() < 0).all()  # decays, no blow-up
    r = stability_function(method(1).tableau, lam * 0.25)
    expected = torch.tensor([r**n for n in range(5)], dtype=F64)
    # the linear path is exact to round-off; Newton paths to their tolerance 1e-12
    rtol = 1e-14 if path == "linear" else 1e-6
    torch.testing.assert_close(y, expected, rtol=rtol, atol=1e-12 if path != "linear" else 0)
    if method is pint.BackwardEuler:
        assert float(y[1]) == pytest.approx(1 / (1 + 250000), rel=1e-14 if path == "linear"
                                            else 1e-6)


@settings(max_examples=40, deadline=None)
@given(log_z=st.floats(-3, 9), steps=st.integers(1, 4), d=st.integers(1, 3),
       method=st.sampled_from([pint.BackwardEuler, pint.SDIRK2]))
def test_linear_path_is_the_stability_function_to_round_off(log_z, steps, d, method):
    """On y' = diag(lam) y the linear path multiplies by R(lam h)^steps, h = slice / steps."""
    lams = -(10.0 ** log_z) * torch.linspace(1.0, 2.0, d, dtype=F64)
    prop = method(steps, jacobian=torch.diag(lams), linear=True)
    t0 = torch.tensor([0.0, 0.5], dtype=F64)
    t1 = torch.tensor([1.0, 0.75], dtype=F64)
    y0 = torch.randn(2, d, dtype=F64)
    out, engine = propagate(prop, lambda t, y: y * lams, t0, t1, y0)
    assert engine.rounds == prop.depth == steps * method(1).tableau.stages
    for row in range(2):
        h = float(t1[row] - t0[row]) / steps
        r = torch.tensor([stability_function(prop.tableau, float(lam) * h) ** steps
                          for lam in lams], dtype=F64)
        torch.testing.assert_close(out[row], r * y0[row], rtol=1e-12, atol=1e-300)


# -- Newton paths --------------------------------------------------------------------------
@pytest.mark.parametrize("method", [pint.BackwardEuler, pint.SDIRK2])
def test_matrix_paths_equal_the_finite_difference_path_on_a_linear_problem(method):
    a = torch.tensor([[-0.1, 2.0, 0.0], [-2.0, -0.1, 50.0], [0.0, 0.0, -500.0]], dtype=F64)
    p = problems.linear(a)

    def g(t, y):  # y' = A y + forcing(t): affine, non-autonomous
        return p.f(t, y) + torch.stack([torch.sin(t), torch.cos(3 * t), t], dim=-1)

    t = p.times(9)
    runs = [pint.serial(g, p.y0, t, method=method(3, **options), vectorized=True)
            for options in ({}, {"jacobian": a}, {"jacobian": lambda t: a},
                            {"jacobian": a, "linear": True}, {"jacobian": lambda t: a,
                                                              "linear": True})]
    for run in runs[1:]:
        torch.testing.assert_close(run.ys, runs[0].ys, rtol=1e-10, atol=1e-11)
    depth = 8 * 3 * method(1).tableau.stages
    assert runs[3].stats.sequential_nfe == depth == runs[4].stats.sequential_nfe
    assert runs[0].stats.sequential_nfe > depth  # Newton checks convergence: more rounds


def test_finite_difference_newton_is_one_request_of_d_plus_one_rows_per_row():
    p = problems.lotka_volterra()
    t0 = torch.zeros(5, dtype=F64)
    t1 = torch.full((5,), 0.1, dtype=F64)
    y0 = p.y0.expand(5, -1) * torch.linspace(0.5, 1.5, 5, dtype=F64)[:, None]
    sizes = []

    def f(t, y):
        sizes.append(len(y))
        return p.f(t, y)

    _, engine = propagate(pint.BackwardEuler(1), f, t0, t1, y0)
    assert sizes[0] == 5 * 3  # (d + 1) R rows, d = 2
    assert all(size % 3 == 0 for size in sizes) and engine.rounds == len(sizes)


def test_rows_with_different_times_match_one_at_a_time():
    """One propagation of rows with different t0, t1 (forwards and backwards) equals each row
    propagated alone, on a non-autonomous nonlinear problem; problem indices follow the rows."""
    def f(t, y, index):
        assert len(index) == len(y)
        return -5 * (y - torch.cos(t)[:, None]) + torch.sin(y) + index[:, None].to(y)

    t0 = torch.tensor([0.0, 0.3, 1.0, 2.0], dtype=F64)
    t1 = torch.tensor([0.5, 0.4, 0.9, 2.5], dtype=F64)
    y0 = torch.tensor([[1.0, -1.0], [0.5, 0.0], [2.0, 1.0], [0.0, 0.1]], dtype=F64)
    problems_index = torch.tensor([3, 0, 1, 2])
    for prop in (pint.SDIRK2(4), pint.BackwardEuler(3, jacobian=-5 * torch.eye(2, dtype=F64))):
        out = []
        engine = Engine(f, with_index=True)
        engine.start(Task(prop.propagate(t0, t1, y0), on_done=out.append,
                          problems=problems_index))
        engine.run()
        for row in range(4):
            alone = []
            engine = Engine(f, with_index=True)
            engine.start(Task(prop.propagate(t0[row:row + 1], t1[row:row + 1], y0[row:row + 1]),
                              on_done=alone.append, problems=problems_index[row:row + 1]))
            engine.run()
            torch.testing.assert_close(out[0][row], alone[0][0], rtol=1e-11, atol=1e-12)


def test_states_of_any_shape():
    lam = torch.tensor([[-1.0, -10.0], [-100.0, -1000.0]], dtype=F64)
    y0 = torch.ones(3, 2, 2, dtype=F64)
    t0, t1 = torch.zeros(3, dtype=F64), torch.tensor([0.1, 0.2, 0.3], dtype=F64)
    out, _ = propagate(pint.BackwardEuler(2), lambda t, y: lam * y, t0, t1, y0)
    expected = (1 / (1 - lam * (t1 / 2)[:, None, None])) ** 2
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)


def test_float32_states():
    p = problems.stiff_cosine()
    t = p.times(9, dtype=torch.float32)
    sol = pint.serial(p.f, p.y0.float(), t, method=pint.SDIRK2(10), vectorized=True)
    assert sol.ys.dtype == torch.float32
    assert (sol.ys.double() - p.reference(t)).abs().max() < 1e-3


# -- failures ----------------------------------------------------------------------------------
def test_newton_failure_raises_with_location():
    def f(t, y):
        return -1e3 * y**3 + torch.cos(t)[:, None]

    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    with pytest.raises(pint.NewtonError, match=r"max_iters=2.*t0=0, .*residual") as info:
        pint.serial(f, torch.full((1,), 3.0, dtype=F64), t, vectorized=True,
                    method=pint.BackwardEuler(1, max_iters=2))
    error = info.value
    assert isinstance(error, ValueError)
    assert error.t0 == 0.0 and error.t == 0.5 and error.iterations == 2
    assert error.residual > 0 and math.isfinite(error.update)


def test_singular_newton_matrix_raises():
    a = torch.tensor([[1.0]], dtype=F64)  # I - h a = 0 for h = 1
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(pint.NewtonError, match="non-finite"):
        pint.serial(lambda t, y: y, torch.ones(1, dtype=F64), t, vectorized=True,
                    method=pint.BackwardEuler(1, jacobian=a))


def test_argument_errors():
    with pytest.raises(ValueError, match="steps"):
        pint.SDIRK2(0)
    with pytest.raises(ValueError, match="linear=True needs jacobian"):
        pint.BackwardEuler(1, linear=True)
    with pytest.raises(ValueError, match="square"):
        pint.BackwardEuler(1, jacobian=torch.ones(2, 3))
    with pytest.raises(TypeError, match="jacobian must be"):
        pint.BackwardEuler(1, jacobian="exact")
    with pytest.raises(ValueError, match="tol"):
        pint.BackwardEuler(1, tol=0)
    with pytest.raises(ValueError, match="max_iters"):
        pint.BackwardEuler(1, max_iters=0)
    with pytest.raises(ValueError, match="row 1 of a"):
        DIRKTableau(a=((0.5,), (0.5,)), b=(0.5, 0.5), c=(0.5, 1.0), order=1)
    with pytest.raises(ValueError, match=r"jacobian\(t\) must return"):
        pint.serial(lambda t, y: -y, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                    method=pint.BackwardEuler(1, jacobian=lambda t: torch.eye(3)),
                    vectorized=True)


def test_depth_is_known_only_on_the_linear_path():
    assert pint.BackwardEuler(4).depth is None
    assert pint.SDIRK2(3, jacobian=torch.eye(2)).depth is None
    assert pint.SDIRK2(3, jacobian=torch.eye(2), linear=True).depth == 6
    assert pint.propagators.slice_depths(pint.BackwardEuler(2), torch.zeros(4)) is None
    assert isinstance(pint.SDIRK2(1), pint.Propagator)


def test_explicit_stage_tableau():
    """A zero diagonal makes a stage explicit: the trapezoidal rule (an ESDIRK, Crank-Nicolson)
    has R(z) = (1 + z/2) / (1 - z/2)."""
    trapezoid = DIRKTableau(a=((0.0,), (0.5, 0.5)), b=(0.5, 0.5), c=(0.0, 1.0), order=2)
    lam = -40.0
    prop = DIRK(trapezoid, 2, jacobian=torch.tensor([[lam]], dtype=F64), linear=True)
    out, engine = propagate(prop, lambda t, y: lam * y, torch.zeros(1, dtype=F64),
                            torch.ones(1, dtype=F64), torch.ones(1, 1, dtype=F64))
    z = lam / 2
    assert float(out) == pytest.approx(((1 + z / 2) / (1 - z / 2)) ** 2, rel=1e-13)
    assert engine.rounds == 4 == prop.depth
    assert BACKWARD_EULER_TABLEAU.stiffly_accurate


# -- Parareal on stiff problems ----------------------------------------------------------------
def test_parareal_with_implicit_coarse_converges_on_the_stiff_problem():
    p = problems.stiff_cosine()
    t = p.times(33)
    fine = pint.BackwardEuler(20)
    serial = pint.serial(p.f, p.y0, t, method=fine, vectorized=True)
    sol = pint.parareal(p.f, p.y0, t, coarse=pint.BackwardEuler(1), fine=fine, tol=1e-10,
                        vectorized=True)
    assert sol.converged and sol.iterations <= 10
    assert (sol.ys - serial.ys).abs().max() < 1e-9
    assert (serial.ys - p.reference(t)).abs().max() < 1e-3  # first order, h = 1/64


@pytest.mark.parametrize("factory", [problems.heat_1d, problems.heat_2d])
def test_parareal_on_the_heat_equation_with_the_linear_path(factory):
    p = factory()
    t = p.times(17)
    coarse = pint.BackwardEuler(1, jacobian=p.jacobian, linear=True)
    fine = pint.SDIRK2(10, jacobian=p.jacobian, linear=True)
    serial = pint.serial(p.f, p.y0, t, method=fine, vectorized=True)
    sol = pint.parareal(p.f, p.y0, t, coarse=coarse, fine=fine, tol=1e-6, vectorized=True)
    # backward Euler coarse: the error contracts by about 1/4 per iteration (the
    # Gander-Vandewalle bound for diffusion is 0.2984)
    assert sol.converged and sol.iterations <= 12
    assert (sol.ys - serial.ys).abs().max() < 1e-5
    assert sol.stats.sequential_nfe == sol.stats.predicted_sequential_nfe
    assert (serial.ys - p.reference(t)).abs().max() < 1e-3


@settings(max_examples=30, deadline=None)
@given(k=st.floats(0.1, 1e4), h=st.floats(1e-3, 1.0), y0=st.floats(-3.0, 3.0),
       rows=st.integers(1, 3))
def test_backward_euler_solves_the_nonlinear_step_equation(k, h, y0, rows):
    """y' = -k y^3: the backward Euler step is the real root of h k Y^3 + Y - y0 = 0 (one real
    root: the cubic is increasing), found here by numpy's polynomial roots."""
    roots = np.roots([h * k, 0.0, 1.0, -y0])
    exact = float(roots[np.argmin(np.abs(roots.imag))].real)
    y = torch.full((rows, 1), y0, dtype=F64)
    out, _ = propagate(pint.BackwardEuler(1), lambda t, y: -k * y**3,
                       torch.zeros(rows, dtype=F64), torch.full((rows,), h, dtype=F64), y)
    torch.testing.assert_close(out, torch.full_like(y, exact), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", [pint.BackwardEuler, pint.SDIRK2])
@pytest.mark.parametrize("path", ["finite differences", "matrix", "linear", "linear callable"])
def test_gradients_through_the_step_match_the_stability_function(method, path):
    """y' = theta y: one step multiplies by R(theta h); d/dtheta of the result by autograd
    through the propagator equals d/dtheta of the closed-form R (also by autograd)."""
    h, y0 = 0.5, torch.tensor([[1.5]], dtype=F64)
    theta = torch.tensor(-3.0, dtype=F64, requires_grad=True)
    options = {"finite differences": {}, "matrix": {"jacobian": torch.tensor([[-3.0]], dtype=F64)},
               "linear": {"jacobian": theta.reshape(1, 1), "linear": True},
               "linear callable": {"jacobian": lambda t: theta.reshape(1, 1), "linear": True}}
    out, _ = propagate(method(1, **options[path]), lambda t, y: theta * y,
                       torch.zeros(1, dtype=F64), torch.full((1,), h, dtype=F64), y0)
    (ours,) = torch.autograd.grad(out.sum(), theta)
    z = theta * h
    r = 1 / (1 - z) if method is pint.BackwardEuler else \
        (1 + (1 - 2 * GAMMA) * z) / (1 - GAMMA * z) ** 2
    (expected,) = torch.autograd.grad(r * y0.sum(), theta)
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pipelined", [False, True])
def test_schedules_and_independent_problems_agree(device, pipelined):
    """Both schedules, two independent stiff problems at once (different initial states), on
    every device: each equals its own serial solve, and the linear path equals Newton."""
    p = problems.stiff_cosine()
    t = p.times(17, device=device)
    y0 = torch.tensor([[0.0], [2.0]], dtype=F64, device=device)
    jacobian = p.jacobian.to(device)

    def f(t, y, index):  # the problems differ in y0 only; rows carry their problem's index
        assert len(index) == len(y) and set(index.tolist()) <= {0, 1}
        return p.f(t, y)

    for options in ({}, {"jacobian": jacobian, "linear": True}):
        fine = pint.SDIRK2(4, **options)
        sol = pint.parareal(f, y0, t, coarse=pint.BackwardEuler(1, **options), fine=fine,
                            tol=1e-11, vectorized=True, independent=True, pipelined=pipelined)
        assert sol.ys.device.type == device
        for b in range(2):
            serial = pint.serial(p.f, y0[b], t, method=fine, vectorized=True)
            torch.testing.assert_close(sol.ys[:, b], serial.ys, rtol=1e-9, atol=1e-10)
