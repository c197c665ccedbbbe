"""Parallel sampling inside diffusers pipelines, called like the originals.

:class:`ParallelMixin` replaces only the denoising loop of a diffusers pipeline: prompt
encoding, latent preparation, the scheduler's ``set_timesteps`` and decoding stay the
pipeline's own. The loop is driven by a parallel sampler over the pipeline's scheduler (any
deterministic one, see :mod:`pint_diffusion.schedulers`), so at full iterations the latents are
those of the serial pipeline. Four pipelines use it:

- :class:`ParallelStableDiffusionPipeline` (``StableDiffusionPipeline``),
- :class:`ParallelStableDiffusionXLPipeline` (``StableDiffusionXLPipeline``),
- :class:`ParallelStableDiffusion3Pipeline` (``StableDiffusion3Pipeline``),
- :class:`ParallelFluxPipeline` (``FluxPipeline``),

each built with ``from_pipe(pipe)`` (components shared) and called like the original plus
``sampler=`` (default: :class:`DefaultSampler`, quasi-Newton or SRDS by scheduler) and, over
``torch.distributed`` ranks, ``cfg_group=`` (CFG-parallel, see :class:`ParallelMixin`)::

    from pint_diffusion import SRDS
    from pint_diffusion.pipelines import ParallelStableDiffusionXLPipeline
    par = ParallelStableDiffusionXLPipeline.from_pipe(pipe)
    out = par("a castle", num_inference_steps=30, sampler=SRDS(tol=1e-3))
    out.images, out.info.sequential_nfe

:class:`StableDiffusionSRDSPipeline` is the former name of the SD one: the same pipeline, its
``srds_*`` keyword arguments building ``sampler=SRDS(...)``. :func:`pipeline_for_folder` picks
the parallel pipeline of a saved model folder.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    FluxPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)

from .families import FluxCall, SD3Call, UNetCall
from .samplers import DEFAULT_TOL, SRDS, QuasiNewton

__all__ = [
    "PARALLEL_PIPELINES",
    "DefaultSampler",
    "ParallelFluxPipeline",
    "ParallelMixin",
    "ParallelStableDiffusion3Pipeline",
    "ParallelStableDiffusionPipeline",
    "ParallelStableDiffusionXLPipeline",
    "StableDiffusionSRDSPipeline",
    "default_sampler",
    "pipeline_for_folder",
]


def _keeps_history(trajectory: Any) -> bool:
    """Whether the scheduler of a :func:`~pint_diffusion.schedulers.scheduler_trajectory` keeps
    history between steps (its state has rows beside the latents: DPM++, UniPC, PNDM, Heun)."""
    return trajectory.y0.shape[1] > 1


def default_sampler(trajectory: Any, blocks: int | str | None = "auto",
                    tol: float = DEFAULT_TOL) -> Any:
    """The pipelines' default sampler for a scheduler, the fastest that is safe for it:
    ``QuasiNewton(window=blocks, tol=tol)`` (the fewest sequential model calls,
    ``benchmarks/results/quasi_newton.md``) for schedulers without history (DDIM, Euler, flow
    matching Euler), ``SRDS(blocks=blocks, tol=tol)`` for those that keep history (see
    :func:`_check_sampler`). The one place this rule lives."""
    if _keeps_history(trajectory):
        return SRDS(blocks=blocks, tol=tol)
    return QuasiNewton(window=blocks, tol=tol)


class DefaultSampler:
    """A sampler object that solves with :func:`default_sampler` for the trajectory it gets,
    with the given ``blocks`` (SRDS's blocks, quasi-Newton's window) and ``tol``; what a
    pipeline called without ``sampler=`` uses (with the defaults)."""

    def __init__(self, blocks: int | str | None = "auto", tol: float = DEFAULT_TOL) -> None:
        self.blocks, self.tol = blocks, tol

    def __repr__(self) -> str:
        return f"DefaultSampler(blocks={self.blocks}, tol={self.tol:g})"

    def solve(self, trajectory: Any, **kwargs: Any) -> Any:
        """``default_sampler(trajectory, blocks, tol).solve(trajectory, **kwargs)``."""
        return default_sampler(trajectory, self.blocks, self.tol).solve(trajectory, **kwargs)


class _Capture:
    """Stands in for the pipeline's network during the loop: records the calls of step 0 and
    returns probes (0 for unconditional, 1 for conditional rows) so that the guidance scale
    can be read off the combined output; later calls return zeros."""

    def __init__(self, model: Any, batched: bool) -> None:
        self.model = model
        self.batched = batched
        self.calls: list[tuple[tuple, dict]] = []
        self.done = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        if self.done:
            return (torch.zeros_like(sample),)
        self.calls.append((args, kwargs))
        probe = torch.ones_like(sample)
        if self.batched:
            probe[: len(sample) // 2] = 0
        elif len(self.calls) > 1:
            probe.zero_()
        return (probe,)


class _Loop:
    """Stands in for the scheduler during the loop: at the first ``step`` it runs the parallel
    sampler on a copy of the real scheduler; every ``step`` returns the final latents."""

    def __init__(self, pipe: Any, scheduler: Any, capture: _Capture, family: type,
                 sampler: Any, disable: bool, max_batch: int | str | None,
                 cfg_group: Any = None) -> None:
        self.pipe = pipe
        self.cfg_group = cfg_group
        self.scheduler = scheduler
        self.capture = capture
        self.family = family
        self.sampler = sampler
        self.disable = disable
        self.max_batch = max_batch
        self.latents: torch.Tensor | None = None
        self.info: Any = None
        import functools

        @functools.wraps(scheduler.step)
        def step(*args: Any, **kwargs: Any) -> Any:
            return self._step(*args, **kwargs)

        self.step = step  # the real signature: the pipeline passes eta etc. when it accepts them

    def __getattr__(self, name: str) -> Any:
        return getattr(self.scheduler, name)

    def _step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor,
              *args: Any, return_dict: bool = True, **kwargs: Any) -> Any:
        if self.latents is None:
            self.latents = self._solve(model_output, sample, args, kwargs)
        from diffusers.schedulers.scheduling_utils import SchedulerOutput

        out = self.latents.to(sample.dtype)
        return SchedulerOutput(prev_sample=out) if return_dict else (out,)

    def _solve(self, probe: torch.Tensor, sample: torch.Tensor, args: tuple,
               kwargs: dict[str, Any]) -> torch.Tensor:
        import copy

        from .families import Guided
        from .samplers.conditioning import per_row
        from .schedulers import scheduler_trajectory

        if args:
            raise TypeError("the pipeline passed positional scheduler options; not supported")
        kwargs.pop("generator", None)
        capture = self.capture
        capture.done = True
        batch = sample.shape[0]
        calls = capture.calls
        name = type(self.pipe).__name__
        if not calls:
            raise RuntimeError(f"{name} stepped the scheduler without calling its network")
        call, cond = self.family.from_call(capture.model, *calls[0])
        rows = len(calls[0][0][0] if calls[0][0] else calls[0][1][self.family.sample_key])
        uncond, scale = None, 1.0
        if len(calls) > 1 or rows != batch:
            values = probe.unique()
            if len(values) != 1 or not bool(torch.isfinite(values).all()):
                raise ValueError(
                    f"{name} combines the conditional and unconditional outputs in a way that is "
                    f"not classifier-free guidance (e.g. guidance_rescale > 0); not supported")
            scale = float(values[0])
            if self.family.batched_guidance and len(calls) == 1 and rows == 2 * batch:
                half = torch.arange(batch, device=sample.device)
                uncond = per_row(cond, half, 2 * batch)
                cond = per_row(cond, half + batch, 2 * batch)
            elif not self.family.batched_guidance and len(calls) == 2 and rows == batch:
                _, uncond = self.family.from_call(capture.model, *calls[1])
            else:
                raise ValueError(f"{name} made {len(calls)} network calls of {rows} rows for "
                                 f"{batch} latents in its first step; not supported")
        max_batch, blocks = self.max_batch, "auto"
        if self.cfg_group is not None:
            if uncond is None:
                raise ValueError(f"cfg_group splits the unconditional and conditional rows of "
                                 f"classifier-free guidance, which is off in this call of "
                                 f"{name} (guidance_scale <= 1 or no negative conditioning); "
                                 f"leave cfg_group=None")
            from pint.transport.rows import SplitRows

            call = SplitRows(call, None if isinstance(self.cfg_group, str) else self.cfg_group)
            # each rank would time its own cost probe, and every rank must make the same calls
            max_batch = None if max_batch == "auto" else max_batch
            blocks = None
        model = Guided(call, cond, batch, uncond=uncond, scale=scale,
                       batched=self.family.batched_guidance)
        trajectory = scheduler_trajectory(copy.deepcopy(self.scheduler), model, sample,
                                          step_kwargs=kwargs,
                                          key=(capture.model, uncond is not None))
        sampler = default_sampler(trajectory, blocks) if self.sampler is None else self.sampler
        _check_sampler(sampler, trajectory, self.scheduler)
        if self.cfg_group is not None:
            _check_agreed(sampler)
        samples, self.info = sampler.solve(trajectory, disable=self.disable,
                                           max_batch=max_batch)
        return samples


def _check_sampler(sampler: Any, trajectory: Any, scheduler: Any) -> None:
    """Refuse Picard-type samplers with a tolerance on schedulers that keep history.

    Picard and quasi-Newton iterate every step's state at once; with a multistep scheduler the
    state holds its history, whose update is not a contraction: on the bundled digits model
    (N = 100, default tolerance) quasi-Newton stopped far from the serial result with DPM++ 2M
    and PNDM and Picard overflowed, while both were fine with Euler. At ``tol=0`` (full
    iterations) they are exact, so that stays allowed.
    """
    from .samplers import Picard

    if isinstance(sampler, Picard | QuasiNewton) and sampler.tol > 0 and \
            _keeps_history(trajectory):
        raise ValueError(
            f"{type(sampler).__name__}(tol={sampler.tol:g}) is not reliable with "
            f"{type(scheduler).__name__}, which keeps history between steps (it can stop far "
            f"from the serial result); use pint_diffusion.SRDS(...), tol=0, or a scheduler "
            f"without history (DDIMScheduler, EulerDiscreteScheduler, "
            f"FlowMatchEulerDiscreteScheduler)")


def _check_agreed(sampler: Any) -> None:
    """With ``cfg_group``, refuse a window (SRDS: block count) chosen by timing a cost probe:
    each rank would time its own and choose its own, while the ranks of the group must make the
    same network calls. (A sampler with its own ``group=`` has already made that choice
    ``None``, see :func:`~pint_diffusion.samplers.auto.over_group`.)"""
    from .samplers.auto import AutoWindow

    for attr in ("window", "blocks"):
        size = getattr(sampler, attr, None)
        if (isinstance(size, str) and size == "auto") or (
                isinstance(size, AutoWindow) and size.curve is None):
            raise ValueError(
                f"cfg_group: {type(sampler).__name__}({attr}='auto') times a cost probe on "
                f"each rank, and the ranks of cfg_group must agree on the {attr}; give it as a "
                f"number, None (the full window) or AutoWindow(curve=...)")


def _check_cfg_group(cfg_group: Any, family: type) -> None:
    """``cfg_group`` is ``None``, ``"default"`` or a process group, of an initialized
    ``torch.distributed``, on a pipeline that batches classifier-free guidance."""
    if cfg_group is None:
        return
    import torch.distributed as dist

    if isinstance(cfg_group, str):
        if cfg_group != "default":
            raise ValueError(f"cfg_group must be None, \"default\" or a process group, got "
                             f"{cfg_group!r}")
    elif not dist.is_available() or not isinstance(cfg_group, dist.ProcessGroup):
        raise TypeError(f"cfg_group must be None, \"default\" or a torch.distributed process "
                        f"group, got {type(cfg_group).__name__}")
    if not family.batched_guidance:
        raise ValueError(f"cfg_group is not supported with {family.__name__}: its guidance "
                         f"(e.g. Flux's true CFG) makes two network calls, not one batched "
                         f"call to split; leave cfg_group=None")
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("cfg_group needs an initialized process group: call "
                         "torch.distributed.init_process_group() on every rank first "
                         "(e.g. under torchrun)")


#: Pipeline call options the parallel loop cannot honour, with their harmless values.
_REFUSED: dict[str, Any] = {
    "callback_on_step_end": None, "callback": None, "guidance_rescale": 0.0,
    "denoising_end": None, "ip_adapter_image": None, "ip_adapter_image_embeds": None,
    "negative_ip_adapter_image": None, "negative_ip_adapter_image_embeds": None,
    "skip_guidance_layers": None,
}


def _check_names(call: Any, options: dict[str, Any]) -> None:
    """Refuse keyword arguments the pipeline's call does not name: diffusers' ``**kwargs``
    (kept for deprecated options) would swallow a misspelt option silently."""
    import inspect

    named = {name for name, p in inspect.signature(call).parameters.items()
             if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    unknown = sorted(set(options) - named - set(_REFUSED))
    if unknown:
        raise TypeError(f"unexpected argument {unknown[0]!r}: not an argument of "
                        f"{type(call.__self__).__name__}")


def _check_guidance(options: dict[str, Any]) -> None:
    """Guidance weights given as numbers must be finite: the pipelines compare them with 1 to
    decide whether to guide, so NaN would silently turn guidance off."""
    import math
    from numbers import Real

    for key in ("guidance_scale", "true_cfg_scale"):
        value = options.get(key)
        if isinstance(value, Real) and not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number, got {value!r}")


def _check_custom_schedule(scheduler: Any, options: dict[str, Any]) -> None:
    """Custom ``timesteps``/``sigmas`` need a scheduler whose ``set_timesteps`` takes them; said
    here, naming it (diffusers would name the loop's stand-in in place of the scheduler)."""
    import inspect

    accepted = inspect.signature(scheduler.set_timesteps).parameters
    for key in ("timesteps", "sigmas"):
        if options.get(key) is not None and key not in accepted:
            raise ValueError(f"{key}: {type(scheduler).__name__}.set_timesteps does not take "
                             f"custom {key}; use a scheduler that does (e.g. "
                             f"EulerDiscreteScheduler) or leave {key}=None")


class ParallelMixin:
    """Replaces only the denoising loop of a diffusers pipeline with a parallel sampler.

    Mixed into a pipeline class before it (``class P(ParallelMixin, FluxPipeline)``) with a
    :class:`pint_diffusion.families.FamilyCall` subclass as ``family`` and the network's
    attribute name as ``network``. The pipeline's own ``__call__`` runs unchanged (prompt
    encoding, ``set_timesteps``, latent preparation, decoding); during it the network and the
    scheduler are replaced by stand-ins that record the first step's network call (the
    conditioning exactly as the pipeline built it) and run the sampler at the first
    ``scheduler.step``: the sampler integrates the scheduler's own steps
    (:func:`~pint_diffusion.schedulers.scheduler_trajectory`) with the real network, and every
    step of the pipeline's loop then returns the sampler's final latents.

    Call it like the original plus ``sampler=``, a sampler object: ``pint_diffusion.SRDS(...)``
    ``QuasiNewton(...)``, ``Picard(...)``, ``Serial()``; default :func:`default_sampler`. The run's
    statistics (:class:`pint_diffusion.SamplerInfo`) are in ``out.info`` (and
    ``pipe.last_info``). ``max_batch=`` caps the rows of one model call (a round of more rows
    is split into several calls: same result and depth, less memory); ``"auto"`` (default):
    what fits in the device's free memory (see :meth:`pint_diffusion.Sampler.solve`). Keyword
    arguments the pipeline does not name raise ``TypeError`` (diffusers would ignore them).

    ``cfg_group=`` (a ``torch.distributed`` process group, or ``"default"``; default ``None``)
    is CFG-parallel: the batched classifier-free guidance call (the unconditional rows, then the
    conditional ones) is wrapped in :class:`pint.transport.rows.SplitRows`, so on 2 ranks one
    evaluates the unconditional half and the other the conditional half, and every rank gets
    the whole output (any group size works: the rows are split evenly). Every rank calls the
    pipeline with the same arguments and latents and gets the same images, those of one process
    (bit for bit when the network computes each row independently of its batch). It combines
    with a sampler's own ``group=`` (the rows of its window over other ranks). Since the ranks
    must make the same network calls, the window is not timed: without ``sampler=`` the
    default sampler takes the full window (SRDS: ``round(2 sqrt(N))`` blocks), a sampler with
    ``window="auto"`` is refused, and ``max_batch="auto"`` is no cap. A rank whose network
    raises makes the others raise :class:`pint.distributed.RankFailed` naming it. Refused:
    ``cfg_group`` with guidance off, on Flux (its true CFG makes two calls), or without an
    initialized process group (``ValueError``).

    Refused with ``ValueError``: stochastic schedulers or options (``eta > 0``, ...),
    ``callback_on_step_end``, ``guidance_rescale > 0``, ``denoising_end``, IP-Adapter inputs,
    SD3's ``skip_guidance_layers``, a non-finite ``guidance_scale`` or ``true_cfg_scale`` (NaN
    would turn guidance off), and Picard-type samplers with a tolerance on schedulers that keep
    history.
    """

    family: type = type(None)
    network: str = "unet"
    last_info: Any = None

    @torch.no_grad()
    def __call__(self, *args: Any, sampler: Any = None, max_batch: int | str | None = "auto",
                 cfg_group: Any = None, **kwargs: Any) -> Any:
        """The original pipeline's call with the parallel ``sampler``; see the class docs."""
        _check_names(super().__call__, kwargs)  # type: ignore[misc]
        for key, harmless in _REFUSED.items():
            if key in kwargs and kwargs[key] != harmless:
                raise ValueError(
                    f"{key}={kwargs[key]!r} is not supported by parallel sampling (the loop's "
                    f"steps run out of order); leave it at {harmless!r}")
        _check_guidance(kwargs)
        _check_cfg_group(cfg_group, self.family)
        _check_custom_schedule(self.scheduler, kwargs)
        if isinstance(sampler, type):
            raise TypeError(f"sampler must be a sampler object, not a class: got the class "
                            f"{sampler.__name__}; use {sampler.__name__}()")
        if sampler is not None and not callable(getattr(sampler, "solve", None)):
            raise TypeError(f"sampler must be a sampler object with .solve(trajectory), e.g. "
                            f"pint_diffusion.SRDS(); got {type(sampler).__name__}")
        disable = getattr(self, "_progress_bar_config", {}).get("disable", False)
        network = getattr(self, self.network)
        scheduler = self.scheduler
        capture = _Capture(network, self.family.batched_guidance)
        loop = _Loop(self, scheduler, capture, self.family, sampler, disable, max_batch,
                     cfg_group)
        object.__setattr__(self, self.network, capture)
        object.__setattr__(self, "scheduler", loop)
        try:
            out = super().__call__(*args, **kwargs)  # type: ignore[misc]
        finally:
            object.__setattr__(self, self.network, network)
            object.__setattr__(self, "scheduler", scheduler)
        self.last_info = loop.info
        if not isinstance(out, tuple):
            out.info = loop.info
        return out


class ParallelStableDiffusionPipeline(ParallelMixin, StableDiffusionPipeline):
    """``StableDiffusionPipeline`` with a parallel sampler (see :class:`ParallelMixin`)."""

    family = UNetCall
    network = "unet"


class StableDiffusionSRDSPipeline(ParallelStableDiffusionPipeline):
    """The former name of :class:`ParallelStableDiffusionPipeline`, kept for its keyword
    arguments: the same pipeline, always sampling with SRDS, built from

    - ``srds_blocks`` (``SRDS(blocks=...)``, default ``round(2 sqrt(N))``),
    - ``srds_tol`` (``tol``, default :data:`pint_diffusion.DEFAULT_TOL`),
    - ``srds_pipelined`` (``pipelined``, default ``True``),
    - ``srds_max_iters`` (``max_iters``, default: the number of blocks, which reproduces the
      serial pipeline's latents),
    - ``srds_group`` (``group``: a ``torch.distributed`` process group, or ``None``).

    Migration: ``ParallelStableDiffusionPipeline.from_pipe(pipe)(..., sampler=SRDS(blocks=b,
    tol=t))`` is ``StableDiffusionSRDSPipeline.from_pipe(pipe)(..., srds_blocks=b,
    srds_tol=t)``; the run's statistics are in ``out.info`` (formerly ``out.srds``).
    """

    def __call__(self, *args: Any, srds_blocks: int | None = None,  # type: ignore[override]
                 srds_tol: float = DEFAULT_TOL, srds_pipelined: bool = True,
                 srds_max_iters: int | None = None, srds_group: Any = None,
                 **kwargs: Any) -> Any:
        """``ParallelStableDiffusionPipeline``'s call with ``sampler=SRDS(...)`` built from the
        ``srds_*`` arguments; see the class docs."""
        if "sampler" in kwargs:
            raise TypeError("StableDiffusionSRDSPipeline takes the srds_* arguments, not "
                            "sampler=; use ParallelStableDiffusionPipeline for any sampler")
        sampler = SRDS(blocks=srds_blocks, tol=srds_tol, pipelined=srds_pipelined,
                       max_iters=srds_max_iters, group=srds_group)
        return super().__call__(*args, sampler=sampler, **kwargs)


class ParallelStableDiffusionXLPipeline(ParallelMixin, StableDiffusionXLPipeline):
    """``StableDiffusionXLPipeline`` with a parallel sampler (see :class:`ParallelMixin`)."""

    family = UNetCall
    network = "unet"


class ParallelStableDiffusion3Pipeline(ParallelMixin, StableDiffusion3Pipeline):
    """``StableDiffusion3Pipeline`` with a parallel sampler (see :class:`ParallelMixin`)."""

    family = SD3Call
    network = "transformer"


class ParallelFluxPipeline(ParallelMixin, FluxPipeline):
    """``FluxPipeline`` with a parallel sampler (see :class:`ParallelMixin`)."""

    family = FluxCall
    network = "transformer"


#: The parallel pipeline of each supported diffusers pipeline class (``model_index.json``'s
#: ``_class_name``).
PARALLEL_PIPELINES: dict[str, type] = {
    "StableDiffusionPipeline": ParallelStableDiffusionPipeline,
    "StableDiffusionXLPipeline": ParallelStableDiffusionXLPipeline,
    "StableDiffusion3Pipeline": ParallelStableDiffusion3Pipeline,
    "FluxPipeline": ParallelFluxPipeline,
}


def pipeline_for_folder(path: str | Any, scheduler: str | None = None, **kwargs: Any) -> Any:
    """Load a saved diffusers pipeline folder as its parallel pipeline.

    The class comes from the folder's ``model_index.json`` (``_class_name``); the components
    load with ``from_pretrained(path, local_files_only=True, **kwargs)``.

    Args:
        path: the folder (with ``model_index.json``).
        scheduler: the name of a diffusers scheduler class to use instead of the saved one
            (e.g. ``"DPMSolverMultistepScheduler"``), built ``from_config`` of the saved one;
            ``None`` keeps the saved scheduler.
        **kwargs: passed to ``from_pretrained`` (e.g. ``torch_dtype``).

    Returns:
        A :data:`PARALLEL_PIPELINES` instance.

    Raises:
        FileNotFoundError: no ``model_index.json`` in ``path``.
        ValueError: a pipeline class or scheduler name that is not supported (the name is
            checked before the pipeline loads; a stochastic scheduler after).
        TypeError: ``scheduler`` is not a str or None.
    """
    import json
    from pathlib import Path

    import diffusers

    index = Path(path) / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{index} not found: path must be a diffusers pipeline folder")
    name = json.loads(index.read_text()).get("_class_name")
    if name not in PARALLEL_PIPELINES:
        raise ValueError(f"the pipeline {name!r} of {path} is not supported; supported: "
                         f"{', '.join(PARALLEL_PIPELINES)}")
    cls = None
    if scheduler is not None:  # checked before the (slow) loading
        if not isinstance(scheduler, str):
            raise TypeError(f"scheduler must be the name of a diffusers scheduler class (a str, "
                            f"e.g. 'DPMSolverMultistepScheduler') or None; got {scheduler!r}")
        cls = getattr(diffusers, scheduler, None)
        if cls is None or not hasattr(cls, "from_config") or not scheduler.endswith("Scheduler"):
            raise ValueError(f"scheduler must name a diffusers scheduler class, e.g. "
                             f"'DPMSolverMultistepScheduler'; got {scheduler!r}")
    pipe = PARALLEL_PIPELINES[name].from_pretrained(str(path), local_files_only=True, **kwargs)
    if cls is not None:
        from .schedulers import check_deterministic

        pipe.scheduler = cls.from_config(pipe.scheduler.config)
        check_deterministic(pipe.scheduler)
    return pipe
