"""Parareal on a stiff problem: an implicit coarse propagator converges, an explicit one blows up.

The problem is ``y' = -1000 (y - cos t)``, ``y(0) = 0`` on ``[0, 10]`` (``pint.problems.
stiff_cosine``, exact solution known), cut into 32 slices of length 0.3125, so that
``lambda dT = -312.5``. The fine propagator is ``pint.SDIRK2(20)`` (L-stable, order 2). As
coarse propagator, one backward Euler step per slice (stability function ``1 / (1 - z)``, below
1 for every ``z < 0``) converges in a few iterations; one forward Euler step
(``R(z) = 1 + z = -311.5``) amplifies the error by about 300 per slice and Parareal only ends
by exactness after all 32 iterations.

The implicit propagators run either with a Newton solve whose Jacobian comes from finite
differences batched into each request (the default, for nonlinear ``f``; the depth then
depends on Newton's iteration counts), or on the linear fast path (``jacobian=A,
linear=True``: one solve per stage, the depth known in advance).

Run: ``python examples/stiff.py [--slices 32] [--tol 1e-10]``. With the defaults it prints
(iteration counts and depths are deterministic):

- finite-difference Newton: 5 iterations, depth 754 against 2560 serially (3.4x), error
  against the serial solve 1e-15, against the exact solution 3.2e-6 (the fine method's);
- linear fast path: the same 5 iterations, depth 377 against 1280 (3.4x);
- coarse ``Euler(1)``: residuals up to 4e88, 32 iterations (exact only because the first
  ``k`` slices are exact after iteration ``k``), depth 1808 against 1280 serially.
"""

import argparse

import torch

import pint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="fine SDIRK2 steps per slice")
    parser.add_argument("--tol", type=float, default=1e-10)
    args = parser.parse_args()

    problem = pint.problems.stiff_cosine()
    t = problem.times(args.slices + 1)
    exact = problem.reference(t)
    print(f"y' = -1000 (y - cos t) on [0, 10], {args.slices} slices, "
          f"lambda dT = {-1000 * float(t[1] - t[0]):.1f}, tol {args.tol:g}")

    runs = {
        "Newton, finite-difference Jacobian": {},
        "linear fast path": {"jacobian": problem.jacobian, "linear": True},
    }
    for name, options in runs.items():
        fine = pint.SDIRK2(args.steps, **options)
        serial = pint.serial(problem.f, problem.y0, t, method=fine, vectorized=True)
        print(f"\n{name}: serial SDIRK2({args.steps}): depth {serial.stats.sequential_nfe}, "
              f"error vs exact {(serial.ys - exact).abs().max().item():.2e}")
        sol = pint.parareal(problem.f, problem.y0, t, coarse=pint.BackwardEuler(1, **options),
                            fine=fine, tol=args.tol, vectorized=True)
        report("coarse BackwardEuler(1)", sol, serial, exact)

    fine = pint.SDIRK2(args.steps, jacobian=problem.jacobian, linear=True)
    serial = pint.serial(problem.f, problem.y0, t, method=fine, vectorized=True)
    print("\nexplicit coarse, same fine (linear fast path):")
    try:
        sol = pint.parareal(problem.f, problem.y0, t, coarse=pint.Euler(1), fine=fine,
                            tol=args.tol, vectorized=True)
    except pint.NonFiniteError as error:
        print(f"  coarse Euler(1): overflow: {error}")
    else:
        report("coarse Euler(1)", sol, serial, exact)


def report(name: str, sol: pint.Solution, serial: pint.Solution, exact: torch.Tensor) -> None:
    s = sol.stats
    print(f"  {name}: {sol.iterations} iterations (converged={sol.converged}), "
          f"depth {s.sequential_nfe} vs serial {serial.stats.sequential_nfe} "
          f"({serial.stats.sequential_nfe / s.sequential_nfe:.1f}x), nfe {s.nfe}, "
          f"largest residual {max(sol.residuals):.1e}, "
          f"error vs serial {(sol.ys - serial.ys).abs().max().item():.1e}, "
          f"vs exact {(sol.ys - exact).abs().max().item():.1e}")


if __name__ == "__main__":
    main()
