"""The main job: what parallel-in-time sampling buys, on the bundled digits model.

Every sampler of :func:`samplers` (serial DDIM, pipelined SRDS, sliding-window Picard, and
the quasi-Newton sampler where the package has one) samples the same noise in two regimes:

- **latency**: one sample per call, the wall clock of that call (median of a few repeats,
  the samplers interleaved so that they see the same machine load). This is what the
  parallel samplers exist for: they trade more model evaluations for fewer sequential ones.
- **throughput**: every class with several seeds in one batch, wall clock per sample. Serial
  sampling batches the samples instead, and the parallel samplers' extra evaluations cost
  real time wherever a model call's cost grows with its rows (a small CPU); where a batched
  call costs about as much as one sample's (a GPU, up to its capacity) they come for free.

:func:`run_demo` returns the rows of both tables (:class:`DemoRow`) and the points of the
latency-against-batch sweep (:class:`Point`) as a :class:`DemoResult`, and writes into the
output folder ``results.json`` (:meth:`DemoResult.to_json`), the sample grids, SRDS's
refinement figure and residual plot, and ``latency_vs_batch.png`` (wall clock per sample
against samples per call: where the curves cross answers "when should I sample in
parallel"). :func:`format_tables` and :func:`summary` turn the result into the printed
report.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DEFAULT_SWEEP",
    "DemoResult",
    "DemoRow",
    "DemoSampler",
    "Point",
    "format_tables",
    "machine_name",
    "run_demo",
    "samplers",
    "save_grid",
    "summary",
]

LATENCY = "latency"
THROUGHPUT = "throughput"
REFERENCE = "serial"
"""The sampler every other one is compared with (its rows' ``max_diff`` is 0)."""

DEFAULT_SWEEP: dict[int, tuple[int, ...]] = {100: (1, 2, 4, 8, 20), 1000: (1, 2, 4, 20)}
"""Batch sizes of ``latency_vs_batch.png`` per number of steps (fewer at 1000 steps, where
every point costs seconds); sizes above the demo's batch are capped at it."""


# ----------------------------------------------------------------------------- samplers
def default_window(n_steps: int) -> int:
    """The Picard-type samplers' window in the demo: ``round(2 sqrt N)`` steps, SRDS's default
    block count, so that they all iterate on the same number of points per sample (a full
    window of 1000 steps would cost 1000 model rows per sample per iteration)."""
    return min(n_steps, max(1, round(2 * math.sqrt(n_steps))))


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
    """The demo's samplers, serial first: serial DDIM, SRDS at its defaults, Picard and
    quasi-Newton Picard, both with a window of :func:`default_window` steps; the parallel ones
    with tolerance ``tol``."""
    import pint_diffusion

    return [
        DemoSampler(REFERENCE, pint_diffusion.sample_serial, lambda n: {}, "serial DDIM"),
        DemoSampler("SRDS", pint_diffusion.sample_srds,
                lambda n: {"tol": tol, "store_iterates": True},
                f"pipelined SRDS, round(2 sqrt N) blocks, tol {tol:g}"),
        DemoSampler("Picard", pint_diffusion.sample_picard,
                lambda n: {"tol": tol, "window": default_window(n)},
                f"sliding-window Picard, window round(2 sqrt N), tol {tol:g}"),
        DemoSampler("quasi-Newton", pint_diffusion.sample_quasi_newton,
                lambda n: {"tol": tol, "window": default_window(n)},
                f"quasi-Newton Picard, window round(2 sqrt N), tol {tol:g}"),
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


# ----------------------------------------------------------------------------- measuring
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
        from .adapters import DiffusersDenoiser
        from .models import load_digits_model

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


@dataclass(frozen=True)
class DemoRow:
    """One line of a demo table: one sampler, one number of steps, one regime.

    ``nfe`` counts the call's denoiser evaluations (all samples), ``sequential_nfe`` its
    depth; ``wall_time`` is seconds per call (the median over repeats in the latency
    regime); ``max_diff`` the largest pixel difference from serial on the same samples;
    ``accuracy`` and ``frechet_distance`` (throughput regime only) the digits metric.
    """

    regime: str
    method: str
    steps: int
    batch: int
    iterations: int
    nfe: int
    sequential_nfe: int
    wall_time: float
    max_diff: float
    accuracy: float | None = None
    frechet_distance: float | None = None

    @property
    def wall_per_sample(self) -> float:
        """Seconds per sample."""
        return self.wall_time / self.batch

    def cells(self, serial_wall_per_sample: float) -> list[str]:
        """The row as table cells, with its speed relative to serial's."""
        return [self.method, str(self.steps), str(self.iterations), str(self.sequential_nfe),
                f"{self.nfe / self.batch:.0f}", f"{self.wall_per_sample:.3f}",
                f"{serial_wall_per_sample / self.wall_per_sample:.2f}x",
                "-" if self.method == REFERENCE else f"{self.max_diff:.1e}",
                "-" if self.accuracy is None else f"{self.accuracy:.3f}",
                "-" if self.frechet_distance is None else f"{self.frechet_distance:.2f}"]


HEADER = ["method", "steps", "iterations", "depth", "nfe per sample", "wall per sample (s)",
          "speed vs serial", "max |x - serial|", "accuracy", "FD"]


@dataclass(frozen=True)
class Point:
    """One point of ``latency_vs_batch.png``: seconds per sample at a batch size."""

    method: str
    steps: int
    batch: int
    wall_per_sample: float


@dataclass
class DemoResult:
    """What :func:`run_demo` measured: both tables' rows and the sweep's points."""

    rows: list[DemoRow]
    points: list[Point]
    machine: str
    latency_repeats: int
    figures: list[Path] = field(default_factory=list)

    def to_json(self) -> str:
        """The measurements (not the figures' paths) as JSON."""
        return json.dumps({"machine": self.machine, "latency_repeats": self.latency_repeats,
                           "rows": [asdict(r) for r in self.rows],
                           "points": [asdict(p) for p in self.points]}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> DemoResult:
        """Read back :meth:`to_json`'s output (e.g. to redraw the figure)."""
        data = json.loads(text)
        return cls([DemoRow(**r) for r in data["rows"]], [Point(**p) for p in data["points"]],
                   data["machine"], data["latency_repeats"])


def table_rows(regime: str, runs: Mapping[str, Run], steps: int, batch: int,
               metric: Any = None, labels: Tensor | None = None) -> list[DemoRow]:
    """The rows of one regime at one number of steps; quality scored when ``metric`` is
    given."""
    reference = runs[REFERENCE].images
    rows = []
    for name, run in runs.items():
        score = metric.score(run.images, labels) if metric is not None else None
        rows.append(DemoRow(
            regime, name, steps, batch, run.info.iterations, run.info.nfe,
            run.info.sequential_nfe, run.wall_time,
            float((run.images - reference).abs().max()),
            None if score is None else score.accuracy,
            None if score is None else score.frechet_distance))
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


def run_demo(out: Path, steps: Sequence[int], seeds: int = 2, tol: float | None = None,
             disable: bool = False, repeats: int = 3,
             sweep: Mapping[int, Sequence[int]] | None = None) -> DemoResult:
    """Run the demo and write its figures into ``out``.

    Args:
        out: output folder.
        steps: numbers of DDIM steps of both tables.
        seeds: samples per class in the throughput regime (the batch is ``10 * seeds``).
        tol: the parallel samplers' tolerance (default: SRDS's ``DEFAULT_TOL``).
        disable: no progress bars and no progress lines.
        repeats: calls per sampler in the latency regime (the median is reported).
        sweep: batch sizes of ``latency_vs_batch.png`` per number of steps (default
            :data:`DEFAULT_SWEEP`); empty for no figure.

    Returns:
        The rows, the sweep's points and the machine's name.
    """
    from . import DEFAULT_TOL
    from .metrics import DigitsMetric

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


# ----------------------------------------------------------------------------- report
def _rows(rows: Iterable[DemoRow], regime: str) -> list[DemoRow]:
    return [r for r in rows if r.regime == regime]


def _serial_wall(rows: Sequence[DemoRow], row: DemoRow) -> float:
    return next(r.wall_per_sample for r in rows
                if r.method == REFERENCE and r.regime == row.regime and r.steps == row.steps)


def format_table(rows: Sequence[DemoRow]) -> str:
    """Rows (one regime) as a markdown table."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r.cells(_serial_wall(rows, r))) + " |" for r in rows]
    return "\n".join(lines)


def format_tables(result: DemoResult) -> str:
    """Both tables, each under a heading saying what it measures."""
    latency, throughput = _rows(result.rows, LATENCY), _rows(result.rows, THROUGHPUT)
    parts = []
    if latency:
        parts += [f"Latency: one sample per call, wall clock the median of "
                  f"{result.latency_repeats} calls ({result.machine})", "",
                  format_table(latency)]
    if throughput:
        parts += ["", f"Throughput: {throughput[0].batch} samples per call (every class), "
                      "wall clock per sample; quality of the batch", "",
                  format_table(throughput)]
    return "\n".join(parts)


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _winners(rows: Sequence[DemoRow]) -> str:
    """'SRDS wins at 100 and 1000 steps (1.8x and 2.1x serial's speed), serial at 25 steps'."""
    by_method: dict[str, list[DemoRow]] = {}
    for n in dict.fromkeys(r.steps for r in rows):
        best = min((r for r in rows if r.steps == n), key=lambda r: r.wall_per_sample)
        by_method.setdefault(best.method, []).append(best)
    parts = []
    for i, (method, best) in enumerate(by_method.items()):
        text = f"{method} {'wins ' if i == 0 else ''}at {_join([str(r.steps) for r in best])} steps"
        if method != REFERENCE:
            speeds = [f"{_serial_wall(rows, r) / r.wall_per_sample:.1f}x" for r in best]
            text += f" ({_join(speeds)} serial's speed)"
        parts.append(text)
    return ", ".join(parts)


def crossovers(points: Sequence[Point]) -> dict[tuple[str, int], int]:
    """Per (parallel sampler, steps): the largest measured batch size up to which it takes
    less wall clock per sample than serial at every measured size; 0 when not even for one
    sample."""
    serial = {(p.steps, p.batch): p.wall_per_sample for p in points if p.method == REFERENCE}
    result: dict[tuple[str, int], int] = {}
    for key in dict.fromkeys((p.method, p.steps) for p in points if p.method != REFERENCE):
        limit = 0
        for p in sorted((p for p in points if (p.method, p.steps) == key), key=lambda p: p.batch):
            if p.wall_per_sample >= serial[p.steps, p.batch]:
                break
            limit = p.batch
        result[key] = limit
    return result


def summary(result: DemoResult) -> str:
    """Where each regime wins on this machine, from the measured numbers: one sentence, and
    one on the crossover of ``latency_vs_batch.png`` when there is a sweep."""
    latency, throughput = _rows(result.rows, LATENCY), _rows(result.rows, THROUGHPUT)
    clauses = []
    if latency:
        clauses.append(f"for latency (one sample per call) {_winners(latency)}")
    if throughput:
        clauses.append(f"for throughput ({throughput[0].batch} samples per call) "
                       f"{_winners(throughput)}")
    text = f"On this machine ({result.machine}), " + "; ".join(clauses) + "."
    limits = crossovers(result.points)
    if limits:
        by_steps: dict[int, list[str]] = {}
        for (method, steps), batch in limits.items():
            by_steps.setdefault(steps, []).append(
                f"{method} never" if batch == 0 else
                f"{method} only for one sample" if batch == 1 else
                f"{method} up to {batch} samples per call")
        text += (" Per sample, the parallel samplers beat serial (latency_vs_batch.png): "
                 + "; ".join(f"at {n} steps {_join(v)}" for n, v in by_steps.items()) + ".")
    return text


# ----------------------------------------------------------------------------- figures
def to_uint8(images: Tensor, upscale: int = 1) -> np.ndarray:
    """Images in [-1, 1], shape (B, C, H, W) -> uint8 arrays (B, H*upscale, W*upscale)."""
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0]
    return pixels.repeat_interleave(upscale, 1).repeat_interleave(upscale, 2).numpy()


def save_grid(images: Tensor, path: Path, columns: int, upscale: int = 6, pad: int = 2) -> Path:
    """Write ``images`` in [-1, 1] (B, 1, H, W) as a PNG grid, ``columns`` per row."""
    from PIL import Image

    tiles = to_uint8(images, upscale)
    rows = -(-len(tiles) // columns)
    h, w = tiles.shape[1:]
    canvas = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h,
               pad + c * (w + pad):pad + c * (w + pad) + w] = tile
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Figure, path: Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)
    return path


def save_srds_figures(runs: Mapping[str, Run], work: Workload, steps: int, tol: float,
                      out: Path) -> list[Path]:
    """SRDS's refinement figure and residual plot, from its throughput run."""
    info, serial = runs["SRDS"].info, runs[REFERENCE].images
    iterates = [work.images(it, steps) for it in info.iterates or []]
    return [save_refinement(iterates, serial, out / f"refinement_{steps}.png"),
            save_figure(residual_figure(info.residuals, iterates, serial, tol),
                        out / f"residuals_{steps}.png")]


def save_refinement(iterates: list[Tensor], serial: Tensor, path: Path, samples: int = 6
                    ) -> Path:
    """The coarse estimate and each SRDS iteration (columns) for a few samples (rows),
    with the serial result last."""
    columns = [*iterates, serial]
    samples = min(samples, len(serial))
    fig, axes = _pyplot().subplots(samples, len(columns),
                                   figsize=(1.3 * len(columns), 1.3 * samples), squeeze=False)
    for j, images in enumerate(columns):
        title = "coarse" if j == 0 else ("serial" if j == len(columns) - 1 else f"iter {j}")
        for i in range(samples):
            ax = axes[i][j]
            ax.imshow(to_uint8(images[i:i + 1])[0], cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
    fig.suptitle("SRDS refinement: coarse pass, then each iteration", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def residual_figure(residuals: list[float], iterates: list[Tensor], serial: Tensor,
                    tol: float) -> Figure:
    """Residual (change between iterations) and error against serial, per iteration, on
    integer iteration ticks."""
    from matplotlib.ticker import MaxNLocator

    errors = [float((it - serial).pow(2).mean().sqrt()) for it in iterates]
    fig, ax = _pyplot().subplots(figsize=(5, 3.5))
    ax.semilogy(range(1, len(residuals) + 1), residuals, "o-",
                label="residual (largest RMS change)")
    ax.semilogy(range(len(errors)), [max(e, 1e-12) for e in errors], "s--",
                label="RMS error vs serial")
    ax.axhline(tol, color="gray", lw=0.8, ls=":", label=f"tol = {tol:g}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="iteration (0 = coarse pass)", ylabel="data units ([-1, 1])")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def latency_figure(points: Sequence[Point], machine: str) -> Figure:
    """Wall clock per sample against samples per call, one panel per number of steps, one
    line per sampler, log-log."""
    from matplotlib.ticker import (
        FixedLocator,
        FuncFormatter,
        LogLocator,
        NullFormatter,
        NullLocator,
        ScalarFormatter,
    )

    steps = list(dict.fromkeys(p.steps for p in points))
    methods = list(dict.fromkeys(p.method for p in points))
    fig, axes = _pyplot().subplots(1, len(steps), figsize=(5.2 * len(steps), 4.2),
                                   squeeze=False)
    for ax, n in zip(axes[0], steps, strict=True):
        for k, method in enumerate(methods):
            mine = sorted((p for p in points if p.steps == n and p.method == method),
                          key=lambda p: p.batch)
            ax.loglog([p.batch for p in mine], [p.wall_per_sample for p in mine],
                      "o-" if method == REFERENCE else ("s-", "^-", "D-")[k % 3],
                      color="black" if method == REFERENCE else f"C{k}", label=method)
        batches = sorted({p.batch for p in points if p.steps == n})
        ax.xaxis.set_major_locator(FixedLocator(batches))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", lw=0.4, alpha=0.5)
        ax.set(title=f"{n} DDIM steps", xlabel="samples per call (batch size)",
               ylabel="wall clock per sample (s)")
        ax.legend(fontsize=8)
    fig.suptitle("Parallel sampling wins where its curve is below serial's\n" + machine,
                 fontsize=10)
    fig.tight_layout()
    return fig
