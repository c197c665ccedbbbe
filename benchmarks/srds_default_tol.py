"""SRDS at its default tolerance against the serial sampler, on a small diffusers UNet.

For 25 and 100 DDIM steps with classifier-free guidance (the tests' tiny Stable Diffusion
components, random weights, offline), runs the serial pipeline and
``StableDiffusionSRDSPipeline`` (pipelined and not), and a tolerance sweep, reporting
iterations, nfe, sequential nfe (measured and predicted) and the max and RMS difference of
the latents. Writes ``benchmarks/results/srds_default_tol.{json,md}``.

Run: ``python benchmarks/srds_default_tol.py``
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from pint_diffusion import DEFAULT_TOL, StableDiffusionSRDSPipeline
from pint_diffusion.testing import tiny_sd_pipeline

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    from diffusers import DDIMScheduler

    torch.set_num_threads(1)
    pipe = tiny_sd_pipeline(DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
        set_alpha_to_one=False, steps_offset=1))
    srds = StableDiffusionSRDSPipeline.from_pipe(pipe)
    srds.set_progress_bar_config(disable=True)
    prompts = ["a castle", "a red house", "a cat on a mat", "the sea at night"]
    noise = torch.randn(len(prompts), 4, 8, 8, generator=torch.Generator().manual_seed(0))
    rows = []
    for steps in (25, 100):
        call = dict(prompt=prompts, num_inference_steps=steps, guidance_scale=5.0,
                    output_type="latent")
        with torch.no_grad():
            serial = pipe(latents=noise.clone(), **call).images
        scale = serial.abs().max().item()
        for pipelined in (True, False):
            for tol in (DEFAULT_TOL * 10, DEFAULT_TOL, DEFAULT_TOL / 10, 0.0):
                if not pipelined and tol != DEFAULT_TOL:
                    continue
                out = srds(latents=noise.clone(), srds_tol=tol, srds_pipelined=pipelined,
                           **call)
                info, diff = out.info, out.images - serial
                rows.append(dict(
                    steps=steps, pipelined=pipelined, tol=tol, blocks=len(info.blocks) - 1,
                    iterations=info.iterations, nfe=info.nfe,
                    sequential_nfe=info.sequential_nfe,
                    predicted_sequential_nfe=info.predicted_sequential_nfe,
                    serial_sequential_nfe=steps, max_diff=diff.abs().max().item(),
                    rms_diff=diff.pow(2).mean().sqrt().item(), latent_scale=scale,
                ))
                print(rows[-1])
    info = dict(machine=platform.machine(), torch=torch.__version__, threads=1,
                python=platform.python_version())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "srds_default_tol.json").write_text(json.dumps({"machine": info, "rows": rows},
                                                              indent=1))
    lines = [
        "# SRDS vs the serial DDIM pipeline (tiny SD UNet, CFG 5, 4 prompts)", "",
        f"{info['machine']} CPU, torch {info['torch']}, 1 thread. Latents' max |value| is "
        f"about {rows[0]['latent_scale']:.1f}; differences are against the serial pipeline.", "",
        "| steps | schedule | tol | blocks | iterations | nfe | sequential nfe (predicted) "
        "| serial depth | max diff | RMS diff |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['steps']} | {'pipelined' if r['pipelined'] else 'batched'} | {r['tol']:g} | "
            f"{r['blocks']} | {r['iterations']} | {r['nfe']} | {r['sequential_nfe']} "
            f"({r['predicted_sequential_nfe']}) | {r['serial_sequential_nfe']} | "
            f"{r['max_diff']:.1e} | {r['rms_diff']:.1e} |")
    (RESULTS / "srds_default_tol.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
