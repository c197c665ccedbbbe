"""The Newton paths of the implicit propagators (pint.propagators.jacobians) against the dense
exact solve, in float64; sparse and banded matrices; GMRES; warnings and bad input.

Tolerances: Newton stops at 1e-12 (relative to max(1, |Y|)); the references are the linear
path with the dense matrix (one exact LU solve per stage), so paths agree to about 1e-10 after
a few dozen steps of a stiff problem whose states are of order 1.
"""

import math
import warnings

import numpy as np
import pytest
import torch
from devices import DEVICES
from hypothesis import given, settings
from hypothesis import strategies as st

import pint
from pint import problems
from pint.engine import Engine, Task
from pint.propagators.jacobians import gmres, run_now

F64 = torch.float64


def forced(problem):
    """The problem's f plus a time-dependent forcing: affine, non-autonomous."""
    d = len(problem.y0)
    shape = torch.linspace(0.0, 1.0, d, dtype=F64)

    def f(t, y):
        return problem.f(t, y) + torch.sin(3 * t)[:, None] * shape

    return f


def dense_bands(matrix, lower, upper):
    """``matrix`` in LAPACK's band layout."""
    d = len(matrix)
    bands = torch.zeros(lower + upper + 1, d, dtype=matrix.dtype)
    for i in range(d):
        for j in range(max(0, i - lower), min(d, i + upper + 1)):
            bands[upper + i - j, j] = matrix[i, j]
    return bands


HEAT = problems.heat_1d(points=40)
A = HEAT.jacobian
BANDED = pint.Banded(dense_bands(A, 1, 1), lower=1)
PATHS = {
    "finite differences": dict(jacobian=pint.FiniteDifferences()),
    "autodiff banded": dict(jacobian=pint.Autodiff()),
    "autodiff dense": dict(jacobian=pint.Autodiff(banded=False)),
    "newton-krylov": dict(jacobian=pint.NewtonKrylov(rtol=1e-10)),
    "newton-krylov, banded preconditioner": dict(
        jacobian=pint.NewtonKrylov(rtol=1e-10, preconditioner=BANDED)),
    "newton-krylov, callable preconditioner": dict(jacobian=pint.NewtonKrylov(
        rtol=1e-10, preconditioner=lambda t, ha, r: torch.linalg.solve(
            torch.eye(40, dtype=F64) - ha[:, None, None] * A, r))),
    "sparse CSR, linear": dict(jacobian=A.to_sparse_csr(), linear=True),
    "sparse COO, linear": dict(jacobian=A.to_sparse(), linear=True),
    "banded, linear": dict(jacobian=BANDED, linear=True),
    "banded, simplified Newton": dict(jacobian=BANDED),
    "sparse CSR, simplified Newton": dict(jacobian=A.to_sparse_csr()),
    "auto (d = 40: finite differences)": dict(),
}


@pytest.mark.parametrize("method", [pint.BackwardEuler, pint.SDIRK2])
@pytest.mark.parametrize("path", list(PATHS))
def test_every_path_equals_the_dense_exact_solve_on_a_linear_problem(method, path):
    f = forced(HEAT)
    t = HEAT.times(5)
    exact = pint.serial(f, HEAT.y0, t, method=method(2, jacobian=A, linear=True),
                        vectorized=True)
    sol = pint.serial(f, HEAT.y0, t, method=method(2, **PATHS[path]), vectorized=True)
    torch.testing.assert_close(sol.ys, exact.ys, rtol=0, atol=1e-10)


@pytest.mark.parametrize("jacobian", [pint.FiniteDifferences(), pint.Autodiff(),
                                      pint.Autodiff(banded=False), pint.NewtonKrylov()],
                         ids=repr)
def test_nonlinear_paths_solve_the_stage_equation(jacobian):
    """Allen-Cahn (y - y^3 on the diagonal): each backward Euler step's result satisfies
    Y - y0 - h f(t1, Y) = 0 to Newton's tolerance, and all paths agree."""
    p = problems.allen_cahn(points=30)
    t = torch.linspace(0.0, 2.0, 9, dtype=F64)
    sol = pint.serial(p.f, p.y0, t, method=pint.BackwardEuler(1, jacobian=jacobian),
                      vectorized=True)
    h = float(t[1] - t[0])
    residual = sol.ys[1:] - sol.ys[:-1] - h * p.f(t[1:], sol.ys[1:])
    assert float(residual.abs().max()) < 1e-10
    reference = pint.serial(p.f, p.y0, t, method=pint.BackwardEuler(1), vectorized=True)
    torch.testing.assert_close(sol.ys, reference.ys, rtol=0, atol=1e-10)


def test_autodiff_detects_the_band_and_uses_compressed_tangents():
    """Tridiagonal Jacobian: one detection request of d rows, then 3 rows per row and
    Newton iteration (finite differences: d + 1)."""
    p = problems.heat_1d(points=50)
    t = p.times(3)
    prop = pint.BackwardEuler(1, jacobian=pint.Autodiff())
    sol = pint.serial(p.f, p.y0, t, method=prop, vectorized=True)
    newton_rounds = sol.stats.sequential_nfe - 1  # the detection is one round
    assert sol.stats.nfe == 50 + 3 * newton_rounds
    fd = pint.serial(p.f, p.y0, t, method=pint.BackwardEuler(1, jacobian=pint.FiniteDifferences()),
                     vectorized=True)
    assert fd.stats.nfe == 51 * fd.stats.sequential_nfe


def test_auto_default_by_state_size():
    prop = pint.BackwardEuler(1)
    assert isinstance(prop._strategy(200), pint.FiniteDifferences)
    assert isinstance(prop._strategy(201), pint.Autodiff)
    assert isinstance(prop._strategy(2048), pint.Autodiff)
    assert isinstance(prop._strategy(2049), pint.NewtonKrylov)


def test_large_state_uses_newton_krylov_by_default():
    """d = 3000, y' = -y (diagonal): the auto path is matrix-free and exact to tolerance."""
    d = 3000
    t = torch.linspace(0.0, 1.0, 3, dtype=F64)
    y0 = torch.linspace(-1.0, 1.0, d, dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no slow-path warning
        sol = pint.serial(lambda t, y: -y, y0, t, method=pint.BackwardEuler(1), vectorized=True)
    torch.testing.assert_close(sol.ys[-1], y0 / 1.5**2, rtol=1e-11, atol=0)
    assert sol.stats.nfe < 20  # a few products per step, no Jacobian of d rows


def test_krylov_preconditioner_cuts_the_products():
    f = forced(HEAT)
    t = HEAT.times(5)
    plain = pint.serial(f, HEAT.y0, t, method=pint.BackwardEuler(1, jacobian=pint.NewtonKrylov()),
                        vectorized=True)
    exact_p = pint.serial(f, HEAT.y0, t, vectorized=True, method=pint.BackwardEuler(
        1, jacobian=pint.NewtonKrylov(preconditioner=BANDED)))
    assert exact_p.stats.sequential_nfe < plain.stats.sequential_nfe / 3


# -- sparse and banded matrices -------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(d=st.integers(1, 12), lower=st.integers(0, 3), upper=st.integers(0, 3),
       seed=st.integers(0, 2**16))
def test_banded_matrix_equals_its_dense_form(d, lower, upper, seed):
    gen = torch.Generator().manual_seed(seed)
    dense = torch.randn(d, d, generator=gen, dtype=F64)
    dense = torch.triu(torch.tril(dense, upper), -lower)
    banded = pint.Banded(dense_bands(dense, lower, upper), lower=lower)
    torch.testing.assert_close(banded.to_dense(), dense, rtol=0, atol=0)
    x = torch.randn(3, d, generator=gen, dtype=F64)
    torch.testing.assert_close(banded.matvec(x), x @ dense.T, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(banded.scipy().toarray(), dense.numpy(), rtol=0, atol=0)


def test_entries_outside_the_matrix_are_ignored():
    bands = torch.tensor([[7.0, 1.0, 1.0], [2.0, 2.0, 2.0], [1.0, 1.0, 9.0]], dtype=F64)
    expected = torch.tensor([[2.0, 1, 0], [1, 2, 1], [0, 1, 2]], dtype=F64)
    banded = pint.Banded(bands, lower=1)
    torch.testing.assert_close(banded.to_dense(), expected)
    np.testing.assert_allclose(banded.scipy().toarray(), expected.numpy())


@pytest.mark.parametrize("kind", ["csr", "banded"])
def test_gradients_through_the_sparse_linear_path_match_the_dense(kind):
    matrix = A.to_sparse_csr() if kind == "csr" else BANDED
    t = HEAT.times(5)
    grads = []
    for jacobian in (A, matrix):
        y0 = HEAT.y0.clone().requires_grad_()
        sol = pint.serial(forced(HEAT), y0, t, vectorized=True,
                          method=pint.SDIRK2(2, jacobian=jacobian, linear=True))
        (sol.ys[-1] ** 2).sum().backward()
        grads.append(y0.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-14)


def test_sparse_factor_is_reused_per_step_size():
    prop = pint.BackwardEuler(1, jacobian=BANDED, linear=True)
    pint.serial(forced(HEAT), HEAT.y0, HEAT.times(9), method=prop, vectorized=True)
    assert len(prop._factors) == 1  # one step size: one factorisation


@pytest.mark.parametrize("device", DEVICES)
def test_gmres_matches_a_dense_solve(device):
    gen = torch.Generator().manual_seed(0)
    rows, d = 4, 30
    matrices = (torch.eye(d, dtype=F64) * 4 + torch.randn(rows, d, d, generator=gen,
                                                          dtype=F64) / math.sqrt(d)).to(device)
    b = torch.randn(rows, d, generator=gen, dtype=F64).to(device)
    b[2] = 0  # a zero right-hand side converges at once to x = 0

    def product(v):
        yield from ()
        return (matrices @ v[:, :, None])[:, :, 0]

    for restart in (5, 60):  # restarted and not
        x, relative, converged = run_now(gmres(product, b, rtol=1e-12, maxiter=200,
                                               restart=restart))
        assert bool(converged.all()) and float(relative.max()) <= 1e-12
        torch.testing.assert_close(x, torch.linalg.solve(matrices, b), rtol=1e-9, atol=1e-10)


# -- warnings -------------------------------------------------------------------------------
def test_slow_finite_differences_warn_once_naming_the_faster_options():
    p = problems.heat_1d(points=201)
    t = p.times(3)
    with pytest.warns(pint.SlowNewtonWarning, match=r"pint\.Autodiff") as record:
        pint.serial(p.f, p.y0, t, vectorized=True,
                    method=pint.SDIRK2(1, jacobian=pint.FiniteDifferences()))
    assert len([w for w in record if issubclass(w.category, pint.SlowNewtonWarning)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pint.serial(p.f, p.y0, t, vectorized=True, method=pint.SDIRK2(1))  # auto: no warning


@pytest.mark.parametrize("jacobian", [pint.Autodiff(), pint.NewtonKrylov()], ids=repr)
def test_a_vector_field_without_tangents_falls_back_to_finite_differences(jacobian):
    p = problems.heat_1d(points=20)

    def f(t, y):  # through NumPy: no forward-mode tangents
        return torch.from_numpy(p.f(t, y).detach().numpy().copy())

    t = p.times(3)
    with pytest.warns(pint.SlowNewtonWarning, match="no forward-mode tangents"):
        sol = pint.serial(f, p.y0, t, vectorized=True,
                          method=pint.BackwardEuler(1, jacobian=jacobian))
    exact = pint.serial(p.f, p.y0, t, vectorized=True,
                        method=pint.BackwardEuler(1, jacobian=p.jacobian, linear=True))
    torch.testing.assert_close(sol.ys, exact.ys, rtol=0, atol=1e-10)


# -- bad input ------------------------------------------------------------------------------
def run_be(jacobian, y0=HEAT.y0, **options):
    return pint.serial(HEAT.f, y0, HEAT.times(3), vectorized=True,
                       method=pint.BackwardEuler(1, jacobian=jacobian, **options))


def test_matrix_of_the_wrong_size_dtype_or_kind():
    with pytest.raises(ValueError, match=r"jacobian must be \(40, 40\) for states of 40"):
        run_be(torch.eye(39, dtype=F64).to_sparse_csr(), linear=True)
    with pytest.raises(ValueError, match=r"jacobian must be \(40, 40\)"):
        run_be(pint.Banded(torch.ones(3, 41, dtype=F64), lower=1))
    with pytest.raises(TypeError, match=r"dtype torch\.float32 but the states are torch\.float64"):
        run_be(pint.Banded(BANDED.bands.float(), lower=1))
    with pytest.raises(TypeError, match="floating dtype"):
        pint.BackwardEuler(1, jacobian=torch.eye(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="square"):
        pint.BackwardEuler(1, jacobian=torch.ones(2, 3, dtype=F64).to_sparse_csr())
    with pytest.raises(ValueError, match="square"):
        pint.BackwardEuler(1, jacobian=torch.ones(2, 3, dtype=F64).to_sparse())
    with pytest.raises(ValueError, match="lower must be"):
        pint.Banded(torch.ones(3, 5), lower=3)
    with pytest.raises(ValueError, match="2-D tensor"):
        pint.Banded(torch.ones(5), lower=0)
    with pytest.raises(ValueError, match="linear=True needs jacobian="):
        pint.BackwardEuler(1, jacobian=pint.Autodiff(), linear=True)
    with pytest.raises(ValueError, match="gradients through a sparse"):
        pint.BackwardEuler(1, jacobian=A.to_sparse_csr().requires_grad_())


@pytest.mark.parametrize("matrix", [
    torch.tensor([[1.0, math.nan], [0.0, 1.0]], dtype=F64),
    torch.tensor([[1.0, math.inf], [0.0, 1.0]], dtype=F64).to_sparse_csr(),
    torch.tensor([[1.0, 0.0], [math.nan, 1.0]], dtype=F64).to_sparse(),
    pint.Banded(torch.tensor([[1.0, 1.0], [math.nan, 1.0]], dtype=F64), lower=1),
], ids=["dense", "csr", "coo", "banded"])
def test_non_finite_matrix(matrix):
    with pytest.raises(ValueError, match="non-finite entries"):
        pint.BackwardEuler(1, jacobian=matrix)


def test_non_finite_preconditioner_and_bad_krylov_options():
    with pytest.raises(ValueError, match="preconditioner has non-finite"):
        pint.NewtonKrylov(preconditioner=torch.full((2, 2), math.nan, dtype=F64))
    with pytest.raises(TypeError, match="preconditioner must be"):
        pint.NewtonKrylov(preconditioner="jacobi")
    with pytest.raises(ValueError, match="rtol"):
        pint.NewtonKrylov(rtol=0)
    with pytest.raises(ValueError, match="maxiter"):
        pint.NewtonKrylov(maxiter=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device (CUDA)")
@pytest.mark.cuda
def test_matrix_on_another_device():
    with pytest.raises(ValueError, match="is on cuda"):
        run_be(A.cuda().to_sparse_csr(), linear=True)


def test_krylov_that_does_not_converge_names_step_stage_and_residual():
    t = torch.tensor([0.0, 0.25, 0.5], dtype=F64)
    with pytest.raises(pint.NewtonError, match=r"Krylov solve of stage 0 did not converge "
                       r"\(relative residual .* > rtol=1e-08 after maxiter=3") as info:
        pint.serial(HEAT.f, HEAT.y0, t, vectorized=True,
                    method=pint.SDIRK2(1, jacobian=pint.NewtonKrylov(maxiter=3, restart=3)))
    error = info.value
    assert error.stage == 0
    assert error.t0 == 0.0 and error.linear_residual > 1e-8
    assert "t0=0," in str(error)


def test_engine_rows_with_tangents_do_not_leak_into_other_tasks():
    """A Newton-Krylov propagation batched with an explicit one in the same rounds: the
    explicit one's states carry no tangents afterwards and equal its solo run."""
    f = forced(HEAT)
    t0, t1 = torch.zeros(1, dtype=F64), torch.full((1,), 0.01, dtype=F64)
    y0 = HEAT.y0[None]
    out = {}
    engine = Engine(f)
    engine.start(Task(pint.BackwardEuler(1, jacobian=pint.NewtonKrylov()).propagate(
        t0, t1, y0), on_done=lambda y: out.__setitem__("implicit", y)))
    engine.start(Task(pint.Euler(50).propagate(t0, t1, y0),
                      on_done=lambda y: out.__setitem__("explicit", y)))
    engine.run()
    solo = []
    engine = Engine(f)
    engine.start(Task(pint.Euler(50).propagate(t0, t1, y0), on_done=solo.append))
    engine.run()
    import torch.autograd.forward_ad as fwad

    assert fwad.unpack_dual(out["explicit"]).tangent is None
    torch.testing.assert_close(out["explicit"], solo[0], rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", ["sparse CSR, linear", "banded, linear", "autodiff banded",
                                  "newton-krylov, banded preconditioner"])
def test_paths_on_each_device(device, path):
    """Off the CPU sparse and banded matrices are solved by GMRES with their own product,
    banded Jacobians densely; the result equals the CPU's dense exact solve."""
    options = dict(PATHS[path])
    move = {torch.Tensor: lambda m: m.to(device),
            pint.Banded: lambda m: pint.Banded(m.bands.to(device), lower=m.lower)}
    jacobian = options["jacobian"]
    if isinstance(jacobian, pint.NewtonKrylov):
        options["jacobian"] = pint.NewtonKrylov(
            rtol=jacobian.rtol, preconditioner=move[type(jacobian.preconditioner)](
                jacobian.preconditioner))
    elif not isinstance(jacobian, pint.Autodiff):
        options["jacobian"] = move[torch.Tensor if isinstance(jacobian, torch.Tensor)
                                   else pint.Banded](jacobian)
    f = forced(HEAT)
    t = HEAT.times(5)
    exact = pint.serial(f, HEAT.y0, t, method=pint.SDIRK2(2, jacobian=A, linear=True),
                        vectorized=True)
    sol = pint.serial(f, HEAT.y0.to(device), t.to(device),
                      method=pint.SDIRK2(2, **options), vectorized=True)
    torch.testing.assert_close(sol.ys.cpu(), exact.ys, rtol=0, atol=1e-10)


@pytest.mark.parametrize("path", ["sparse COO, linear", "banded, simplified Newton",
                                  "autodiff banded"])
def test_without_scipy_the_torch_solvers_take_over(path, monkeypatch):
    """SciPy is optional: sparse and banded matrices then go to GMRES, banded Jacobians to a
    dense solve; same results."""
    monkeypatch.setattr("pint.propagators.jacobians.has_scipy", lambda: False)
    f = forced(HEAT)
    t = HEAT.times(5)
    exact = pint.serial(f, HEAT.y0, t, method=pint.BackwardEuler(2, jacobian=A, linear=True),
                        vectorized=True)
    sol = pint.serial(f, HEAT.y0, t, method=pint.BackwardEuler(2, **PATHS[path]),
                      vectorized=True)
    torch.testing.assert_close(sol.ys, exact.ys, rtol=0, atol=1e-10)


def test_newton_krylov_refuses_gradients():
    y0 = HEAT.y0.clone().requires_grad_()
    with pytest.raises(ValueError, match="does not differentiate through its solves"):
        pint.serial(HEAT.f, y0, HEAT.times(3), vectorized=True,
                    method=pint.BackwardEuler(1, jacobian=pint.NewtonKrylov()))
    with torch.no_grad():
        pint.serial(HEAT.f, y0, HEAT.times(3), vectorized=True,
                    method=pint.BackwardEuler(1, jacobian=pint.NewtonKrylov()))


def test_gradients_through_the_autodiff_path_match_the_exact_solve():
    t = HEAT.times(4)
    grads = []
    for jacobian in (pint.Autodiff(), A):
        y0 = HEAT.y0.clone().requires_grad_()
        linear = {"linear": True} if isinstance(jacobian, torch.Tensor) else {}
        sol = pint.serial(forced(HEAT), y0, t, vectorized=True,
                          method=pint.BackwardEuler(1, jacobian=jacobian, **linear))
        (sol.ys[-1] ** 2).sum().backward()
        grads.append(y0.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-8, atol=1e-12)
