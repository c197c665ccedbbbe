"""The main job: serial DDIM against pipelined SRDS on the bundled digits model.

For each number of steps, samples every class with several seeds serially and with SRDS
from the same noise, prints a table (iterations, model evaluations, sequential
evaluations, wall time, the largest difference from serial, and the sample quality of
both) and writes the sample grids, the refinement figure (the coarse estimate, then each
iteration) and the residual plot into an output folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["DemoRow", "run_demo", "save_grid"]


@dataclass(frozen=True)
class DemoRow:
    """One line of the demo's table."""

    method: str
    steps: int
    iterations: int
    nfe: int
    sequential_nfe: int
    wall_time: float
    max_diff: float
    accuracy: float
    frechet_distance: float

    def cells(self) -> list[str]:
        """The row as table cells."""
        return [self.method, str(self.steps), str(self.iterations), str(self.nfe),
                str(self.sequential_nfe), f"{self.wall_time:.2f}",
                "-" if self.method == "serial" else f"{self.max_diff:.1e}",
                f"{self.accuracy:.3f}", f"{self.frechet_distance:.2f}"]


HEADER = ["method", "steps", "iterations", "nfe", "sequential nfe", "wall (s)",
          "max |SRDS - serial|", "accuracy", "FD"]


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


def run_demo(out: Path, steps: list[int], seeds: int = 3, tol: float | None = None,
             disable: bool = False) -> list[DemoRow]:
    """Run the demo; returns the table's rows and writes the figures into ``out``."""
    from .adapters import DiffusersDenoiser
    from .metrics import DigitsMetric
    from .models import load_digits_model
    from .samplers import DEFAULT_TOL, sample_serial, sample_srds

    tol = DEFAULT_TOL if tol is None else tol
    model = load_digits_model()
    denoiser = DiffusersDenoiser(model.unet, model.scheduler, guidance_scale=model.guidance_scale)
    labels = torch.arange(model.num_classes).repeat(seeds)
    extra = {"class_labels": labels,
             "uncond_class_labels": torch.full_like(labels, model.null_class)}
    noise = torch.randn(len(labels), model.in_channels, model.image_size, model.image_size,
                        generator=torch.Generator().manual_seed(0))
    metric = DigitsMetric()
    rows: list[DemoRow] = []
    for n in steps:
        sigmas = denoiser.sigmas(n)
        x = denoiser.to_ve(noise * model.scheduler.init_noise_sigma, sigmas[0])
        start = time.perf_counter()
        serial_x, serial_info = sample_serial(denoiser, x, sigmas, extra_args=extra,
                                              disable=disable, return_info=True)
        serial_time = time.perf_counter() - start
        start = time.perf_counter()
        srds_x, info = sample_srds(denoiser, x, sigmas, extra_args=extra, tol=tol,
                                   disable=disable, return_info=True, store_iterates=True)
        srds_time = time.perf_counter() - start
        serial_img = denoiser.from_ve(serial_x, sigmas[-1])
        srds_img = denoiser.from_ve(srds_x, sigmas[-1])
        diff = float((srds_img - serial_img).abs().max())
        for name, images, stats, wall in (("serial", serial_img, serial_info, serial_time),
                                          ("SRDS", srds_img, info, srds_time)):
            score = metric.score(images, labels)
            rows.append(DemoRow(name, n, stats.iterations, stats.nfe, stats.sequential_nfe,
                                wall, diff, score.accuracy, score.frechet_distance))
            save_grid(images, out / f"samples_{name.lower()}_{n}.png", model.num_classes)
        iterates = [denoiser.from_ve(it, sigmas[-1]) for it in info.iterates or []]
        save_refinement(iterates, serial_img, out / f"refinement_{n}.png")
        save_residuals(info.residuals, iterates, serial_img, tol, out / f"residuals_{n}.png")
    return rows


def save_refinement(iterates: list[Tensor], serial: Tensor, path: Path, samples: int = 6
                    ) -> Path:
    """The coarse estimate and each SRDS iteration (columns) for a few samples (rows),
    with the serial result last."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [*iterates, serial]
    fig, axes = plt.subplots(samples, len(columns), figsize=(1.3 * len(columns), 1.3 * samples),
                             squeeze=False)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_residuals(residuals: list[float], iterates: list[Tensor], serial: Tensor, tol: float,
                   path: Path) -> Path:
    """Residual (change between iterations) and error against serial, per iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    errors = [float((it - serial).pow(2).mean().sqrt()) for it in iterates]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.semilogy(range(1, len(residuals) + 1), residuals, "o-",
                label="residual (largest RMS change)")
    ax.semilogy(range(len(errors)), [max(e, 1e-12) for e in errors], "s--",
                label="RMS error vs serial")
    ax.axhline(tol, color="gray", lw=0.8, ls=":", label=f"tol = {tol:g}")
    ax.set(xlabel="iteration (0 = coarse pass)", ylabel="data units ([-1, 1])")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_table(rows: list[DemoRow]) -> str:
    """The rows as a markdown table."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)
