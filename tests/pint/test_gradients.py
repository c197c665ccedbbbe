"""Gradients flow through every solver and equal autograd through the serial solve."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import pint

F64 = torch.float64


class Decay(nn.Module):
    """dy/dt = -a y + b sin(t): parameters a and b."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(1.3, dtype=F64))
        self.b = nn.Parameter(torch.tensor(0.7, dtype=F64))

    def forward(self, t, y):
        return -self.a * y + self.b * torch.sin(t)


SOLVERS = {
    "parareal": lambda f, y0, t: pint.parareal(f, y0, t, coarse=pint.Euler(1),
                                               fine=pint.RK4(4), tol=0.0),
    "parareal pipelined": lambda f, y0, t: pint.parareal(f, y0, t, coarse=pint.Euler(1),
                                                         fine=pint.RK4(4), tol=0.0,
                                                         pipelined=True),
    "picard": lambda f, y0, t: pint.picard(f, y0, t, step=pint.RK4(4), tol=0.0),
    "quasi-Newton picard": lambda f, y0, t: pint.picard(
        f, y0, t, step=pint.RK4(4), tol=0.0, jacobian=pint.Secant(),
        initial=pint.Tangent()),
}


@pytest.mark.parametrize("name", SOLVERS)
@given(n=st.integers(1, 10), y=st.floats(-2, 2))
@settings(max_examples=8, deadline=None)
def test_gradients_equal_the_serial_solves(name, n, y):
    model = Decay()
    t = torch.linspace(0, 2, n + 1, dtype=F64)
    y0 = torch.tensor([y, 0.5], dtype=F64, requires_grad=True)
    params = [y0, model.a, model.b]
    serial = pint.serial(model, y0, t, method=pint.RK4(4)).ys.pow(2).sum()
    expected = torch.autograd.grad(serial, params)
    loss = SOLVERS[name](model, y0, t).ys.pow(2).sum()
    got = torch.autograd.grad(loss, params)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_torch_func_grad_through_parareal():
    t = torch.linspace(0, 1, 6, dtype=F64)

    def final(a):
        sol = pint.parareal(lambda t, y: -a * y, torch.ones(1, dtype=F64), t,
                            coarse=pint.Euler(1), fine=pint.RK4(8), tol=0.0)
        return sol.ys[-1, 0]

    a = torch.tensor(0.8, dtype=F64)
    grad = torch.func.grad(final)(a)
    torch.testing.assert_close(grad, -torch.exp(-a), rtol=1e-6, atol=0)  # d/da e^(-a) at t = 1
