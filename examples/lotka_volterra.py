"""Parareal on the Lotka-Volterra predator-prey system.

64 time slices, fine propagator RK4 with 200 steps per slice, coarse RK4 with one step.
Prints the iterations, the depth (sequential evaluation rounds) against the serial
solve, and the error against it; saves a convergence plot.

Run: ``python examples/lotka_volterra.py [--out DIR]``
"""

import argparse
from pathlib import Path

import torch

import pint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the plot")
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200, help="fine RK4 steps per slice")
    parser.add_argument("--tol", type=float, default=1e-8)
    args = parser.parse_args()

    problem = pint.problems.lotka_volterra()
    t = problem.times(args.slices + 1)
    fine = pint.RK4(args.steps)
    serial = pint.serial(problem.f, problem.y0, t, method=fine, vectorized=True)
    print(f"serial RK4: {serial.stats.sequential_nfe} sequential evaluations, "
          f"{serial.stats.wall_time:.3f} s")
    runs = {}
    for pipelined in (False, True):
        sol = pint.parareal(problem.f, problem.y0, t, coarse=pint.RK4(1), fine=fine,
                            tol=args.tol, vectorized=True, pipelined=pipelined,
                            store_iterates=True)
        name = "pipelined" if pipelined else "batched"
        runs[name] = sol
        error = (sol.ys - serial.ys).abs().max().item()
        s = sol.stats
        print(f"parareal ({name}): {sol.iterations} iterations, converged={sol.converged}, "
              f"depth {s.sequential_nfe} (predicted {s.predicted_sequential_nfe}, "
              f"{serial.stats.sequential_nfe / s.sequential_nfe:.1f}x below serial), "
              f"nfe {s.nfe}, {s.wall_time:.3f} s, max error vs serial {error:.2e}")
    save_plot(runs["batched"], serial, t, args.out)


def save_plot(sol: pint.Solution, serial: pint.Solution, t: torch.Tensor, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    errors = [(it - serial.ys).abs().amax(dim=1) for it in sol.iterates]
    for k, err in enumerate(errors):
        ax1.semilogy(t, err.clamp_min(1e-17), label=f"iteration {k}")
    ax1.set(xlabel="t", ylabel="max |U - serial fine|", title="Error at the slice boundaries")
    ax1.legend(fontsize=7)
    ax2.semilogy(range(1, len(sol.residuals) + 1), sol.residuals, "o-", label="residual")
    ax2.semilogy(range(len(errors)), [e.max() for e in errors], "s--", label="error vs serial")
    ax2.set(xlabel="iteration", title="Convergence")
    ax2.legend()
    fig.tight_layout()
    path = out / "lotka_volterra_convergence.png"
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
