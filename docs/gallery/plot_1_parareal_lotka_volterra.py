"""
Tutorial 1: Parareal for an arbitrary ODE
=========================================

Solve the Lotka-Volterra predator-prey system with :func:`pint.parareal`, compare it with
the serial solve it converges to, and look at the two facts that make Parareal work: the
*converged prefix* (after iteration ``k`` the first ``k`` slice boundaries are exact) and
the fast decay of the error in the remaining slices.

.. math::

    x' = 1.5\\,x - x y, \\qquad y' = x y - 3\\,y, \\qquad x(0) = y(0) = 1, \\quad t \\in [0, 10].
"""

# %%
# The vector field
# ----------------
# Any function ``f(t, y) -> dy/dt`` in torchdiffeq's convention works. pint evaluates it on
# many rows at once; by default it vectorizes ``f`` with :func:`torch.func.vmap`, so ``f``
# may be written for a single state like this one.
import matplotlib.pyplot as plt
import torch

import pint


def lotka_volterra(t, y):
    prey, predator = y[0], y[1]
    return torch.stack([1.5 * prey - prey * predator, prey * predator - 3.0 * predator])


y0 = torch.tensor([1.0, 1.0], dtype=torch.float64)
t = torch.linspace(0.0, 10.0, 33, dtype=torch.float64)  # 32 time slices

# %%
# Serial fine solve and Parareal
# ------------------------------
# The fine propagator is RK4 with 100 steps per slice; the coarse one is a single RK4
# step per slice. :func:`pint.serial` runs the fine propagator slice after slice: that is
# the solution Parareal converges to, and its depth (sequential evaluation rounds) is the
# cost we compare against.
fine, coarse = pint.RK4(100), pint.RK4(1)
reference = pint.serial(lotka_volterra, y0, t, method=fine)
sol = pint.parareal(lotka_volterra, y0, t, coarse=coarse, fine=fine, tol=1e-8,
                    store_iterates=True)

print(f"iterations: {sol.iterations}, converged: {sol.converged}")
print(f"depth: parareal {sol.stats.sequential_nfe} vs serial {reference.stats.sequential_nfe}"
      f" ({reference.stats.sequential_nfe / sol.stats.sequential_nfe:.1f}x fewer rounds)")
print(f"total evaluations: parareal {sol.stats.nfe} vs serial {reference.stats.nfe}")
print(f"max |parareal - serial| = {(sol.ys - reference.ys).abs().max():.2e}")

# %%
# Parareal spends more evaluations in total (every iteration re-solves the unconverged
# slices), but they run as a few large batched calls: the *depth* is what a parallel
# machine waits for. ``predicted_sequential_nfe`` is the depth that the schedule's
# recurrence (:func:`pint.predicted_depth`) predicts; the solver measures the same number.
print(sol.stats)

# %%
# The trajectory
# --------------
# The coarse sweep alone (iteration 0) is visibly wrong; one or two corrections put the
# boundaries on the fine solution.
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(t, reference.ys[:, 0], "k-", lw=1, label="serial fine (prey)")
ax.plot(t, reference.ys[:, 1], "k--", lw=1, label="serial fine (predator)")
for k in (0, 1):
    ax.plot(t, sol.iterates[k][:, 0], "o", ms=3, label=f"iteration {k} (prey)")
ax.set(xlabel="t", ylabel="population", title="Lotka-Volterra: coarse sweep and first correction")
ax.legend(fontsize=7, ncol=2)
fig.tight_layout()

# %%
# The converged prefix
# --------------------
# After iteration ``k`` the boundaries ``0..k`` equal the serial fine solution *to
# round-off*: the first slice is integrated by the fine propagator from the exact initial
# value, and so on. pint uses this to shrink the fine batch every iteration, and it is why
# ``N`` iterations always reproduce the serial solve. The plot shows the error at every
# boundary, per iteration: each curve drops to round-off left of ``t[k]``.
errors = [(it - reference.ys).abs().amax(dim=1) for it in sol.iterates]
fig, ax = plt.subplots(figsize=(7, 3.5))
for k, err in enumerate(errors):
    line, = ax.semilogy(t, err.clamp_min(1e-17), label=f"iteration {k}")
    if k:
        ax.axvline(float(t[k]), color=line.get_color(), lw=0.6, ls=":")
ax.set(xlabel="t", ylabel="max |U - serial fine|", ylim=(1e-17, 10),
       title="Error at the slice boundaries (dotted: end of the exact prefix)")
ax.legend(fontsize=7)
fig.tight_layout()

# %%
# Convergence
# -----------
# The *residual*, the change of the boundary states between two iterations, is what the
# solver can measure, and it stops when it falls below ``tol``. The error against the serial
# solution (which the solver does not know) decays at the same rate.
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.semilogy(range(1, len(sol.residuals) + 1), sol.residuals, "o-", label="residual")
ax.semilogy(range(len(errors)), [float(e.max()) for e in errors], "s--", label="error vs serial")
ax.axhline(1e-8, color="gray", lw=0.8, ls=":", label="tol")
ax.set(xlabel="iteration", title="Parareal convergence on Lotka-Volterra")
ax.legend()
fig.tight_layout()

# %%
# Batched or pipelined
# --------------------
# ``pipelined=True`` starts each slice's fine solve as soon as its initial state exists
# instead of waiting for the whole coarse sweep: the same iterates, a shorter critical path.
# It pays when evaluations are expensive (a neural network); on a two-component ODE on a CPU
# the Python bookkeeping costs more than it saves (see :doc:`/benchmarks`).
piped = pint.parareal(lotka_volterra, y0, t, coarse=coarse, fine=fine, tol=1e-8, pipelined=True)
print(f"batched depth {sol.stats.sequential_nfe}, pipelined depth {piped.stats.sequential_nfe}"
      f" (predicted {piped.stats.predicted_sequential_nfe}); "
      f"same result: {torch.equal(piped.ys, sol.ys)}")

# %%
# The same with the bundled test problem
# --------------------------------------
# :mod:`pint.problems` has this system (and others) with a high-accuracy reference solution,
# written for batches of rows, so ``vectorized=True`` skips ``vmap``.
problem = pint.problems.lotka_volterra()
sol2 = pint.parareal(problem.f, problem.y0, t, coarse=coarse, fine=fine, tol=1e-8,
                     vectorized=True)
print(f"error against the DOP853 reference: {(sol2.ys - problem.reference(t)).abs().max():.1e}")
