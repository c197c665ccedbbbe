"""The ``pint-diffusion`` command: ``demo`` and ``sample``.

``pint-diffusion demo`` runs the main job on the bundled digits model (serial DDIM against
the parallel samplers, for one sample's latency and for a batch's throughput, with the tables
and figures); ``pint-diffusion sample`` draws
samples from the bundled model (by class) or from a local diffusers Stable Diffusion
folder (by prompt, loaded with ``local_files_only=True``), serially, with SRDS or with
Picard iterations. Every subcommand has ``--help``.

Every argument is checked before any model is loaded or any sample drawn, so a typo costs
no sampling time: counts (``--steps``, ``--num``, ``--blocks``, ``--seeds``) must be
positive integers, ``--tol`` a finite number >= 0 and ``--guidance`` a finite number;
``--blocks`` may not exceed ``--steps``, nor ``--steps`` the model's training timesteps;
``--blocks`` and ``--tol`` are refused with the serial sampler, ``--class`` and ``--solver``
with a Stable Diffusion folder (they act on the bundled model only); ``--class`` must be one
of the bundled model's classes; ``--model PATH`` must be a diffusers
folder; ``--out`` must be an image file name (not a folder) with an extension PIL can write,
in a folder that exists or can be created and is writable (``demo --out``: a folder). A bad
argument ends the command with argparse's usage message and exit status 2, never a
traceback. Images are written atomically (:func:`pint_diffusion.files.atomic_path`): a
failed write leaves the previous file intact. ``--quiet`` silences every progress bar and
the libraries' warnings, for the bundled model and for ``--model PATH`` alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = ["build_parser", "finite_float", "main", "non_negative_float", "non_negative_int",
           "positive_int"]

#: ``--num`` when it is not given: a grid of 8 digits, or 1 Stable Diffusion image.
DEFAULT_NUM = {"bundled": 8, "pipeline": 1}


# ----------------------------------------------------------------------------------------
# argument types (argparse turns their ArgumentTypeError into "argument --x: <message>")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (>= 1), got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _seed(text: str) -> int:
    """argparse type: an integer ``torch.Generator.manual_seed`` accepts."""
    value = _integer(text)
    if not -(2**63) <= value < 2**64:
        raise argparse.ArgumentTypeError(f"expected an integer in [-2**63, 2**64), got {value}")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number (``nan``, ``inf`` refused)."""
    return _number(text)


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


# ----------------------------------------------------------------------------------------
# checks that need several arguments or a file (all before any model work)


def _check_demo(args: argparse.Namespace) -> list[str]:
    from .files import check_output_folder

    _demo_defaults(args)
    limit = _train_timesteps_bundled()
    errors = [f"argument --steps: {n} exceeds the model's {limit} training timesteps"
               for n in args.steps if n > limit]
    if not errors:
        try:
            check_output_folder(args.out)
        except ValueError as exc:
            errors.append(f"argument --out: {exc}")
    return errors


def _train_timesteps_bundled() -> int:
    from .models import load_metadata

    return int(load_metadata()["scheduler_config"]["num_train_timesteps"])


def _pipeline_timesteps(folder: Path) -> int | None:
    """``num_train_timesteps`` of a diffusers folder's scheduler, if its config says."""
    try:
        config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        value = config["num_train_timesteps"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) and value >= 1 else None


def _check_sample(args: argparse.Namespace) -> list[str]:
    from .files import check_image_path

    bundled = args.model == "bundled"
    if args.num is None:
        args.num = DEFAULT_NUM["bundled" if bundled else "pipeline"]
    errors = []
    if bundled:
        from .models import load_metadata

        metadata = load_metadata()
        embeds = metadata["unet_config"]["num_class_embeds"]
        num_classes = metadata.get("conditioning", {}).get("num_classes", embeds - 1)
        limit: int | None = metadata["scheduler_config"]["num_train_timesteps"]
        if args.class_label is None:
            args.class_label = 0
        if args.prompt is not None:
            errors.append("--prompt needs --model PATH (a Stable Diffusion folder); the bundled "
                          "model is conditioned on --class")
        if args.class_label >= num_classes:
            errors.append(f"argument --class: must be in 0..{num_classes - 1}, got "
                          f"{args.class_label}")
    else:
        folder = Path(args.model)
        limit = None
        if not (folder / "model_index.json").is_file():
            errors.append(f"argument --model: {args.model!r} is neither 'bundled' nor a "
                          "diffusers pipeline folder (no model_index.json in it)")
        else:
            limit = _pipeline_timesteps(folder)
        if args.prompt is None:
            errors.append("--prompt is required with --model PATH")
        if args.class_label is not None:
            errors.append("argument --class: only for the bundled model; a Stable Diffusion "
                          "folder is conditioned on --prompt")
        if args.solver is not None:
            errors.append("argument --solver: only for the bundled model; a Stable Diffusion "
                          "folder steps with its scheduler (choose one with --scheduler)")
        from .schedulers import TESTED_SCHEDULERS

        if args.scheduler is not None and args.scheduler not in TESTED_SCHEDULERS:
            errors.append(f"argument --scheduler: {args.scheduler!r} is not one of the "
                          f"supported schedulers: {', '.join(TESTED_SCHEDULERS)}")
    if limit is not None and args.steps > limit:
        errors.append(f"argument --steps: {args.steps} exceeds the model's {limit} training "
                      "timesteps")
    if args.sampler == "serial" and args.tol is not None:
        errors.append("argument --tol: the serial sampler has no tolerance")
    if args.tol is None:
        from .samplers import DEFAULT_TOL

        args.tol = DEFAULT_TOL
    if args.blocks is not None and args.sampler == "serial":
        errors.append("argument --blocks: the serial sampler has no blocks or window")
    elif args.blocks is not None and args.blocks > args.steps:
        what = "blocks" if args.sampler == "srds" else "window"
        errors.append(f"argument --blocks: the {what} ({args.blocks}) cannot exceed --steps "
                      f"({args.steps})")
    if not errors:  # last: it may create the output folder
        try:
            check_image_path(args.out, mode="L" if bundled else "RGB")
        except ValueError as exc:
            errors.append(f"argument --out: {exc}")
    return errors


# ----------------------------------------------------------------------------------------
# the commands


def _demo_defaults(args: argparse.Namespace) -> None:
    """``--steps`` and ``--sweep`` not given: the default run's, or ``--full``'s."""
    from .demo import DEFAULT_STEPS, DEFAULT_SWEEP, FULL_STEPS, FULL_SWEEP

    if args.steps is None:
        args.steps = list(FULL_STEPS if args.full else DEFAULT_STEPS)
    if args.sweep is None:
        args.sweep = [(n, list(b)) for n, b in (FULL_SWEEP if args.full else DEFAULT_SWEEP).items()]


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
    print(f"\nfigures in {args.out}/: " + ", ".join(path.name for path in result.figures))


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


def _sampler(args: argparse.Namespace) -> Any:
    """The sampler object ``--sampler`` names, with its options (``--blocks`` is SRDS's block
    count, or the window of Picard and quasi-Newton; not given: ``"auto"``, the samplers'
    default). Without ``--sampler``: quasi-Newton for the bundled model, the pipeline's default
    for its scheduler for a folder (with the same options)."""
    from . import SRDS, Picard, QuasiNewton, Serial

    size = "auto" if args.blocks is None else args.blocks
    if args.sampler is None and args.model != "bundled":
        from .pipelines import DefaultSampler

        return DefaultSampler(blocks=size, tol=args.tol)
    if args.sampler == "serial":
        return Serial()
    if args.sampler == "picard":
        return Picard(window=size, tol=args.tol)
    if args.sampler == "srds":
        return SRDS(blocks=size, tol=args.tol)
    return QuasiNewton(window=size, tol=args.tol)


def _describe(name: str | None, info: Any) -> str:
    """The run in one line: the sampler (``name``, else the one that ran), its cost, and what
    ``"auto"`` chose with its predicted and measured speedup."""
    text = (f"{name or info.sampler}: {info.iterations} iterations, nfe {info.nfe}, sequential "
            f"nfe {info.sequential_nfe}, {info.wall_time:.2f} s")
    plan = info.plan
    if plan is not None:
        text += (" (auto: " + ("ran serially"
                               if plan.size is None else
                               f"{'blocks' if info.sampler.startswith('SRDS') else 'window'} "
                               f"{plan.size}, predicted {plan.predicted_speedup:.2f}x serial")
                 + (f", measured {info.speedup:.2f}x" if info.speedup else "") + ")")
    return text


def _sample(args: argparse.Namespace) -> None:
    if args.model == "bundled":
        _sample_bundled(args)
    else:
        _sample_pipeline(args)


def _sample_bundled(args: argparse.Namespace) -> None:
    from .adapters import DiffusersDenoiser
    from .files import atomic_path
    from .images import save_grid
    from .models import load_digits_model

    model = load_digits_model()
    guidance = model.guidance_scale if args.guidance is None else args.guidance
    denoiser = DiffusersDenoiser(model.unet, model.scheduler, guidance_scale=guidance)
    labels = torch.full((args.num,), args.class_label)
    sigmas = denoiser.sigmas(args.steps)
    noise = torch.randn(args.num, model.in_channels, model.image_size, model.image_size,
                        generator=torch.Generator().manual_seed(args.seed))
    x = denoiser.to_ve(noise, sigmas[0])
    extra = {"class_labels": labels, "uncond_class_labels": torch.full_like(labels,
                                                                             model.null_class)}
    from . import Heun

    samples, info = _sampler(args).sample(denoiser, x, sigmas, extra, disable=args.quiet,
                                          solver=Heun() if args.solver == "heun" else None,
                                          return_info=True)
    images = denoiser.from_ve(samples, sigmas[-1])
    with atomic_path(args.out) as tmp:  # the grid goes to a temporary file, then is renamed
        save_grid(images, tmp, columns=min(args.num, 8))
    print(f"{_describe(args.sampler, info)} -> {args.out}")


@contextlib.contextmanager
def _quiet_libraries(quiet: bool) -> Iterator[None]:
    """With ``quiet``: no progress bars, log records below ERROR or warnings from diffusers
    and transformers while the block runs; their settings are restored afterwards."""
    if not quiet:
        yield
        return
    from diffusers.utils import logging as diffusers_logging

    loggers = [diffusers_logging]
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as transformers_logging

        loggers.append(transformers_logging)
    saved = [(log, log.get_verbosity(), log.is_progress_bar_enabled()) for log in loggers]
    for log in loggers:
        log.set_verbosity_error()
        log.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, verbosity, bars in saved:
            log.set_verbosity(verbosity)
            if bars:
                log.enable_progress_bar()


def _image_grid(images: list[Any], columns: int, pad: int = 2) -> Any:
    """PIL images of one size side by side, ``columns`` per row, on white."""
    from PIL import Image

    if len(images) == 1:
        return images[0]
    w, h = images[0].size
    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (columns * (w + pad) + pad, rows * (h + pad) + pad), "white")
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid.paste(image.convert("RGB"), (pad + c * (w + pad), pad + r * (h + pad)))
    return grid


def _sample_pipeline(args: argparse.Namespace) -> None:
    from .files import save_image
    from .pipelines import pipeline_for_folder

    with _quiet_libraries(args.quiet):
        pipe = pipeline_for_folder(args.model, scheduler=args.scheduler)
        pipe.set_progress_bar_config(disable=args.quiet)
        out = pipe(prompt=args.prompt, num_inference_steps=args.steps,
                   num_images_per_prompt=args.num,
                   guidance_scale=7.5 if args.guidance is None else args.guidance,
                   generator=torch.Generator().manual_seed(args.seed),
                   sampler=_sampler(args))
    info = out.info
    save_image(_image_grid(out.images, columns=min(args.num, 8)), args.out)
    print(f"{_describe(args.sampler, info)} -> {args.out}")


# ----------------------------------------------------------------------------------------
# the parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pint-diffusion``."""
    from .demo import DEFAULT_STEPS, DEFAULT_SWEEP, FULL_STEPS, FULL_SWEEP
    from .samplers import DEFAULT_TOL

    def sweep_text(sweep: dict[int, tuple[int, ...]]) -> str:
        return " ".join(f"{n}:{','.join(map(str, b))}" for n, b in sweep.items())

    parser = argparse.ArgumentParser(
        prog="pint-diffusion",
        description="Self-Refining Diffusion Samplers (SRDS): parallel-in-time sampling.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="serial vs parallel samplers on the bundled digits model: latency and "
                     "throughput",
        description="Sample with serial DDIM and the parallel samplers on the bundled digits "
                    "model, one sample per call (latency) and every class with several seeds "
                    "at once (throughput); print both tables and where each regime wins, and "
                    "write sample grids, SRDS's refinement and residual figures and "
                    "latency_vs_batch.png.")
    demo.add_argument("--out", type=Path, default=Path("demo-output"),
                      help="output folder (created if missing)")
    demo.add_argument("--full", action="store_true",
                      help="the whole sweep: also 1000 steps (default steps "
                           f"{' '.join(map(str, FULL_STEPS))}, sweep {sweep_text(FULL_SWEEP)}; "
                           "several times longer)")
    demo.add_argument("--steps", type=positive_int, nargs="+", default=None,
                      help=f"numbers of DDIM steps (default: "
                           f"{' '.join(map(str, DEFAULT_STEPS))})")
    demo.add_argument("--seeds", type=positive_int, default=2,
                      help="samples per class in the throughput batch")
    demo.add_argument("--tol", type=non_negative_float, default=DEFAULT_TOL,
                      help="the parallel samplers' tolerance (a finite number >= 0)")
    demo.add_argument("--repeats", type=positive_int, default=3,
                      help="calls per sampler for the one-sample latency (median; default 3)")
    demo.add_argument("--sweep", type=_sweep_entry, nargs="*", default=None,
                      metavar="STEPS:B1,B2,...",
                      help="batch sizes of latency_vs_batch.png per number of steps (default: "
                           + sweep_text(DEFAULT_SWEEP)
                           + "; sizes above the batch are capped at it; none: no figure)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars or lines")
    demo.set_defaults(run=_demo, check=_check_demo, command_parser=demo)

    sample = commands.add_parser(
        "sample", help="draw samples with a chosen sampler",
        description="Draw samples from the bundled digits model (by --class) or from a local "
                    "Stable Diffusion folder (--model PATH, by --prompt).")
    sample.add_argument("--model", default="bundled",
                        help="'bundled' (default) or a local diffusers Stable Diffusion folder")
    sample.add_argument("--class", dest="class_label", type=non_negative_int, default=None,
                        help="digit class for the bundled model (default 0)")
    sample.add_argument("--prompt", help="text prompt for a Stable Diffusion folder")
    sample.add_argument("--num", type=positive_int, default=None,
                        help=f"number of samples (default {DEFAULT_NUM['bundled']} for the "
                             f"bundled model, {DEFAULT_NUM['pipeline']} for --model PATH); "
                             "several are written as one grid")
    sample.add_argument("--steps", type=positive_int, default=100, help="DDIM steps")
    sample.add_argument("--sampler", choices=["quasi-newton", "srds", "picard", "serial"],
                        default=None,
                        help="quasi-newton (the fewest sequential model calls; the default for "
                             "the bundled model and, with --model PATH, for schedulers without "
                             "history, else srds), srds, picard (ParaDiGMS) or serial")
    sample.add_argument("--scheduler", default=None,
                        help="with --model PATH: a diffusers scheduler class to sample with "
                             "instead of the folder's (e.g. DPMSolverMultistepScheduler)")
    sample.add_argument("--solver", choices=["euler", "heun"], default=None,
                        help="step rule for the bundled model (default euler = DDIM)")
    sample.add_argument("--blocks", type=positive_int, default=None,
                        help="SRDS blocks (quasi-newton, picard: window; serial: none), at "
                             "most --steps; default: chosen from the model's measured cost "
                             "(the samplers' \"auto\"; serial where no window is predicted to "
                             "pay)")
    sample.add_argument("--tol", type=non_negative_float, default=None,
                        help=f"tolerance of the parallel samplers (a finite number >= 0; "
                             f"default {DEFAULT_TOL:g})")
    sample.add_argument("--seed", type=_seed, default=0, help="seed of the initial noise")
    sample.add_argument("--guidance", type=finite_float, default=None,
                        help="classifier-free guidance scale (default: the model's)")
    sample.add_argument("--out", type=Path, default=Path("sample.png"),
                        help="image file to write (.png, .jpg, ...; written atomically)")
    sample.add_argument("--quiet", action="store_true",
                        help="no progress bars or library warnings")
    sample.set_defaults(run=_sample, check=_check_sample, command_parser=sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pint-diffusion`` console script.

    Every argument is checked before any model work; a bad one ends the command through
    ``argparse``'s ``error`` (the usage line and the message on stderr, exit status 2).
    """
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    errors = args.check(args)
    if errors:
        args.command_parser.error("; ".join(errors))
    args.run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
