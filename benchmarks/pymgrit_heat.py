"""pint's own implicit propagators against PyMGRIT on PyMGRIT's heat examples, 1-D and 2-D.

1-D: PyMGRIT's ``examples/example_heat_1d.py``: ``u_t - a u_xx = b(x, t)`` on ``x in [0, 1]``,
``t in [0, 2]``, ``a = 1``, ``u = 0`` at both ends, ``u(x, 0) = sin(pi x)``, ``b(x, t) =
-sin(pi x) (sin t - a pi^2 cos t)`` (exact solution ``sin(pi x) cos t``), ``nx = 1001`` points
(999 unknowns, PyMGRIT's ``Heat1D``), ``nt = 65`` time points, backward Euler on every level.
2-D: the problem of PyMGRIT's ``Heat2D`` on the unit square with ``nx = ny = 258`` points
(256 x 256 = 65536 unknowns), the forcing of the exact solution ``sin(pi x) sin(pi y) cos t``,
``nt = 33``: ``pint.mgrit`` against ``pint.serial`` only. PyMGRIT's ``Heat2D.step`` calls
``scipy.sparse.linalg.spsolve``, a fresh sparse factorisation of the 66564 x 66564 system every
step (1.1 s per step measured on this machine), so one of its MGRIT solves (about 60 steps per
iteration) would take several minutes; ``benchmarks/pymgrit_peer.py`` can run it
(``"dim": 2``) where that is affordable.
PyMGRIT (``pymgrit==1.0.6``) runs ``Mgrit(simple_setup_problem(problem, levels, m), tol,
cf_iter)`` (V-cycle, nested iteration, injection, residual 2-norm) in its own venv, as a
subprocess (``benchmarks/pymgrit_peer.py``). pint runs ``pint.mgrit`` and ``pint.serial`` on
the same discretization, ``f(t, u) = -L u + b(t)`` written as a stencil, with pint's own
propagators:

- ``pint.BackwardEuler(1)``: nothing but ``f`` (1-D only); Newton with the automatic default,
  here the exact Jacobian by forward-mode AD, detected tridiagonal (3 tangents per row), a
  banded LU per Newton iteration;
- ``pint.BackwardEuler(1, jacobian=pint.Banded(-L), linear=True)`` (1-D) or
  ``jacobian=-L`` as a torch sparse CSR matrix (2-D), ``linear=True``: one SciPy sparse LU of
  ``I + h L`` per step size, reused, as PyMGRIT's ``spsolve`` (which factorises every step).

Checked: the iteration counts (equal), the residual histories, the final solutions at every
time point (equal to 1e-10 to PyMGRIT and to ``pint.serial``), the wall clock of each.

PyMGRIT's venv (``numpy<2`` and mpi4py, whose MPI library comes from the ``mpich`` wheel),
created once, or by ``make bench-pymgrit``::

    python3 -m venv .venv-pymgrit
    .venv-pymgrit/bin/pip install "pymgrit==1.0.6" "numpy<2" mpich

Run: ``python benchmarks/pymgrit_heat.py [--quick] [--threads 1] [--peer-python PATH]``;
without the venv the script says so and exits 0. ``--quick``: one timed run of each, no 2-D
F-relaxation run. Writes ``benchmarks/results/pymgrit_heat.{json,md,png}``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
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

NAME = "pymgrit_heat"
ROOT = Path(__file__).resolve().parent.parent
PEER = Path(__file__).resolve().parent / "pymgrit_peer.py"
DEFAULT_PEER_PYTHON = ROOT / ".venv-pymgrit" / "bin" / "python"
PROBLEMS = {
    "1-D": dict(dim=1, nx=1001, a=1.0, t_stop=2.0, nt=65),
    "2-D": dict(dim=2, nx=258, a=1.0, t_stop=2.0, nt=33),
}
WITH_PYMGRIT = {"1-D"}  # see the module docstring for 2-D
TOL = 1e-10


# ----------------------------------------------------------------------------- the problems
class Heat:
    """PyMGRIT's Heat1D / Heat2D as a pint problem: interior points, ``-L``, forcing, ``u0``."""

    def __init__(self, dim: int, nx: int, a: float, t_stop: float, nt: int) -> None:
        self.dim, self.a = dim, a
        grid = np.linspace(0.0, 1.0, nx)  # PyMGRIT's grid: dx from its first two points
        self.n = nx - 2
        self.fac = a / float(grid[1] - grid[0]) ** 2
        x = torch.from_numpy(grid[1:-1].copy())
        self.t = torch.from_numpy(np.linspace(0.0, t_stop, nt))
        self.shape = (torch.sin(math.pi * x) if dim == 1 else
                      torch.outer(torch.sin(math.pi * x), torch.sin(math.pi * x)).reshape(-1))
        self.y0 = self.shape.clone()
        one = scipy.sparse.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(self.n, self.n))
        eye = scipy.sparse.identity(self.n)
        self.laplacian = self.fac * (one if dim == 1 else scipy.sparse.kron(one, eye)
                                     + scipy.sparse.kron(eye, one)).tocsr()  # L (positive)

    def forcing(self, t: Tensor) -> Tensor:
        """``b(x, t)`` for times ``t`` of shape ``(R,)``: shape ``(R, d)``."""
        return -self.shape * (torch.sin(t) - self.dim * self.a * math.pi ** 2 * torch.cos(t)
                              )[:, None]

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        """``-L y + b(t)``, the stencil on a batch of rows (``vectorized=True``)."""
        u = y.reshape(len(y), *([self.n] * self.dim))
        laplacian = 2 * self.dim * u
        for dim in range(1, self.dim + 1):
            zero = torch.zeros_like(u.narrow(dim, 0, 1))
            laplacian = (laplacian - torch.cat([zero, u.narrow(dim, 0, self.n - 1)], dim)
                         - torch.cat([u.narrow(dim, 1, self.n - 1), zero], dim))
        return -self.fac * laplacian.reshape(len(y), -1) + self.forcing(t)

    def minus_laplacian(self) -> pint.Banded | Tensor:
        """``-L``: :class:`pint.Banded` in 1-D, a torch sparse CSR tensor in 2-D."""
        if self.dim == 1:
            bands = torch.tensor([[self.fac], [-2 * self.fac], [self.fac]],
                                 dtype=torch.float64).expand(3, self.n).contiguous()
            return pint.Banded(bands, lower=1)
        m = (-self.laplacian).tocsr()
        with warnings.catch_warnings():  # torch's "CSR support is in beta" notice
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(torch.from_numpy(m.indptr).long(),
                                           torch.from_numpy(m.indices).long(),
                                           torch.from_numpy(m.data), size=m.shape,
                                           check_invariants=True)

    def exact(self) -> Tensor:
        return torch.cos(self.t)[:, None] * self.shape


# ----------------------------------------------------------------------------- the runs
def runs(dim: int, quick: bool) -> list[dict[str, Any]]:
    """PyMGRIT's configurations: V-cycles, coarsening 4, two and three levels, F and FCF
    (2-D: two levels, FCF; F too without ``--quick``)."""
    if dim == 1:
        shapes = [(levels, cf) for levels in (2, 3) for cf in (0, 1)]
    else:
        shapes = [(2, 1)] if quick else [(2, 0), (2, 1)]
    return [dict(levels=levels, coarsening=4, cf_iter=cf, cycle="V", tol=TOL, max_iter=100)
            for levels, cf in shapes]


def run_peer(python: Path, problem: dict[str, Any], configs: list[dict[str, Any]],
             repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        config, out = Path(tmp) / "config.json", Path(tmp) / "out.json"
        config.write_text(json.dumps(dict(problem, runs=configs, repeats=repeats)))
        subprocess.run([str(python), str(PEER), str(config), str(out)], check=True)
        result = json.loads(out.read_text())
        for run in result["runs"]:
            run["ys"] = torch.from_numpy(np.load(run["ys"], allow_pickle=False))
        return result


def run_pint(heat: Heat, config: dict[str, Any], propagator: Any, repeats: int
             ) -> dict[str, Any]:
    relaxation = pint.FRelaxation() if config["cf_iter"] == 0 else pint.FCFRelaxation(
        config["cf_iter"])

    def run() -> pint.Solution:
        return pint.mgrit(heat.f, heat.y0, heat.t, propagator=propagator(),
                          coarsening=config["coarsening"], levels=config["levels"],
                          relaxation=relaxation, tol=config["tol"], cycle=pint.VCycle(),
                          max_iters=config["max_iter"], vectorized=True)

    wall, sol = median_time(run, repeats)
    return dict(iterations=sol.iterations, residuals=sol.residuals, wall_s=wall,
                nfe=sol.stats.nfe, sequential_nfe=sol.stats.sequential_nfe, ys=sol.ys)


def propagators(heat: Heat) -> dict[str, Any]:
    """Factories (a fresh propagator per timed run: no factorisation carried over)."""
    matrix = heat.minus_laplacian()
    out = {"matrix": lambda: pint.BackwardEuler(1, jacobian=matrix, linear=True)}
    if heat.dim == 1:
        out["auto"] = lambda: pint.BackwardEuler(1)
    return out


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
    repeats = args.repeats or (1 if args.quick else 3)
    rows, serial_rows, peer = [], [], {}
    for name, problem in PROBLEMS.items():
        heat = Heat(**problem)
        configs = runs(problem["dim"], args.quick)
        peer = (run_peer(args.peer_python, problem, configs, repeats) if name in WITH_PYMGRIT
                else dict(peer, runs=[None] * len(configs)))
        factories = propagators(heat)
        serial = {}
        for kind, factory in factories.items():
            wall, sol = median_time(lambda factory=factory, heat=heat: pint.serial(
                heat.f, heat.y0, heat.t, method=factory(), vectorized=True), repeats)
            serial[kind] = sol
            serial_rows.append(dict(problem=name, propagator=kind, wall_s=wall,
                                    max_error_vs_exact=float((sol.ys - heat.exact()).abs().max())))
            print(f"{name} serial {kind}: {wall:.2f}s", flush=True)
        for config, theirs in zip(configs, peer["runs"], strict=True):
            ours = {kind: run_pint(heat, config, factory, repeats)
                    for kind, factory in factories.items()}
            row = dict(config, problem=name, unknowns=len(heat.y0),
                       relaxation="F" if config["cf_iter"] == 0 else "FCF")
            if theirs is not None:
                row.update(pymgrit_iterations=len(theirs["conv"]),
                           pymgrit_residuals=theirs["conv"], pymgrit_wall_s=theirs["wall_s"])
            for kind, run in ours.items():
                row[f"{kind}_iterations"] = run["iterations"]
                row[f"{kind}_residuals"] = run["residuals"]
                row[f"{kind}_wall_s"] = run["wall_s"]
                row[f"{kind}_nfe"] = run["nfe"]
                row[f"{kind}_sequential_nfe"] = run["sequential_nfe"]
                if theirs is not None:
                    row[f"{kind}_max_difference_from_pymgrit"] = float(
                        (run["ys"] - theirs["ys"]).abs().max())
                row[f"{kind}_max_difference_from_serial"] = float(
                    (run["ys"] - serial[kind].ys).abs().max())
            row["iterations_equal"] = all(
                row[f"{k}_iterations"] == row.get("pymgrit_iterations", row[f"{k}_iterations"])
                for k in ours)
            row["solutions_equal_1e-10"] = all(
                row.get(f"{k}_max_difference_from_pymgrit", 0.0) <= 1e-10
                and row[f"{k}_max_difference_from_serial"] <= 1e-10 for k in ours)
            rows.append(row)
            print(f"{name} levels {row['levels']} {row['relaxation']}: iterations PyMGRIT "
                  f"{row.get('pymgrit_iterations', '-')} pint " + ", ".join(
                      f"{k} {row[f'{k}_iterations']} ({row[f'{k}_wall_s']:.2f}s, max |diff| "
                      f"serial {row[f'{k}_max_difference_from_serial']:.1e})" for k in ours)
                  + f"; PyMGRIT {row.get('pymgrit_wall_s', '-')}s", flush=True)
    payload = dict(machine=info, problems=PROBLEMS, tol=TOL, repeats=repeats,
                   pymgrit=peer["pymgrit_version"], pymgrit_numpy=peer["numpy"],
                   serial=serial_rows, rows=rows)
    write_results(NAME, payload, report(payload))
    plot(rows, RESULTS / f"{NAME}.png")
    if not all(r["iterations_equal"] and r["solutions_equal_1e-10"] for r in rows):
        sys.exit("pint.mgrit disagrees with PyMGRIT (see the table)")


# ----------------------------------------------------------------------------- output
def report(payload: dict[str, Any]) -> str:
    rows = payload["rows"]
    summary = markdown_table(rows, [
        ("problem", "problem", ""), ("unknowns", "unknowns", "d"), ("levels", "levels", "d"),
        ("relaxation", "relaxation", ""),
        ("PyMGRIT iterations", lambda r: r.get("pymgrit_iterations", "-"), ""),
        ("pint iterations (matrix)", "matrix_iterations", "d"),
        ("pint iterations (auto)", lambda r: r.get("auto_iterations", "-"), ""),
        ("max abs diff vs PyMGRIT", lambda r: _format(r, "matrix_max_difference_from_pymgrit",
                                                      ".1e"), ""),
        ("max abs diff vs pint.serial", "matrix_max_difference_from_serial", ".1e"),
        ("PyMGRIT wall s", lambda r: _format(r, "pymgrit_wall_s", ".2f"), ""),
        ("pint.mgrit wall s (matrix)", "matrix_wall_s", ".2f"),
        ("pint.mgrit wall s (auto)", lambda r: _format(r, "auto_wall_s", ".2f"), ""),
        ("pint depth (matrix)", "matrix_sequential_nfe", "d"),
    ])
    serial = markdown_table(payload["serial"], [
        ("problem", "problem", ""), ("propagator", "propagator", ""),
        ("pint.serial wall s", "wall_s", ".2f"),
        ("max error vs exact PDE solution", "max_error_vs_exact", ".1e"),
    ])
    histories = []
    for r in rows:
        if "pymgrit_residuals" not in r:
            continue
        histories.append(f"\n**{r['problem']}, {r['levels']} levels, {r['relaxation']}-relaxation"
                         f"**\n")
        lines = [dict(k=k + 1, theirs=a, ours=b) for k, (a, b) in enumerate(
            zip(r["pymgrit_residuals"], r["matrix_residuals"], strict=False))]
        histories.append(markdown_table(lines, [("iteration", "k", ""),
                                                ("PyMGRIT residual", "theirs", ".6e"),
                                                ("pint residual (matrix)", "ours", ".6e")]))
    title = f"pint's implicit propagators against PyMGRIT {payload['pymgrit']}: heat, 1-D, 2-D"
    return f"""# {title}

`python benchmarks/pymgrit_heat.py --threads 1` (OMP_NUM_THREADS=1; PyMGRIT in its own venv,
numpy {payload['pymgrit_numpy']}). Problems: PyMGRIT's `Heat1D` example (`nx = 1001`, 999
unknowns, 65 time points) and the problem of its `Heat2D` (`nx = ny = 258`, 256 x 256 = 65536
unknowns, 33 time points; pint only: PyMGRIT's `Heat2D` calls `spsolve`, a new sparse
factorisation every step, 1.1 s each here, minutes per MGRIT solve), `t in [0, 2]`, `a = 1`,
backward Euler on every level, V-cycles, coarsening 4, nested iteration, tolerance
{payload['tol']:g} on the residual's 2-norm. pint runs its own propagators on
`f(t, u) = -L u + b(t)` (a stencil):

- *matrix*: `pint.BackwardEuler(1, jacobian=-L, linear=True)` with `-L` a `pint.Banded`
  (1-D) or a torch sparse CSR matrix (2-D): one SciPy sparse LU per step size, reused
  (PyMGRIT calls `spsolve`, a factorisation per step);
- *auto* (1-D): `pint.BackwardEuler(1)`, no Jacobian given: Newton with the default, the exact
  Jacobian by forward-mode AD (detected tridiagonal: 3 tangent rows per row), a banded LU per
  Newton iteration; one process, every run includes its propagator's band detection.

{machine_line(payload['machine'])} Wall clock: the median of {payload['repeats']} run(s)
measured in the same script run; PyMGRIT's is its setup plus solve in one process, pint's the
whole `pint.mgrit` call with a fresh propagator. On one CPU thread MGRIT does more work than
the serial solve and takes longer; its gain is the depth (evaluation rounds on the critical
path), which parallel hardware turns into time.

{summary}

Serial backward Euler with the same propagators (the reference the MGRIT solutions are compared
with):

{serial}

## Residual histories
{''.join(h if h.startswith(chr(10)) else chr(10) + h + chr(10) for h in histories)}
"""


def _format(row: dict[str, Any], key: str, fmt: str) -> str:
    return format(row[key], fmt) if key in row else "-"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    labels = [f"{r['problem']}\n{r['levels']} lev {r['relaxation']}" for r in rows]
    x = np.arange(len(rows))
    kinds = [("pymgrit_wall_s", "PyMGRIT"), ("matrix_wall_s", "pint.mgrit, matrix"),
             ("auto_wall_s", "pint.mgrit, BackwardEuler(1)")]
    for n, (key, label) in enumerate(kinds):
        ax.bar(x + (n - 1) * 0.27, [r.get(key, 0.0) for r in rows], 0.27, label=label)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("wall clock (s)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("PyMGRIT's heat examples: wall clock per MGRIT solve (same iterations)",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
