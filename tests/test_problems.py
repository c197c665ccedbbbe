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
