"""The ``pint-diffusion`` command: ``demo`` and ``sample``.

``pint-diffusion demo`` runs the main job on the bundled digits model (serial DDIM against
the parallel samplers, for one sample's latency and for a batch's throughput, with the tables
and figures); ``pint-diffusion sample`` draws
samples from the bundled model (by class) or from a local diffusers Stable Diffusion
folder (by prompt, loaded with ``local_files_only=True``), serially, with SRDS or with
Picard iterations. Every subcommand has ``--help``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> None:
    from .demo import format_tables, run_demo, summary

    result = run_demo(args.out, args.steps, seeds=args.seeds, tol=args.tol, disable=args.quiet,
                      repeats=args.repeats, sweep=dict(args.sweep))
    print(format_tables(result))
    from .metrics import DigitsMetric

    reference = DigitsMetric().reference_frechet_distance(num_samples=10 * args.seeds)
    print(f"\nFD of real held-out digits against real training digits at the same sample "
          f"count: {reference:.2f} (the metric's own noise floor)")
    print(f"\n{summary(result)}")
    print(f"\nfigures in {args.out}/: samples_*.png, refinement_*.png, residuals_*.png"
          + (", latency_vs_batch.png" if result.points else ""))


def _sweep_entry(text: str) -> tuple[int, list[int]]:
    """``"100:1,2,4"`` -> ``(100, [1, 2, 4])``."""
    try:
        steps, batches = text.split(":")
        entry = int(steps), [int(b) for b in batches.split(",")]
    except ValueError:
        entry = (0, [])
    if entry[0] < 1 or not entry[1] or min(entry[1]) < 1:
        raise argparse.ArgumentTypeError(
            f"--sweep entries must be STEPS:B1,B2,... with positive integers, got {text!r}")
    return entry


def _sampler(args: argparse.Namespace) -> Callable[..., Any]:
    """The sampler ``--sampler`` names, with its options bound."""
    from functools import partial

    from . import Heun, sample_picard, sample_serial, sample_srds

    solver = Heun() if args.solver == "heun" else None
    if args.sampler == "serial":
        return partial(sample_serial, solver=solver)
    if args.sampler == "picard":
        return partial(sample_picard, solver=solver, tol=args.tol,
                       window=args.blocks)  # --blocks doubles as Picard's window
    return partial(sample_srds, solver=solver, tol=args.tol, blocks=args.blocks)


def _sample(args: argparse.Namespace) -> None:
    if args.model == "bundled":
        _sample_bundled(args)
    else:
        _sample_pipeline(args)


def _sample_bundled(args: argparse.Namespace) -> None:
    from .adapters import DiffusersDenoiser
    from .demo import save_grid
    from .models import load_digits_model

    if args.prompt is not None:
        raise SystemExit("--prompt needs --model PATH (a Stable Diffusion folder); the bundled "
                         "model is conditioned on --class")
    model = load_digits_model()
    if not 0 <= args.class_label < model.num_classes:
        raise SystemExit(f"--class must be in 0..{model.num_classes - 1}, got {args.class_label}")
    guidance = model.guidance_scale if args.guidance is None else args.guidance
    denoiser = DiffusersDenoiser(model.unet, model.scheduler, guidance_scale=guidance)
    labels = torch.full((args.num,), args.class_label)
    sigmas = denoiser.sigmas(args.steps)
    noise = torch.randn(args.num, model.in_channels, model.image_size, model.image_size,
                        generator=torch.Generator().manual_seed(args.seed))
    x = denoiser.to_ve(noise, sigmas[0])
    extra = {"class_labels": labels, "uncond_class_labels": torch.full_like(labels,
                                                                             model.null_class)}
    samples, info = _sampler(args)(denoiser, x, sigmas, extra_args=extra, disable=args.quiet,
                                   return_info=True)
    images = denoiser.from_ve(samples, sigmas[-1])
    path = save_grid(images, args.out, columns=min(args.num, 8))
    print(f"{args.sampler}: {info.iterations} iterations, nfe {info.nfe}, sequential nfe "
          f"{info.sequential_nfe}, {info.wall_time:.2f} s -> {path}")


def _sample_pipeline(args: argparse.Namespace) -> None:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from .pipelines import StableDiffusionSRDSPipeline

    if args.prompt is None:
        raise SystemExit("--prompt is required with --model PATH")
    if args.sampler == "picard":
        raise SystemExit("--sampler picard is available for the bundled model; for Stable "
                         "Diffusion use diffusers' StableDiffusionParadigmsPipeline")
    pipe = StableDiffusionPipeline.from_pretrained(args.model, local_files_only=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    call = dict(prompt=args.prompt, num_inference_steps=args.steps,
                guidance_scale=7.5 if args.guidance is None else args.guidance,
                generator=torch.Generator().manual_seed(args.seed))
    if args.sampler == "srds":
        srds = StableDiffusionSRDSPipeline.from_pipe(pipe)
        out = srds(**call, srds_blocks=args.blocks, srds_tol=args.tol)
        info = out.srds
        print(f"SRDS: {info.iterations} iterations, nfe {info.nfe}, sequential nfe "
              f"{info.sequential_nfe}, {info.wall_time:.2f} s")
    else:
        out = pipe(**call)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out.images[0].save(args.out)
    print(f"wrote {args.out}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pint-diffusion``."""
    from .demo import DEFAULT_SWEEP
    from .srds import DEFAULT_TOL

    parser = argparse.ArgumentParser(
        prog="pint-diffusion",
        description="Self-Refining Diffusion Samplers (SRDS): parallel-in-time sampling.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="serial vs parallel samplers on the bundled digits model: latency and "
                     "throughput",
        description="Sample with serial DDIM, SRDS and Picard iterations on the bundled digits "
                    "model, one sample per call (latency) and every class with several seeds "
                    "at once (throughput); print both tables and where each regime wins, and "
                    "write sample grids, SRDS's refinement and residual figures and "
                    "latency_vs_batch.png.")
    demo.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder")
    demo.add_argument("--steps", type=int, nargs="+", default=[25, 100, 1000],
                      help="numbers of DDIM steps (default: 25 100 1000)")
    demo.add_argument("--seeds", type=int, default=3,
                      help="samples per class in the throughput batch")
    demo.add_argument("--tol", type=float, default=DEFAULT_TOL,
                      help="the parallel samplers' tolerance")
    demo.add_argument("--repeats", type=int, default=3,
                      help="calls per sampler for the one-sample latency (median; default 3)")
    demo.add_argument("--sweep", type=_sweep_entry, nargs="*",
                      default=[(n, list(b)) for n, b in DEFAULT_SWEEP.items()],
                      metavar="STEPS:B1,B2,...",
                      help="batch sizes of latency_vs_batch.png per number of steps (default: "
                           + " ".join(f"{n}:{','.join(map(str, b))}"
                                      for n, b in DEFAULT_SWEEP.items())
                           + "; sizes above the batch are capped at it; none: no figure)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars or lines")
    demo.set_defaults(run=_demo)

    sample = commands.add_parser(
        "sample", help="draw samples with a chosen sampler",
        description="Draw samples from the bundled digits model (by --class) or from a local "
                    "Stable Diffusion folder (--model PATH, by --prompt).")
    sample.add_argument("--model", default="bundled",
                        help="'bundled' (default) or a local diffusers Stable Diffusion folder")
    sample.add_argument("--class", dest="class_label", type=int, default=0,
                        help="digit class for the bundled model")
    sample.add_argument("--prompt", help="text prompt for a Stable Diffusion folder")
    sample.add_argument("--num", type=int, default=8, help="samples (bundled model)")
    sample.add_argument("--steps", type=int, default=100, help="DDIM steps")
    sample.add_argument("--sampler", choices=["serial", "srds", "picard"], default="srds")
    sample.add_argument("--solver", choices=["euler", "heun"], default="euler",
                        help="step rule (euler = DDIM)")
    sample.add_argument("--blocks", type=int, default=None,
                        help="SRDS blocks (Picard: window); default 2 sqrt(steps) (Picard: all)")
    sample.add_argument("--tol", type=float, default=DEFAULT_TOL, help="tolerance")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance scale (default: the model's)")
    sample.add_argument("--out", type=Path, default=Path("sample.png"), help="PNG to write")
    sample.add_argument("--quiet", action="store_true", help="no progress bars")
    sample.set_defaults(run=_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pint-diffusion`` console script."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
