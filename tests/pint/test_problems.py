"""The test problems: closed forms agree with an independent integrator (SciPy's DOP853)."""

import pytest
import torch
from scipy.integrate import solve_ivp

import pint
from pint import problems


@pytest.mark.parametrize("factory", problems.ALL, ids=lambda f: f.__name__)
def test_solution_or_reference_matches_scipy(factory):
    p = factory()
    t = p.times(11)

    def rhs(s, y):
        return p.f(torch.tensor(s, dtype=torch.float64), torch.as_tensor(y)).numpy()

    out = solve_ivp(rhs, (p.t0, p.t1), p.y0.numpy(), method="Radau", t_eval=t.numpy(),
                    rtol=1e-11, atol=1e-12)
    assert out.success
    ref = p.reference(t)
    assert ref.shape == (11, len(p.y0))
    assert torch.allclose(ref, torch.from_numpy(out.y.T), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("factory", problems.ALL, ids=lambda f: f.__name__)
def test_vector_field_is_batched_and_vmappable(factory):
    p = factory()
    t = torch.linspace(p.t0, p.t1, 4, dtype=torch.float64)
    y = p.y0.expand(4, -1) * torch.linspace(0.5, 1.5, 4, dtype=torch.float64)[:, None]
    batched = p.f(t, y)
    rowwise = torch.stack([p.f(t[i], y[i]) for i in range(4)])
    torch.testing.assert_close(batched, rowwise)
    torch.testing.assert_close(torch.func.vmap(p.f)(t, y), rowwise)
    grid = p.times(11)
    assert torch.isfinite(pint.serial(p.f, p.y0, grid, method=pint.RK4(20)).ys).all()


def test_linear_rejects_mismatched_matrix():
    with pytest.raises(ValueError, match="matrix must be"):
        problems.linear(torch.eye(2), torch.ones(3))


SMALL = {"heat_1d": {"points": 31}, "heat_2d": {"points": 7}, "allen_cahn": {"points": 31}}


@pytest.mark.parametrize("factory", problems.STIFF, ids=lambda f: f.__name__)
def test_stiff_problems_match_scipy_radau_and_their_matrices(factory):
    p = factory(**SMALL.get(factory.__name__, {}))
    t = p.times(6)

    def rhs(s, y):
        return p.f(torch.tensor(s, dtype=torch.float64), torch.as_tensor(y)).numpy()

    out = solve_ivp(rhs, (p.t0, p.t1), p.y0.numpy(), method="Radau", t_eval=t.numpy(),
                    rtol=1e-10, atol=1e-12, jac=None if p.jacobian is None or not p.linear
                    else p.jacobian.numpy())
    assert out.success
    ref = p.reference(t)
    assert ref.shape == (6, len(p.y0))
    assert torch.allclose(ref, torch.from_numpy(out.y.T), rtol=1e-6, atol=1e-8)
    y = p.y0.expand(3, -1) * torch.tensor([[0.5], [1.0], [-2.0]], dtype=torch.float64)
    tt = torch.tensor([0.0, 0.1, 0.2], dtype=torch.float64)
    rowwise = torch.stack([p.f(tt[i], y[i]) for i in range(3)])
    torch.testing.assert_close(p.f(tt, y), rowwise)
    torch.testing.assert_close(torch.func.vmap(p.f)(tt, y), rowwise)
    at = torch.ones_like(y[1]) if p.name == "allen_cahn" else y[1] * 0.0  # where it is exact
    jac = torch.func.jacrev(lambda v: p.f(tt[1], v))(at)
    torch.testing.assert_close(jac, p.jacobian, rtol=1e-12, atol=1e-9)
    if p.linear:  # affine: the Jacobian is the same everywhere, and exact
        torch.testing.assert_close(torch.func.jacrev(lambda v: p.f(tt[1], v))(y[2]), p.jacobian,
                                   rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("factory", [problems.heat_1d, problems.heat_2d])
def test_heat_solutions_are_the_matrix_exponential(factory):
    p = factory()
    t = p.times(4)
    expm = torch.linalg.matrix_exp(p.jacobian * t[:, None, None]) @ p.y0
    torch.testing.assert_close(p.reference(t), expm, rtol=1e-10, atol=1e-12)


def test_laplacians_converge_to_the_continuous_operator():
    """Second-order differences: the error on sin(pi x) sin(2 pi y) falls 4x per halving."""
    errors = []
    for n in (7, 15, 31):
        x = torch.arange(1, n + 1, dtype=torch.float64) / (n + 1)
        u = torch.outer(torch.sin(torch.pi * x), torch.sin(2 * torch.pi * x)).reshape(-1)
        exact = -5 * torch.pi**2 * u
        errors.append(float((problems.laplacian_2d(n) @ u - exact).abs().max()))
    assert 3.5 < errors[0] / errors[1] < 4.5 and 3.5 < errors[1] / errors[2] < 4.5
    with pytest.raises(ValueError, match="points"):
        problems.laplacian_1d(0)
