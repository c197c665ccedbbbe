"""Peer check of pint.mgrit against PyMGRIT on PyMGRIT's own 1-D heat example.

The problem is PyMGRIT's ``examples/example_heat_1d.py``: ``u_t - a u_xx = b(x, t)`` on
``x in [0, 1]``, ``t in [0, 2]``, ``a = 1``, ``u = 0`` at both ends, ``u(x, 0) = sin(pi x)``,
``b(x, t) = -sin(pi x) (sin t - a pi^2 cos t)`` (exact solution ``sin(pi x) cos t``), on its
grid: ``nx = 1001`` points in space (999 unknowns, second-order differences, PyMGRIT's
``Heat1D.compute_matrix``), ``nt = 65`` time points, backward Euler on every level
(``u_i = (I + dt L)^{-1} (u_{i-1} + dt b(t_i))``, ``Heat1D.step``). PyMGRIT (``pymgrit==1.0.6``)
runs ``Mgrit(simple_setup_problem(Heat1D(...), levels, m), tol, cf_iter)`` with its defaults
(V-cycle, nested iteration, injection, residual 2-norm) in its own venv, as a subprocess
(``benchmarks/pymgrit_peer.py``) that writes JSON. pint runs ``pint.mgrit`` on the same
discretization: ``f(t, u) = -L u + b(x, t)``, the fine grid of 65 points, the same coarsening
factor, levels and relaxation, the same tolerance, with two backward Euler propagators:

- ``pint.BackwardEuler(1, jacobian=-L, linear=True)``: the library's, a dense LU of
  ``I + dt L`` (999 x 999) per step size, reused;
- ``BandedBackwardEuler`` (below): the same step through SciPy's banded solver, as PyMGRIT's
  sparse ``spsolve`` does, written against the ``pint.Propagator`` protocol: the wall clock
  without the dense solves.

Checked: the iteration counts (equal within one), the residual history of every iteration side
by side, the final solutions at all 65 time points (equal to 1e-10), the wall clock of both.

PyMGRIT's venv (it needs ``numpy<2`` and mpi4py, whose MPI library comes from the ``mpich``
wheel), created once, or by ``make bench-pymgrit``::

    python3 -m venv .venv-pymgrit
    .venv-pymgrit/bin/pip install "pymgrit==1.0.6" "numpy<2" mpich

Run: ``python benchmarks/pymgrit_heat.py [--quick] [--peer-python PATH]``; without the venv the
script says so and exits 0. Writes ``benchmarks/results/pymgrit_heat.{json,md,png}``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import (
    RESULTS,
    arguments,
    machine_info,
    machine_line,
    markdown_table,
    median_time,
    setup,
    write_results,
)
from torch import Tensor

import pint
from pint.engine import Propagation, Request

NAME = "pymgrit_heat"
ROOT = Path(__file__).resolve().parent.parent
PEER = Path(__file__).resolve().parent / "pymgrit_peer.py"
DEFAULT_PEER_PYTHON = ROOT / ".venv-pymgrit" / "bin" / "python"
PROBLEM = dict(nx=1001, a=1.0, t_stop=2.0, nt=65)
TOL = 1e-7  # PyMGRIT's default


# ----------------------------------------------------------------------------- the problem
class Heat:
    """PyMGRIT's Heat1D example as a pint problem: the grid, ``L``, the forcing, ``u0``."""

    def __init__(self, nx: int, a: float, t_stop: float, nt: int) -> None:
        self.a = a
        # PyMGRIT's grid: numpy's linspace without the boundary points, dx from the first two.
        self.x = torch.from_numpy(np.linspace(0.0, 1.0, nx)[1:-1].copy())
        self.t = torch.from_numpy(np.linspace(0.0, t_stop, nt))
        dx = float(self.x[1] - self.x[0])
        self.fac = a / dx ** 2
        n = len(self.x)
        off = torch.full((n - 1,), -self.fac, dtype=torch.float64)
        self.matrix = (torch.diag(torch.full((n,), 2 * self.fac, dtype=torch.float64))
                       + torch.diag(off, 1) + torch.diag(off, -1))  # L, as compute_matrix
        self.sin = torch.sin(math.pi * self.x)
        self.y0 = self.sin.clone()

    def forcing(self, t: Tensor) -> Tensor:
        """``b(x, t)`` for times ``t`` of shape ``(R,)``: shape ``(R, n)``."""
        return -self.sin * (torch.sin(t) - self.a * math.pi ** 2 * torch.cos(t))[:, None]

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        """``-L y + b(x, t)`` for a batch of rows (``vectorized=True``)."""
        zero = y[:, :1] * 0
        left, right = torch.cat([zero, y[:, :-1]], 1), torch.cat([y[:, 1:], zero], 1)
        laplacian = self.fac * (2 * y - left - right)
        return -laplacian + self.forcing(t)

    def exact(self) -> Tensor:
        return torch.cos(self.t)[:, None] * self.sin


class BandedBackwardEuler:
    """Backward Euler for ``f(t, y) = -L y + b(t)`` with a tridiagonal ``L``, one step per slice.

    As pint's linear fast path (and PyMGRIT's ``Heat1D.step``): one evaluation ``f(t1, 0) =
    b(t1)``, then ``y1 = (I + h L)^{-1} (y0 + h b(t1))``, solved with SciPy's banded solver.
    """

    depth = 1

    def __init__(self, diagonal: float, off: float, n: int) -> None:
        self.diagonal, self.off, self.n = diagonal, off, n

    def propagate(self, t0: Tensor, t1: Tensor, y0: Tensor) -> Propagation:
        from scipy.linalg import solve_banded

        forcing = yield Request(t1, torch.zeros_like(y0))
        h = (t1 - t0).numpy()
        rhs = (y0 + (t1 - t0)[:, None] * forcing).numpy()
        out = np.empty_like(rhs)
        for value in np.unique(h):
            rows = h == value
            bands = np.empty((3, self.n))
            bands[0] = bands[2] = value * self.off
            bands[1] = 1.0 + value * self.diagonal
            out[rows] = solve_banded((1, 1), bands, rhs[rows].T).T
        return torch.from_numpy(out)


# ----------------------------------------------------------------------------- the runs
def runs(quick: bool) -> list[dict[str, Any]]:
    """V-cycles with two and three levels, F and FCF; the full run adds m = 2 and F-cycles,
    among them PyMGRIT's example itself (five levels, F-cycles, FCF)."""
    factors = [4] if quick else [2, 4]
    out = [dict(levels=levels, coarsening=m, cf_iter=cf, cycle="V", tol=TOL, max_iter=100)
           for m in factors for levels in (2, 3) for cf in (0, 1)]
    if not quick:
        out += [dict(levels=levels, coarsening=2, cf_iter=cf, cycle="F", tol=TOL, max_iter=100)
                for levels, cf in ((3, 0), (5, 1))]
    return out


def run_peer(python: Path, configs: list[dict[str, Any]], repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        config, out = Path(tmp) / "config.json", Path(tmp) / "out.json"
        config.write_text(json.dumps(dict(PROBLEM, runs=configs, repeats=repeats)))
        subprocess.run([str(python), str(PEER), str(config), str(out)], check=True)
        return json.loads(out.read_text())


def run_pint(heat: Heat, config: dict[str, Any], propagator: Any, repeats: int
             ) -> dict[str, Any]:
    relaxation = pint.FRelaxation() if config["cf_iter"] == 0 else pint.FCFRelaxation(
        config["cf_iter"])

    def run() -> pint.Solution:
        return pint.mgrit(heat.f, heat.y0, heat.t, propagator=propagator,
                          coarsening=config["coarsening"], levels=config["levels"],
                          relaxation=relaxation, tol=config["tol"],
                          cycle=pint.VCycle() if config["cycle"] == "V" else pint.FCycle(),
                          max_iters=config["max_iter"], vectorized=True)

    wall, sol = median_time(run, repeats)
    return dict(iterations=sol.iterations, residuals=sol.residuals, converged=sol.converged,
                wall_s=wall, nfe=sol.stats.nfe, sequential_nfe=sol.stats.sequential_nfe,
                ys=sol.ys)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--peer-python", type=Path, default=DEFAULT_PEER_PYTHON,
                        help="the interpreter of PyMGRIT's venv")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs of each solver per configuration (the median is "
                             "reported); default 1 with --quick, else 3")
    args = parser.parse_args()
    if not args.peer_python.exists():
        print(f"{NAME}: skipped: PyMGRIT's venv is missing ({args.peer_python}). Create it with\n"
              f"  python3 -m venv .venv-pymgrit && .venv-pymgrit/bin/pip install "
              f"'pymgrit==1.0.6' 'numpy<2' mpich\n(or `make bench-pymgrit`)")
        return
    setup(args.threads)
    info = machine_info()
    configs = runs(args.quick)
    repeats = args.repeats or (1 if args.quick else 3)
    peer = run_peer(args.peer_python, configs, repeats)
    heat = Heat(**PROBLEM)
    serial = pint.serial(heat.f, heat.y0, heat.t, vectorized=True,
                         method=pint.BackwardEuler(1, jacobian=-heat.matrix, linear=True))
    rows = []
    for config, theirs in zip(configs, peer["runs"], strict=True):
        reference = torch.tensor(theirs["ys"], dtype=torch.float64)
        propagators = {
            "pint.BackwardEuler": pint.BackwardEuler(1, jacobian=-heat.matrix, linear=True),
            "banded": BandedBackwardEuler(2 * heat.fac, -heat.fac, len(heat.x)),
        }
        ours = {name: run_pint(heat, config, prop, repeats)
                for name, prop in propagators.items()}
        main_run = ours["pint.BackwardEuler"]
        row = dict(
            config,
            relaxation="F" if config["cf_iter"] == 0 else "FCF",
            pymgrit_iterations=len(theirs["conv"]),
            pint_iterations=main_run["iterations"],
            banded_iterations=ours["banded"]["iterations"],
            pymgrit_residuals=theirs["conv"],
            pint_residuals=main_run["residuals"],
            banded_residuals=ours["banded"]["residuals"],
            max_residual_relative_difference=max(
                abs(p - q) / q for p, q in zip(main_run["residuals"], theirs["conv"],
                                               strict=False)),
            max_difference_from_pymgrit=float((main_run["ys"] - reference).abs().max()),
            banded_max_difference_from_pymgrit=float(
                (ours["banded"]["ys"] - reference).abs().max()),
            max_difference_from_serial=float((main_run["ys"] - serial.ys).abs().max()),
            max_error_vs_exact=float((main_run["ys"] - heat.exact()).abs().max()),
            pymgrit_wall_s=theirs["wall_s"], pymgrit_setup_s=theirs["time_setup"],
            pymgrit_solve_s=theirs["time_solve"],
            pint_wall_s=main_run["wall_s"], banded_wall_s=ours["banded"]["wall_s"],
            pint_nfe=main_run["nfe"], pint_sequential_nfe=main_run["sequential_nfe"],
        )
        row["iterations_within_one"] = abs(row["pint_iterations"] - row["pymgrit_iterations"]) <= 1
        row["solutions_equal_1e-10"] = row["max_difference_from_pymgrit"] <= 1e-10
        rows.append(row)
        print(f"levels {row['levels']} m {row['coarsening']} {row['cycle']} {row['relaxation']}: "
              f"iterations "
              f"PyMGRIT {row['pymgrit_iterations']} pint {row['pint_iterations']}, max |diff| "
              f"{row['max_difference_from_pymgrit']:.1e}, wall PyMGRIT "
              f"{row['pymgrit_wall_s']:.2f}s pint {row['pint_wall_s']:.2f}s banded "
              f"{row['banded_wall_s']:.2f}s", flush=True)
    payload = dict(machine=info, problem=PROBLEM, tol=TOL, repeats=repeats,
                   pymgrit=peer["pymgrit_version"],
                   pymgrit_numpy=peer["numpy"], serial_sequential_nfe=serial.stats.sequential_nfe,
                   rows=rows)
    write_results(NAME, payload, report(payload))
    plot(rows, RESULTS / f"{NAME}.png")
    if not all(r["iterations_within_one"] and r["solutions_equal_1e-10"] for r in rows):
        sys.exit("pint.mgrit disagrees with PyMGRIT (see the table)")


# ----------------------------------------------------------------------------- output
def report(payload: dict[str, Any]) -> str:
    rows = payload["rows"]
    summary = markdown_table(rows, [
        ("levels", "levels", "d"), ("m", "coarsening", "d"), ("cycle", "cycle", ""),
        ("relaxation", "relaxation", ""),
        ("PyMGRIT iterations", "pymgrit_iterations", "d"),
        ("pint iterations", "pint_iterations", "d"),
        ("max abs diff of the solutions", "max_difference_from_pymgrit", ".1e"),
        ("max rel diff of the residuals", "max_residual_relative_difference", ".1e"),
        ("PyMGRIT wall s", "pymgrit_wall_s", ".2f"),
        ("pint wall s (BackwardEuler, dense LU)", "pint_wall_s", ".2f"),
        ("pint wall s (banded)", "banded_wall_s", ".2f"),
        ("pint depth (serial: {})".format(payload["serial_sequential_nfe"]),
         "pint_sequential_nfe", "d"),
    ])
    histories = []
    for r in rows:
        histories.append(f"\n**{r['levels']} levels, m = {r['coarsening']}, {r['cycle']}-cycle, "
                         f"{r['relaxation']}-relaxation**\n")
        lines = [dict(k=k + 1, theirs=a, ours=b) for k, (a, b) in enumerate(
            zip(r["pymgrit_residuals"], r["pint_residuals"], strict=False))]
        histories.append(markdown_table(lines, [("iteration", "k", ""),
                                                ("PyMGRIT residual", "theirs", ".6e"),
                                                ("pint residual", "ours", ".6e")]))
    p = payload["problem"]
    return f"""# pint.mgrit against PyMGRIT {payload['pymgrit']}: PyMGRIT's 1-D heat example

`python benchmarks/pymgrit_heat.py` (PyMGRIT in its own venv, numpy {payload['pymgrit_numpy']}).
Problem: PyMGRIT's `example_heat_1d.py`, `nx = {p['nx']}` ({p['nx'] - 2} unknowns), `a = {p['a']}`,
`t in [0, {p['t_stop']}]` with `nt = {p['nt']}` time points, backward Euler on every level,
nested iteration, tolerance {payload['tol']:g} on the residual's 2-norm (PyMGRIT's defaults).
pint: `pint.mgrit(..., propagator=pint.BackwardEuler(1, jacobian=-L, linear=True))`;
"banded" is the same iteration with a user propagator that solves the tridiagonal system with
SciPy's banded solver, as PyMGRIT's sparse `spsolve` does. The depth is pint's
`sequential_nfe` (evaluation rounds; serial backward Euler needs
{payload['serial_sequential_nfe']}).

{machine_line(payload['machine'])} Wall clock: the median of {payload['repeats']} run(s) of
each solver, measured in the same script run; PyMGRIT's is its setup (with the nested
iteration, in one process) plus its solve, pint's the whole `pint.mgrit` call. The dense LU solves
(999 x 999) dominate pint's time with `pint.BackwardEuler`; the banded column isolates the
iteration itself.

The residuals agree to round-off relative to the states, not to themselves: each is a
difference of states of size 1, so its round-off is about 1e-15 absolute, and their relative
difference grows as they shrink (to about 1e-6 at 1e-8). On this small grid every
configuration's depth exceeds the serial 64 rounds: with 64 one-round steps there is little to
parallelise (the coarsest solve alone is 16 to 32 rounds per iteration with two levels). The
table checks that both libraries run the same iteration; it is not a speed test.

{summary}

## Residual histories
{''.join(h if h.startswith(chr(10)) else chr(10) + h + chr(10) for h in histories)}
"""


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(rows), 5)
    lines = math.ceil(len(rows) / cols)
    fig, axes = plt.subplots(lines, cols, figsize=(3.2 * cols, 3.0 * lines + 0.5),
                             squeeze=False, sharey=True)
    for ax in axes.flat[len(rows):]:
        ax.set_visible(False)
    for ax, r in zip(axes.flat, rows, strict=False):
        ks = range(1, len(r["pymgrit_residuals"]) + 1)
        ax.semilogy(ks, r["pymgrit_residuals"], "o-", label="PyMGRIT", markersize=7,
                    fillstyle="none")
        ax.semilogy(range(1, len(r["pint_residuals"]) + 1), r["pint_residuals"], "x--",
                    label="pint.mgrit")
        ax.axhline(r["tol"], color="grey", linestyle=":", linewidth=0.8, label="tol")
        ax.set_title(f"{r['levels']} levels, m={r['coarsening']}, {r['cycle']}, {r['relaxation']}",
                     fontsize=8)
        ax.set_xlabel("iteration")
        ax.grid(True, alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("residual 2-norm")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("PyMGRIT's 1-D heat example: residual per MGRIT iteration")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
