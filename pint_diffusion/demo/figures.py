"""Figures: SRDS's refinement and residuals, and wall clock per sample against batch size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from ..images import to_uint8
from .results import REFERENCE, Point

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .measure import Run, Workload

__all__ = ["latency_figure", "residual_figure", "save_figure", "save_refinement",
           "save_srds_figures"]


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
    """SRDS's refinement figure and residual plot, from its throughput run (none where
    ``blocks="auto"`` ran the serial sampler instead)."""
    info, serial = runs["SRDS"].info, runs[REFERENCE].images
    if info.plan is not None and info.plan.size is None:
        return []
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
