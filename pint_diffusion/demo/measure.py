"""Measuring: the demo's samplers, the digits workload, timing, the tables' rows and the sweep's
points, and :func:`run_demo` over them."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..images import save_grid
from .figures import latency_figure, save_figure, save_srds_figures
from .results import LATENCY, REFERENCE, THROUGHPUT, DemoResult, DemoRow, Point

__all__ = ["DEFAULT_STEPS", "DEFAULT_SWEEP", "FULL_STEPS", "FULL_SWEEP", "DemoSampler", "Run",
           "Workload", "machine_name", "measure", "run_demo", "samplers", "sweep_points",
           "table_rows"]

DEFAULT_STEPS = (25, 100)
"""Numbers of steps of the default run (about 2 minutes on a 2-core CPU)."""
FULL_STEPS = (25, 100, 1000)
"""Numbers of steps of ``--full``: the 1000-step runs cost most of the full sweep's time."""
DEFAULT_SWEEP: dict[int, tuple[int, ...]] = {100: (1, 2, 4, 8, 20)}
"""Batch sizes of ``latency_vs_batch.png`` per number of steps; sizes above the demo's batch
are capped at it."""
FULL_SWEEP: dict[int, tuple[int, ...]] = {100: (1, 2, 4, 8, 20), 1000: (1, 2, 4, 20)}
"""The sweep of ``--full`` (fewer sizes at 1000 steps, where every point costs seconds)."""


@dataclass(frozen=True)
class DemoSampler:
    """One sampler the demo compares: a public sampling function with its options.

    Attributes:
        name: the name in the tables and figures.
        function: a sampler with k-diffusion's signature and ``return_info=True``.
        options: the keyword options for ``N`` steps.
        description: how it is configured, for the report.
    """

    name: str
    function: Callable[..., Any]
    options: Callable[[int], dict[str, Any]]
    description: str

    def __call__(self, model: Callable[..., Tensor], x: Tensor, sigmas: Tensor,
                 extra_args: dict[str, Any], disable: bool = True) -> tuple[Tensor, Any]:
        """Sample; returns ``(samples, info)``."""
        return self.function(model, x, sigmas, extra_args=extra_args, disable=disable,
                             return_info=True, **self.options(len(sigmas) - 1))

    @property
    def slug(self) -> str:
        """The name in file names."""
        return self.name.lower().replace(" ", "-")


def samplers(tol: float) -> list[DemoSampler]:
    """The demo's samplers, serial first: serial DDIM, then SRDS, Picard and quasi-Newton Picard
    at their defaults (``blocks`` / ``window`` ``"auto"``: chosen from the model's measured cost
    curve, the serial sampler where nothing is predicted to beat it), with tolerance ``tol``:
    what a newcomer gets."""
    import pint_diffusion

    return [
        DemoSampler(REFERENCE, pint_diffusion.sample_serial, lambda n: {}, "serial DDIM"),
        DemoSampler("SRDS", pint_diffusion.sample_srds,
                    lambda n: {"tol": tol, "store_iterates": True},
                    f"pipelined SRDS, blocks=\"auto\", tol {tol:g}"),
        DemoSampler("Picard", pint_diffusion.sample_picard, lambda n: {"tol": tol},
                    f"sliding-window Picard, window=\"auto\", tol {tol:g}"),
        DemoSampler("quasi-Newton", pint_diffusion.sample_quasi_newton, lambda n: {"tol": tol},
                    f"quasi-Newton Picard, window=\"auto\", tol {tol:g}"),
    ]


def machine_name() -> str:
    """The machine the numbers come from, e.g. ``"AMD EPYC (x86_64, 2 cores), 2 torch
    threads, torch 2.13.0+cpu, CPU"``."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = torch.get_num_threads()
    return (f"{cpu} ({platform.machine()}, {os.cpu_count()} cores), "
            f"{threads} torch thread{'s' if threads > 1 else ''}, torch {torch.__version__}, CPU")


@dataclass(frozen=True)
class Workload:
    """The bundled digits model and the demo's batch: every class ``seeds`` times, fixed
    noise. Sub-batches are the first ``batch`` samples (classes 0, 1, ...)."""

    model: Any
    denoiser: Callable[..., Tensor]
    labels: Tensor
    noise: Tensor

    @classmethod
    def digits(cls, seeds: int) -> Workload:
        """Load the bundled model; ``10 * seeds`` samples."""
        from ..adapters import DiffusersDenoiser
        from ..models import load_digits_model

        model = load_digits_model()
        denoiser = DiffusersDenoiser(model.unet, model.scheduler,
                                     guidance_scale=model.guidance_scale)
        labels = torch.arange(model.num_classes).repeat(seeds)
        noise = torch.randn(len(labels), model.in_channels, model.image_size, model.image_size,
                            generator=torch.Generator().manual_seed(0))
        return cls(model, denoiser, labels, noise)

    @property
    def size(self) -> int:
        """Samples in the full batch."""
        return len(self.labels)

    def sigmas(self, steps: int) -> Tensor:
        return self.denoiser.sigmas(steps)

    def inputs(self, steps: int, batch: int) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``(x, sigmas, extra_args)`` for the first ``batch`` samples."""
        sigmas = self.sigmas(steps)
        x = self.denoiser.to_ve(self.noise[:batch] * self.model.scheduler.init_noise_sigma,
                                sigmas[0])
        labels = self.labels[:batch]
        return x, sigmas, {"class_labels": labels,
                           "uncond_class_labels": torch.full_like(labels, self.model.null_class)}

    def images(self, x: Tensor, steps: int) -> Tensor:
        """Sampler output -> images in [-1, 1]."""
        return self.denoiser.from_ve(x, self.sigmas(steps)[-1])


@dataclass(frozen=True)
class Run:
    """One sampler's result on one batch: median seconds per call, the images, the info."""

    wall_time: float
    images: Tensor
    info: Any


def measure(table: Sequence[DemoSampler], work: Workload, steps: int, batch: int, repeats: int = 1,
            disable: bool = True) -> dict[str, Run]:
    """Every sampler on the first ``batch`` samples, ``repeats`` rounds with the samplers
    interleaved; the wall clock is the median per sampler."""
    x, sigmas, extra = work.inputs(steps, batch)
    walls: dict[str, list[float]] = {s.name: [] for s in table}
    last: dict[str, tuple[Tensor, Any]] = {}
    for _ in range(repeats):
        for sampler in table:
            start = time.perf_counter()
            last[sampler.name] = sampler(work.denoiser, x, sigmas, extra, disable=disable)
            walls[sampler.name].append(time.perf_counter() - start)
    return {name: Run(statistics.median(walls[name]), work.images(out, steps), info)
            for name, (out, info) in last.items()}


def table_rows(regime: str, runs: Mapping[str, Run], steps: int, batch: int,
               metric: Any = None, labels: Tensor | None = None) -> list[DemoRow]:
    """The rows of one regime at one number of steps; quality scored when ``metric`` is
    given."""
    reference = runs[REFERENCE].images
    rows = []
    for name, run in runs.items():
        score = metric.score(run.images, labels) if metric is not None else None
        plan = run.info.plan
        rows.append(DemoRow(
            regime, name, steps, batch, run.info.iterations, run.info.nfe,
            run.info.sequential_nfe, run.wall_time,
            float((run.images - reference).abs().max()),
            None if score is None else score.accuracy,
            None if score is None else score.frechet_distance,
            "-" if plan is None else "serial" if plan.size is None else str(plan.size),
            None if plan is None else plan.predicted_speedup))
    return rows


def sweep_points(table: Sequence[DemoSampler], work: Workload, sweep: Mapping[int, Iterable[int]],
                 known: Iterable[DemoRow], log: Callable[[str], None]) -> list[Point]:
    """Seconds per sample at each ``(steps, batch)`` of ``sweep`` (batch sizes capped at the
    full batch); the tables' rows supply the points they already measured, the others are
    measured once."""
    have = {(r.method, r.steps, r.batch): r.wall_per_sample for r in known}
    points = []
    for steps, batches in sweep.items():
        for batch in sorted({min(b, work.size) for b in batches}):
            missing = [s for s in table if (s.name, steps, batch) not in have]
            if missing:
                log(f"latency vs batch: {steps} steps, {batch} samples per call")
                for name, run in measure(missing, work, steps, batch).items():
                    have[name, steps, batch] = run.wall_time / batch
            points += [Point(s.name, steps, batch, have[s.name, steps, batch]) for s in table]
    return points


def run_demo(out: Path, steps: Sequence[int] = DEFAULT_STEPS, seeds: int = 2,
             tol: float | None = None, disable: bool = False, repeats: int = 3,
             sweep: Mapping[int, Sequence[int]] | None = None) -> DemoResult:
    """Run the demo and write its figures into ``out``.

    Args:
        out: output folder.
        steps: numbers of DDIM steps of both tables (default :data:`DEFAULT_STEPS`).
        seeds: samples per class in the throughput regime (the batch is ``10 * seeds``).
        tol: the parallel samplers' tolerance (default: SRDS's ``DEFAULT_TOL``).
        disable: no progress bars and no progress lines.
        repeats: calls per sampler in the latency regime (the median is reported).
        sweep: batch sizes of ``latency_vs_batch.png`` per number of steps (default
            :data:`DEFAULT_SWEEP`); empty for no figure.

    Returns:
        The rows, the sweep's points and the machine's name.
    """
    from .. import DEFAULT_TOL
    from ..metrics import DigitsMetric

    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an integer >= 1, got {seeds!r}")
    sweep = DEFAULT_SWEEP if sweep is None else sweep
    if any(b < 1 for batches in sweep.values() for b in batches):
        raise ValueError(f"sweep batch sizes must be >= 1, got {dict(sweep)!r}")

    def log(message: str) -> None:
        if not disable:
            print(message, file=sys.stderr, flush=True)

    tol = DEFAULT_TOL if tol is None else tol
    table = samplers(tol)
    work = Workload.digits(seeds)
    metric = DigitsMetric()
    result = DemoResult([], [], machine_name(), repeats)
    for n in steps:
        log(f"latency: {n} steps, one sample per call, {repeats} repeats")
        result.rows += table_rows(LATENCY, measure(table, work, n, 1, repeats), n, 1)
        log(f"throughput: {n} steps, {work.size} samples per call")
        runs = measure(table, work, n, work.size, disable=disable)
        result.rows += table_rows(THROUGHPUT, runs, n, work.size, metric, work.labels)
        result.figures += [save_grid(runs[s.name].images, out / f"samples_{s.slug}_{n}.png",
                                     work.model.num_classes) for s in table]
        result.figures += save_srds_figures(runs, work, n, tol, out)
    result.points = sweep_points(table, work, sweep, result.rows, log)
    if result.points:
        result.figures.append(save_figure(latency_figure(result.points, result.machine),
                                          out / "latency_vs_batch.png"))
    (out / "results.json").write_text(result.to_json())
    return result

