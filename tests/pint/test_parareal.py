"""Parareal against the facts of the theory: exact prefix, exactness at N iterations,
identical iterates for both schedules, and the pipelining depth recurrence."""

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
PROPAGATORS = {
    "euler": pint.Euler, "midpoint": pint.Midpoint, "heun": pint.Heun, "rk4": pint.RK4,
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pipelined", [False, True])
def test_exact_prefix_after_each_iteration(device, pipelined):
    """After iteration k, boundaries 0..k equal the serial fine solution (docs/algorithm.md,
    "Parareal")."""
    p, y0, t = lotka(device)
    fine = pint.RK4(8)
    reference = pint.serial(p.f, y0, t, method=fine, vectorized=True).ys
    sol = pint.parareal(p.f, y0, t, coarse=pint.Heun(1), fine=fine, tol=0.0, max_iters=8,
                        store_iterates=True, vectorized=True, pipelined=pipelined)
    assert len(sol.iterates) == 9
    for k, iterate in enumerate(sol.iterates):
        scale = reference[: k + 1].abs().max()
        assert (iterate[: k + 1] - reference[: k + 1]).abs().max() <= 1e-12 * scale
    # ... and the rest has not converged yet (the check above could not pass by accident).
    assert (sol.iterates[2][3:] - reference[3:]).abs().max() > 1e-6


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    slices=st.integers(1, 9),
    coarse=st.sampled_from(sorted(PROPAGATORS)),
    fine=st.sampled_from(sorted(PROPAGATORS)),
    fine_steps=st.integers(1, 5),
    shape=st.sampled_from([(), (3,), (2, 3), (1, 2, 2)]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    backwards=st.booleans(),
    pipelined=st.booleans(),
)
def test_n_iterations_reproduce_the_serial_fine_solution(
    slices, coarse, fine, fine_steps, shape, dtype, backwards, pipelined
):
    """max_iters = N gives the serial fine solution whatever the pair (docs/algorithm.md,
    "Parareal")."""
    g = torch.Generator().manual_seed(slices * 31 + fine_steps)
    a = torch.randn(*shape, 1, generator=g, dtype=dtype) if shape else torch.randn(1, dtype=dtype)
    a = a.squeeze(-1) if shape else a.squeeze()

    def f(t, y):  # non-autonomous, nonlinear, elementwise
        return torch.sin(y) * a - 0.3 * y + torch.cos(t)

    y0 = torch.randn(shape, generator=g, dtype=dtype)
    t = torch.linspace(0.0, 2.0, slices + 1, dtype=dtype)
    if backwards:
        t = t.flip(0)
    fine_prop = PROPAGATORS[fine](fine_steps)
    reference = pint.serial(f, y0, t, method=fine_prop).ys
    sol = pint.parareal(f, y0, t, coarse=PROPAGATORS[coarse](1), fine=fine_prop, tol=0.0,
                        pipelined=pipelined)
    assert sol.ys.shape == (slices + 1, *shape)
    assert sol.ys.dtype == dtype
    assert sol.converged
    eps = torch.finfo(dtype).eps
    assert (sol.ys - reference).abs().max() <= 64 * eps * (1 + reference.abs().max())


@pytest.mark.parametrize("device", DEVICES)
def test_pipelined_iterates_equal_batched_iterates(device):
    p, y0, t = lotka(device, slices=24)
    common = dict(coarse=pint.RK4(1), fine=pint.RK4(20), tol=1e-10, store_iterates=True,
                  vectorized=True)
    plain = pint.parareal(p.f, y0, t, pipelined=False, **common)
    piped = pint.parareal(p.f, y0, t, pipelined=True, **common)
    assert plain.iterations == piped.iterations > 2
    for a, b in zip(plain.iterates, piped.iterates, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)
    assert plain.residuals == pytest.approx(piped.residuals, rel=1e-10)
    assert piped.stats.sequential_nfe < plain.stats.sequential_nfe


def depth_recurrence(n_slices, iterations, c, fine_depth):
    """The pipelined recurrence of docs/algorithm.md written from its text, independently of
    pint.predicted_depth: t(n+1, k+1) = max(t(n, k+1) + c, t(n, k) + m c), boundaries <= k
    carried over."""
    t = {(n, 0): n * c for n in range(n_slices + 1)}
    for k in range(iterations):
        for n in range(k + 2):
            t[n, k + 1] = t[n, k] if n <= k else t[k, k] + fine_depth
        for n in range(k + 1, n_slices):
            t[n + 1, k + 1] = max(t[n, k + 1] + c, t[n, k] + fine_depth)
    return t[n_slices, iterations]


@settings(max_examples=25, deadline=None)
@given(slices=st.integers(1, 12), m=st.integers(1, 12), iters=st.integers(0, 12),
       coarse=st.sampled_from(sorted(PROPAGATORS)))
def test_pipelined_depth_follows_the_recurrence(slices, m, iters, coarse):
    iters = min(iters, slices)
    c_prop = PROPAGATORS[coarse](1)
    fine = PROPAGATORS[coarse](m)  # fine = m steps of the coarse method: depth m * c
    sol = pint.parareal(lambda t, y: -y + torch.sin(t), torch.ones(2, dtype=F64),
                        torch.linspace(0, 3, slices + 1, dtype=F64), coarse=c_prop, fine=fine,
                        tol=0.0, max_iters=iters, pipelined=True)
    assert sol.iterations <= iters
    c = c_prop.depth
    expected = depth_recurrence(slices, sol.iterations, c, m * c)
    assert sol.stats.sequential_nfe == expected
    assert sol.stats.predicted_sequential_nfe == expected


def test_batched_depth_and_converged_prefix_skipping():
    """Plain schedule: iteration k+1 propagates slices k..N-1 finely (the batch shrinks)."""
    n, m = 10, 5
    sol = pint.parareal(lambda t, y: -y, torch.ones(1, dtype=F64),
                        torch.linspace(0, 5, n + 1, dtype=F64), coarse=pint.Euler(1),
                        fine=pint.Euler(m), tol=0.0, max_iters=4)
    k = sol.iterations
    assert k == 4
    assert sol.stats.fine_nfe == m * sum(n - j for j in range(k))
    assert sol.stats.coarse_nfe == n + sum(n - j for j in range(1, k + 1))
    depth = n + sum(m + (n - j) for j in range(1, k + 1))
    assert sol.stats.sequential_nfe == depth == sol.stats.predicted_sequential_nfe
    assert sol.stats.nfe == sol.stats.coarse_nfe + sol.stats.fine_nfe


def test_lotka_volterra_acceptance():
    """The issue's acceptance problem: 64 slices, RK4(200) fine, RK4(1) coarse."""
    p = problems.lotka_volterra()
    t = p.times(65)
    reference = pint.serial(p.f, p.y0, t, method=pint.RK4(200), vectorized=True)
    for pipelined in (False, True):
        sol = pint.parareal(p.f, p.y0, t, coarse=pint.RK4(1), fine=pint.RK4(200), tol=1e-8,
                            vectorized=True, pipelined=pipelined)
        assert sol.converged
        assert (sol.ys - reference.ys).abs().max() < 1e-8
        assert sol.stats.sequential_nfe <= reference.stats.sequential_nfe / 5
    # ... and the serial fine solution is itself accurate: the comparison is meaningful.
    assert (reference.ys - p.reference(t)).abs().max() < 1e-9


def test_tolerance_stops_early_and_residuals_decrease():
    p = problems.van_der_pol()
    t = p.times(33)
    sol = pint.parareal(p.f, p.y0, t, coarse=pint.RK4(1), fine=pint.RK4(50), tol=1e-6)
    assert sol.converged and sol.iterations < 32
    assert len(sol.residuals) == sol.iterations
    assert sol.residuals[-1] <= 1e-6 < sol.residuals[-2]
    reference = pint.serial(p.f, p.y0, t, method=pint.RK4(50)).ys
    # a converged residual bounds the remaining error up to the contraction factor
    assert (sol.ys - reference).abs().max() < 1e-4


def test_max_iters_zero_is_the_coarse_solution():
    p, y0, t = lotka()
    sol = pint.parareal(p.f, y0, t, coarse=pint.RK4(1), fine=pint.RK4(10), max_iters=0)
    coarse = pint.serial(p.f, y0, t, method=pint.RK4(1)).ys
    torch.testing.assert_close(sol.ys, coarse, rtol=1e-14, atol=1e-14)
    assert sol.iterations == 0 and not sol.converged and sol.stats.fine_nfe == 0


@pytest.mark.parametrize("pipelined", [False, True])
def test_independent_problems_converge_on_their_own(pipelined):
    """With independent=True each row of y0 is its own problem and leaves when converged."""
    rates = torch.tensor([-0.1, -1.0, -4.0], dtype=F64)

    def field(t, y, index):  # each problem has its own rate, looked up by its index
        return rates[index][:, None] * y + torch.sin(t)[:, None]

    y0 = torch.ones(3, 2, dtype=F64)
    t = torch.linspace(0, 4, 17, dtype=F64)
    kwargs = dict(coarse=pint.Euler(1), fine=pint.RK4(10), tol=1e-9, vectorized=True,
                  independent=True, pipelined=pipelined)
    sol = pint.parareal(field, y0, t, **kwargs)
    assert sol.ys.shape == (17, 3, 2)
    assert sol.converged
    its = sol.sample_iterations.tolist()
    assert len(set(its)) > 1  # they stopped at different iterations
    for b in range(3):
        def alone_field(t, y, index, b=b):
            return field(t, y, torch.full_like(index, b))

        alone = pint.parareal(alone_field, y0[b:b + 1], t, **kwargs)
        assert alone.iterations == its[b]
        torch.testing.assert_close(sol.ys[:, b], alone.ys[:, 0], rtol=1e-13, atol=1e-13)
    # the unvectorized form gets one row at a time, with its index
    rowwise = pint.parareal(lambda t, y, i: rates[i] * y + torch.sin(t), y0, t,
                            **{**kwargs, "vectorized": False})
    torch.testing.assert_close(rowwise.ys, sol.ys, rtol=1e-13, atol=1e-13)


def test_callback_sees_every_iteration():
    p, y0, t = lotka()
    seen = []
    sol = pint.parareal(p.f, y0, t, coarse=pint.RK4(1), fine=pint.RK4(10), tol=1e-9,
                        callback=lambda k, ys, r: seen.append((k, ys.shape, float(r))))
    assert [k for k, _, _ in seen] == list(range(sol.iterations + 1))
    assert math.isnan(seen[0][2])
    assert [r for _, _, r in seen[1:]] == pytest.approx(sol.residuals)


def test_custom_norm_is_used():
    p, y0, t = lotka()
    calls = []

    def final_state_norm(change):
        calls.append(change.shape)
        return change[-1].abs().max()

    sol = pint.parareal(p.f, y0, t, coarse=pint.RK4(1), fine=pint.RK4(10), tol=1e-9,
                        norm=final_state_norm)
    assert calls and all(shape == (len(t), 2) for shape in calls)
    assert len(calls) == sol.iterations


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_device_and_dtype_are_kept(device, dtype):
    p, y0, t = lotka(device, dtype)
    sol = pint.parareal(p.f, y0, t, coarse=pint.RK4(1), fine=pint.RK4(10), tol=1e-5)
    assert sol.ys.device.type == device and sol.ys.dtype == dtype
    reference = pint.serial(p.f, y0, t, method=pint.RK4(10)).ys
    assert (sol.ys - reference).abs().max() < 1e-4


@settings(max_examples=25, deadline=None)
@given(depths=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 9)), min_size=1, max_size=8),
       pipelined=st.booleans(), iters=st.integers(0, 8))
def test_depth_with_unequal_slices(depths, pipelined, iters):
    """Slices of different lengths (e.g. unequal diffusion blocks): measured depth equals
    pint.predicted_depth with per-slice depths."""

    class Steps:  # explicit Euler with a per-slice number of steps
        def __init__(self, counts):
            self.counts = counts

        def slice_depths(self, t):
            return self.counts

        def propagate(self, t0, t1, y0):
            n = ((t0 - 0.0) / 0.5).round().long()  # slices are 0.5 long
            counts = torch.tensor(self.counts)[n]
            h = ((t1 - t0) / counts)[:, None]
            y = y0
            for j in range(int(counts.max())):
                rows = (counts > j).nonzero().squeeze(1)
                k = yield (t0[rows], y[rows], rows)
                y = y.index_add(0, rows, h[rows] * k)
            return y

    n = len(depths)
    coarse, fine = Steps([c for c, _ in depths]), Steps([c * m for c, m in depths])
    t = torch.arange(n + 1, dtype=F64) * 0.5
    sol = pint.parareal(lambda t, y: -y, torch.ones(2, dtype=F64), t, coarse=coarse,
                        fine=fine, tol=0.0, max_iters=min(iters, n), pipelined=pipelined)
    expected = pint.predicted_depth(n, sol.iterations, coarse.counts, fine.counts, pipelined)
    assert sol.stats.sequential_nfe == expected == sol.stats.predicted_sequential_nfe
    reference = pint.serial(lambda t, y: -y, torch.ones(2, dtype=F64), t, method=fine).ys
    if sol.iterations == n:
        torch.testing.assert_close(sol.ys, reference, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("independent", [False, True])
def test_serial_callback_gets_a_copy(independent):
    """A callback that modifies the state it is given cannot change the result
    (docs/reliability.md), as with parareal's and picard's callbacks."""
    t = torch.linspace(0, 2, 5, dtype=F64)
    y0 = torch.tensor([[1.0, 0.5]], dtype=F64) if independent else torch.tensor([1.0, 0.5],
                                                                                   dtype=F64)
    f = (lambda t, y, i: -y) if independent else (lambda t, y: -y)
    seen = []

    def vandal(n, y):
        seen.append(y.clone())
        y.mul_(0.0)

    plain = pint.serial(f, y0, t, method=pint.RK4(4), independent=independent)
    sol = pint.serial(f, y0, t, method=pint.RK4(4), independent=independent, callback=vandal)
    torch.testing.assert_close(sol.ys, plain.ys, rtol=0, atol=0)
    torch.testing.assert_close(torch.stack(seen), plain.ys[1:], rtol=0, atol=0)
