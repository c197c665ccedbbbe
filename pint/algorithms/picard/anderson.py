"""Triangular Anderson acceleration of any Jacobian model (after ParaTAA)."""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
from torch import Tensor

from .jacobians import Identity, JacobianModel

__all__ = ["Anderson", "AndersonMixer"]


class Anderson:
    """Triangular Anderson acceleration of a Picard-family iteration, after ParaTAA (Tang,
    Tang, Luo, Wang & Chang, *Accelerating Parallel Sampling of Diffusion Models*, ICML 2024).

    The iteration is a fixed-point map ``G`` of the whole trajectory (``G(X)`` the update of
    :func:`picard` with the ``base`` Jacobian model: Picard's cumulative sum for
    :class:`Identity`). Anderson mixing replaces ``G(X_k)`` by ``G(X_k) - dG gamma``, with
    ``dG``, ``dR`` the differences of the last ``depth`` values of ``G`` and of the residual
    ``R = G(X) - X``, and ``gamma`` the least-squares fit of ``R_k`` by ``dR``. *Triangular*:
    the trajectory's map is lower triangular (point ``j`` depends only on the points before
    it), so each point ``t`` fits its own ``gamma_t`` on the residuals of the points up to
    ``t`` only. The exact front and the point after it take the plain update, so the prefix
    stays exact and the result equals :func:`pint.serial` at full iterations.

    Args:
        base: the Jacobian model of the map being accelerated (default :class:`Identity`).
        depth: how many past differences the fit uses (``m``; default 3).
        regularization: Tikhonov weight of the fit, relative to its Gram matrix's trace.
    """

    def __init__(self, base: JacobianModel | None = None, depth: int = 3,
                 regularization: float = 1e-8) -> None:
        if isinstance(depth, bool) or not isinstance(depth, Integral) or depth < 1:
            raise ValueError(f"Anderson's depth must be a positive integer, got {depth!r}")
        if isinstance(base, Anderson) or not isinstance(base, JacobianModel | None):
            raise TypeError(f"Anderson's base must be a JacobianModel other than Anderson, "
                            f"got {base!r}")
        if isinstance(regularization, bool) or not isinstance(regularization, Real) or not (
                0 <= regularization < math.inf):
            raise ValueError(f"Anderson's regularization must be a finite number >= 0, got "
                             f"{regularization!r}")
        self.base = Identity() if base is None else base
        self.depth, self.regularization = int(depth), float(regularization)
        self.learns, self.elementwise = self.base.learns, self.base.elementwise

    def __repr__(self) -> str:
        return f"Anderson(base={self.base!r}, depth={self.depth})"

    def prior(self, t: Tensor) -> Tensor:
        """The base model's prior."""
        return self.base.prior(t)

    def estimate(self, j: Tensor, dphi_dx: Tensor, dx_dx: Tensor, current: Tensor) -> Tensor:
        """The base model's estimate."""
        return self.base.estimate(j, dphi_dx, dx_dx, current)

    def estimate_elementwise(self, j: Tensor, dphi: Tensor, dx: Tensor, seen: Tensor,
                             current: Tensor) -> Tensor:
        """The base model's elementwise estimate."""
        return self.base.estimate_elementwise(j, dphi, dx, seen, current)  # type: ignore[attr-defined]

    def mixer(self) -> AndersonMixer:
        """The history of one solve."""
        return AndersonMixer(self.depth, self.regularization)


class AndersonMixer:
    """The history of one :class:`Anderson`-accelerated solve: the last ``depth + 1`` iterates
    ``X`` and updates ``G(X)`` of every problem (problems only ever leave the iteration, so
    the active ones have all of it)."""

    def __init__(self, depth: int, regularization: float) -> None:
        self.depth, self.regularization = depth, regularization
        self.xs: list[Tensor] = []  # each (N + 1, B, *state)
        self.gs: list[Tensor] = []

    def mix(self, x: Tensor, g: Tensor, members: Tensor, batch: int, b: int, e: int) -> Tensor:
        """The accelerated update: ``g`` with the points ``b + 2 .. e`` mixed, for the problems
        ``members`` (their rows of the iterate ``x`` and its update ``g``:
        ``(N + 1, S, *state)``; ``batch`` problems in all)."""
        history = [(hx[:, members], hg[:, members]) for hx, hg in zip(self.xs, self.gs,
                                                                       strict=True)]
        self._remember(x, g, members, batch)
        out = g.clone()
        lo = b + 1  # the fit's rows: the window from the point after the exact front
        if not history or e < lo + 1:
            return out
        xs = torch.stack([h[0][lo:e + 1] for h in history] + [x[lo:e + 1]])  # (m+1, P, S, ..)
        gs = torch.stack([h[1][lo:e + 1] for h in history] + [g[lo:e + 1]])
        r = gs - xs
        dr, dg = r[1:] - r[:-1], gs[1:] - gs[:-1]  # (m, P, S, ...)
        # the state flattened to one axis d (reshape: a scalar state has no axis to flatten)
        dr_flat = dr.reshape(*dr.shape[:3], -1).double()
        r_flat = r[-1].reshape(*r.shape[1:3], -1).double()
        # triangular: point t fits on the rows lo..t only, i.e. cumulative Gram sums
        gram = torch.einsum("ipsd,jpsd->psij", dr_flat, dr_flat).cumsum(0)  # (P, S, m, m)
        rhs = torch.einsum("ipsd,psd->psi", dr_flat, r_flat).cumsum(0)
        m = gram.shape[-1]
        trace = gram.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
        eye = torch.eye(m, dtype=gram.dtype, device=gram.device)
        gram = gram + (self.regularization * trace + torch.finfo(gram.dtype).tiny) * eye
        gamma = torch.linalg.solve(gram, rhs.unsqueeze(-1)).squeeze(-1)  # (P, S, m)
        gamma = torch.nan_to_num(gamma, nan=0.0, posinf=0.0, neginf=0.0).to(x.dtype)
        mixed = gs[-1] - torch.einsum("psi,ips...->ps...", gamma, dg)
        out[lo + 1:e + 1] = mixed[1:]  # the point after the front keeps the exact update
        return out

    def _remember(self, x: Tensor, g: Tensor, members: Tensor, batch: int) -> None:
        """Keep ``x`` and ``g`` of the problems ``members`` (the last ``depth + 1``)."""
        for store, value in ((self.xs, x), (self.gs, g)):
            full = torch.zeros(value.shape[0], batch, *value.shape[2:], dtype=value.dtype,
                               device=value.device)
            full[:, members] = value
            store.append(full)
            del store[:-self.depth]
