"""Wall clock on a GPU: a Stable Diffusion 1.5-size UNet and the digits model, serial vs parallel.

Full mode (``python benchmarks/gpu.py``, ``make bench-gpu``) is designed to finish in under
8 minutes on one H100-class GPU; a time budget (``--budget-s``) skips whatever would start
after it, and the output lists what was skipped. It measures:

- **models**: a ``UNet2DConditionModel`` with Stable Diffusion 1.5's architecture
  (:data:`SD15_UNET`, ~860M parameters) built from its config with random weights (no
  download: the time of a call does not depend on the weights), in float16 and bfloat16,
  4x64x64 latents, random 77x768 text embeddings, DDIM with classifier-free guidance 7.5 (two
  UNet rows per sample); and the bundled digits model (float32, CFG 2.0).
- **cost curve**: the median time of one UNet call against its rows, 1, 2, 4, ... until a
  call takes 4x the one-row time, memory runs out, or a cap.
- **wall clock**: serial DDIM, SRDS (pipelined, ``round(2 sqrt N)`` blocks), Picard (window =
  SRDS's block count) and quasi-Newton (full window), and each parallel sampler at its
  automatic default ("SRDS auto", "Picard auto", "quasi-Newton auto": ``window="auto"`` /
  ``blocks="auto"``, chosen from the model's measured cost curve; the serial sampler where
  nothing is predicted to beat it), at N = 25, 50, 100 (and 1000 for the digits model), batch
  1 and 4 (bfloat16: N = 50 only). The digits model runs
  to the default tolerance. The random-weight SD UNet's iterates converge to nothing
  meaningful, so there every parallel sampler runs a FIXED number of iterations: the count
  the digits model needed at the default tolerance in the committed CPU results
  (``results/diffusion_digits.json``; the nearest larger N where N itself is missing), or
  in this run's digits measurement where no committed count exists; an automatic default runs
  the depth its prior predicts at the window it chose (:class:`pint_diffusion.DepthModel`,
  fitted to the digits model). Each count and its source are written out. A sampler without
  ``max_iters`` is stopped from its callback.
- **time outside model calls**: one more run per configuration (before the timed ones, so it
  also warms up), every denoiser call timed between two device synchronisations; outside =
  total - model time (Python scheduling, host syncs, tensor bookkeeping).
- **torch.compile** of the UNet for serial and SRDS on a few configurations (failures are
  recorded, not raised), and ``max_batch`` (rows per call) when the samplers accept it.
- **peak GPU memory** (``torch.cuda.max_memory_allocated``) per configuration.

``--quick`` is the full mode's short form: N = 50 only, one repeat.

Smoke mode (``--smoke``, run by the tests): CPU, a tiny UNet
(``pint_diffusion.testing.tiny_unet``) in float32 and bfloat16, N = 6, batch 1 and 2, one
repeat, torch.compile with the ``eager`` backend; it checks the script, not the numbers
(well under a minute on 2 idle cores).

Every run writes ``gpu_<device>.json`` and ``gpu_<device>.md`` into ``--out`` (default
``benchmarks/results``; a new temporary folder in smoke mode), checks them (every table has
measured rows, every number is finite) and exits with status 1 if they fail the check.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from common import (
    RESULTS,
    TimedDenoiser,
    arguments,
    default_blocks,
    digits,
    errors,
    load_results,
    machine_info,
    markdown_table,
    median_time,
    setup,
    write_results,
)

import pint_diffusion
from pint_diffusion import (
    DEFAULT_TOL,
    SRDS,
    Picard,
    QuasiNewton,
    probability_flow,
    sample_picard,
    sample_serial,
    sample_srds,
)
from pint_diffusion.samplers.auto import SRDS_ITERATIONS

#: Stable Diffusion 1.5's UNet (``runwayml/stable-diffusion-v1-5``, ``unet/config.json``).
SD15_UNET: dict[str, Any] = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                      "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                    "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    act_fn="silu",
)
#: Stable Diffusion 1.5's scheduler, as DDIM (eta 0).
SD15_SCHEDULER: dict[str, Any] = dict(beta_schedule="scaled_linear", beta_start=0.00085,
                                      beta_end=0.012, clip_sample=False, set_alpha_to_one=False,
                                      steps_offset=1)
SD_GUIDANCE = 7.5
SD_TOKENS, SD_WIDTH = 77, 768  # CLIP ViT-L/14 text embeddings
SLOWDOWN = 4.0  # the cost curve stops at this multiple of the one-row time
DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
TABLES = ("cost_curve", "wall_clock", "compile")
#: The parts of a run (``--parts``): the digits model at N < 1000, the SD UNet in its first
#: dtype, the digits model at N >= 1000, torch.compile, the SD UNet in its other dtypes.
PARTS = ("digits", "sd", "large", "compile", "dtypes")


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    """What one run measures (:func:`settings` gives the full and the smoke mode)."""

    smoke: bool
    device: torch.device
    sd_steps: dict[torch.dtype, tuple[int, ...]]  # the SD grid per dtype, in this order
    digits_steps: tuple[int, ...]
    batches: tuple[int, ...]
    repeats: int  # wall-clock repeats (median)
    curve_repeats: int
    curve_cap: dict[str, int]  # most UNet rows on the cost curve, per model
    compile_cases: tuple[tuple[str, int, int], ...]  # (model key, N, batch)
    compile_methods: tuple[str, ...]
    compile_backend: str
    compile_reserve_s: float  # a compile case starts only this long before the budget's end
    budget_s: float | None  # None: no time budget
    parts: tuple[str, ...] = PARTS  # what to measure, in this order of importance

    def plan(self) -> dict[str, Any]:
        """The configurations, for the JSON."""
        return dict(sd_steps={DTYPE_NAMES[k]: v for k, v in self.sd_steps.items()},
                    digits_steps=self.digits_steps, batches=self.batches,
                    compile_cases=self.compile_cases, compile_methods=self.compile_methods,
                    curve_cap=self.curve_cap, budget_s=self.budget_s, parts=self.parts)


def settings(args: Any) -> Settings:
    """The smoke mode (``--smoke``), the full mode, or its short form (``--quick``: N = 50)."""
    if args.smoke:
        return Settings(
            smoke=True, device=torch.device(args.device or "cpu"),
            # float32 and bfloat16: float16 convolutions are pathologically slow on CPUs
            sd_steps={torch.float32: (6,), torch.bfloat16: (6,)}, digits_steps=(6,),
            batches=(1, 2), repeats=1, curve_repeats=2, curve_cap={"sd": 4, "digits": 4},
            compile_cases=(("digits", 6, 1),), compile_methods=("serial",),
            compile_backend="eager", compile_reserve_s=0.0, budget_s=None, parts=args.parts)
    steps = (50,) if args.quick else (25, 50, 100)
    return Settings(
        smoke=False, device=torch.device(args.device or "cuda"),
        sd_steps={torch.float16: steps, torch.bfloat16: (50,)},
        digits_steps=steps if args.quick else (*steps, 1000), batches=(1, 4),
        repeats=1 if args.quick else 2, curve_repeats=5,
        curve_cap={"sd": 512, "digits": 1 << 15},
        compile_cases=(("digits", 100, 1), ("sd", 50, 1)), compile_methods=("serial", "SRDS"),
        compile_backend="inductor", compile_reserve_s=120.0, budget_s=args.budget_s,
        parts=args.parts)


# ----------------------------------------------------------------------------- device
class Clock:
    """Elapsed time, the budget, and one progress line per measurement on stderr."""

    def __init__(self, budget_s: float | None) -> None:
        self.start, self.budget_s = time.perf_counter(), budget_s
        self.skipped: list[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, what: str, reserve_s: float = 0.0) -> bool:
        """Whether ``what`` may start (``reserve_s`` before the budget's end at the latest)."""
        if self.budget_s is None or self.elapsed() + reserve_s <= self.budget_s:
            return True
        self.skipped.append(what)
        self.say(f"skipped (time budget {self.budget_s:.0f} s): {what}")
        return False

    def say(self, line: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {line}", file=sys.stderr, flush=True)


def synchronizer(device: torch.device) -> Callable[[], None]:
    """``torch.cuda.synchronize`` on CUDA, nothing elsewhere (CPU calls are synchronous). It is
    never counted by :class:`SyncCounter`: the benchmark's own synchronisations are not the
    sampler's."""
    if device.type != "cuda":
        return lambda: None

    def sync() -> None:
        mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode(0)
        try:
            torch.cuda.synchronize(device)
        finally:
            torch.cuda.set_sync_debug_mode(mode)

    return sync


class SyncCounter:
    """Counts the host-device synchronisations made inside the block (CUDA's sync debug mode:
    every ``.item()``, ``bool(tensor)``, blocking copy, ``nonzero`` ... warns once); ``count``
    stays None off CUDA, where nothing synchronises."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.count: int | None = None
        self._record: Any = None

    def __enter__(self) -> SyncCounter:
        if self.device.type == "cuda":
            self._record = warnings.catch_warnings(record=True)
            self._seen = self._record.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._record is not None:
            torch.cuda.set_sync_debug_mode(0)
            self._record.__exit__(*exc)
            self.count = sum("synchroniz" in str(w.message) for w in self._seen)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    """Peak allocated device memory since :func:`reset_peak`, MiB (None off CUDA)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error)


def device_info(device: torch.device) -> dict[str, Any]:
    """:func:`common.machine_info` plus the device's name (the CPU model off CUDA)."""
    info = machine_info()
    info["device"] = str(device)
    info["package"] = str(Path(pint_diffusion.__file__).resolve().parent.parent)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    device_memory_gib=props.total_memory / 2**30)
    else:
        info.update(device_name=info["cpu"], cuda=None, device_memory_gib=None)
    return info


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:48] or "device"


def device_line(info: dict[str, Any]) -> str:
    memory = (f", {info['device_memory_gib']:.0f} GiB, CUDA {info['cuda']}"
              if info["device_memory_gib"] else ", CPU")
    return (f"Device: **{info['device_name']}** (`{info['device']}`{memory}); host CPU "
            f"{info['cpu']} ({info['cpu_count']} cores, {info['torch_threads']} torch "
            f"thread(s)); torch {info['torch']}, Python {info['python']}; {info['date']}; "
            f"pint_diffusion from `{info.get('package', '?')}`.")


# ----------------------------------------------------------------------------- models
@dataclass(frozen=True)
class Model:
    """A denoiser with its inputs and a raw UNet call, as the measurements need them."""

    key: str  # "sd" or "digits"
    name: str
    denoiser: Any  # pint_diffusion.DiffusersDenoiser
    dtype: torch.dtype
    inputs: Callable[[int], tuple[torch.Tensor, dict[str, torch.Tensor]]]  # batch -> noise, extra
    unet_call: Callable[[int], Callable[[], Any]]  # rows -> one UNet call of that many rows
    fixed: bool  # parallel samplers run fixed iteration counts (no meaningful convergence)
    parameters: int

    @property
    def label(self) -> str:
        return f"{self.name} {DTYPE_NAMES[self.dtype]}"


def sd_unet(s: Settings) -> tuple[Any, int, int]:
    """The SD 1.5-size UNet with random weights (tiny in smoke mode), its tokens and width."""
    if s.smoke:
        from pint_diffusion.testing import HIDDEN, MAX_LENGTH, tiny_unet

        unet, tokens, width = tiny_unet(0).to(s.device), MAX_LENGTH, HIDDEN
    else:
        from diffusers import UNet2DConditionModel

        torch.manual_seed(0)
        with torch.device(s.device):  # initialise on the device: seconds instead of a minute
            unet, tokens, width = UNet2DConditionModel(**SD15_UNET).eval(), SD_TOKENS, SD_WIDTH
    from diffusers.utils import logging

    logging.set_verbosity_error()  # its advice on .to(dtype) concerns from_pretrained models
    return unet, tokens, width


def sd_model(unet: Any, tokens: int, width: int, dtype: torch.dtype, s: Settings) -> Model:
    """The SD UNet in ``dtype`` (converted in place) as a guided DDIM denoiser."""
    from diffusers import DDIMScheduler

    from pint_diffusion import DiffusersDenoiser

    unet = unet.to(dtype=dtype).requires_grad_(False)
    denoiser = DiffusersDenoiser(unet, DDIMScheduler(**SD15_SCHEDULER),
                                 guidance_scale=SD_GUIDANCE)
    size, channels = unet.config.sample_size, unet.config.in_channels

    def inputs(batch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        g = torch.Generator().manual_seed(batch)
        noise = torch.randn(batch, channels, size, size, generator=g)
        cond, uncond = (torch.randn(batch, tokens, width, generator=g) for _ in range(2))
        return noise.to(s.device), {
            "encoder_hidden_states": cond.to(s.device, dtype),
            "uncond_encoder_hidden_states": uncond.to(s.device, dtype)}

    def unet_call(rows: int) -> Callable[[], Any]:
        x = torch.randn(rows, channels, size, size, device=s.device, dtype=dtype)
        t = torch.full((rows,), 500, device=s.device)
        text = torch.randn(rows, tokens, width, device=s.device, dtype=dtype)
        return lambda: unet(x, t, encoder_hidden_states=text, return_dict=False)

    name = "tiny SD UNet" if s.smoke else "SD 1.5 UNet"
    return Model("sd", name, denoiser, dtype, inputs, unet_call, True,
                 sum(p.numel() for p in unet.parameters()))


def digits_model(s: Settings) -> Model:
    """The bundled digits model (float32) with :func:`common.digits`'s class-balanced noise."""
    bundle = digits(1, classes=max(s.batches))
    denoiser = bundle.denoiser.to(s.device)
    unet = denoiser.unet

    def inputs(batch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return bundle.noise[:batch].to(s.device), {
            k: v[:batch].to(s.device) for k, v in bundle.extra_args.items()}

    def unet_call(rows: int) -> Callable[[], Any]:
        x = torch.randn(rows, *bundle.noise.shape[1:], device=s.device)
        t = torch.full((rows,), 500, device=s.device)
        labels = torch.arange(rows, device=s.device) % 10
        return lambda: unet(x, t, class_labels=labels, return_dict=False)

    return Model("digits", "digits model", denoiser, torch.float32, inputs, unet_call, False,
                 sum(p.numel() for p in unet.parameters()))


def compiled(model: Model, backend: str) -> Model:
    """``model`` with ``torch.compile`` of its UNet (compiles lazily, at the first call)."""
    from pint_diffusion import DiffusersDenoiser

    old = model.denoiser
    unet = torch.compile(old.unet, backend=backend)
    denoiser = DiffusersDenoiser(unet, old.scheduler, guidance_scale=old.guidance_scale)
    return replace(model, denoiser=denoiser)


# ----------------------------------------------------------------------------- cost curve
def cost_curve(model: Model, s: Settings, clock: Clock) -> list[dict[str, Any]]:
    """Median ms of one UNet call with 1, 2, 4, ... rows, until SLOWDOWN x one row, OOM or cap."""
    sync, out, base, rows = synchronizer(s.device), [], None, 1
    while rows <= s.curve_cap[model.key]:
        if not clock.allows(f"cost curve, {model.label}, {rows} rows"):
            break
        row: dict[str, Any] = dict(model=model.label, rows=rows)
        try:
            call = model.unet_call(rows)
            reset_peak(s.device)
            call()  # warm-up: kernel selection and allocator growth
            sync()
            seconds, _ = median_time(lambda call=call: (call(), sync()), s.curve_repeats)
        except Exception as error:
            if s.device.type == "cuda":
                torch.cuda.empty_cache()
            status = "out of memory" if is_oom(error) else f"error: {type(error).__name__}"
            out.append(dict(row, status=status))
            clock.say(f"cost curve {model.label}: {rows} rows: {status}")
            break
        base = base or seconds
        out.append(dict(row, ms=seconds * 1e3, ms_per_row=seconds * 1e3 / rows,
                        vs_one_row=seconds / base, peak_mib=peak_mib(s.device), status="ok"))
        clock.say(f"cost curve {model.label}: {rows:5d} rows {seconds * 1e3:9.2f} ms "
                  f"({seconds / base:.2f}x one row)")
        if seconds >= SLOWDOWN * base:
            break
        rows *= 2
    return out


def knee(curve: list[dict[str, Any]], factor: float = 2.0) -> int | None:
    """The most UNet rows a call takes within ``factor`` x the one-row time."""
    ok = [r for r in curve if r["status"] == "ok" and r["vs_one_row"] <= factor]
    return max(r["rows"] for r in ok) if ok else None


# ----------------------------------------------------------------------------- samplers
AUTO = " auto"
"""The suffix of an automatic default's method name."""


def auto_sampler(kind: type) -> Callable[..., Any]:
    """``kind`` at its defaults (``"auto"``) with k-diffusion's signature. With ``prior=True``
    (the SD UNet, whose random weights converge to nothing) it runs, with ``tol = 0``, the
    iterations the depth prior predicts at the window it chose."""

    def sample(model: Any, x: torch.Tensor, sigmas: torch.Tensor,
               extra_args: dict[str, Any] | None = None, *, prior: bool = False,
               tol: float = DEFAULT_TOL, max_batch: Any = "auto", **kwargs: Any) -> Any:
        if not prior:
            return kind(tol=tol).sample(model, x, sigmas, extra_args, max_batch=max_batch,
                                        return_info=True, **kwargs)
        trajectory = probability_flow(model, x, sigmas, extra_args)
        chosen, plan = kind().planned(trajectory, None if max_batch == "auto" else max_batch)
        steps = len(sigmas) - 1
        if plan is not None and plan.size is not None:
            chosen.tol = 0.0
            chosen.max_iters = (min(math.ceil(SRDS_ITERATIONS), plan.size) if kind is SRDS
                                else math.ceil(kind.depth(plan.size, steps)))
        out, info = chosen.solve(trajectory, disable=True, max_batch=max_batch)
        return out, replace(info, plan=plan)

    return sample


def samplers() -> dict[str, Callable[..., Any]]:
    """serial, SRDS, Picard and quasi-Newton with fixed sizes, then each at its automatic
    default."""
    return {"serial": sample_serial, "SRDS": sample_srds, "Picard": sample_picard,
            "quasi-Newton": pint_diffusion.sample_quasi_newton,
            **{name + AUTO: auto_sampler(kind)
               for name, kind in (("SRDS", SRDS), ("Picard", Picard),
                                  ("quasi-Newton", QuasiNewton))}}


def accepts(sampler: Callable[..., Any], name: str) -> bool:
    return name in inspect.signature(sampler).parameters


class Stop(Exception):
    """Raised from a sampler's callback to end a run after a fixed number of iterations."""


def stopper(iterations: int) -> Callable[[dict[str, Any]], None]:
    calls = [0]

    def callback(_state: dict[str, Any]) -> None:
        calls[0] += 1
        if calls[0] >= iterations:
            raise Stop

    return callback


def sampler_kwargs(method: str, sampler: Callable[..., Any], steps: int, fixed: int | None,
                   max_batch: int | None) -> dict[str, Any]:
    """Keyword arguments of one run (a fresh stopping callback each time)."""
    kwargs: dict[str, Any] = dict(disable=True, return_info=True)
    if method.endswith(AUTO):
        kwargs = dict(disable=True, prior=fixed is not None)
        if max_batch is not None:
            kwargs["max_batch"] = max_batch
        return kwargs
    if method == "Picard":
        kwargs["window"] = default_blocks(steps)
    if method == "SRDS":
        kwargs["blocks"] = None  # round(2 sqrt N)
    if method == "quasi-Newton":
        kwargs["window"] = None  # the full window
    if fixed is not None and method != "serial":
        kwargs["tol"] = 0.0
        if accepts(sampler, "max_iters"):
            kwargs["max_iters"] = fixed
        else:
            kwargs["callback"] = stopper(fixed)
    kwargs["max_batch"] = max_batch  # None: no cap (the samplers' default is "auto")
    return kwargs


def committed_iterations(method: str, steps: int) -> tuple[int, str] | None:
    """The iterations the digits model needed at the default tolerance in the committed CPU
    results (at ``steps``, else the nearest larger N, else the largest), and their source."""
    results = "quasi_newton" if method == "quasi-Newton" else "diffusion_digits"
    saved = load_results(results, RESULTS) or {"rows": []}

    def matches(row: dict[str, Any]) -> bool:
        if method == "quasi-Newton":  # CFG 2.0, as the digits model here
            return (row.get("method") == "quasi-Newton (full window)"
                    and row.get("guidance") == 2.0)
        return row.get("family") == {"SRDS": "SRDS B=2√N (default)",
                                     "Picard": "Picard window=B"}.get(method)

    by_steps = {r["steps"]: r["iterations"] for r in saved["rows"]
                if r.get("tol") == DEFAULT_TOL and matches(r)}
    if not by_steps:
        return None
    larger = [n for n in by_steps if n >= steps]
    n = min(larger) if larger else max(by_steps)
    return by_steps[n], (f"results/{results}.json: digits model, N={n}, tol "
                         f"{DEFAULT_TOL:g}, {method}" + (", window B" if method == "Picard"
                                                         else ""))


def fixed_iterations(method: str, steps: int, measured: dict[tuple[str, int], int]
                     ) -> tuple[int, str] | None:
    """The iteration count of ``method`` on the SD UNet at ``steps``, and its source."""
    found = committed_iterations(method, steps)
    if found is None and (method, steps) in measured:
        found = measured[method, steps], f"this run: digits model, N={steps}, batch 1, " \
                                         f"tol {DEFAULT_TOL:g}"
    if found is None:
        return None
    cap = default_blocks(steps) if method == "SRDS" else steps
    return min(found[0], cap), found[1]


# ----------------------------------------------------------------------------- wall clock
@dataclass(frozen=True)
class Case:
    """One wall-clock configuration."""

    steps: int
    batch: int
    method: str
    fixed: int | None = None  # iterations, for the SD UNet (0: an automatic default's prior)
    source: str = ""
    max_batch: int | None = None

    def text(self, model: Model) -> str:
        extra = f", max_batch {self.max_batch}" if self.max_batch else ""
        return f"{model.label} N={self.steps} batch {self.batch} {self.method}{extra}"


def run_once(model: Model, denoiser: Any, case: Case, x: torch.Tensor, sigmas: torch.Tensor,
             extra: dict[str, torch.Tensor], sync: Callable[[], None]) -> Any:
    """One sampler run, synchronised at the end; None when it was stopped from its callback."""
    sampler = samplers()[case.method]
    kwargs = sampler_kwargs(case.method, sampler, case.steps, case.fixed, case.max_batch)
    try:
        result = sampler(denoiser, x, sigmas, extra_args=extra, **kwargs)
    except Stop:
        result = None
    sync()
    return result


def measure(model: Model, case: Case, s: Settings, reference: torch.Tensor | None,
            warmup: bool = False) -> tuple[dict[str, Any], torch.Tensor | None]:
    """One instrumented run (model vs outside time; it also warms up the shapes), then the
    median wall clock of ``repeats`` plain runs; peak memory over all of them."""
    sync = synchronizer(s.device)
    sigmas = model.denoiser.sigmas(case.steps, device=s.device)
    noise, extra = model.inputs(case.batch)
    x = model.denoiser.to_ve(noise, sigmas[0])
    row: dict[str, Any] = dict(model=model.label, steps=case.steps, batch=case.batch,
                               method=case.method, max_batch=case.max_batch)
    if case.method != "serial":
        row["stop"] = ("fixed: the depth prior at the chosen window"
                       if case.method.endswith(AUTO) and case.fixed is not None else
                       f"fixed: {case.fixed} iterations" if case.fixed is not None
                       else f"tol {DEFAULT_TOL:g}")
    first = time.perf_counter()
    if warmup:  # e.g. torch.compile: the first run compiles
        run_once(model, model.denoiser, case, x, sigmas, extra, sync)
        row["first_run_s"] = time.perf_counter() - first
    reset_peak(s.device)
    timed = TimedDenoiser(model.denoiser, synchronize=sync)
    start = time.perf_counter()
    run_once(model, timed, case, x, sigmas, extra, sync)
    total = time.perf_counter() - start
    wall, result = median_time(
        lambda: run_once(model, model.denoiser, case, x, sigmas, extra, sync), s.repeats)
    row.update(wall_s=wall, peak_mib=peak_mib(s.device))
    syncs = SyncCounter(s.device if model.key == "digits" or s.smoke else torch.device("cpu"))
    with syncs:  # a run of its own: counting slows the syncs it counts
        if syncs.device.type == "cuda":
            run_once(model, model.denoiser, case, x, sigmas, extra, sync)
    info = result[1] if result is not None else None
    plan = getattr(info, "plan", None)
    if plan is not None:
        row.update(chosen="serial" if plan.size is None else plan.size,
                   predicted_vs_serial=plan.predicted_speedup,
                   knee_rows=plan.curve.knee)
    row.update(iterations=info.iterations if info is not None else case.fixed,
               depth=info.sequential_nfe if info is not None else timed.calls,
               rows=timed.rows, calls=timed.calls, max_rows_per_call=max(timed.rows_per_call),
               instrumented_s=total, model_s=timed.seconds, outside_s=total - timed.seconds,
               outside_share=(total - timed.seconds) / total,
               outside_per_call_ms=(total - timed.seconds) / timed.calls * 1e3,
               syncs=syncs.count,
               syncs_per_call=None if syncs.count is None else syncs.count / timed.calls,
               status="ok")
    data = model.denoiser.from_ve(result[0], sigmas[-1]) if result is not None else None
    if data is not None and reference is not None:
        row["rms_vs_serial"] = errors(data, reference)["rms_error"]
    return row, data


def attempt(model: Model, case: Case, s: Settings, clock: Clock,
            reference: torch.Tensor | None, compiled_: bool = False
            ) -> tuple[dict[str, Any] | None, torch.Tensor | None]:
    """:func:`measure` within the budget; an error becomes a row with its status."""
    what = case.text(model) + (" (torch.compile)" if compiled_ else "")
    if not clock.allows(what, s.compile_reserve_s if compiled_ else 0.0):
        return None, None
    try:
        row, data = measure(model, case, s, reference, warmup=compiled_)
    except Exception as error:
        if s.device.type == "cuda":
            torch.cuda.empty_cache()
        status = "out of memory" if is_oom(error) else f"error: {type(error).__name__}: " \
                                                       f"{str(error).splitlines()[0][:160]}"
        clock.say(f"{what}: {status}")
        return dict(model=model.label, steps=case.steps, batch=case.batch, method=case.method,
                    max_batch=case.max_batch, status=status), None
    clock.say(f"{what}: wall {row['wall_s']:.3f} s, depth {row['depth']}, "
              f"outside model {row['outside_share']:.1%}"
              + (f", peak {row['peak_mib']:.0f} MiB" if row["peak_mib"] else ""))
    return row, data


def cases(model: Model, steps: int, batch: int, measured: dict[tuple[str, int], int],
          sources: list[dict[str, Any]]) -> list[Case]:
    """serial first, then the parallel samplers (fixed counts for the SD UNet)."""
    out = [Case(steps, batch, "serial")]
    for method in list(samplers())[1:]:
        if not model.fixed:
            out.append(Case(steps, batch, method))
            continue
        if method.endswith(AUTO):  # the prior's depth at the window it chooses
            source = ("the depth prior (pint_diffusion.DepthModel, fitted to the digits "
                      "model) at the window it chooses")
            if not any(r["model"] == model.label and r["steps"] == steps
                       and r["method"] == method for r in sources):
                sources.append(dict(model=model.label, steps=steps, method=method,
                                    iterations=None, source=source))
            out.append(Case(steps, batch, method, fixed=0, source=source))
            continue
        found = fixed_iterations(method, steps, measured)
        if found is None:
            sources.append(dict(model=model.label, steps=steps, method=method, iterations=None,
                                source="no iteration count known: not run"))
            continue
        if not any(r["model"] == model.label and r["steps"] == steps and r["method"] == method
                   for r in sources):
            sources.append(dict(model=model.label, steps=steps, method=method,
                                iterations=found[0], source=found[1]))
        out.append(Case(steps, batch, method, fixed=found[0], source=found[1]))
    return out


def wall_clock(model: Model, steps_list: tuple[int, ...], s: Settings, clock: Clock,
               measured: dict[tuple[str, int], int], sources: list[dict[str, Any]],
               max_batch: int | None) -> list[dict[str, Any]]:
    """Every case at every N and batch; ``vs_serial`` is serial's wall over the method's."""
    rows = []
    for steps in steps_list:
        for batch in s.batches:
            group, reference = [], None
            todo = cases(model, steps, batch, measured, sources)
            if max_batch is not None and batch == max(s.batches) and steps == steps_list[-1]:
                todo += [replace(c, max_batch=max_batch) for c in todo
                         if c.method != "serial" and accepts(samplers()[c.method], "max_batch")]
            for case in todo:
                row, data = attempt(model, case, s, clock, reference)
                if row is None:
                    continue
                if case.method == "serial":
                    reference = data
                elif not model.fixed and batch == 1 and row["status"] == "ok":
                    measured[case.method, steps] = row["iterations"]
                group.append(row)
            serial = next((r for r in group if r["method"] == "serial" and r["status"] == "ok"),
                          None)
            for row in group:
                if serial is not None and row["status"] == "ok":
                    row["vs_serial"] = serial["wall_s"] / row["wall_s"]
            rows += group
    return rows


def compile_rows(models: dict[str, Model], wall: list[dict[str, Any]], s: Settings,
                 clock: Clock) -> list[dict[str, Any]]:
    """Serial and SRDS with the UNet compiled, against the eager rows of the same case (measured
    here and added to ``wall`` where this run has none)."""
    rows = []
    for key, steps, batch in s.compile_cases:
        if key not in models:
            continue
        model = compiled(models[key], s.compile_backend)
        for method in s.compile_methods:
            case = Case(steps, batch, method)
            if model.fixed and method != "serial":
                found = fixed_iterations(method, steps, {})
                if found is None:
                    continue
                case = replace(case, fixed=found[0], source=found[1])
            if not any(r["model"] == model.label and r["steps"] == steps and r["batch"] == batch
                       and r["method"] == method and r["max_batch"] is None for r in wall):
                eager_row, _ = attempt(models[key], case, s, clock, None)
                if eager_row is not None:
                    wall.append(eager_row)
            row, _ = attempt(model, case, s, clock, None, compiled_=True)
            if row is None:
                rows.append(dict(model=model.label, steps=steps, batch=batch, method=method,
                                 status="skipped (time budget)"))
                continue
            eager = next((r for r in wall if r["model"] == model.label and r["steps"] == steps
                          and r["batch"] == batch and r["method"] == method
                          and r["max_batch"] is None and r["status"] == "ok"), None)
            row["backend"] = s.compile_backend
            if eager is not None and row["status"] == "ok":
                row.update(eager_wall_s=eager["wall_s"], eager_outside_s=eager["outside_s"],
                           vs_eager=eager["wall_s"] / row["wall_s"])
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- output
def to_markdown(payload: dict[str, Any]) -> str:
    info, t = payload["machine"], payload["tables"]
    mode = "smoke (CPU, tiny shapes: checks the script, not the numbers)" if payload[
        "smoke"] else "full"
    return "\n".join([
        f"# Wall clock on {info['device_name']}",
        "",
        device_line(info),
        f"Mode: {mode}; wall clock is the median of {payload['repeats']} run(s), synchronised "
        f"at the end; the run took {info['seconds']:.0f} s. Models: "
        + "; ".join(f"{m['name']} ({m['parameters'] / 1e6:.1f}M parameters)"
                    for m in payload["models"]) + ". "
        "DDIM (eta 0); CFG evaluates two UNet rows per sample in one call (7.5 for the SD UNet, "
        "2.0 for the digits model). SRDS: pipelined, round(2 sqrt N) blocks; Picard: a window "
        "of that many steps; quasi-Newton: the full window. `... auto`: the sampler's default "
        "(`window=\"auto\"`, SRDS `blocks=\"auto\"`), whose choice is `auto chose` (a window, "
        "a block count, or serial) with its `predicted vs serial` speedup from the measured "
        "cost curve; its wall clock includes the cost probe where the model was not probed "
        "before. `depth` is sequential denoiser calls, `rows` the denoiser rows "
        "evaluated (UNet rows are twice that).",
        "",
        "## Cost of one UNet call against its rows",
        "",
        f"Median of {payload['curve_repeats']} calls after a warm-up; stops at "
        f"{SLOWDOWN:g}x the one-row time, out of memory, or a cap.",
        "",
        markdown_table(t["cost_curve"], [
            ("model", "model", "s"), ("rows", "rows", "d"), ("ms per call", "ms", ".2f"),
            ("ms per row", "ms_per_row", ".3f"), ("vs one row", "vs_one_row", ".2f"),
            ("peak MiB", "peak_mib", ".0f"), ("status", "status", "s")]),
        "",
        "## Wall clock: serial vs SRDS vs Picard vs quasi-Newton, fixed and automatic",
        "",
        "The digits model runs to the default tolerance. The random-weight SD UNet does not "
        "converge meaningfully, so its parallel samplers run the FIXED iteration counts below "
        "(taken from the digits model), with `tol = 0`; its `RMS vs serial` says how far "
        "those iterations are from serial on this model, not what a trained model would give.",
        "",
        markdown_table(payload["iteration_sources"], [
            ("model", "model", "s"), ("N", "steps", "d"), ("method", "method", "s"),
            ("iterations", "iterations", ""), ("source", "source", "s")]),
        "",
        markdown_table(t["wall_clock"], [
            ("model", "model", "s"), ("N", "steps", "d"), ("batch", "batch", "d"),
            ("method", "method", "s"), ("max_batch", "max_batch", ""), ("stop", "stop", "s"),
            ("auto chose", "chosen", ""), ("iterations", "iterations", ""),
            ("depth", "depth", ""), ("rows", "rows", ""),
            ("wall (s)", "wall_s", ".3f"), ("predicted vs serial", "predicted_vs_serial", ".2f"),
            ("vs serial", "vs_serial", ".2f"),
            ("peak MiB", "peak_mib", ".0f"), ("RMS vs serial", "rms_vs_serial", ".1e"),
            ("status", "status", "s")]),
        "",
        "## Time outside model calls",
        "",
        "One more run per configuration, before the timed ones (so it also pays for the first "
        "use of each shape), with every denoiser call timed between two device "
        "synchronisations (the syncs themselves slow it a little): `outside` = total - model "
        "time, i.e. the sampler's Python scheduling, host syncs and tensor bookkeeping. "
        "`host syncs`: the synchronisations the sampler and the denoiser make in one run, "
        "counted in a run of their own (CUDA's sync debug mode; the benchmark's own are not "
        "counted; the digits model only, the code path is the SD UNet's too).",
        "",
        markdown_table([r for r in t["wall_clock"] if r["status"] == "ok"], [
            ("model", "model", "s"), ("N", "steps", "d"), ("batch", "batch", "d"),
            ("method", "method", "s"), ("max_batch", "max_batch", ""), ("calls", "calls", "d"),
            ("most rows per call", "max_rows_per_call", "d"),
            ("total (s)", "instrumented_s", ".3f"), ("model (s)", "model_s", ".3f"),
            ("outside (s)", "outside_s", ".3f"), ("outside share", "outside_share", ".1%"),
            ("outside per call (ms)", "outside_per_call_ms", ".2f"),
            ("host syncs", "syncs", ""), ("syncs per call", "syncs_per_call", ".2f")]),
        "",
        f"## torch.compile of the UNet (backend `{payload['compile_backend']}`)",
        "",
        "`first run` includes compilation; the other columns are measured after it.",
        "",
        markdown_table(t["compile"], [
            ("model", "model", "s"), ("N", "steps", "d"), ("batch", "batch", "d"),
            ("method", "method", "s"), ("first run (s)", "first_run_s", ".1f"),
            ("wall (s)", "wall_s", ".3f"), ("eager wall (s)", "eager_wall_s", ".3f"),
            ("vs eager", "vs_eager", ".2f"), ("outside (s)", "outside_s", ".3f"),
            ("eager outside (s)", "eager_outside_s", ".3f"), ("status", "status", "s")]),
        "",
        "## Skipped",
        "",
        "\n".join(f"- {line}" for line in payload["skipped"]) or "Nothing: every measurement "
        "ran within the time budget.",
    ])


def check_outputs(out: Path, name: str) -> list[str]:
    """What is wrong with ``<out>/<name>.{json,md}``: missing, an empty table, a table with no
    measured row, a non-finite number (an empty list means the files pass)."""
    problems = []
    try:
        payload = json.loads((out / f"{name}.json").read_text())
        markdown = (out / f"{name}.md").read_text()
    except (OSError, ValueError) as error:
        return [f"cannot read the results: {error}"]
    if not payload.get("machine", {}).get("device_name"):
        problems.append("the device is not named")
    for table in TABLES:
        rows = payload.get("tables", {}).get(table)
        if not rows:
            problems.append(f"table {table!r} has no rows")
        elif table != "compile" and not any(r.get("status") == "ok" for r in rows):
            problems.append(f"table {table!r} has no measured row")
    stack: list[tuple[str, Any]] = [("", payload)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            stack += [(f"{where}.{k}", v) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(f"{where}[{i}]", v) for i, v in enumerate(value)]
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{where} is {value}")
    for heading in ("## Cost of one UNet call", "## Wall clock", "## Time outside",
                    "## torch.compile"):
        if heading not in markdown:
            problems.append(f"the markdown lacks {heading!r}")
    return problems


# ----------------------------------------------------------------------------- main
def run(s: Settings, clock: Clock) -> dict[str, Any]:
    """Every measurement of ``s.parts``, in order of importance (the budget cuts the tail): the
    digits model at N < 1000, the SD UNet in its first dtype, the digits model at N >= 1000,
    compilation, the SD UNet in its other dtypes."""
    tables: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    sources: list[dict[str, Any]] = []
    measured: dict[tuple[str, int], int] = {}
    models_seen: list[dict[str, Any]] = []
    digits_ = digits_model(s)
    models_seen.append(dict(name=digits_.name, parameters=digits_.parameters))
    curve = cost_curve(digits_, s, clock)
    tables["cost_curve"] += curve
    limit = knee(curve)
    digits_max_batch = max(1, limit // 2) if limit else None  # CFG: two UNet rows per row
    if "digits" in s.parts:
        small = tuple(n for n in s.digits_steps if n < 1000)
        tables["wall_clock"] += wall_clock(digits_, small, s, clock, measured, sources,
                                           digits_max_batch)
    unet, tokens, width = sd_unet(s)
    first = next(iter(s.sd_steps))
    for dtype, steps in s.sd_steps.items():
        part = "sd" if dtype == first else "dtypes"
        sd = sd_model(unet, tokens, width, dtype, s)
        if part in s.parts:
            clock.say(f"{sd.label}: {sd.parameters / 1e6:.1f}M parameters")
            curve = cost_curve(sd, s, clock)
            tables["cost_curve"] += curve
            limit = knee(curve)
            tables["wall_clock"] += wall_clock(sd, steps, s, clock, measured, sources,
                                               max(1, limit // 2) if limit else None)
        if dtype == first:  # after the first dtype (compiling takes minutes)
            if "large" in s.parts:
                large = tuple(n for n in s.digits_steps if n >= 1000)
                tables["wall_clock"] += wall_clock(digits_, large, s, clock, measured, sources,
                                                   digits_max_batch)
            if "compile" in s.parts:
                tables["compile"] += compile_rows({"digits": digits_, "sd": sd},
                                                  tables["wall_clock"], s, clock)
            models_seen.append(dict(name=sd.name, parameters=sd.parameters))
    order = list(dict.fromkeys(r["model"] for r in tables["wall_clock"]))
    tables["wall_clock"].sort(key=lambda r: order.index(r["model"]))  # stable: N, batch kept
    return dict(tables=tables, iteration_sources=sources, models=models_seen)


def parts(text: str) -> tuple[str, ...]:
    """``--parts``: known part names, kept in :data:`PARTS`' order."""
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = names - set(PARTS)
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of "
                                         f"{','.join(PARTS)}, got {text!r}")
    return tuple(name for name in PARTS if name in names)


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--smoke", action="store_true",
                        help="CPU, tiny shapes, about a minute: checks the script")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default benchmarks/results; smoke: a temp dir)")
    parser.add_argument("--device", default=None, help="default cuda (smoke: cpu)")
    parser.add_argument("--budget-s", type=float, default=400.0,
                        help="skip the measurements that would start after this many seconds")
    parser.add_argument("--parts", type=parts, default=PARTS,
                        help=f"comma-separated parts to measure (default all: {','.join(PARTS)}); "
                             "a subset names the results gpu_<device>_<parts>")
    args = parser.parse_args()
    s = settings(args)
    if s.device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run `python benchmarks/gpu.py --smoke` for the CPU check",
              file=sys.stderr)
        return 2
    setup(args.threads)
    out = args.out or (Path(tempfile.mkdtemp(prefix="pint-gpu-smoke-")) if s.smoke else RESULTS)
    info = device_info(s.device)
    clock = Clock(s.budget_s)
    clock.say(f"device {info['device_name']}; mode {'smoke' if s.smoke else 'full'}")
    with torch.no_grad():
        results = run(s, clock)
    info["seconds"] = clock.elapsed()
    name = f"gpu_{slug(info['device_name'])}" + (
        "" if s.parts == PARTS else "_" + "-".join(s.parts))
    payload = dict(machine=info, smoke=s.smoke, plan=s.plan(), repeats=s.repeats,
                   curve_repeats=s.curve_repeats, compile_backend=s.compile_backend,
                   budget_s=s.budget_s, skipped=clock.skipped, **results)
    write_results(name, payload, to_markdown(payload), out)
    problems = check_outputs(out, name)
    for problem in problems:
        print(f"check failed: {problem}", file=sys.stderr)
    print(f"{'FAILED' if problems else 'ok'}: {out / name}.json and .md "
          f"({clock.elapsed():.0f} s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
