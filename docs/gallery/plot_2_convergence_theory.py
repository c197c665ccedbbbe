"""
Tutorial 2: how Parareal converges, and how to choose coarse and fine
=====================================================================

For the Dahlquist test equation :math:`y' = \\lambda y` the Parareal iteration is a linear
map, and Gander & Vandewalle (2007) bound its contraction. If the coarse propagator
multiplies by :math:`R` per slice and the fine one by :math:`F`, then with :math:`N`
slices the error against the serial fine solution obeys, in the max norm over the
boundaries,

.. math::

    \\max_n |U_n^{k+1} - u_n| \\le \\rho \\max_n |U_n^{k} - u_n|, \\qquad
    \\rho = |F - R| \\, \\frac{1 - |R|^{N-1}}{1 - |R|}.

This page measures the contraction of :func:`pint.parareal` against that bound, and turns
it into rules for choosing the two propagators.

Reference: M. J. Gander and S. Vandewalle, *Analysis of the parareal time-parallel
time-integration method*, SIAM J. Sci. Comput. 29(2), 556-578, 2007.
"""

# %%
# The two propagators
# -------------------
# The coarse propagator is :class:`pint.BackwardEuler` with one step per slice. The problem
# is linear, so we hand it its matrix and ``linear=True``: each step is then one exact linear
# solve (one evaluation of ``f``, for the forcing, which is zero here), and its factor per
# slice is exactly :math:`R = 1/(1 - \lambda\,dT)`. The fine propagator is ``pint.RK4(20)``,
# whose factor per slice is the RK4 stability function to the power 20 (within 1e-9 of the
# exact :math:`e^{\lambda dT}` here).
import itertools

import matplotlib.pyplot as plt
import torch

import pint

F64 = torch.float64


def backward_euler(lam):
    """One backward Euler step per slice for y' = lam y: R = 1 / (1 - lam dT)."""
    return pint.BackwardEuler(1, jacobian=torch.tensor([[lam]], dtype=F64), linear=True)


def rk4_factor(z, m):
    """The stability function of m RK4 steps: F for pint.RK4(m) on y' = lam y, z = lam dT."""
    w = z / m
    return (1 + w + w**2 / 2 + w**3 / 6 + w**4 / 24) ** m


def bound(F, R, n_slices):
    """Gander & Vandewalle's contraction factor."""
    return abs(F - R) * (1 - abs(R) ** (n_slices - 1)) / (1 - abs(R))


# %%
# Measured contraction against the bound
# --------------------------------------
# 20 slices of length ``dT`` with :math:`\lambda\,dT = -1`: backward Euler gives
# :math:`R = 1/2`, the fine propagator :math:`F \approx e^{-1}`. We run with ``tol=0`` so
# that all iterations run, keep every iterate and measure the error against the serial
# fine solution.
lam, n_slices = -1.0, 20


def measure(lam_dt, coarse, F, R, max_iters=None):
    t = torch.arange(n_slices + 1, dtype=F64) * (lam_dt / lam)
    y0 = torch.ones(1, dtype=F64)
    def f(t, y):
        return lam * y

    fine = pint.RK4(20)
    serial = pint.serial(f, y0, t, method=fine).ys
    sol = pint.parareal(f, y0, t, coarse=coarse, fine=fine, tol=0.0, max_iters=max_iters,
                        store_iterates=True)
    errors = [float((it - serial).abs().max()) for it in sol.iterates]
    return errors, bound(F, R, n_slices)


lam_dt = -1.0
errors, rho = measure(lam_dt, backward_euler(lam), rk4_factor(lam_dt, 20), 1 / (1 - lam_dt))
ratios = [b / a for a, b in itertools.pairwise(errors) if a > 1e-14 and b > 1e-15]
print(f"bound rho = {rho:.4f}; measured contraction per iteration: "
      + ", ".join(f"{r:.4f}" for r in ratios[:6]))
assert all(r <= rho * (1 + 1e-9) for r in ratios)

fig, ax = plt.subplots(figsize=(7, 3.5))
ks = range(len(errors))
ax.semilogy(ks, [max(e, 1e-17) for e in errors], "o-", label="measured error")
ax.semilogy(ks, [errors[0] * rho**k for k in ks], "k--", label=r"bound $\rho^k e_0$")
ax.set(xlabel="iteration k", ylabel=r"$\max_n |U_n^k - u_n|$", ylim=(1e-17, 1),
       title=r"Backward Euler coarse, RK4(20) fine, $\lambda\,dT = -1$, N = 20")
ax.legend()
fig.tight_layout()

# %%
# The bound is sharp in the early iterations; later the converged prefix (the first ``k``
# boundaries are exact after iteration ``k``) makes the error fall faster than any fixed
# rate, and after ``N`` iterations it is zero.
#
# Across step sizes
# -----------------
# Sweep :math:`x = -\lambda\,dT`. For each value we compare the largest measured
# contraction over the first iterations with the bound, for two coarse propagators:
# backward Euler (:math:`R = 1/(1+x)`, stable for every ``x``) and forward Euler
# (:math:`R = 1 - x`, unstable for ``x > 2``).
xs = torch.linspace(0.1, 4.0, 20, dtype=F64).tolist()
rows = {"backward Euler": [], "forward Euler": []}
for x in xs:
    for name, coarse, R in (("backward Euler", backward_euler(lam), 1 / (1 + x)),
                            ("forward Euler", pint.Euler(1), 1 - x)):
        errs, rho = measure(-x, coarse, rk4_factor(-x, 20), R, max_iters=5)
        measured = max((b / a for a, b in itertools.pairwise(errs) if a > 1e-13), default=0.0)
        rows[name].append((rho, measured))

fig, ax = plt.subplots(figsize=(7, 3.8))
for (name, values), color in zip(rows.items(), ("C0", "C1"), strict=True):
    ax.plot(xs, [r for r, _ in values], "-", color=color, label=f"{name}: bound")
    ax.plot(xs, [m for _, m in values], "o", ms=3, color=color, label=f"{name}: measured")
ax.axhline(1.0, color="gray", lw=0.8)
ax.axhline(0.2984, color="C0", lw=0.8, ls=":", label="0.2984 (backward Euler, N to infinity)")
ax.set(xlabel=r"$x = -\lambda\,dT$", ylabel="contraction per iteration", ylim=(0, 2),
       title="Gander-Vandewalle bound vs measured contraction (N = 20)")
ax.legend(fontsize=7)
fig.tight_layout()

worst = max(m / r for values in rows.values() for r, m in values if r > 0)
print(f"largest measured / bound over the sweep: {worst:.4f} (never above 1)")

# %%
# Backward Euler's bound stays below :math:`\sup_x (1 - (1+x)e^{-x})/x = 0.2984` (reached
# near :math:`x \approx 1.79`) however stiff the problem: every iteration gains at least
# half a digit. Forward Euler's bound exceeds 1 once the coarse step is too large; Parareal
# then still ends after ``N`` iterations (exact prefix) but gains nothing from parallelism.
#
# Choosing coarse and fine
# ------------------------
# * **Fine** (``F``) sets the accuracy: Parareal converges to the serial solve with ``F``.
#   Choose it as you would choose a serial solver.
# * **Coarse** (``G``) sets the number of iterations ``K``: the closer ``G`` is to ``F``
#   (small :math:`|F - R|`) and the more stable (small :math:`|R|`), the smaller :math:`\rho`.
#   But ``G`` runs serially, once per iteration: its cost is on the critical path.
# * The depth is roughly ``K * (N * c + m)`` for the batched schedule (``c`` the coarse and
#   ``m`` the fine depth of one slice), against ``N * m`` serially. So Parareal pays when
#   ``K`` is much smaller than ``N`` and ``c`` much smaller than ``m``.
#
# On Lotka-Volterra (64 slices, fine RK4 with 100 steps) a cheaper coarse propagator needs
# more iterations, and one Euler step per slice is not even stable: its coarse sweep blows
# up, which pint reports as a :class:`pint.NonFiniteError` naming the slice. The cheapest
# depth comes from the most accurate *cheap* propagator:
t = pint.problems.lotka_volterra().times(65)
problem = pint.problems.lotka_volterra()
fine = pint.RK4(100)
serial_depth = pint.serial(problem.f, problem.y0, t, method=fine, vectorized=True)
print(f"{'coarse':>17s} {'iterations':>10s} {'depth':>7s} {'vs serial':>9s}")
for coarse in (pint.Euler(1), pint.Euler(4), pint.Midpoint(1), pint.RK4(1), pint.RK4(2)):
    try:
        sol = pint.parareal(problem.f, problem.y0, t, coarse=coarse, fine=fine, tol=1e-8,
                            vectorized=True)
    except pint.NonFiniteError as error:  # an unstable coarse sweep blows up
        print(f"{coarse!r:>17s}   diverged: {error}")
        continue
    print(f"{coarse!r:>17s} {sol.iterations:10d} {sol.stats.sequential_nfe:7d} "
          f"{serial_depth.stats.sequential_nfe / sol.stats.sequential_nfe:8.1f}x")
