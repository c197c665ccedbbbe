"""Where the implicit propagators' Newton matrix ``I - h a J`` comes from, and how it is solved.

The ``jacobian=`` argument of :class:`pint.BackwardEuler`, :class:`pint.SDIRK2` and
:class:`pint.propagators.DIRK` takes one of:

- ``None`` (default, "auto"), chosen from the number ``d`` of entries of one state:
  :class:`FiniteDifferences` for ``d <= 200``, :class:`Autodiff` for ``d <= 2048``,
  :class:`NewtonKrylov` beyond. (Forward-mode AD costs PyTorch more per operation than a plain
  evaluation, so on small states the ``d + 1`` plain rows of finite differences are faster.)
- a strategy: :class:`FiniteDifferences`, :class:`Autodiff`, :class:`NewtonKrylov`;
- a matrix ``J`` (fixed Newton matrix, or the exact one with ``linear=True``): a dense ``(d, d)``
  tensor, a torch sparse COO/CSR ``(d, d)`` tensor, a :class:`Banded` matrix, or a callable
  ``t -> (d, d) or (R, d, d)`` dense matrix. Sparse and banded matrices are never densified:
  on the CPU ``I - h a J`` is factorised once per step size by SciPy's sparse LU
  (``scipy.sparse.linalg.splu``) and reused; on other devices (or without SciPy, which pint
  does not require) each solve runs the batched GMRES (:func:`gmres`) with the matrix's own
  product.

The propagators never see ``f`` (every evaluation is a request to the engine, batched with the
other propagations' of the round), so automatic differentiation runs *through* the request:
:class:`Autodiff` and :class:`NewtonKrylov` send states carrying forward-mode tangents
(``torch.autograd.forward_ad`` dual tensors) and read ``J v`` from the tangents of the answer.
Each such request is one round (one unit of depth), its rows counted as evaluations.
A vector field the forward mode cannot differentiate (NumPy inside, a custom
``autograd.Function`` without ``jvp``, ``torch.inference_mode``) makes these paths fall back to
finite differences with a :class:`SlowNewtonWarning`, or, where PyTorch raises instead, fail
with PyTorch's message: pass ``jacobian=pint.FiniteDifferences()`` there.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

import torch
import torch.autograd.forward_ad as fwad
from torch import Tensor

from ..engine import Request

__all__ = [
    "Autodiff",
    "Banded",
    "FiniteDifferences",
    "NewtonKrylov",
    "SlowNewtonWarning",
    "gmres",
]

#: Largest state for which "auto" uses finite differences (any ``f``, ``d + 1`` rows per row);
#: finite differences on larger states warn (:class:`SlowNewtonWarning`).
FINITE_DIFFERENCES_MAX = 200
#: Largest state for which "auto" forms the Jacobian (by forward-mode AD); matrix-free beyond.
AUTO_DENSE = 2048


class SlowNewtonWarning(UserWarning):
    """The Newton path an implicit propagator runs will be slow for the state's size."""


@dataclass(frozen=True)
class FiniteDifferences:
    """The Jacobian by forward differences, batched into each Newton request.

    Every Newton iteration is one request of ``(d + 1) R`` rows (``R`` rows of ``d`` entries)
    and a dense ``d x d`` solve per row: works for any ``f``, costly beyond a few hundred
    entries (a :class:`SlowNewtonWarning` says so).
    """


@dataclass(frozen=True)
class Autodiff:
    """The exact Jacobian by forward-mode automatic differentiation through the request.

    The first stage detects the Jacobian's band from one row's full Jacobian (``d`` tangent
    rows, once per propagator, at a slightly perturbed state so that no entry vanishes by
    chance). A banded Jacobian (lower + upper + 1 < d / 2, e.g. a 1-D stencil) is then formed
    from ``lower + upper + 1`` compressed tangents per row (Curtis, Powell and Reid's column
    grouping) and solved by a banded LU (SciPy on the CPU); any other by ``d`` tangents and a
    dense LU. Full Newton: one request per iteration.

    Args:
        banded: detect and use a band (``False``: always the dense Jacobian).
    """

    banded: bool = True


@dataclass(frozen=True)
class NewtonKrylov:
    """Matrix-free Newton: each Newton step solved by GMRES on ``(I - h a J) s = -g``.

    Every product ``J v`` is one request of ``R`` rows carrying forward-mode tangents (one
    round). Inexact Newton: each linear solve stops at ``rtol`` relative residual; Newton's own
    test decides convergence. No gradients through the solve (the adjoint would need ``J^T v``,
    which the requests cannot give): a solve whose states require grad raises ``ValueError``;
    use :class:`Autodiff` or a matrix there.

    Args:
        rtol: relative residual at which GMRES stops, per row.
        maxiter: the most products per linear solve; a row short of ``rtol`` then raises
            :class:`pint.NewtonError` naming the step, the stage and the residual reached.
        restart: Krylov vectors kept before GMRES restarts.
        preconditioner: ``None``; a matrix ``P ~ J`` (dense, sparse or :class:`Banded`), used
            as ``(I - h a P)^{-1}`` (factorised once per step size, like ``jacobian=P``); or a
            callable ``(t, ha, r) -> (I - ha J)^{-1} r`` (approximately), with ``t`` and ``ha``
            of shape ``(R,)`` and ``r`` of shape ``(R, d)``. Applied on the right, so the
            residual GMRES tests is the true one.
    """

    rtol: float = 1e-8
    maxiter: int = 500
    restart: int = 60
    preconditioner: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.rtol, int | float) and 0 < self.rtol < 1):
            raise ValueError(f"NewtonKrylov: rtol must be in (0, 1), got {self.rtol!r}")
        for name in ("maxiter", "restart"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"NewtonKrylov: {name} must be a positive integer, "
                                 f"got {value!r}")
        p = self.preconditioner
        if p is not None and not (is_matrix(p) or callable(p)):
            raise TypeError(f"NewtonKrylov: preconditioner must be None, a matrix (dense, "
                            f"sparse or pint.Banded) or a callable (t, ha, r) -> Tensor, got "
                            f"{type(p).__name__}")
        if is_matrix(p):
            check_matrix(p, "NewtonKrylov: preconditioner")


class Banded:
    """A banded ``(d, d)`` matrix stored by its diagonals, in LAPACK's (and SciPy
    ``solve_banded``'s) layout: ``bands[upper + i - j, j] = A[i, j]``.

    Args:
        bands: ``(lower + upper + 1, d)``: row ``k`` holds diagonal ``upper - k`` (the first
            row the highest superdiagonal, row ``upper`` the main diagonal), aligned by column
            (entries that fall outside the matrix are ignored).
        lower: the number of subdiagonals.

    Example:
        >>> import torch, pint
        >>> n = 4
        >>> bands = torch.tensor([[1.0] * n, [-2.0] * n, [1.0] * n], dtype=torch.float64)
        >>> pint.Banded(bands, lower=1).to_dense()[:2]  # the 1-D Laplacian stencil
        tensor([[-2.,  1.,  0.,  0.],
                [ 1., -2.,  1.,  0.]], dtype=torch.float64)
    """

    def __init__(self, bands: Tensor, lower: int) -> None:
        if not isinstance(bands, Tensor) or bands.ndim != 2:
            got = tuple(bands.shape) if isinstance(bands, Tensor) else type(bands).__name__
            raise ValueError(f"Banded: bands must be a 2-D tensor (lower + upper + 1, d), got "
                             f"{got}")
        if isinstance(lower, bool) or not isinstance(lower, Integral) or not (
                0 <= lower < len(bands)):
            raise ValueError(f"Banded: lower must be an integer in [0, {len(bands) - 1}] (the "
                             f"subdiagonals among the {len(bands)} rows of bands), got {lower!r}")
        self.bands = bands
        self.lower = int(lower)
        self.upper = len(bands) - 1 - self.lower
        # zero the entries outside the matrix, so that products and factors ignore them
        d = bands.shape[1]
        k = torch.arange(len(bands), device=bands.device)[:, None]
        i = torch.arange(d, device=bands.device)[None, :] + k - self.upper  # row of each entry
        self._inside = (i >= 0) & (i < d)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.bands.shape[1], self.bands.shape[1]))

    @property
    def dtype(self) -> torch.dtype:
        return self.bands.dtype

    @property
    def device(self) -> torch.device:
        return self.bands.device

    @property
    def requires_grad(self) -> bool:
        return self.bands.requires_grad

    def __repr__(self) -> str:
        return f"Banded(d={self.shape[0]}, lower={self.lower}, upper={self.upper})"

    def to_dense(self) -> Tensor:
        """The ``(d, d)`` matrix (for tests and small problems)."""
        d = self.shape[0]
        out = self.bands.new_zeros(d, d)
        for k in range(len(self.bands)):
            offset = self.upper - k  # the diagonal j - i
            if abs(offset) >= d:
                continue
            out = out + torch.diag(self.bands[k, max(offset, 0):d + min(offset, 0)], offset)
        return out

    def matvec(self, x: Tensor) -> Tensor:
        """``A x`` for each row of ``x`` ``(R, d)``."""
        d = self.shape[0]
        out = torch.zeros_like(x)
        for k in range(len(self.bands)):
            o = self.upper - k  # out[:, i] += A[i, i + o] x[:, i + o] = bands[k, i + o] x[i + o]
            if abs(o) >= d:
                continue
            if o >= 0:
                out[:, :d - o] += self.bands[k, o:] * x[:, o:]
            else:
                out[:, -o:] += self.bands[k, :d + o] * x[:, :d + o]
        return out

    def scipy(self) -> Any:
        """The matrix as a SciPy sparse CSC matrix (CPU)."""
        import scipy.sparse

        bands = torch.where(self._inside, self.bands, 0).detach().cpu().numpy()
        offsets = [self.upper - k for k in range(len(bands))]
        # scipy's dia layout stores diagonal o at data[:, j] for column j, as LAPACK does
        return scipy.sparse.dia_matrix((bands, offsets), shape=tuple(self.shape)).tocsc()


def is_matrix(jacobian: object) -> bool:
    """A dense or sparse tensor, or a :class:`Banded` matrix."""
    return isinstance(jacobian, Tensor | Banded)


def check_matrix(matrix: Tensor | Banded, name: str = "jacobian") -> None:
    """Checks that need no state: square, floating, finite."""
    if isinstance(matrix, Tensor) and (matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]):
        kind = "sparse " if matrix.layout != torch.strided else ""
        raise ValueError(f"{name} must be a square (d, d) {kind}matrix, got shape "
                         f"{tuple(matrix.shape)}")
    if isinstance(matrix, Tensor) and matrix.layout not in (torch.strided, torch.sparse_coo,
                                                             torch.sparse_csr):
        raise TypeError(f"{name}: a sparse matrix must be in COO or CSR layout, got "
                        f"{matrix.layout}")
    if not matrix.dtype.is_floating_point:
        raise TypeError(f"{name} must have a floating dtype (that of the states), got "
                        f"{matrix.dtype}")
    values = _values(matrix)
    if not bool(torch.isfinite(values.detach()).all()):
        raise ValueError(f"{name} has non-finite entries (NaN or infinity)")


def _values(matrix: Tensor | Banded) -> Tensor:
    if isinstance(matrix, Banded):
        return torch.where(matrix._inside, matrix.bands, 0)
    if matrix.layout == torch.sparse_coo:
        return matrix.coalesce().values()
    if matrix.layout == torch.sparse_csr:
        return matrix.values()
    return matrix


def check_against_states(matrix: Tensor | Banded, d: int, dtype: torch.dtype,
                         device: torch.device, name: str = "jacobian") -> None:
    """The matrix must fit states of ``d`` entries of this dtype on this device."""
    if tuple(matrix.shape) != (d, d):
        raise ValueError(f"{name} must be ({d}, {d}) for states of {d} entries, got "
                         f"{tuple(matrix.shape)}")
    if matrix.dtype != dtype:
        raise TypeError(f"{name} has dtype {matrix.dtype} but the states are {dtype}: pass "
                        f"it converted to {dtype}")
    if matrix.device != device:
        raise ValueError(f"{name} is on {matrix.device} but the states are on {device}: "
                         f"move it to {device}")


# ----------------------------------------------------------------------------- constant solvers
class _SparseLU(torch.autograd.Function):
    """``x = (I - ha A)^{-1} g`` through a SciPy LU; differentiable in ``g`` (the transposed
    solve), so gradients reach the states."""

    @staticmethod
    def forward(ctx: Any, g: Tensor, lu: Any) -> Tensor:
        ctx.lu = lu
        out = lu.solve(g.detach().cpu().numpy().T)
        return torch.from_numpy(out.T.copy()).to(g)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        out = ctx.lu.solve(grad.detach().cpu().numpy().T, trans="T")
        return torch.from_numpy(out.T.copy()).to(grad), None


def has_scipy() -> bool:
    """SciPy (optional: pint needs only torch) is installed."""
    return importlib.util.find_spec("scipy") is not None


def sparse_solver(matrix: Tensor | Banded, ha: float) -> Callable[[Tensor], Tensor]:
    """A solver ``g (n, d) -> (I - ha A)^{-1} g`` for a sparse or banded ``A``, not densified:
    SciPy's sparse LU on the CPU (factorised here, once), batched GMRES elsewhere (or without
    SciPy)."""
    d = matrix.shape[0]
    if matrix.device.type == "cpu" and has_scipy():
        import scipy.sparse
        import scipy.sparse.linalg

        a = matrix.scipy() if isinstance(matrix, Banded) else _to_scipy(matrix)
        newton = (scipy.sparse.identity(d, format="csc", dtype=a.dtype) - ha * a).tocsc()
        try:
            lu = scipy.sparse.linalg.splu(newton)
        except RuntimeError:  # exactly singular: solves give NaN, reported by Newton
            return lambda g: torch.full_like(g, math.nan)
        return lambda g: _SparseLU.apply(g, lu)
    product = sparse_product(matrix)

    def solve(g: Tensor) -> Tensor:
        x, _, converged = run_now(gmres(
            lambda v: _now(v - ha * product(v)), g, rtol=1e-13, maxiter=4 * d, restart=60))
        return torch.where(converged[:, None], x, math.nan)  # NaN: reported by Newton

    return solve


def sparse_product(matrix: Tensor | Banded) -> Callable[[Tensor], Tensor]:
    """``x (n, d) -> (A x^T)^T`` for a sparse or banded ``A``."""
    if isinstance(matrix, Banded):
        return matrix.matvec
    return lambda x: (matrix @ x.T).T


def _to_scipy(matrix: Tensor) -> Any:
    import scipy.sparse

    m = matrix.detach().cpu()
    if m.layout == torch.sparse_coo:
        m = m.coalesce()
        rows, cols = m.indices().numpy()
        return scipy.sparse.csc_matrix((m.values().numpy(), (rows, cols)), shape=tuple(m.shape))
    return scipy.sparse.csr_matrix((m.values().numpy(), m.col_indices().numpy(),
                                    m.crow_indices().numpy()), shape=tuple(m.shape)).tocsc()


# ----------------------------------------------------------------------------- tangents
class _Level:
    """The one forward-AD level, shared by every propagation that has tangents in flight (a
    round may carry several), entered by the first and left by the last."""

    users = 0
    context: Any = None

    @classmethod
    def acquire(cls) -> None:
        if cls.users == 0:
            cls.context = fwad.dual_level()
            cls.context.__enter__()
        cls.users += 1

    @classmethod
    def release(cls) -> None:
        cls.users -= 1
        if cls.users == 0:
            context, cls.context = cls.context, None
            context.__exit__(None, None, None)


def tangent_request(t: Tensor, y: Tensor, v: Tensor, rows: Tensor | None, shape: tuple[int, ...]
                    ) -> Generator[Request, Tensor, tuple[Tensor, Tensor | None]]:
    """One request of ``f`` at ``y`` (``(n, d)``) with tangents ``v``: ``(f(y), J v)``, the
    second ``None`` when ``f`` did not carry the tangents."""
    _Level.acquire()
    try:
        dual = fwad.make_dual(y, v.to(y.dtype))
        out = yield Request(t, dual.reshape(-1, *shape), rows)
        primal, tangent = fwad.unpack_dual(out)
    finally:
        _Level.release()
    n = len(y)
    return primal.reshape(n, -1), None if tangent is None else tangent.reshape(n, -1)


# ----------------------------------------------------------------------------- GMRES
def gmres(matvec: Callable[[Tensor], Generator[Any, Any, Tensor]], b: Tensor, *,
          rtol: float, maxiter: int, restart: int,
          preconditioner: Callable[[Tensor], Tensor] | None = None,
          ) -> Generator[Any, Any, tuple[Tensor, Tensor, Tensor]]:
    """Restarted GMRES on ``A x = b``, batched over rows, as a coroutine.

    ``matvec(V)`` (``V`` of shape ``(R, d)``, one vector per row) is itself a generator that
    returns ``A V`` row by row; its requests pass through, so inside a propagator each product
    is one round of the engine. Right preconditioning: ``A M^{-1} u = b``, ``x = M^{-1} u``
    (``preconditioner`` applies ``M^{-1}``). Starts from ``x = 0``; stops when every row's
    residual is at most ``rtol * |b|`` (2-norms) or after ``maxiter`` products.

    Why not a library: the products must be yielded to the engine one round at a time, and the
    solver batched over rows with a least-squares problem per row; the Krylov solvers of
    ``linear-operator``, ``torchsparsegradutils`` and SciPy own their loop (they call a matvec
    function), so none can run inside the engine's rounds.

    Returns:
        ``(x, relative residual, converged)``, the last two of shape ``(R,)``.
    """
    rows, _ = b.shape
    apply = preconditioner or (lambda v: v)
    norm_b = torch.linalg.vector_norm(b, dim=1)
    target = rtol * norm_b
    x = torch.zeros_like(b)
    r, used = b, 0
    beta = norm_b
    while True:
        basis = [r / beta.clamp_min(torch.finfo(b.dtype).tiny)[:, None]]
        hessenberg = b.new_zeros(rows, restart + 1, restart)
        coefficients = b.new_zeros(rows, 0)
        residual = beta
        for k in range(restart):
            w = yield from matvec(apply(basis[k]))
            used += 1
            for j, v in enumerate(basis):  # modified Gram-Schmidt
                h = (w * v).sum(1)
                hessenberg[:, j, k] = h
                w = w - h[:, None] * v
            norm_w = torch.linalg.vector_norm(w, dim=1)
            hessenberg[:, k + 1, k] = norm_w
            basis.append(torch.where(norm_w[:, None] > 0, w / norm_w.clamp_min(
                torch.finfo(b.dtype).tiny)[:, None], 0))
            h = hessenberg[:, :k + 2, :k + 1]
            e1 = b.new_zeros(rows, k + 2, 1)
            e1[:, 0, 0] = beta
            coefficients = torch.linalg.lstsq(h, e1).solution  # (R, k + 1, 1)
            residual = torch.linalg.vector_norm(e1 - h @ coefficients, dim=(1, 2))
            if bool((residual <= target).all()) or used >= maxiter:
                break
        update = torch.stack(basis[:coefficients.shape[1]], dim=2) @ coefficients
        x = x + apply(update[:, :, 0])
        if bool((residual <= target).all()) or used >= maxiter:
            break
        # the residual b - A x from the Arnoldi relation: V_{k+2} (beta e1 - H y), no product
        r = (torch.stack(basis, dim=2) @ (e1 - h @ coefficients))[:, :, 0]
        beta = torch.linalg.vector_norm(r, dim=1)
        if bool((beta <= target).all()):
            residual = beta
            break
    relative = residual / norm_b.clamp_min(torch.finfo(b.dtype).tiny)
    return x, relative, (residual <= target) | (norm_b == 0)


def _now(value: Tensor) -> Generator[Any, Any, Tensor]:
    """A product computed at once, as :func:`gmres` expects."""
    yield from ()
    return value


def run_now(coroutine: Generator[Any, Any, Any]) -> Any:
    """The result of a coroutine that makes no request."""
    try:
        next(coroutine)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("a local solve made a request")  # pragma: no cover


def warn_slow(name: str, d: int) -> None:
    """The slow-Newton warning, naming the faster option."""
    warnings.warn(
        f"{name}: Newton by finite differences on states of {d} entries costs {d + 1} "
        f"evaluations and a dense {d} x {d} solve per row and iteration; pass "
        f"jacobian=pint.Autodiff() (exact, banded when the Jacobian is), "
        f"jacobian=pint.NewtonKrylov() (matrix-free), or the matrix (sparse or pint.Banded, "
        f"with linear=True for a linear problem)", SlowNewtonWarning, stacklevel=4)
