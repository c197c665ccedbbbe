"""
Tutorial 6: PDEs in time, the heat equation and Allen-Cahn
==========================================================

Parareal's home ground is the time direction of a PDE: discretise space (the *method of
lines*), and the PDE becomes a large stiff system of ODEs ``u' = f(t, u)``. Stiff means that
an explicit coarse step at the slice length is unstable, so the coarse propagator must be
implicit: :class:`pint.BackwardEuler` (L-stable, order 1) and :class:`pint.SDIRK2` (L-stable,
order 2) solve their stages by Newton's method, every Newton iteration of every slice batched
into one round (see :doc:`/howto/propagator`).

This page runs Parareal on three test problems from :mod:`pint.problems`:

* the 1-D heat equation ``u_t = u_xx`` on ``(0, 1)`` with zero boundary values, second-order
  differences on 63 points (:func:`pint.problems.heat_1d`);
* the 2-D heat equation on the unit square, the 5-point Laplacian on ``15 x 15`` points
  (:func:`pint.problems.heat_2d`);
* the nonlinear Allen-Cahn equation ``u_t = 0.01 u_xx + u - u^3``
  (:func:`pint.problems.allen_cahn`).

The heat equations are linear and carry their matrix, so their propagators take the linear
fast path (one linear solve per stage); Allen-Cahn needs Newton's iteration. The last sections
run MGRIT, and a 2-D heat equation of 2304 unknowns with matrix-free Newton-Krylov.
"""

# %%
# The heat equation in 1-D and 2-D
# --------------------------------
# For a linear problem hand the propagators the matrix and ``linear=True``. The sine initial
# states are eigenvectors of the difference operators, so the semi-discrete system has an
# exact solution (``problem.reference``). 32 slices, one backward Euler step per slice as
# coarse, ten SDIRK2 steps as fine. ``tol=0`` runs every iteration, and
# ``store_iterates=True`` keeps them, so we can follow the error against the serial fine
# solution.
import matplotlib.pyplot as plt
import torch

import pint
from pint import problems

SLICES, ITERATIONS = 32, 12


def run(problem, coarse, fine, iterations=ITERATIONS, tol=0.0):
    """Parareal (at most `iterations` iterations): the errors of every iterate vs serial."""
    t = problem.times(SLICES + 1)
    serial = pint.serial(problem.f, problem.y0, t, method=fine, vectorized=True)
    sol = pint.parareal(problem.f, problem.y0, t, coarse=coarse, fine=fine, tol=tol,
                        max_iters=iterations, vectorized=True, store_iterates=True)
    errors = [float((it - serial.ys).abs().max()) for it in sol.iterates]
    return t, serial, sol, errors


results = {}
for name, problem in (("heat 1-D", problems.heat_1d()), ("heat 2-D", problems.heat_2d())):
    linear = {"jacobian": problem.jacobian, "linear": True}
    t, serial, sol, errors = run(problem, pint.BackwardEuler(1, **linear),
                                 pint.SDIRK2(10, **linear))
    exact_error = float((serial.ys - problem.reference(t)).abs().max())
    results[name] = errors
    print(f"{name}: {len(problem.y0)} unknowns, serial SDIRK2(10) error vs exact "
          f"{exact_error:.1e}; Parareal error vs serial by iteration: "
          + " ".join(f"{e:.0e}" for e in errors[:8]))

# %%
# Each iteration gains about half a digit: for every decaying mode of the heat equation
# backward Euler's contraction factor stays below Gander and Vandewalle's
# :math:`\sup_x (1 - (1 + x) e^{-x}) / x = 0.2984` (tutorial 2), whatever the mesh width.
#
# An explicit coarse step would not do: the highest mode of the 1-D problem has
# :math:`\lambda \approx -4/\Delta x^2 = -16384`, so one forward Euler step over a slice of
# length :math:`0.5/32` multiplies it by :math:`1 + \lambda\,\Delta T \approx -255`:
problem = problems.heat_1d()
t = problem.times(SLICES + 1)
fine = pint.SDIRK2(10, jacobian=problem.jacobian, linear=True)
explicit = pint.parareal(problem.f, problem.y0, t, coarse=pint.Euler(1), fine=fine, tol=1e-8,
                         max_iters=4, vectorized=True)
print("Euler(1) coarse, residuals:", " ".join(f"{r:.0e}" for r in explicit.residuals))

# %%
# A nonlinear problem: Allen-Cahn
# -------------------------------
# ``u_t = 0.01 u_xx + u - u^3``: the state separates into phases near +1 and -1 with thin
# interfaces between them. The coarse propagator is backward Euler with Newton's method and a
# finite-difference Jacobian (63 unknowns: 64 rows per slice and Newton iteration, all in one
# batched call); the fine one is SDIRK2 with a *simplified* Newton iteration whose matrix is
# the Jacobian at the phases :math:`u = \pm 1` (``problem.jacobian``). The reference is
# SciPy's Radau at tight tolerances. This time Parareal stops at the tolerance ``1e-8``.
problem = problems.allen_cahn()
coarse = pint.BackwardEuler(1, tol=1e-10)
fine = pint.SDIRK2(10, jacobian=problem.jacobian, tol=1e-10)
t, serial, sol, errors = run(problem, coarse, fine, tol=1e-8)
results["Allen-Cahn"] = errors
print(f"Allen-Cahn: serial SDIRK2(10) error vs Radau "
      f"{float((serial.ys - problem.reference(t)).abs().max()):.1e}; Parareal error vs serial "
      "by iteration: " + " ".join(f"{e:.0e}" for e in errors))
print(f"tol 1e-8: {sol.iterations} iterations, depth {sol.stats.sequential_nfe} (sequential "
      f"rounds, Newton iterations included) against {serial.stats.sequential_nfe} serially")

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
x = torch.arange(1, len(problem.y0) + 1) / (len(problem.y0) + 1)
for n in (0, 4, 8, 16, 32):
    ax1.plot(x, serial.ys[n], label=f"t = {float(t[n]):.2f}")
ax1.set(xlabel="x", ylabel="u", title="Allen-Cahn (serial SDIRK2)")
ax1.legend(fontsize=7)
for name, errs in results.items():
    ax2.semilogy(range(len(errs)), [max(e, 1e-17) for e in errs], "o-", ms=3, label=name)
ks = range(ITERATIONS + 1)
ax2.semilogy(ks, [results["heat 1-D"][0] * 0.2984**k for k in ks], "k:", lw=0.8,
             label=r"$0.2984^k$")
ax2.set(xlabel="iteration k", ylabel="max error vs serial fine", ylim=(1e-16, 10),
        title="Parareal, backward Euler coarse, 32 slices")
ax2.legend(fontsize=7)
fig.tight_layout()

# %%
# The first ``k`` slice boundaries are exact after iteration ``k``, so every curve would reach
# round-off by iteration 32 at the latest; Parareal pays because it gets to the tolerance
# much earlier. On Allen-Cahn the gain in depth is modest: the coarse sweep runs serially and
# every one of its Newton iterations is a round on the critical path. A cheaper coarse step
# (no Newton: the exponential Euler of :doc:`/howto/propagator`) or more slices shift the
# balance.
#
# Multigrid in time (MGRIT)
# -------------------------
# :func:`pint.mgrit` solves the same problem on a hierarchy of time grids: relaxation on the
# fine grid (every interval at once, one batched round per step) and a coarse-grid correction
# with the propagator's step over ``m`` fine intervals. Two levels with F-relaxation are
# Parareal; FCF-relaxation and more levels trade rounds for iterations. Here on the 1-D heat
# equation, 64 fine steps of backward Euler, coarsening factor 4 (:doc:`/mgrit` compares these
# configurations with PyMGRIT's on PyMGRIT's own heat example, 999 unknowns on ``[0, 2]``):
problem = problems.heat_1d()
t = problem.times(65)
step = pint.BackwardEuler(1, jacobian=problem.jacobian, linear=True)
exact = pint.serial(problem.f, problem.y0, t, method=step, vectorized=True).ys
fig, ax = plt.subplots(figsize=(5, 3.4))
for label, kwargs in (("2 levels, F", dict(levels=2, relaxation=pint.FRelaxation())),
                      ("2 levels, FCF", dict(levels=2, relaxation=pint.FCFRelaxation())),
                      ("3 levels, FCF", dict(levels=3, relaxation=pint.FCFRelaxation()))):
    errors: list[float] = []
    sol = pint.mgrit(problem.f, problem.y0, t, propagator=step, coarsening=4, tol=1e-10,
                     vectorized=True, callback=lambda k, ys, r, errors=errors: errors.append(
                         float((ys - exact).abs().max())), **kwargs)
    print(f"MGRIT {label}: {sol.iterations} iterations to residual 1e-10, depth "
          f"{sol.stats.sequential_nfe} (serial 64)")
    ax.semilogy(range(len(errors)), [max(e, 1e-17) for e in errors], "o-", ms=3, label=label)
ax.set(xlabel="iteration", ylabel="max error vs serial", title="MGRIT on the 1-D heat equation")
ax.legend(fontsize=7)
fig.tight_layout()

# %%
# FCF-relaxation halves the iterations here. On a grid this small the depth is larger than the
# serial solve's 64 steps (each cycle runs a serial coarse solve and relaxation sweeps): MGRIT
# pays on long time grids and expensive steps, where the sweeps run in parallel.
#
# 2-D at size: matrix-free Newton-Krylov
# --------------------------------------
# A finer 2-D grid, ``48 x 48 = 2304`` unknowns, and only the vector field, written as a
# stencil: no matrix to hand over. Beyond 2048 unknowns the implicit propagators' default is
# matrix-free Newton-Krylov (:class:`pint.NewtonKrylov`): each Newton step is solved by GMRES,
# whose products ``J v`` come from forward-mode automatic differentiation through the vector
# field, one batched round each. On the heat equation GMRES alone needs many products (the
# Newton matrix's condition number grows like ``h / dx^2``), so we give it a preconditioner:
# the diffusion part as a sparse matrix, factorised once per step size (a reaction term or
# any nonlinearity left out of it only costs GMRES a few more products). The same hook takes a
# callable ``(t, ha, r) -> approx (I - ha J)^{-1} r``. Sparse and :class:`pint.Banded`
# matrices are also accepted as ``jacobian=`` directly (``linear=True`` for a linear problem).
import numpy as np  # noqa: E402
import scipy.sparse  # noqa: E402

n = 48
dx = 1.0 / (n + 1)


def heat_2d(t, y):
    """The 5-point Laplacian of each row's n x n grid, zero boundary values."""
    u = y.reshape(len(y), n, n)
    lap = -4 * u
    for dim in (1, 2):
        zero = torch.zeros_like(u.narrow(dim, 0, 1))
        lap = (lap + torch.cat([zero, u.narrow(dim, 0, n - 1)], dim)
               + torch.cat([u.narrow(dim, 1, n - 1), zero], dim))
    return lap.reshape(len(y), -1) / dx**2


one = scipy.sparse.diags([1.0, -2.0, 1.0], [-1, 0, 1], shape=(n, n)) / dx**2
lap = (scipy.sparse.kron(one, scipy.sparse.identity(n))
       + scipy.sparse.kron(scipy.sparse.identity(n), one)).tocoo()
diffusion = torch.sparse_coo_tensor(torch.from_numpy(np.vstack([lap.row, lap.col])).long(),
                                    torch.from_numpy(lap.data), size=lap.shape,
                                    check_invariants=True)  # a torch sparse COO matrix
xs = torch.arange(1, n + 1, dtype=torch.float64) * dx
u0 = (torch.outer(torch.sin(torch.pi * xs), torch.sin(torch.pi * xs))
      + torch.outer(torch.sin(3 * torch.pi * xs), torch.sin(5 * torch.pi * xs))).reshape(-1)
t = torch.linspace(0.0, 0.1, 17, dtype=torch.float64)
step = pint.BackwardEuler(1, jacobian=pint.NewtonKrylov(preconditioner=diffusion))
serial_2d = pint.serial(heat_2d, u0, t, method=step, vectorized=True)
sol = pint.mgrit(heat_2d, u0, t, propagator=step, coarsening=4, levels=2,
                 relaxation=pint.FCFRelaxation(), tol=1e-9, vectorized=True)
print(f"2-D heat, {n * n} unknowns, matrix-free: MGRIT {sol.iterations} iterations, max "
      f"difference from serial {float((sol.ys - serial_2d.ys).abs().max()):.1e}; depth "
      f"{sol.stats.sequential_nfe} rounds (serial {serial_2d.stats.sequential_nfe}), "
      f"{sol.stats.nfe} evaluations")
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for ax, k in zip(axes, (0, 2, 16), strict=True):
    ax.imshow(sol.ys[k].reshape(n, n), vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set(title=f"t = {float(t[k]):.3f}", xticks=[], yticks=[])
fig.suptitle("2-D heat by MGRIT, matrix-free backward Euler")
fig.tight_layout()

# %%
# Each Newton step here costs a round for ``f`` and one or two rounds of products; with the
# exact linear part as preconditioner GMRES converges at once. The benchmark
# ``benchmarks/pymgrit_heat.py`` runs the 256 x 256 grid (65536 unknowns) with MGRIT, equal
# to the serial solve (:doc:`/mgrit`).
#
# Fitting a parameter through Parareal
# ------------------------------------
# Every solver is differentiable: autograd flows through Parareal's iterations (and Picard's)
# and equals autograd through the serial solve (``tests/pint/test_gradients.py``). Here the
# diffusivity of the 1-D heat equation is recovered from its final state by gradient descent
# on a loss computed by Parareal with a fixed number of iterations. The backward pass keeps the
# whole iteration's graph in memory (every propagation of every iteration), so it costs memory
# in proportion to the iterations run.
truth = problems.heat_1d(diffusivity=0.7)
t = truth.times(17)
target = pint.serial(truth.f, truth.y0, t, method=pint.BackwardEuler(2, jacobian=truth.jacobian,
                                                                     linear=True),
                     vectorized=True).ys[-1]
laplacian = truth.jacobian / 0.7
log_kappa = torch.zeros((), dtype=torch.float64, requires_grad=True)
optimizer = torch.optim.Adam([log_kappa], lr=0.1)
for _ in range(40):
    kappa = log_kappa.exp()
    matrix = kappa * laplacian

    def heat(t, u, matrix=matrix):
        return u @ matrix.T

    sol = pint.parareal(heat, truth.y0, t, coarse=pint.BackwardEuler(1, jacobian=matrix,
                                                                      linear=True),
                        fine=pint.BackwardEuler(2, jacobian=matrix, linear=True), tol=0.0,
                        max_iters=4, vectorized=True)
    loss = (sol.ys[-1] - target).pow(2).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f"recovered diffusivity {float(log_kappa.detach().exp()):.4f} (true 0.7), final loss "
      f"{float(loss.detach()):.1e}")
