"""Every family x scheduler: parallel sampling against the serial diffusers pipeline.

Tiny random-weight components built offline (``pint_diffusion.testing``): Stable Diffusion and
SDXL with every variance-preserving scheduler of the issue (DDIM, Euler, Heun, KDPM2, DPM++ 2M
and 3M with and without Karras sigmas, UniPC 2 and 3, PNDM, DEIS, LMS), SD3 and Flux with
``FlowMatchEulerDiscreteScheduler`` (SD3: shift 3; Flux: dynamic shift, distilled guidance
input and true CFG as two calls). Two prompts with negative prompts, guidance 4 (Flux: true CFG
2.5, distilled guidance 3.5), N = 20 steps (``--quick``: 8), latents 4x8x8 (Flux: 16x4 packed).

Per row: the serial pipeline's model calls (Heun and KDPM2 call the model 2N - 1 times); the
parallel pipeline (``ParallelMixin``, SRDS over the scheduler's own steps, default blocks) at
full iterations (``tol=0``): max |difference| relative to the latents' max |value|; at the
default tolerance: iterations, sequential model calls (the depth), total model rows, RMS
difference in latent units (the latents' RMS is given for scale) and one wall-clock timing of
each (noisy: shared 2-core machine).

Run: ``python benchmarks/families.py [--quick] [--threads 2]``; writes
``benchmarks/results/families.{json,md}``.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from common import arguments, machine_info, machine_line, markdown_table, setup, write_results


def _sampler(tol: float | None) -> Any:
    from pint_diffusion import SRDS

    return SRDS() if tol is None else SRDS(tol=tol)


def vp_schedulers() -> dict[str, tuple[type, dict[str, Any]]]:
    """The issue's variance-preserving schedulers: ``name -> (class, options)``."""
    from diffusers import (
        DDIMScheduler,
        DEISMultistepScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        HeunDiscreteScheduler,
        KDPM2DiscreteScheduler,
        LMSDiscreteScheduler,
        PNDMScheduler,
        UniPCMultistepScheduler,
    )

    return {
        "DDIM": (DDIMScheduler, dict(clip_sample=False, set_alpha_to_one=False,
                                     steps_offset=1)),
        "Euler": (EulerDiscreteScheduler, {}),
        "Heun": (HeunDiscreteScheduler, {}),
        "KDPM2": (KDPM2DiscreteScheduler, {}),
        "DPM++ 2M": (DPMSolverMultistepScheduler, {}),
        "DPM++ 2M Karras": (DPMSolverMultistepScheduler, dict(use_karras_sigmas=True)),
        "DPM++ 3M": (DPMSolverMultistepScheduler, dict(solver_order=3)),
        "DPM++ 3M Karras": (DPMSolverMultistepScheduler, dict(solver_order=3,
                                                              use_karras_sigmas=True)),
        "UniPC 2": (UniPCMultistepScheduler, dict(solver_order=2)),
        "UniPC 3": (UniPCMultistepScheduler, dict(solver_order=3)),
        "PNDM": (PNDMScheduler, dict(skip_prk_steps=True)),
        "DEIS": (DEISMultistepScheduler, {}),
        "LMS": (LMSDiscreteScheduler, {}),
    }


SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def cases(quick: bool) -> list[tuple[str, str, Any, Any, dict[str, Any]]]:
    """(family, scheduler, make_pipeline, parallel class, call) for every row."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from pint_diffusion import testing
    from pint_diffusion.pipelines import (
        ParallelFluxPipeline,
        ParallelStableDiffusion3Pipeline,
        ParallelStableDiffusionPipeline,
        ParallelStableDiffusionXLPipeline,
    )

    base = dict(prompt=["a cat", "a red house"], negative_prompt=["dog", ""],
                output_type="latent")
    sd, sdxl = testing.tiny_sd_components(0), testing.tiny_sdxl_components(0)
    sd3, flux = testing.tiny_sd3_components(0), testing.tiny_flux_components(0)
    names = list(vp_schedulers())
    if quick:
        names = ["DDIM", "Heun", "DPM++ 2M Karras", "UniPC 3", "PNDM"]
    rows = []
    def scheduler(name: str) -> Any:
        cls, options = vp_schedulers()[name]
        return cls(**SD_BETAS, **options)

    for name in names:
        rows.append(("SD", name,
                     lambda n=name: testing.tiny_sd_pipeline(scheduler(n), components=sd),
                     ParallelStableDiffusionPipeline, dict(base, guidance_scale=4.0)))
    for name in names:
        rows.append(("SDXL", name,
                     lambda n=name: testing.tiny_sdxl_pipeline(scheduler(n), components=sdxl),
                     ParallelStableDiffusionXLPipeline,
                     dict(base, guidance_scale=4.0, height=16, width=16)))
    flow = dict(base, height=16, width=16, max_sequence_length=16)
    rows.append(("SD3", "FlowMatchEuler (shift 3)",
                 lambda: testing.tiny_sd3_pipeline(FlowMatchEulerDiscreteScheduler(shift=3.0),
                                                   components=sd3),
                 ParallelStableDiffusion3Pipeline, dict(flow, guidance_scale=4.0)))
    rows.append(("Flux", "FlowMatchEuler (dynamic shift)",
                 lambda: testing.tiny_flux_pipeline(components=flux), ParallelFluxPipeline,
                 dict(flow, guidance_scale=3.5, true_cfg_scale=2.5)))
    return rows


def run(steps: int, quick: bool) -> list[dict[str, Any]]:
    rows = []
    for family, name, make, parallel_cls, call in cases(quick):
        pipe = make()
        par = parallel_cls.from_pipe(pipe)
        par.set_progress_bar_config(disable=True)
        call = dict(call, num_inference_steps=steps)
        start = time.perf_counter()
        serial = pipe(generator=torch.Generator().manual_seed(0), **call).images
        serial_time = time.perf_counter() - start
        calls = len(pipe.scheduler.timesteps)  # as the serial pipeline set them
        exact = par(generator=torch.Generator().manual_seed(0), sampler=_sampler(0.0), **call)
        start = time.perf_counter()
        fast = par(generator=torch.Generator().manual_seed(0), sampler=_sampler(None), **call)
        fast_time = time.perf_counter() - start
        scale = float(serial.abs().max())
        row = dict(
            family=family, scheduler=name, serial_calls=calls,
            blocks=len(exact.info.blocks) - 1,
            exact_max_rel=float((exact.images - serial).abs().max()) / scale,
            exact_iterations=exact.info.iterations,
            latent_rms=float(serial.pow(2).mean().sqrt()),
            iterations=fast.info.iterations, sequential_calls=fast.info.sequential_nfe,
            nfe=fast.info.nfe, rms=float((fast.images - serial).pow(2).mean().sqrt()),
            serial_seconds=serial_time, parallel_seconds=fast_time,
        )
        rows.append(row)
        print(f"{family:5s} {name:32s} exact {row['exact_max_rel']:.1e} default: "
              f"{row['sequential_calls']}/{calls} calls, rms {row['rms']:.1e}", flush=True)
    return rows


def run_digits(steps: int, samples: int) -> list[dict[str, Any]]:
    """Every VP scheduler on the bundled (trained) digits model: data in [-1, 1]."""
    from pint_diffusion.families import Guided, UNetCall
    from pint_diffusion.models import load_digits_model
    from pint_diffusion.schedulers import scheduler_trajectory, serial_loop

    digits = load_digits_model()
    labels = torch.arange(samples) % digits.num_classes
    model = Guided(UNetCall(digits.unet), {"class_labels": labels}, samples,
                   uncond={"class_labels": torch.full_like(labels, digits.null_class)},
                   scale=digits.guidance_scale)
    rows = []
    for name, (cls, options) in vp_schedulers().items():
        sched = cls.from_config(digits.scheduler.config, **options)
        sched.set_timesteps(steps)
        noise = torch.randn(samples, 1, digits.image_size, digits.image_size,
                            generator=torch.Generator().manual_seed(0))
        latents = noise * getattr(sched, "init_noise_sigma", 1.0)
        serial = serial_loop(sched, model, latents)
        trajectory = scheduler_trajectory(sched, model, latents)
        out, info = _sampler(None).solve(trajectory, disable=True)
        rows.append(dict(family="digits (trained)", scheduler=name,
                         serial_calls=len(sched.timesteps), blocks=len(info.blocks) - 1,
                         iterations=info.iterations, sequential_calls=info.sequential_nfe,
                         nfe=info.nfe, rms=float((out - serial).pow(2).mean().sqrt())))
        print(f"digits {name:24s} {info.sequential_nfe}/{len(sched.timesteps)} calls, "
              f"rms {rows[-1]['rms']:.1e}", flush=True)
    return rows


def run_samplers(steps: int, samples: int) -> list[dict[str, Any]]:
    """SRDS, quasi-Newton and Picard (default tolerances) on the digits model, with a scheduler
    without history (Euler) and two with (DPM++ 2M, PNDM)."""
    import pint_diffusion
    from pint_diffusion.families import Guided, UNetCall
    from pint_diffusion.models import load_digits_model
    from pint_diffusion.schedulers import scheduler_trajectory, serial_loop

    digits = load_digits_model()
    labels = torch.arange(samples) % digits.num_classes
    model = Guided(UNetCall(digits.unet), {"class_labels": labels}, samples,
                   uncond={"class_labels": torch.full_like(labels, digits.null_class)},
                   scale=digits.guidance_scale)
    rows = []
    for name in ("Euler", "DPM++ 2M", "PNDM"):
        cls, options = vp_schedulers()[name]
        sched = cls.from_config(digits.scheduler.config, **options)
        sched.set_timesteps(steps)
        noise = torch.randn(samples, 1, digits.image_size, digits.image_size,
                            generator=torch.Generator().manual_seed(0))
        latents = noise * getattr(sched, "init_noise_sigma", 1.0)
        serial = serial_loop(sched, model, latents)
        for sampler in (pint_diffusion.SRDS(), pint_diffusion.QuasiNewton(),
                        pint_diffusion.Picard()):
            row: dict[str, Any] = dict(scheduler=name, sampler=repr(sampler),
                                       serial_calls=len(sched.timesteps))
            try:
                out, info = sampler.solve(scheduler_trajectory(sched, model, latents),
                                          disable=True)
                row.update(outcome="converged" if info.converged else "not converged",
                           iterations=info.iterations, sequential_calls=info.sequential_nfe,
                           rms=float((out - serial).pow(2).mean().sqrt()))
            except ValueError as error:  # a non-finite model output
                row.update(outcome="overflow: " + str(error).split(" (")[0])
            rows.append(row)
            print(f"samplers {name:10s} {row['sampler']:40s} {row['outcome']} "
                  f"{row.get('sequential_calls')} {row.get('rms')}", flush=True)
    return rows


def main() -> None:
    args = arguments(__doc__).parse_args()
    setup(args.threads)
    steps = 8 if args.quick else 20
    rows = run(steps, args.quick)
    digits_steps = 25 if args.quick else 100
    digits_rows = run_digits(digits_steps, 10)
    sampler_rows = run_samplers(digits_steps, 10)
    info = machine_info()
    columns = [
        ("family", "family", "s"), ("scheduler", "scheduler", "s"),
        ("serial calls", "serial_calls", "d"), ("blocks", "blocks", "d"),
        ("max rel. diff, tol=0", "exact_max_rel", ".1e"),
        ("iterations, tol=0", "exact_iterations", "d"),
        ("iterations, default tol", "iterations", "d"),
        ("sequential calls, default tol", "sequential_calls", "d"),
        ("model rows, default tol", "nfe", "d"),
        ("RMS diff, default tol", "rms", ".1e"), ("latent RMS", "latent_rms", ".2f"),
        ("serial s", "serial_seconds", ".2f"), ("parallel s", "parallel_seconds", ".2f"),
    ]
    sampler = _sampler(None)
    markdown = "\n\n".join([
        "# Every family x scheduler: parallel sampling vs the serial pipeline",
        f"N = {steps} steps, two prompts with negative prompts, tiny random-weight components "
        f"(`pint_diffusion.testing`); sampler at the default tolerance: `{sampler!r}`. "
        "'serial calls' are the pipeline's sequential model calls (Heun and KDPM2: 2N - 1); "
        "'sequential calls' the parallel sampler's depth. Max rel. diff: max |parallel - "
        "serial| / max |serial latents| at full iterations (tol=0). RMS diff in latent "
        "units; the latents' RMS is given for scale. Wall clock: one run each, noisy.",
        machine_line(info),
        markdown_table(rows, columns),
        f"## A trained model: the bundled digits model\n\nThe same schedulers on the bundled "
        f"digits UNet (trained; data in [-1, 1]), class-conditional with guidance 2.0, ten "
        f"samples, N = {digits_steps}, the scheduler built `from_config` of the model's DDIM "
        "config (plus the variant's options); the parallel sampler at the default tolerance "
        "against the scheduler's own serial loop. Model rows: evaluations of the guided model "
        "(one per sample and step; the network sees two rows for each, with guidance).",
        markdown_table(digits_rows, [
            ("scheduler", "scheduler", "s"), ("serial calls", "serial_calls", "d"),
            ("blocks", "blocks", "d"), ("iterations", "iterations", "d"),
            ("sequential calls", "sequential_calls", "d"), ("model rows", "nfe", "d"),
            ("RMS diff", "rms", ".1e")]),
        "## Which sampler\n\nSRDS, quasi-Newton and Picard at their default tolerances on the "
        f"same digits model (N = {digits_steps}), with a scheduler without history (Euler) and "
        "two with (DPM++ 2M, PNDM): on a multistep scheduler's augmented state the Picard-type "
        "samplers can stop far from the serial result or overflow (the parallel pipelines "
        "refuse them with a tolerance there).",
        markdown_table(sampler_rows, [
            ("scheduler", "scheduler", "s"), ("sampler", "sampler", "s"),
            ("serial calls", "serial_calls", "d"), ("outcome", "outcome", "s"),
            ("iterations", "iterations", "d"), ("sequential calls", "sequential_calls", "d"),
            ("RMS diff", "rms", ".1e")]),
        "Generated by `python benchmarks/families.py" + (" --quick" if args.quick else "")
        + "`.",
    ])
    write_results("families", {"machine": info, "steps": steps, "sampler": repr(sampler),
                               "rows": rows, "digits_steps": digits_steps,
                               "digits_rows": digits_rows, "sampler_rows": sampler_rows},
                  markdown)
    print(markdown)


if __name__ == "__main__":
    main()
