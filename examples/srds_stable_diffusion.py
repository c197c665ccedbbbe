"""SRDS through StableDiffusionSRDSPipeline, side by side with the serial pipeline.

With ``--model PATH`` it loads a local Stable Diffusion folder (``from_pretrained(PATH,
local_files_only=True)``; nothing is downloaded). Without it, it builds the tiny random
components that the tests use, so it runs anywhere, offline, in seconds (the images are
noise, but the latents of SRDS and of the serial pipeline must agree).

Run: ``python examples/srds_stable_diffusion.py [--model PATH] [--steps 25] [--prompt ...]``
"""

import argparse
import time

import torch


def load_pipeline(model: str | None):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    if model is not None:  # its own scheduler: any deterministic one works
        return StableDiffusionPipeline.from_pretrained(model, local_files_only=True)
    from pint_diffusion.testing import tiny_sd_pipeline

    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, clip_sample=False, set_alpha_to_one=False,
                              steps_offset=1)
    return tiny_sd_pipeline(scheduler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local Stable Diffusion folder")
    parser.add_argument("--prompt", default="a beautiful castle, matte painting")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from pint_diffusion import StableDiffusionSRDSPipeline

    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    srds = StableDiffusionSRDSPipeline.from_pipe(pipe)
    srds.set_progress_bar_config(disable=True)
    call = dict(prompt=args.prompt, num_inference_steps=args.steps,
                guidance_scale=args.guidance, output_type="latent")
    start = time.perf_counter()
    serial = pipe(generator=torch.Generator().manual_seed(args.seed), **call).images
    serial_time = time.perf_counter() - start
    out = srds(generator=torch.Generator().manual_seed(args.seed), **call)
    info = out.info
    diff = out.images - serial
    print(f"serial: {args.steps} sequential UNet calls, {serial_time:.2f} s")
    print(f"SRDS:   {info.iterations} iterations, {info.sequential_nfe} sequential calls "
          f"(predicted {info.predicted_sequential_nfe}), nfe {info.nfe}, "
          f"{info.wall_time:.2f} s; latents max |diff| {diff.abs().max():.2e}, "
          f"RMS {diff.pow(2).mean().sqrt():.2e}")


if __name__ == "__main__":
    main()
