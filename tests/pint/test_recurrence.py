"""The window recurrence d_{j+1} = a_j d_j + c_j (pint.algorithms.recurrence): both ways agree
with the recurrence written out step by step."""

import hypothesis.strategies as st
import pytest
import torch
from devices import DEVICES
from hypothesis import given, settings

from pint.algorithms import recurrence


def written_out(a, c):
    if len(c) == 0:
        return c.clone()
    d, out = torch.zeros_like(c[0]), []
    for j in range(len(c)):
        d = a[j] * d + c[j]
        out.append(d)
    return torch.stack(out)


@settings(max_examples=60, deadline=None)
@given(width=st.integers(0, 70), batch=st.integers(1, 3), state=st.integers(1, 4),
       per_component=st.booleans(), seed=st.integers(0, 2**16))
def test_both_ways_solve_the_recurrence(width, batch, state, per_component, seed):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(width, batch, state, dtype=torch.float64, generator=g)
    shape = (width, batch, state) if per_component else (width, batch, 1)
    a = torch.rand(*shape, dtype=torch.float64, generator=g) * 1.2
    expected = written_out(a, c)
    torch.testing.assert_close(recurrence.sequential(a, c), expected, rtol=0, atol=0)
    # the scan composes the same products in another order: rounding only (relative to the
    # largest correction, which intermediate sums reach)
    scale = float(expected.abs().max()) if expected.numel() else 1.0
    torch.testing.assert_close(recurrence.parallel(a, c), expected, rtol=0,
                               atol=1e-12 * max(1.0, scale))


@pytest.mark.parametrize("device", DEVICES)
def test_solve_picks_a_way_by_device_and_keeps_shape_and_dtype(device):
    a = torch.full((9, 2, 1), 0.5, device=device)
    c = torch.ones(9, 2, 3, device=device)
    d = recurrence.solve(a, c)
    assert d.shape == c.shape and d.dtype == c.dtype and d.device == c.device
    torch.testing.assert_close(d[:, 0, 0].cpu(), torch.tensor([2 - 0.5**j for j in range(9)]))


def test_gradients_flow_through_both_ways():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(13, 2, 1, dtype=torch.float64, generator=g).requires_grad_()
    c = torch.randn(13, 2, 3, dtype=torch.float64, generator=g).requires_grad_()
    weights = torch.randn(13, 2, 3, dtype=torch.float64, generator=g)
    expected = torch.autograd.grad((written_out(a, c) * weights).sum(), (a, c))
    for way in (recurrence.sequential, recurrence.parallel):
        got = torch.autograd.grad((way(a, c) * weights).sum(), (a, c))
        for x, y in zip(got, expected, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
