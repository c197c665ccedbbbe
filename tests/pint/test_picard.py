"""pint.picard on ODEs: exact prefix, equal to pint.serial at full iterations for every
strategy, convergence of the quasi-Newton variant, windows, bad input."""

import math

import pytest
import torch
from helpers import decay
from hypothesis import given, settings
from hypothesis import strategies as st

import pint
from pint.algorithms import recurrence

F64 = torch.float64


def oscillator(t, y):
    return torch.stack([y[1], -y[0]])


def pendulum(t, y):
    return torch.stack([y[1], -torch.sin(y[0]) - 0.1 * y[1]])


JACOBIANS = [pint.Identity(), pint.Secant(), pint.Secant(prior=0.5, lower=0.0, upper=2.0),
             pint.DiagonalSecant(), pint.Secant(prior=0.5, lower=0.0, upper=2.0).diagonal(),
             pint.Anderson(), pint.Anderson(pint.Secant(), depth=2),
             pint.Anderson(pint.DiagonalSecant(), depth=1)]
INITIALS = [pint.Constant(), pint.Tangent()]
ACCEPTANCES = [pint.ExactFront(), pint.Freeze(), pint.Freeze(stop=True)]


@given(n=st.integers(1, 24), jacobian=st.sampled_from(JACOBIANS),
       initial=st.sampled_from(INITIALS), acceptance=st.sampled_from(ACCEPTANCES),
       window=st.one_of(st.none(), st.integers(1, 24)), step=st.sampled_from(["euler", "rk4"]),
       problem=st.sampled_from([decay, oscillator]))
@settings(max_examples=60, deadline=None)
def test_full_iterations_equal_serial_for_every_strategy(n, jacobian, initial, acceptance,
                                                         window, step, problem):
    t = torch.linspace(0, 2, n + 1, dtype=F64)
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    method = pint.Euler(1) if step == "euler" else pint.RK4(1)
    serial = pint.serial(problem, y0, t, method=method)
    sol = pint.picard(problem, y0, t, step=method, tol=0.0, jacobian=jacobian, initial=initial,
                      acceptance=acceptance, window=None if window is None else min(window, n))
    torch.testing.assert_close(sol.ys, serial.ys, rtol=1e-12, atol=1e-12)
    assert sol.converged and sol.iterations <= n


@pytest.mark.parametrize("way", [recurrence.sequential, recurrence.parallel],
                         ids=["sequential", "parallel scan"])
@pytest.mark.parametrize("jacobian", JACOBIANS, ids=repr)
def test_exact_prefix_after_every_iteration(jacobian, way, monkeypatch):
    """Both ways of solving the window's recurrence (the parallel scan is the GPU's)."""
    monkeypatch.setattr(recurrence, "solve", way)
    t = torch.linspace(0, 3, 17, dtype=F64)
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    serial = pint.serial(oscillator, y0, t, method=pint.RK4(1))
    sol = pint.picard(oscillator, y0, t, step=pint.RK4(1), tol=0.0, jacobian=jacobian,
                      store_iterates=True)
    for k, ys in enumerate(sol.iterates, start=1):
        torch.testing.assert_close(ys[:k + 1], serial.ys[:k + 1], rtol=1e-12, atol=1e-13)


@given(n=st.integers(2, 20), window=st.integers(1, 20), jacobian=st.sampled_from(JACOBIANS),
       initial=st.sampled_from(INITIALS), acceptance=st.sampled_from(ACCEPTANCES))
@settings(max_examples=40, deadline=None)
def test_exact_prefix_with_a_sliding_window(n, window, jacobian, initial, acceptance):
    t = torch.linspace(0, 2, n + 1, dtype=F64)
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    serial = pint.serial(oscillator, y0, t, method=pint.RK4(1))
    sol = pint.picard(oscillator, y0, t, step=pint.RK4(1), tol=0.0, jacobian=jacobian,
                      initial=initial, acceptance=acceptance, window=min(window, n),
                      store_iterates=True)
    for k, ys in enumerate(sol.iterates, start=1):
        torch.testing.assert_close(ys[:k + 1], serial.ys[:k + 1], rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(sol.ys, serial.ys, rtol=1e-12, atol=1e-12)


def test_extrapolate_guesses_the_points_beyond_the_window_along_the_last_slope():
    """With Euler steps the last step's slope is f at the window's last point: after every
    iteration the points beyond the window lie on the line through the window's end with
    that slope (evaluated on the previous iterate)."""
    n, window = 20, 5
    t = torch.linspace(0, 2, n + 1, dtype=F64)
    y0 = torch.tensor([1.0, -0.5], dtype=F64)
    sol = pint.picard(decay, y0, t, step=pint.Euler(1), tol=0.0, window=window,
                      initial=pint.Tangent(), jacobian=pint.Secant(), store_iterates=True)
    previous = y0 + (t - t[0])[:, None] * decay(t[0], y0)  # the first guess: a tangent
    for k, ys in enumerate(sol.iterates, start=1):
        e = k - 1 + window  # ExactFront: the front moves by one per iteration
        if e < n:
            slope = decay(t[e - 1], previous[e - 1])
            line = ys[e] + (t[e + 1:] - t[e])[:, None] * slope
            torch.testing.assert_close(ys[e + 1:], line, rtol=1e-12, atol=1e-12)
        previous = ys


def test_freeze_with_stop_ends_before_the_front_reaches_the_end():
    t = torch.linspace(0, 4, 81, dtype=F64)
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    serial = pint.serial(oscillator, y0, t, method=pint.RK4(1))
    kw = dict(step=pint.RK4(1), tol=1e-6, window=30, jacobian=pint.Secant(),
              initial=pint.Tangent(), stop=pint.Extrapolated())
    plain = pint.picard(oscillator, y0, t, acceptance=pint.Freeze(tol=1e-8), **kw)
    early = pint.picard(oscillator, y0, t, acceptance=pint.Freeze(tol=1e-8, stop=True), **kw)
    assert early.converged and early.iterations < plain.iterations
    assert float((early.ys - serial.ys).abs().max()) <= 10 * 1e-6


def test_freeze_stop_must_be_a_bool():
    with pytest.raises(TypeError, match="Freeze's stop must be True or False"):
        pint.Freeze(stop=1)


def test_secant_beats_picard_on_a_stiffish_linear_problem():
    """On y' = lam y the step is linear, so the secant is the exact Jacobian after one
    history point: quasi-Newton converges in a few iterations, Picard needs many."""
    lam = -8.0
    t = torch.linspace(0, 1, 41, dtype=F64)
    y0 = torch.ones(1, dtype=F64)
    kw = dict(step=pint.Euler(1), tol=1e-10, initial=pint.Tangent())
    qn = pint.picard(lambda t, y: lam * y, y0, t, jacobian=pint.Secant(), **kw)
    plain = pint.picard(lambda t, y: lam * y, y0, t, **kw)
    exact = (1 + lam / 40) ** torch.arange(41, dtype=F64)
    torch.testing.assert_close(qn.ys[:, 0], exact, rtol=0, atol=1e-9)
    assert qn.iterations <= 4 < plain.iterations
    assert qn.converged_by == "tolerance"


def test_diagonal_secant_is_exact_on_a_diagonal_linear_problem():
    """y' = diag(lam) y with Euler steps: each step is linear with a diagonal Jacobian, which
    the diagonal secant recovers from one history point (the scalar one cannot)."""
    lam = torch.tensor([-8.0, -1.0, 2.0], dtype=F64)
    t = torch.linspace(0, 1, 41, dtype=F64)
    kw = dict(step=pint.Euler(1), tol=1e-10, initial=pint.Tangent())
    diagonal = pint.picard(lambda t, y: lam * y, torch.ones(3, dtype=F64), t,
                           jacobian=pint.DiagonalSecant(), **kw)
    scalar = pint.picard(lambda t, y: lam * y, torch.ones(3, dtype=F64), t,
                         jacobian=pint.Secant(), **kw)
    exact = (1 + lam / 40) ** torch.arange(41, dtype=F64)[:, None]
    torch.testing.assert_close(diagonal.ys, exact, rtol=0, atol=1e-9)
    assert diagonal.iterations <= 5 < scalar.iterations


@pytest.mark.parametrize("problem", [oscillator, pendulum], ids=["oscillator", "pendulum"])
def test_anderson_accelerates_picard(problem):
    t = torch.linspace(0, 6, 61, dtype=F64)
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    serial = pint.serial(problem, y0, t, method=pint.RK4(1))
    kw = dict(step=pint.RK4(1), tol=1e-8, initial=pint.Tangent())
    plain = pint.picard(problem, y0, t, **kw)
    anderson = pint.picard(problem, y0, t, jacobian=pint.Anderson(), **kw)
    assert anderson.converged and anderson.iterations < plain.iterations * 3 / 4
    assert float((anderson.ys - serial.ys).abs().max()) <= 1e-7


@pytest.mark.parametrize(("build", "error", "message"), [
    (lambda: pint.Anderson(depth=0), ValueError, "Anderson's depth must be"),
    (lambda: pint.Anderson(pint.Anderson()), TypeError, "Anderson's base must be"),
    (lambda: pint.Anderson(regularization=-1.0), ValueError, "regularization must be"),
    (lambda: pint.Anderson(regularization=math.inf), ValueError, "regularization must be"),
    (lambda: pint.DiagonalSecant(floor=0.0), ValueError, "floor must be"),
    (lambda: pint.Freeze(tol=math.nan), ValueError, "Freeze's tol must be"),
    (lambda: pint.Freeze(tol=-1e-3), ValueError, "Freeze's tol must be"),
    (lambda: pint.Freeze(tol="1e-3"), ValueError, "Freeze's tol must be"),
    (lambda: pint.Freeze(norm="max"), TypeError, "Freeze's norm must be"),
])
def test_bad_strategy_arguments(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_extrapolated_stop_error_is_within_tolerance():
    t = torch.linspace(0, 4, 81, dtype=F64)
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    serial = pint.serial(oscillator, y0, t, method=pint.RK4(1))
    for tol in (1e-4, 1e-7):
        sol = pint.picard(oscillator, y0, t, step=pint.RK4(1), tol=tol, jacobian=pint.Secant(),
                          stop=pint.Extrapolated(), initial=pint.Tangent())
        assert sol.converged
        assert float((sol.ys - serial.ys).abs().max()) <= 10 * tol


@given(rho=st.floats(0.01, 0.95), first=st.floats(1e-3, 10.0), safety=st.floats(1.0, 8.0),
       tol=st.floats(1e-8, 1e-1))
@settings(max_examples=60, deadline=None)
def test_extrapolated_stop_on_a_geometric_sequence(rho, first, safety, tol):
    """Residuals f_k = first * rho^k of a linear contraction leave exactly
    f_k rho / (1 - rho) (the sum of the later ones): for ratios it trusts (at least
    ``fastest``) the rule stops exactly when safety times that remaining error is within tol;
    for faster ones it is conservative (it stops only when that holds)."""
    residual = torch.tensor([first * rho], dtype=F64)
    previous = torch.tensor([first], dtype=F64)
    remaining = first * rho * rho / (1 - rho)
    rule = pint.Extrapolated(safety)
    stops = bool(rule(residual, previous, tol)[0])
    if stops:
        assert safety * remaining <= tol * (1 + 1e-9)
    elif rho >= rule.fastest:
        assert safety * remaining >= tol * (1 - 1e-9)


def test_extrapolated_stop_ignores_a_drop_after_growth():
    """Picard iterations on Lorenz over a long span: the residuals grow to 2e84, then drop
    to 2e5 (ratio 1e-79); the error is still of order one, so the rule must not stop."""
    rule = pint.Extrapolated()
    assert not bool(rule(torch.tensor([1.8e5], dtype=F64), torch.tensor([2.2e84], dtype=F64),
                         1e-6)[0])
    t = torch.linspace(0, 0.5, 101, dtype=F64)
    lorenz = pint.problems.lorenz()
    serial = pint.serial(lorenz.f, lorenz.y0, t, method=pint.RK4(1), vectorized=True)
    sol = pint.picard(lorenz.f, lorenz.y0, t, step=pint.RK4(1), tol=1e-6, vectorized=True,
                      stop=pint.Extrapolated())
    assert sol.converged and float((sol.ys - serial.ys).abs().max()) <= 1e-5


@pytest.mark.parametrize("safety", [0.5, math.nan, math.inf, True, "2"])
def test_extrapolated_safety_must_be_at_least_one(safety):
    with pytest.raises(ValueError, match="Extrapolated's safety must be"):
        pint.Extrapolated(safety)


@pytest.mark.parametrize("fastest", [-0.1, 1.0, math.nan, True])
def test_extrapolated_fastest_must_be_a_ratio(fastest):
    with pytest.raises(ValueError, match="Extrapolated's fastest must be"):
        pint.Extrapolated(fastest=fastest)


def test_depth_is_one_round_per_iteration_plus_the_initial_evaluation():
    t = torch.linspace(0, 1, 11, dtype=F64)
    y0 = torch.ones(1, dtype=F64)
    for initial, extra in ((pint.Constant(), 0), (pint.Tangent(), 1)):
        sol = pint.picard(decay, y0, t, step=pint.RK4(1), tol=0.0, max_iters=5, initial=initial)
        assert sol.stats.sequential_nfe == 4 * 5 + extra
        # the window runs from the exact front to the end: it shrinks by one per iteration
        assert sol.stats.evaluations["step"] == 4 * (10 + 9 + 8 + 7 + 6)


@pytest.mark.parametrize("jacobian", [pint.Secant(), pint.DiagonalSecant(),
                                      pint.Anderson(pint.Secant())], ids=repr)
def test_sliding_window_and_independent_problems(jacobian):
    t = torch.linspace(0, 2, 31, dtype=F64)
    y0 = torch.tensor([[1.0], [2.0], [-0.5]], dtype=F64)

    def f(t, y, index):
        return -y * (1 + index.to(y.dtype)[:, None])

    serial = torch.stack([pint.serial(lambda t, y, i=i: -y * (1 + i), y0[i], t,
                                      method=pint.Euler(1)).ys for i in range(3)], 1)
    sol = pint.picard(f, y0, t, step=pint.Euler(1), window=8, tol=1e-12,
                      jacobian=jacobian, vectorized=True, independent=True)
    torch.testing.assert_close(sol.ys, serial, rtol=0, atol=1e-10)
    assert sol.sample_iterations.shape == (3,)


def test_freeze_with_stop_on_independent_problems():
    """Problems that converge at different rates leave one by one while the window is
    shared: each keeps its own last residual for the extrapolated stop."""
    t = torch.linspace(0, 2, 41, dtype=F64)
    y0 = torch.tensor([[1.0, 0.0], [0.5, 1.0], [2.0, -1.0]], dtype=F64)
    speeds = torch.tensor([1.0, 2.0, 4.0], dtype=F64)

    def f(t, y, index):
        w = speeds.to(y)[index][:, None]
        return torch.stack([w[:, 0] * y[:, 1], -w[:, 0] * y[:, 0]], 1)

    serial = torch.stack([pint.serial(lambda t, y, i=i: f(t, y[None], torch.tensor([i]))[0],
                                      y0[i], t, method=pint.RK4(1)).ys for i in range(3)], 1)
    sol = pint.picard(f, y0, t, step=pint.RK4(1), window=15, tol=1e-8,
                      jacobian=pint.Secant(), initial=pint.Tangent(),
                      acceptance=pint.Freeze(tol=1e-12, stop=True), stop=pint.Extrapolated(),
                      vectorized=True, independent=True)
    assert sol.converged
    torch.testing.assert_close(sol.ys, serial, rtol=0, atol=1e-7)


def test_max_batch_gives_the_same_solution():
    t = torch.linspace(0, 2, 21, dtype=F64)
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    a = pint.picard(oscillator, y0, t, step=pint.RK4(1), tol=1e-8, jacobian=pint.Secant())
    b = pint.picard(oscillator, y0, t, step=pint.RK4(1), tol=1e-8, jacobian=pint.Secant(),
                    max_batch=3)
    assert torch.equal(a.ys, b.ys)
    assert a.stats.sequential_nfe == b.stats.sequential_nfe < b.stats.calls


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    (dict(window=0), ValueError, "window must be"),
    (dict(window=11), ValueError, "window must be"),
    (dict(jacobian="secant"), TypeError, "jacobian must be"),
    (dict(jacobian=pint.Secant), TypeError, "jacobian must be"),
    (dict(initial=None, acceptance="freeze"), TypeError, "acceptance must be"),
    (dict(step=pint.RK4), TypeError, r"step must be a propagator instance, e.g. RK4\(1\)"),
    (dict(tol=math.nan), ValueError, "tol must be"),
    (dict(stop="extrapolated"), TypeError, "stop must be"),
])
def test_bad_input(kwargs, error, message):
    t = torch.linspace(0, 1, 11, dtype=F64)
    args = dict(step=pint.Euler(1))
    args.update(kwargs)
    with pytest.raises(error, match=message):
        pint.picard(decay, torch.ones(1, dtype=F64), t, **args)


@pytest.mark.parametrize("jacobian", JACOBIANS, ids=repr)
@pytest.mark.parametrize("shape", [(), (2, 3, 2)], ids=["scalar", "3-D"])
def test_every_strategy_on_scalar_and_3d_states(jacobian, shape):
    t = torch.linspace(0, 2, 7, dtype=F64)
    y0 = torch.linspace(0.5, 1.5, math.prod(shape), dtype=F64).reshape(shape)
    serial = pint.serial(decay, y0, t, method=pint.RK4(1))
    for window in (None, 3):
        sol = pint.picard(decay, y0, t, step=pint.RK4(1), tol=0.0, jacobian=jacobian,
                          window=window)
        assert sol.ys.shape == (7, *shape)
        torch.testing.assert_close(sol.ys, serial.ys, rtol=1e-12, atol=1e-12)


def test_freeze_with_a_nan_tolerance_does_not_accept_every_point():
    """Freeze(tol=nan) compared every change with NaN (False), so it accepted the whole window
    after one iteration and returned the initial guess as converged."""
    t = torch.linspace(0, 2, 9, dtype=F64)
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    with pytest.raises(ValueError, match="Freeze's tol must be a finite number >= 0"):
        pint.picard(oscillator, y0, t, step=pint.RK4(1), acceptance=pint.Freeze(tol=math.nan))


@pytest.mark.parametrize("jacobian", [
    pint.Secant(prior=torch.ones(3, dtype=F64)), pint.Secant(lower=torch.zeros(3, dtype=F64)),
    pint.Secant(upper=torch.ones(2, 5, dtype=F64)), pint.DiagonalSecant(lower=torch.zeros(3)),
    pint.Anderson(pint.Secant(upper=torch.ones(11))),
], ids=repr)
def test_secant_tensors_must_have_one_value_per_step(jacobian):
    """A prior or bound tensor of the wrong length is a ValueError naming it, not a raw
    expand or index error from inside the solve."""
    t = torch.linspace(0, 1, 11, dtype=F64)
    with pytest.raises(ValueError, match=r"Secant's (prior|lower|upper) must be a number or "
                                         r"a tensor of N = 10 values"):
        pint.picard(decay, torch.ones(2, dtype=F64), t, step=pint.Euler(1), jacobian=jacobian)


@pytest.mark.parametrize("initial", INITIALS, ids=repr)
def test_max_iters_zero_returns_the_initial_guess(initial):
    """max_iters is the most iterations: 0 runs none (as in parareal and mgrit) and returns
    the initial guess, not the result of one iteration."""
    t = torch.linspace(0, 1, 11, dtype=F64)
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    sol = pint.picard(oscillator, y0, t, step=pint.RK4(1), max_iters=0, initial=initial)
    slope = oscillator(t[0], y0)
    guess = y0 + (t - t[0])[:, None] * slope if isinstance(initial, pint.Tangent) else (
        y0.expand(11, 2))
    assert sol.iterations == 0 and not sol.converged and sol.residuals == []
    assert sol.stats.evaluations.get("step", 0) == 0
    torch.testing.assert_close(sol.ys, guess, rtol=1e-15, atol=1e-15)
