"""Propagators: tableau orders, the torchdiffeq adapter, and the Gander-Vandewalle bound."""

import itertools
import math

import numpy as np
import pytest
import torch
import torchdiffeq
from devices import DEVICES

import pint
from pint import problems

F64 = torch.float64


@pytest.mark.parametrize("method", [pint.Euler, pint.Midpoint, pint.Heun, pint.RK4])
@pytest.mark.parametrize("problem", [problems.non_autonomous, problems.harmonic_oscillator,
                                     problems.linear])
def test_empirical_order_matches_the_tableau(method, problem):
    p = problem()
    t = p.times(5)
    exact = p.reference(t)
    steps = [64, 128, 256, 512] if method.__name__ != "RK4" else [8, 16, 32, 64]
    errors = [(pint.serial(p.f, p.y0, t, method=method(m)).ys - exact).abs().max().item()
              for m in steps]
    h = [1.0 / m for m in steps]
    slope = np.polyfit(np.log(h), np.log(errors), 1)[0]
    assert abs(slope - method(1).tableau.order) < 0.3, (slope, errors)


def test_tableau_must_be_explicit_and_consistent():
    with pytest.raises(ValueError, match="row 1 of a"):
        pint.ButcherTableau(a=((), (0.5, 0.5)), b=(0.5, 0.5), c=(0.0, 1.0), order=2)
    with pytest.raises(ValueError, match="same number of stages"):
        pint.ButcherTableau(a=((),), b=(0.5, 0.5), c=(0.0,), order=1)
    with pytest.raises(ValueError, match="steps"):
        pint.RK4(0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backwards", [False, True])
def test_torchdiffeq_fixed_grid_matches_odeint_slice_by_slice(device, backwards):
    p = problems.van_der_pol()
    t = p.times(9, device=device)
    if backwards:
        t = t.flip(0)
    y0 = p.y0.to(device)
    prop = pint.Torchdiffeq("rk4", options={"step_size": 1 / 10})
    ours = pint.serial(p.f, y0, t, method=prop).ys
    states = [y0]
    for n in range(len(t) - 1):
        h = float(t[n + 1] - t[n]) / 10
        out = torchdiffeq.odeint(p.f, states[-1], t[n:n + 2], method="rk4",
                                 options={"step_size": abs(h)})
        states.append(out[-1])
    torch.testing.assert_close(ours, torch.stack(states), rtol=1e-12, atol=1e-12)


def test_torchdiffeq_adaptive_matches_odeint_within_tolerance():
    p = problems.lotka_volterra()
    t = p.times(17)
    prop = pint.Torchdiffeq("dopri5", rtol=1e-10, atol=1e-10)
    sol = pint.parareal(p.f, p.y0, t, coarse=pint.RK4(1), fine=prop, tol=1e-9)
    serial = torchdiffeq.odeint(p.f, p.y0, t, method="dopri5", rtol=1e-10, atol=1e-10)
    assert sol.converged
    assert (sol.ys - serial).abs().max() < 1e-7
    assert (sol.ys - p.reference(t)).abs().max() < 1e-7
    assert sol.stats.predicted_sequential_nfe is None


def test_torchdiffeq_propagation_can_be_abandoned():
    """A pipelined solve that stops early closes bridged solves still running."""
    p = problems.lotka_volterra()
    t = p.times(17)
    sol = pint.parareal(p.f, p.y0, t, coarse=pint.RK4(1), fine=pint.Torchdiffeq("dopri5"),
                        tol=1e-4, pipelined=True)
    assert sol.converged and sol.iterations < 16
    import threading
    assert not [th for th in threading.enumerate() if th.name == "pint-bridge"]


def backward_euler(lam):
    """The library's backward Euler on the linear path: R = 1 / (1 - lam h) to round-off."""
    return pint.BackwardEuler(1, jacobian=torch.tensor([[lam]], dtype=F64), linear=True)


def rk4_stability(z, m):
    r = 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24
    return r**m


@pytest.mark.parametrize(
    ("coarse_kind", "lam_dt"),
    # forward Euler is stable (|R| < 1) only for lam dt in (-2, 0)
    [("forward", -0.3), ("forward", -1.0), ("forward", -1.79),
     ("backward", -0.3), ("backward", -1.0), ("backward", -1.79), ("backward", -3.0)],
)
def test_gander_vandewalle_contraction_bound(coarse_kind, lam_dt):
    """max_n |U[n]^{k+1} - u_n| <= |F - R| (1 - |R|^(N-1)) / (1 - |R|) max_n |U[n]^k - u_n|."""
    n_slices, m, lam = 12, 20, -1.0
    dt = lam_dt / lam
    t = torch.arange(n_slices + 1, dtype=F64) * dt
    y0 = torch.ones(1, dtype=F64)
    if coarse_kind == "forward":
        coarse, r = pint.Euler(1), 1 + lam_dt
    else:
        coarse, r = backward_euler(lam), 1 / (1 - lam_dt)
    fine = pint.RK4(m)
    f_factor = rk4_stability(lam_dt / m, m)
    rho = abs(f_factor - r) * (1 - abs(r) ** (n_slices - 1)) / (1 - abs(r))
    reference = pint.serial(lambda t, y: lam * y, y0, t, method=fine).ys
    sol = pint.parareal(lambda t, y: lam * y, y0, t, coarse=coarse, fine=fine, tol=0.0,
                        store_iterates=True)
    errors = [(it - reference).abs().max().item() for it in sol.iterates]
    checked = 0
    for before, after in itertools.pairwise(errors):
        if before < 1e-13:
            break
        assert after <= rho * before * (1 + 1e-9) + 1e-15
        checked += 1
    assert checked >= 2


def test_backward_euler_bound_supremum():
    """The sup over x of (1 - (1 + x) e^-x) / x is 0.2984 near x = 1.79 (docs/algorithm.md,
    "Parareal")."""
    x = np.linspace(1e-3, 20, 200001)
    g = np.abs(np.exp(-x) - 1 / (1 + x)) * (1 + x) / x  # |F - R| / (1 - |R|), N -> infinity
    assert g.max() == pytest.approx(0.2984, abs=1e-4)
    assert x[g.argmax()] == pytest.approx(1.79, abs=0.01)
    assert math.isclose(g.max(), np.max((1 - (1 + x) * np.exp(-x)) / x), rel_tol=1e-12)


class ExactDecay:
    """The exact propagator of y' = lam y: no evaluation of f at all."""

    depth = 0

    def __init__(self, lam):
        self.lam = lam

    def propagate(self, t0, t1, y0):
        return y0 * torch.exp(self.lam * (t1 - t0)).reshape(-1, *([1] * (y0.ndim - 1)))
        yield


def test_propagators_without_evaluations_do_not_recurse():
    """Chains of propagations that complete at once (depth 0) run iteratively: 200 slices
    with an exact fine and a slightly wrong exact coarse (decay rate 1.2 lam) used to exhaust
    the recursion limit."""
    lam, n = -1.0, 200
    t = torch.linspace(0, 5, n + 1, dtype=F64)
    for pipelined in (False, True):
        sol = pint.parareal(lambda t, y: lam * y, torch.ones(1, dtype=F64), t,
                            coarse=ExactDecay(1.2 * lam), fine=ExactDecay(lam), tol=1e-12,
                            pipelined=pipelined)
        assert sol.converged and sol.stats.nfe == 0 and sol.stats.sequential_nfe == 0
        torch.testing.assert_close(sol.ys[:, 0], torch.exp(lam * t), rtol=1e-11, atol=1e-14)
