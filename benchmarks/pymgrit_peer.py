"""Runs PyMGRIT's own heat examples (1-D, 2-D) in PyMGRIT's venv; driven by ``pymgrit_heat.py``.

Usage (with the interpreter of a venv holding ``pymgrit==1.0.6``, ``numpy<2`` and ``mpich``)::

    python benchmarks/pymgrit_peer.py CONFIG.json OUT.json

CONFIG holds the problem (``dim`` 1 or 2, ``nx`` (points per direction, boundaries
included), ``a``, ``t_stop``, ``nt``) and a list of ``runs`` (``levels``,
``coarsening``, ``cf_iter``, ``cycle``, ``tol``, ``max_iter``). For each run it writes PyMGRIT's
residual history (``conv``, one entry per iteration), its setup and solve times and the wall
clock around both (medians over ``repeats`` runs, default 1), and the path of a ``.npy`` file
beside OUT with the solution at every time point. This file imports no torch and no pint: it
must run in PyMGRIT's own environment.
"""

import json
import logging
import sys
import time

import numpy as np
from pymgrit.core.mgrit import Mgrit
from pymgrit.core.simple_setup_problem import simple_setup_problem
from pymgrit.heat.heat_1d import Heat1D
from pymgrit.heat.heat_2d import Heat2D


def rhs(x, t, a):
    """The forcing of PyMGRIT's example_heat_1d.py (exact solution sin(pi x) cos(t))."""
    return -np.sin(np.pi * x) * (np.sin(t) - a * np.pi ** 2 * np.cos(t))


def rhs_2d(x, y, t, a):
    """The 2-D forcing: exact solution sin(pi x) sin(pi y) cos(t)."""
    return -np.sin(np.pi * x) * np.sin(np.pi * y) * (np.sin(t) - 2 * a * np.pi ** 2 * np.cos(t))


def heat(config):
    """PyMGRIT's Heat1D (its example) or Heat2D (zero boundary values, the forcing above)."""
    a = config["a"]
    if config.get("dim", 1) == 1:
        return Heat1D(x_start=0, x_end=1, nx=config["nx"], a=a,
                      init_cond=lambda x: np.sin(np.pi * x), rhs=lambda x, t: rhs(x, t, a),
                      t_start=0, t_stop=config["t_stop"], nt=config["nt"])
    return Heat2D(x_start=0, x_end=1, y_start=0, y_end=1, nx=config["nx"], ny=config["nx"], a=a,
                  init_cond=lambda x, y: np.sin(np.pi * x) * np.sin(np.pi * y),
                  rhs=lambda x, y, t: rhs_2d(x, y, t, a), t_start=0, t_stop=config["t_stop"],
                  nt=config["nt"])


def values(u, dim):
    """The interior values (pint's state): Heat2D's vectors hold the boundary too."""
    v = u.get_values()
    return v if dim == 1 else v[1:-1, 1:-1].reshape(-1)


def main(config_path: str, out_path: str) -> None:
    config = json.loads(open(config_path).read())
    results = []
    for run in config["runs"]:
        walls, setups, solves = [], [], []
        for _ in range(config.get("repeats", 1)):  # the same run; the median wall clock
            start = time.perf_counter()
            problem = simple_setup_problem(problem=heat(config), level=run["levels"],
                                           coarsening=run["coarsening"])
            solver = Mgrit(problem=problem, tol=run["tol"], cf_iter=run["cf_iter"],
                           cycle_type=run["cycle"], max_iter=run["max_iter"],
                           logging_lvl=logging.WARNING + 1)
            info = solver.solve()
            walls.append(time.perf_counter() - start)
            setups.append(info["time_setup"])
            solves.append(info["time_solve"])
        ys = np.array([values(u, config.get("dim", 1)) for u in solver.u[0]])
        ys_path = f"{out_path}.{len(results)}.npy"  # the solutions, beside the JSON
        np.save(ys_path, ys, allow_pickle=False)
        results.append(dict(run, conv=[float(c) for c in info["conv"]],
                            time_setup=float(np.median(setups)),
                            time_solve=float(np.median(solves)), wall_s=float(np.median(walls)),
                            repeats=len(walls), ys=ys_path))
    with open(out_path, "w") as out:
        json.dump({"pymgrit_version": _version(), "numpy": np.__version__, "runs": results}, out)


def _version() -> str:
    from importlib.metadata import version

    return version("pymgrit")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
