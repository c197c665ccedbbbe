"""Shared helpers of the benchmark scripts: machine record, timing, errors, tables, plots,
the digits-model setup and a timing wrapper for denoisers.

Every script fixes the number of torch threads (:func:`setup`), records the machine
(:func:`machine_info`) and writes ``results/<name>.json`` plus ``results/<name>.md``
(:func:`write_results`). Sequential-evaluation counts and errors are deterministic; wall
clock is a median over repeats, measured side by side in one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_RMS = 1e-3
"""The issue's error level: RMS difference from the serial sampler in the data scale [-1, 1]."""


# ----------------------------------------------------------------------------- machine
def arguments(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark script shares: ``--quick`` and ``--threads``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the short mode of `make bench`")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    return parser


def setup(threads: int) -> int:
    """Fix torch's intra-op thread count (recorded with the results) and return it."""
    torch.set_num_threads(threads)
    return threads


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """The machine, torch version and thread count the numbers were measured with."""
    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": "cpu",
        "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def machine_line(info: dict[str, Any]) -> str:
    """One markdown sentence naming the machine."""
    return (f"Machine: {info['cpu']} ({info['machine']}, {info['cpu_count']} cores), "
            f"{info['torch_threads']} torch thread(s), torch {info['torch']}, Python "
            f"{info['python']}, CPU only; load average {info['load_average_at_start']:.1f} at "
            f"the start (the machine is shared, so wall clock is noisy), {info['date']}.")


# ----------------------------------------------------------------------------- timing
def median_time(run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall-clock seconds of ``repeats`` calls of ``run`` and the last result."""
    times, out = [], None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


class TimedDenoiser:
    """Wraps a denoiser, timing every call with ``perf_counter`` (CPU: calls are synchronous).

    On an asynchronous device pass ``synchronize`` (e.g. ``torch.cuda.synchronize``): it is
    called before and after every model call, so that queued work of the caller is not counted
    as model time and the model's own work is.

    Attributes:
        calls: number of calls; rows: state rows evaluated; seconds: time inside the model.
        rows_per_call: the row count of every call.
    """

    def __init__(self, model: Callable[..., Tensor],
                 synchronize: Callable[[], None] | None = None) -> None:
        self.model = model
        self.synchronize = synchronize or (lambda: None)
        self.reset()

    def reset(self) -> None:
        self.calls, self.rows, self.seconds = 0, 0, 0.0
        self.rows_per_call: list[int] = []

    def __call__(self, x: Tensor, sigma: Tensor, **extra: Any) -> Tensor:
        self.synchronize()
        start = time.perf_counter()
        out = self.model(x, sigma, **extra)
        self.synchronize()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        self.rows += len(x)
        self.rows_per_call.append(len(x))
        return out


@dataclass
class ModuleCounter:
    """Counts the forward calls and input rows of a module (e.g. a pipeline's UNet) by hooks.

    Use as a context manager; ``calls`` is the number of batched evaluations (the depth of a
    sampler that calls the module once per round), ``rows`` the total rows.
    """

    module: torch.nn.Module
    calls: int = 0
    rows: int = 0
    _handle: Any = field(default=None, repr=False)

    def __enter__(self) -> ModuleCounter:
        def hook(_module: Any, args: tuple, kwargs: dict) -> None:
            sample = args[0] if args else kwargs["sample"]
            self.calls += 1
            self.rows += len(sample)

        self._handle = self.module.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


# ----------------------------------------------------------------------------- errors
def errors(out: Tensor, reference: Tensor) -> dict[str, float]:
    """Max and RMS absolute difference."""
    diff = (out.double() - reference.double())
    return {"max_error": diff.abs().max().item(), "rms_error": diff.pow(2).mean().sqrt().item()}


def smallest_depth(rows: Iterable[dict[str, Any]], threshold: float = TARGET_RMS,
                   key: str = "rms_error") -> dict[str, Any] | None:
    """The row with the fewest sequential evaluations whose error is at most ``threshold``."""
    good = [r for r in rows if r[key] <= threshold]
    return min(good, key=lambda r: (r["sequential_nfe"], r[key])) if good else None


# ----------------------------------------------------------------------------- output
Column = tuple[str, str | Callable[[dict[str, Any]], Any], str]


def _cell(row: dict[str, Any], key: str | Callable[[dict[str, Any]], Any], fmt: str) -> str:
    value = key(row) if callable(key) else row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt) if fmt else str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A markdown table; each column is (header, key or function of the row, format spec)."""
    head = "| " + " | ".join(c[0] for c in columns) + " |"
    rule = "|" + "|".join("---" if not c[2] or c[2] == "s" else "---:" for c in columns) + "|"
    body = ["| " + " | ".join(_cell(r, k, f) for _, k, f in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def write_results(name: str, payload: dict[str, Any], markdown: str,
                  out: Path = RESULTS) -> None:
    """Write ``<out>/<name>.json`` and ``<out>/<name>.md``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1, default=_jsonable) + "\n")
    (out / f"{name}.md").write_text(markdown.rstrip() + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def load_results(name: str, out: Path = RESULTS) -> dict[str, Any] | None:
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def frontier_plot(path: Path, panels: dict[str, dict[str, list[tuple[float, float]]]],
                  serial_depth: dict[str, float], title: str, floor: float = 1e-8) -> None:
    """Log-log error-versus-sequential-evaluations plot, one panel per key of ``panels``.

    ``panels[panel][series]`` is a list of (sequential_nfe, rms_error) points; errors below
    ``floor`` (exact results) are drawn at ``floor``. A vertical line marks the serial depth
    and a horizontal one the target error :data:`TARGET_RMS`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({name for series in panels.values() for name in series})
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}  # same colour in every panel
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 4.4), squeeze=False)
    for ax, (panel, series) in zip(axes[0], panels.items(), strict=True):
        for label, points in sorted(series.items()):
            points = sorted(points)
            if not points:
                continue
            xs = [p[0] for p in points]
            ys = [max(p[1], floor) for p in points]
            ax.plot(xs, ys, marker="o", label=label, markersize=4, color=colours[label],
                    linestyle="--" if "ideal" in label else "-")
        ax.axvline(serial_depth[panel], color="k", linestyle=":", label="serial depth")
        ax.axhline(TARGET_RMS, color="grey", linestyle="--", linewidth=0.8,
                   label=f"RMS {TARGET_RMS:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sequential model evaluations")
        ax.set_ylabel("RMS error vs serial")
        ax.set_title(panel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- digits
@dataclass
class Digits:
    """The bundled digits model as a k-diffusion denoiser, with a class-balanced batch."""

    denoiser: Any  # pint_diffusion.DiffusersDenoiser
    labels: Tensor
    extra_args: dict[str, Tensor]
    noise: Tensor  # VP latents, as a diffusers pipeline would draw them

    def sigmas(self, steps: int) -> Tensor:
        return self.denoiser.sigmas(steps)

    def x(self, sigmas: Tensor) -> Tensor:
        """The initial VE state for ``sigmas``."""
        return self.denoiser.to_ve(self.noise, sigmas[0])

    def data(self, x: Tensor, sigmas: Tensor) -> Tensor:
        """The samples in the data scale [-1, 1] (``from_ve`` at the last sigma)."""
        return self.denoiser.from_ve(x, sigmas[-1])


def digits(per_class: int, seed: int = 0, classes: int = 10) -> Digits:
    """``per_class`` samples of each of the first ``classes`` digits, fixed noise."""
    from pint_diffusion import DiffusersDenoiser
    from pint_diffusion.models import load_digits_model

    model = load_digits_model()
    denoiser = DiffusersDenoiser(model.unet, model.scheduler, guidance_scale=model.guidance_scale)
    labels = torch.arange(classes).repeat(per_class)
    size = model.image_size
    noise = torch.randn(len(labels), model.in_channels, size, size,
                        generator=torch.Generator().manual_seed(seed))
    extra = {"class_labels": labels,
             "uncond_class_labels": torch.full_like(labels, model.null_class)}
    return Digits(denoiser, labels, extra, noise)


def default_blocks(steps: int) -> int:
    """SRDS's default block count, ``round(2 sqrt(N))`` (as in ``sample_srds``)."""
    return min(steps, max(1, round(2 * math.sqrt(steps))))
