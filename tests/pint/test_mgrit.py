"""pint.mgrit against the facts of the theory: two-level F-relaxation is Parareal, iterations end
at the serial fine solution, FCF beats F on a stiff heat problem, the depth of its sweeps, and
errors that say what to fix."""

import math

import pytest
import torch
from devices import DEVICES
from helpers import lotka
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pint
from pint import problems

F64 = torch.float64


def heat(points=31, intervals=64, t1=0.5):
    """A small forced heat equation (method of lines, zero ends): stiff, linear."""
    dx = 1.0 / (points + 1)
    x = torch.arange(1, points + 1, dtype=F64) * dx
    off = torch.ones(points - 1, dtype=F64)
    lap = (torch.diag(off, -1) - 2 * torch.eye(points, dtype=F64) + torch.diag(off, 1)) / dx**2

    def f(t, y):
        return y @ lap.T + torch.sin(math.pi * x) * torch.cos(3 * t)[:, None]

    y0 = torch.sin(math.pi * x) + 0.5 * torch.sin(7 * math.pi * x)
    t = torch.linspace(0.0, t1, intervals + 1, dtype=F64)
    return f, y0, t, pint.BackwardEuler(1, jacobian=lap, linear=True)


@pytest.mark.parametrize("device", DEVICES)
def test_two_level_f_relaxation_is_parareal(device):
    """Two levels with F-relaxation: the C-points are Parareal's iterates with G = one coarse
    step and F = m fine steps (Falgout et al. 2014), iteration by iteration."""
    p, y0, t = lotka(slices=32)
    y0, t = y0.to(device), t.to(device)
    m = 4
    par = pint.parareal(p.f, y0, t[::m], coarse=pint.RK4(1), fine=pint.RK4(m), tol=0.0,
                        max_iters=6, store_iterates=True, vectorized=True)
    mg = pint.mgrit(p.f, y0, t, propagator=pint.RK4(1), coarsening=m,
                    relaxation=pint.FRelaxation(), tol=0.0, max_iters=6, store_iterates=True,
                    vectorized=True)
    assert len(mg.iterates) == len(par.iterates) == 7
    for ours, theirs in zip(mg.iterates, par.iterates, strict=True):
        torch.testing.assert_close(ours[::m], theirs, rtol=1e-13, atol=1e-13)
    # ... and the iterates are not yet the serial solution (the check is not vacuous).
    serial = pint.serial(p.f, y0, t, method=pint.RK4(1), vectorized=True).ys
    assert (mg.iterates[2] - serial).abs().max() > 1e-6
    assert mg.ys.device == y0.device


def test_nonlinear_stiff_problem_with_newton_steps():
    """FAS on a nonlinear stiff problem, with backward Euler solved by Newton (finite-difference
    Jacobians): MGRIT converges to the serial backward Euler solution."""

    def f(t, y):
        return -50.0 * (y - torch.cos(t)) - y**3

    y0 = torch.tensor([1.0, -0.5], dtype=F64)
    t = torch.linspace(0.0, 3.0, 49, dtype=F64)
    be = pint.BackwardEuler(1)
    serial = pint.serial(f, y0, t, method=be).ys
    for levels in (2, 3):
        sol = pint.mgrit(f, y0, t, propagator=be, coarsening=4, levels=levels, tol=1e-10)
        assert sol.converged and sol.iterations <= 6
        torch.testing.assert_close(sol.ys, serial, rtol=0, atol=1e-9)


def test_two_level_f_relaxation_is_parareal_with_implicit_steps():
    f, y0, t, be = heat(intervals=32)
    m = 4
    par = pint.parareal(f, y0, t[::m], coarse=be, fine=pint.BackwardEuler(
        m, jacobian=be.jacobian, linear=True), tol=0.0, max_iters=5, store_iterates=True,
        vectorized=True)
    mg = pint.mgrit(f, y0, t, propagator=be, coarsening=m, relaxation=pint.FRelaxation(),
                    tol=0.0, max_iters=5, store_iterates=True, vectorized=True)
    for ours, theirs in zip(mg.iterates, par.iterates, strict=True):
        torch.testing.assert_close(ours[::m], theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("levels", [2, 3])
@pytest.mark.parametrize("relaxation", [pint.FRelaxation(), pint.FCFRelaxation()])
@pytest.mark.parametrize("cycle", [pint.VCycle(), pint.FCycle()])
def test_enough_iterations_give_the_serial_solution(levels, relaxation, cycle):
    """Each iteration makes at least one more C-point exact: the default max_iters (the
    intervals of level 1) ends at the serial solve with the fine propagator."""
    p, y0, t = lotka(slices=32)
    serial = pint.serial(p.f, y0, t, method=pint.RK4(1), vectorized=True).ys
    sol = pint.mgrit(p.f, y0, t, propagator=pint.RK4(1), coarsening=2, levels=levels,
                     relaxation=relaxation, cycle=cycle, tol=0.0, vectorized=True,
                     store_iterates=True)
    assert sol.iterations <= 16
    torch.testing.assert_close(sol.ys, serial, rtol=0, atol=1e-13)
    for k, iterate in enumerate(sol.iterates):  # the exact prefix grows by >= 2 fine points
        assert (iterate[: 2 * k + 1] - serial[: 2 * k + 1]).abs().max() <= 1e-13


def test_the_residual_is_pymgrits_and_decides_convergence():
    """The residual is ``Phi(u[i-1]) - u[i]`` at the C-points (2-norm): recompute it from the
    returned states with one serial step per interval."""
    p, y0, t = lotka(slices=32)
    seen = []
    sol = pint.mgrit(p.f, y0, t, propagator=pint.RK4(1), coarsening=4, tol=1e-9,
                     vectorized=True, callback=lambda k, ys, r: seen.append((k, ys, float(r))))
    assert sol.converged and sol.residuals[-1] <= 1e-9 < sol.residuals[-2]
    assert [k for k, _, _ in seen] == list(range(sol.iterations + 1))
    assert math.isnan(seen[0][2])  # as for Parareal: the initial guess has no residual
    for k, ys, residual in seen[1:]:
        steps = torch.stack([pint.serial(p.f, ys[i], t[i:i + 2], method=pint.RK4(1),
                                         vectorized=True).ys[1] for i in range(len(t) - 1)])
        direct = float(torch.linalg.vector_norm(steps - ys[1:]))
        assert residual == pytest.approx(direct, rel=1e-6, abs=1e-14)
        assert sol.residuals[k - 1] == residual
    torch.testing.assert_close(sol.ys, seen[-1][1])


def test_fcf_converges_in_fewer_iterations_than_f_on_heat():
    f, y0, t, be = heat()
    counts = {}
    for name, relaxation in (("F", pint.FRelaxation()), ("FCF", pint.FCFRelaxation())):
        sol = pint.mgrit(f, y0, t, propagator=be, coarsening=4, relaxation=relaxation,
                         tol=1e-9, vectorized=True)
        assert sol.converged
        counts[name] = sol.iterations
    assert counts["FCF"] < counts["F"]


def test_three_levels_and_f_cycles_converge_to_the_serial_solution():
    f, y0, t, be = heat()
    serial = pint.serial(f, y0, t, method=be, vectorized=True).ys
    for levels, coarsening in ((3, 4), (3, [2, 4]), (4, 2)):
        for cycle in (pint.VCycle(), pint.FCycle()):
            sol = pint.mgrit(f, y0, t, propagator=be, coarsening=coarsening, levels=levels,
                             cycle=cycle, tol=1e-10, vectorized=True)
            assert sol.converged and sol.iterations < 10
            assert (sol.ys - serial).abs().max() < 1e-9


def test_depth_of_the_sweeps():
    """One-evaluation steps, two levels, F-relaxation, m = 4, 8 coarse intervals: the initial
    guess costs the coarse solve (8), the F-relaxation (m - 1 = 3) and the step into the
    C-points (1); each iteration one coarse step (restriction), the coarse solve (8), the
    F-relaxation (3) and the residual's step (1): every sweep is one batched task."""
    p = problems.linear()
    y0, t = p.y0, p.times(33)
    sol = pint.mgrit(p.f, y0, t, propagator=pint.Euler(1), coarsening=4,
                     relaxation=pint.FRelaxation(), tol=0.0, max_iters=3, vectorized=True)
    assert sol.iterations == 3
    assert sol.stats.sequential_nfe == (8 + 3 + 1) + 3 * (1 + 8 + 3 + 1)
    # evaluations: fine: 32 per F-sweep + residual; coarse: 8 per solve, 8 per restriction
    assert sol.stats.fine_nfe == 4 * (24 + 8)
    assert sol.stats.coarse_nfe == 8 + 3 * (8 + 8)
    assert sol.stats.nfe == sol.stats.fine_nfe + sol.stats.coarse_nfe
    # FCF adds the C-relaxation (free: it reuses the residual's step) and one F-sweep (3); the
    # restriction's fine step into the C-points shares its round with the coarse step.
    fcf = pint.mgrit(p.f, y0, t, propagator=pint.Euler(1), coarsening=4,
                     relaxation=pint.FCFRelaxation(), tol=0.0, max_iters=3, vectorized=True)
    assert fcf.stats.sequential_nfe == sol.stats.sequential_nfe + 3 * 3


def test_remainder_intervals_are_trailing_f_points():
    """m need not divide the intervals: the points after the last C-point are F-points."""
    p, y0, t = lotka(slices=23)
    serial = pint.serial(p.f, y0, t, method=pint.RK4(1), vectorized=True).ys
    for coarsening, levels in ((4, 2), (3, 3)):
        sol = pint.mgrit(p.f, y0, t, propagator=pint.RK4(1), coarsening=coarsening,
                         levels=levels, tol=0.0, vectorized=True)
        torch.testing.assert_close(sol.ys, serial, rtol=0, atol=1e-12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(intervals=st.integers(2, 24), coarsening=st.integers(2, 5), levels=st.integers(2, 4),
       fcf=st.booleans(), backwards=st.booleans())
def test_hypothesis_default_max_iters_reach_the_serial_solution(intervals, coarsening, levels,
                                                                fcf, backwards):
    if intervals < coarsening ** (levels - 1):
        with pytest.raises(ValueError, match="no time interval"):
            pint.mgrit(lambda t, y: -y, torch.ones(2, dtype=F64),
                       torch.linspace(0, 1, intervals + 1, dtype=F64), propagator=pint.Euler(1),
                       coarsening=coarsening, levels=levels)
        return
    a = torch.tensor([[-0.3, 1.0], [-1.0, -0.2]], dtype=F64)
    t = torch.linspace(0.0, 2.0, intervals + 1, dtype=F64)
    t = t.flip(0) if backwards else t
    y0 = torch.tensor([1.0, -0.5], dtype=F64)
    serial = pint.serial(lambda t, y: a @ y, y0, t, method=pint.Heun(1)).ys
    relaxation = pint.FCFRelaxation() if fcf else pint.FRelaxation()
    sol = pint.mgrit(lambda t, y: a @ y, y0, t, propagator=pint.Heun(1), coarsening=coarsening,
                     levels=levels, relaxation=relaxation, tol=0.0)
    torch.testing.assert_close(sol.ys, serial, rtol=0, atol=1e-12)


def test_any_state_shape_and_a_custom_norm():
    y0 = torch.ones(2, 3, dtype=F64)
    t = torch.linspace(0, 1, 9, dtype=F64)
    sol = pint.mgrit(lambda t, y: -y, y0, t, propagator=pint.RK4(1), coarsening=2, tol=1e-12,
                     norm=lambda r: r.abs().max())
    assert sol.ys.shape == (9, 2, 3) and sol.converged
    serial = pint.serial(lambda t, y: -y, y0, t, method=pint.RK4(1)).ys
    torch.testing.assert_close(sol.ys, serial, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    (dict(levels=1), ValueError, "levels must be an integer >= 2"),
    (dict(coarsening=1), ValueError, "coarsening factors must be >= 2"),
    (dict(coarsening=[2, 2], levels=2), ValueError, "levels must be 3"),
    (dict(coarsening="F"), ValueError, "coarsening must be"),
    (dict(coarsening=16, levels=2), ValueError, "needs at least 16"),
    (dict(coarsening=4, levels=3), ValueError, "level 2 with no time interval"),
    (dict(relaxation="FCF"), TypeError, r"pint.FRelaxation\(\) or pint.FCFRelaxation\(\)"),
    (dict(cycle="V"), TypeError, r"pint.VCycle\(\)"),
    (dict(propagator="rk4"), TypeError, "propagator must be a pint.Propagator"),
    (dict(coarse_propagator=[pint.Euler(1)] * 2), ValueError, "one per coarse level"),
    (dict(tol=-1.0), ValueError, "tol must be"),
    (dict(max_iters=-1), ValueError, "max_iters"),
    (dict(norm=3), TypeError, "norm must be callable"),
])
def test_bad_input_names_the_argument(kwargs, error, match):
    args = dict(propagator=pint.Euler(1), coarsening=2)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        pint.mgrit(lambda t, y: -y, torch.ones(1, dtype=F64),
                   torch.linspace(0, 1, 9, dtype=F64), **args)
    with pytest.raises(ValueError, match="sweeps"):
        pint.FCFRelaxation(0)


def test_coarse_propagator_is_used_on_the_coarse_levels():
    """A different coarse propagator changes the iterates, not the limit."""
    p = problems.linear()
    y0, t = p.y0, p.times(17)
    serial = pint.serial(p.f, y0, t, method=pint.RK4(1), vectorized=True).ys
    cheap = pint.mgrit(p.f, y0, t, propagator=pint.RK4(1), coarse_propagator=pint.Euler(1),
                       coarsening=2, tol=0.0, max_iters=1, vectorized=True)
    same = pint.mgrit(p.f, y0, t, propagator=pint.RK4(1), coarsening=2, tol=0.0, max_iters=1,
                      vectorized=True)
    assert (cheap.ys - same.ys).abs().max() > 1e-6
    full = pint.mgrit(p.f, y0, t, propagator=pint.RK4(1), coarse_propagator=pint.Euler(1),
                      coarsening=2, tol=0.0, vectorized=True)
    torch.testing.assert_close(full.ys, serial, rtol=0, atol=1e-12)


def test_a_blow_up_names_the_level_and_point():
    """y' = y^2 from 1 blows up at t = 1: the engine's error names where."""
    t = torch.linspace(0, 2, 33, dtype=F64)
    with pytest.raises(pint.engine.NonFiniteError,
                       match=r"iteration \d.*point \d+") as info:
        pint.mgrit(lambda t, y: y * y, torch.ones(1, dtype=F64), t, propagator=pint.Euler(1),
                   coarsening=4, tol=0.0)
    assert info.value.location.point > 16  # past the blow-up time
