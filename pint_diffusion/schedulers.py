"""Any deterministic diffusers scheduler as a pint propagator over its own steps.

A diffusers sampling loop is ``for t in scheduler.timesteps: out = model(scale(x), t);
x = scheduler.step(out, t, x)``. Multistep schedulers (DPM++ 2M/3M, UniPC, PNDM, DEIS, LMS) and
two-stage ones (Heun, KDPM2) keep *history* between the calls: previous model outputs, the last
sample, a derivative. With that history in the state, every call of ``step`` is an exact one-step
map, so Parareal (SRDS) and the serial loop solve the same discrete problem:

- the **state** of one sample is ``(1 + H, *latent_shape)``: row 0 the latents, rows 1..H the
  scheduler's history tensors (absent ones are zeros);
- the **time** is the step index: the grid is ``0, 1, ..., N`` for the scheduler's ``N``
  timesteps (Heun's and KDPM2's doubled tables included: one point per model call);
- the **vector field** at step ``j`` is the model output the scheduler's ``step`` receives, at
  the latent row (rows 1..H are zero), computed on ``scheduler.scale_model_input(latents, t_j)``;
- the **fine** propagator (:class:`SchedulerPropagator`) calls the scheduler's own ``step``
  for every grid step of a slice; the **coarse** propagator (:class:`HeldOutput`) evaluates
  the model once at the start of a slice and takes the scheduler's steps across it with that
  output held fixed (for DDIM and Euler on an epsilon model this is exactly one first-order
  step over the block).

:class:`SchedulerStep` makes ``step`` a pure function of (step index, state, model output): a
dry run of the scheduler (cheap tensor arithmetic, no model) records its internal counters
before every step (``_step_index``, ``lower_order_nums``, ``counter``, ``this_order``, ...) and
which attributes hold history tensors (``model_outputs``, ``ets``, ``last_sample``,
``prev_derivative``, ``sample``, ``derivatives``, ...); each call rebuilds a scheduler in the
recorded state, puts the rows' history in, calls ``step`` and reads the history back. Rows at
different steps (from different blocks) go through one call per step, grouped.

Stochastic schedulers are refused (:func:`check_deterministic`): by class or option (DDPM,
Euler ancestral, DPM++ SDE, ``eta > 0``, ``s_churn > 0``, ...) with a message naming it, and any
other scheduler whose ``step`` draws random numbers (its dry run gives different results under
different seeds).

:func:`scheduler_trajectory` packs these into a :class:`pint_diffusion.samplers.Trajectory`,
so every sampler object (SRDS, Picard, quasi-Newton, serial) solves it. Example::

    pipe.scheduler.set_timesteps(20)                  # as the pipeline would
    trajectory = scheduler_trajectory(pipe.scheduler, model, latents)
    latents, info = pint_diffusion.SRDS(tol=0).solve(trajectory)  # == the serial loop
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pint.engine import Propagation, Request

from .samplers import Trajectory

__all__ = [
    "STOCHASTIC_SCHEDULERS",
    "TESTED_SCHEDULERS",
    "HeldOutput",
    "SchedulerPropagator",
    "SchedulerStep",
    "check_deterministic",
    "scheduler_trajectory",
    "serial_loop",
]

#: Scheduler classes whose ``step`` adds fresh noise, with the reason shown when refused.
STOCHASTIC_SCHEDULERS: dict[str, str] = {
    "DDPMScheduler": "ancestral sampling adds noise at every step",
    "DDPMParallelScheduler": "ancestral sampling adds noise at every step",
    "DDPMWuerstchenScheduler": "ancestral sampling adds noise at every step",
    "EulerAncestralDiscreteScheduler": "ancestral sampling adds noise at every step",
    "KDPM2AncestralDiscreteScheduler": "ancestral sampling adds noise at every step",
    "DPMSolverSDEScheduler": "an SDE solver: it adds Brownian noise at every step",
    "LCMScheduler": "it re-noises the prediction at every step",
    "TCDScheduler": "it re-noises the prediction at every step (gamma > 0)",
    "CMStochasticIterativeScheduler": "it re-noises the prediction at every step",
    "ScoreSdeVeScheduler": "an SDE solver: it adds noise at every step",
    "RePaintScheduler": "it adds noise at every step",
}

#: Scheduler options (config entries or ``step`` arguments) that make a scheduler stochastic:
#: ``name -> predicate on the value``.
_STOCHASTIC_OPTIONS: dict[str, Callable[[Any], bool]] = {
    "eta": lambda v: bool(v),
    "s_churn": lambda v: bool(v),
    "stochastic_sampling": lambda v: bool(v),
    "algorithm_type": lambda v: isinstance(v, str) and v.startswith("sde-"),
}

#: The diffusers schedulers the test suite checks against the serial pipelines (any other
#: deterministic scheduler is accepted too).
TESTED_SCHEDULERS: tuple[str, ...] = (
    "DDIMScheduler", "EulerDiscreteScheduler", "HeunDiscreteScheduler", "KDPM2DiscreteScheduler",
    "DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "PNDMScheduler",
    "DEISMultistepScheduler", "LMSDiscreteScheduler", "FlowMatchEulerDiscreteScheduler",
)

#: Lists that grow without bound in a scheduler but whose last few entries are all it reads.
_LIST_CAPS: dict[str, int] = {"ets": 4}


def _name(scheduler: Any) -> str:
    return type(scheduler).__name__


def check_deterministic(scheduler: Any, step_kwargs: dict[str, Any] | None = None) -> None:
    """Refuse a scheduler (or ``step`` options) that samples randomly.

    Args:
        scheduler: a diffusers scheduler.
        step_kwargs: extra keyword arguments that will be passed to ``scheduler.step`` (e.g. the
            pipeline's ``eta``).

    Raises:
        ValueError: naming the scheduler and the class or option that makes it stochastic.
    """
    name = _name(scheduler)
    if name in STOCHASTIC_SCHEDULERS:
        raise ValueError(
            f"{name} is stochastic ({STOCHASTIC_SCHEDULERS[name]}); parallel sampling needs a "
            f"deterministic scheduler, e.g. DDIMScheduler, EulerDiscreteScheduler or "
            f"DPMSolverMultistepScheduler with algorithm_type='dpmsolver++'"
        )
    config = getattr(scheduler, "config", {}) or {}
    for where, values in (("config", config), ("step argument", step_kwargs or {})):
        for option, stochastic in _STOCHASTIC_OPTIONS.items():
            if option in values and stochastic(values[option]):
                raise ValueError(
                    f"{name} with {option}={values[option]!r} (in its {where}) is stochastic; "
                    f"parallel sampling needs a deterministic scheduler: "
                    + ("use a non-SDE algorithm_type, e.g. 'dpmsolver++'"
                       if option == "algorithm_type" else f"set {option} to 0/False")
                )


@dataclass(frozen=True)
class _Slot:
    """Where a history tensor lives in a scheduler: ``getattr(s, name)`` or ``...[index]``."""

    name: str
    index: int | None  # None: the attribute itself; else a negative list index

    def __str__(self) -> str:
        return self.name if self.index is None else f"{self.name}[{self.index}]"


def _snapshot(sched: Any) -> dict[str, Any]:
    """A copy of a scheduler's ``__dict__``: lists copied, tensors shared, the rest deep-copied."""
    return {k: list(v) if isinstance(v, list) else v if isinstance(v, Tensor)
            else copy.deepcopy(v) for k, v in vars(sched).items()}


def _entries(state: dict[str, Any]) -> dict[_Slot, Any]:
    """Every attribute and every list entry (negative index; capped lists cut) of a state."""
    out: dict[_Slot, Any] = {}
    for name, value in state.items():
        if isinstance(value, list):
            items = value[-_LIST_CAPS[name]:] if name in _LIST_CAPS else value
            for i, item in enumerate(items):
                out[_Slot(name, i - len(items))] = item
        else:
            out[_Slot(name, None)] = value
    return out


def _template(state: dict[str, Any], slots: list[_Slot],
              history: Callable[[Any], bool]) -> dict[str, Any]:
    """A copy of a scheduler's ``__dict__`` with the history slots that hold history in this
    state (``history(value)``) emptied (None); a slot that holds something else here (PNDM's
    ``cur_model_output`` is the int 0 between its Runge-Kutta stages) keeps that value."""
    out: dict[str, Any] = {}
    for name, value in state.items():
        if isinstance(value, list):
            value = value[-_LIST_CAPS[name]:] if name in _LIST_CAPS else value
            out[name] = [None if _Slot(name, i - len(value)) in slots
                         and history(v) else v for i, v in enumerate(value)]
        elif _Slot(name, None) in slots and history(value):
            out[name] = None
        else:
            out[name] = value
    return out


class SchedulerStep:
    """A diffusers scheduler's ``step`` as a pure function of (step, state, model output).

    Build it from a scheduler on which ``set_timesteps`` has been called the way the pipeline
    calls it (``mu`` for Flux, custom ``sigmas``, ...); the stepper keeps a private copy and
    never changes the caller's scheduler.

    Args:
        scheduler: a deterministic diffusers scheduler after ``set_timesteps``.
        latent_shape: the shape of one sample's latents (without the batch axis).
        dtype: the dtype of the latents (what the scheduler and the model see). The state is
            kept in float32 when that is wider (half-precision latents), so that history the
            scheduler keeps in float32 is carried exactly.
        device: the device of the state.
        step_kwargs: extra keyword arguments for every ``scheduler.step`` call.

    Attributes:
        timesteps: the scheduler's timesteps, one per step (``N`` of them).
        slots: names of the history tensors (``"model_outputs[-1]"``, ``"ets[-2]"``, ...); the
            state of one sample has ``1 + len(slots)`` rows.

    Raises:
        ValueError: a stochastic scheduler or option (see :func:`check_deterministic`), or a
            scheduler whose ``step`` turns out to draw random numbers.
    """

    def __init__(self, scheduler: Any, latent_shape: tuple[int, ...] | torch.Size, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 step_kwargs: dict[str, Any] | None = None) -> None:
        check_deterministic(scheduler, step_kwargs)
        if getattr(scheduler, "timesteps", None) is None or getattr(
                scheduler, "num_inference_steps", None) is None:
            raise ValueError(f"call {_name(scheduler)}.set_timesteps(...) before building a "
                             f"SchedulerStep (as the pipeline does)")
        self.cls = type(scheduler)
        self.step_kwargs = dict(step_kwargs or {})
        self.latent_shape = torch.Size(latent_shape)
        self.latent_dtype = dtype
        self.output_dtype = dtype  # the model output's dtype (set by the trajectory's field)
        self.dtype = torch.promote_types(dtype, torch.float32)  # the state's dtype
        self.device = torch.device(device)
        self.timesteps = torch.as_tensor(scheduler.timesteps).to(self.device)
        sigmas = getattr(scheduler, "sigmas", None)
        self.sigmas = (torch.as_tensor(sigmas).cpu() if sigmas is not None
                       and len(sigmas) == len(self.timesteps) + 1 else None)
        self._scales = hasattr(scheduler, "scale_model_input")
        self._dry_run(copy.deepcopy(scheduler))

    def __repr__(self) -> str:
        return (f"SchedulerStep({self.cls.__name__}, {len(self.timesteps)} steps, "
                f"history={self.slots})")

    # -- the dry run ---------------------------------------------------------------------
    def _dry_run(self, sched: Any) -> None:
        """Replay the sampling loop with stand-in model outputs; record the state before each
        step and refuse a scheduler whose step is random (checked on the first 3 steps and 16
        spread over the schedule, each stepped twice under different seeds)."""
        # one element per sample suffices to learn the scheduler's bookkeeping: every step is
        # elementwise in the latents (thresholding, which is not, breaks the ODE view anyway)
        shape = torch.Size((1,) * (1 + len(self.latent_shape)))
        gen = torch.Generator().manual_seed(0)
        sample = torch.randn(shape, generator=gen).to(self.device, self.latent_dtype)
        snapshots: list[dict[str, Any]] = []
        n = len(self.timesteps)  # the randomness check runs on 3 + 16 steps spread over them
        checked = {0, 1, 2, *torch.linspace(0, n - 1, 16).round().long().tolist()}
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        # the seeds set below must not leak into the caller's random streams
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda
                                   else []):
            for j, t in enumerate(self.timesteps):
                if self._scales:  # as the pipelines do; idempotent, so it may run again
                    sched.scale_model_input(sample, t)
                snapshots.append(_snapshot(sched))
                # a tame stand-in for the model (epsilon ~ x: Gaussian data), so that long
                # schedules do not overflow
                noise = torch.randn(shape, generator=gen).to(self.device, self.latent_dtype)
                out = 0.5 * sample.to(self.latent_dtype) + 0.1 * noise
                if j not in checked:
                    sample = sched.step(out, t, sample, **self.step_kwargs, return_dict=False)[0]
                    continue
                twin = copy.deepcopy(sched)
                torch.manual_seed(1)
                a = twin.step(out, t, sample, **self.step_kwargs, return_dict=False)[0]
                torch.manual_seed(2)
                sample = sched.step(out, t, sample, **self.step_kwargs, return_dict=False)[0]
                if not torch.equal(a.isnan(), sample.isnan()) or not torch.equal(
                        a.nan_to_num(), sample.nan_to_num()):
                    raise ValueError(
                        f"{self.cls.__name__}.step is not deterministic (step {j} gave different "
                        f"results under different random seeds); parallel sampling needs a "
                        f"deterministic scheduler"
                    )
        snapshots.append(_snapshot(sched))
        entries = [_entries(state) for state in snapshots]

        def history(value: Any) -> bool:
            return isinstance(value, Tensor) and value.shape == shape

        slots: list[_Slot] = []
        for found in entries:
            slots += [s for s, v in found.items() if history(v) and s not in slots]
        self._slots = slots
        self.slots = [str(s) for s in slots]
        self._slot_dtypes = [next(found[s].dtype for found in entries if history(found.get(s)))
                             for s in slots]  # restored in the dtype the scheduler keeps
        self._templates = [_template(state, slots, history) for state in snapshots[:-1]]
        # which slots hold a tensor before step j (j = N: at the end)
        self._present = torch.tensor(
            [[history(found.get(s)) for s in slots] for found in entries], dtype=torch.bool
        ).reshape(len(entries), len(slots))

    # -- state ---------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        """Rows of one sample's state: the latents plus the history tensors."""
        return 1 + len(self._slots)

    def augment(self, latents: Tensor) -> Tensor:
        """The state at step 0 of ``latents`` ``(B, *latent_shape)``: no history yet."""
        state = latents.new_zeros((latents.shape[0], self.rows, *latents.shape[1:]),
                                  dtype=self.dtype)
        state[:, 0] = latents
        return state

    def _scheduler(self, j: int, state: Tensor) -> Any:
        """A scheduler in its state before step ``j``, holding the history of ``state``."""
        sched = self.cls.__new__(self.cls)
        template = self._templates[j]
        sched.__dict__.update({k: (list(v) if isinstance(v, list) else v)
                               for k, v in template.items()})
        for s, (slot, present) in enumerate(zip(self._slots, self._present[j].tolist(),
                                                strict=True)):
            if not present:
                continue
            value = state[:, 1 + s].to(self._slot_dtypes[s])
            if slot.index is None:
                setattr(sched, slot.name, value)
            else:
                getattr(sched, slot.name)[slot.index] = value
        return sched

    def _groups(self, steps: Tensor) -> list[tuple[int, Tensor | None]]:
        values = steps.tolist()
        if all(v == values[0] for v in values):
            return [(int(values[0]), None)]
        unique = sorted(set(values))
        return [(int(j), (steps == j).nonzero().squeeze(1)) for j in unique]

    def model_input(self, steps: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """What the model sees at each row's step: ``(scale_model_input(latents), timesteps)``.

        Args:
            steps: each row's step index, shape ``(R,)`` (integers, any dtype).
            state: the rows' states ``(R, 1 + H, *latent_shape)``.
        """
        steps = steps.round().long().cpu()
        timesteps = self.timesteps[steps.to(self.timesteps.device)]
        latents = state[:, 0].to(self.latent_dtype)
        if not self._scales:
            return latents, timesteps
        out = torch.empty_like(latents)
        for j, rows in self._groups(steps):
            part = state if rows is None else state[rows]
            scaled = self._scheduler(j, part).scale_model_input(
                part[:, 0].to(self.latent_dtype), self.timesteps[j])
            if rows is None:
                return scaled.to(latents.dtype), timesteps
            out[rows.to(out.device)] = scaled.to(latents.dtype)
        return out, timesteps

    def step(self, steps: Tensor, state: Tensor, model_output: Tensor) -> Tensor:
        """One scheduler step of every row: the state after step ``steps[r]`` of row ``r``.

        Args:
            steps: each row's step index, shape ``(R,)``; rows may sit at different steps.
            state: ``(R, 1 + H, *latent_shape)``.
            model_output: the model output at each row's step, ``(R, *latent_shape)``.
        """
        steps = steps.round().long().cpu()
        if int(steps.min()) < 0 or int(steps.max()) >= len(self.timesteps):
            raise ValueError(f"step indices must lie in [0, {len(self.timesteps)}), got "
                             f"{steps.tolist()}")
        new = torch.zeros_like(state)
        for j, rows in self._groups(steps):
            part = state if rows is None else state[rows]
            out = (model_output if rows is None else model_output[rows]).to(self.output_dtype)
            sched = self._scheduler(j, part)
            prev = sched.step(out, self.timesteps[j], part[:, 0].to(self.latent_dtype),
                              **self.step_kwargs, return_dict=False)[0]
            after = self._read(sched, j + 1, prev)
            if rows is None:
                return after
            new[rows.to(new.device)] = after
        return new

    def _read(self, sched: Any, j: int, prev: Tensor) -> Tensor:
        state = prev.new_zeros((prev.shape[0], self.rows, *prev.shape[1:]), dtype=self.dtype)
        state[:, 0] = prev
        for s, (slot, present) in enumerate(zip(self._slots, self._present[j].tolist(),
                                                strict=True)):
            if present:
                value = getattr(sched, slot.name)
                state[:, 1 + s] = value if slot.index is None else value[slot.index]
        return state


class SchedulerPropagator:
    """The fine propagator: the scheduler's own steps between two grid points (step indices).

    ``propagate(t0, t1, y0)`` takes steps ``t0, t0 + 1, ..., t1 - 1`` of every row (rows may
    span different numbers of steps), one model evaluation each.
    """

    def __init__(self, stepper: SchedulerStep) -> None:
        self.stepper = stepper

    def __repr__(self) -> str:
        return f"SchedulerPropagator({self.stepper.cls.__name__})"

    def slice_depths(self, t: Tensor) -> list[int]:
        """One evaluation round per scheduler step of each slice."""
        points = t.round().long().tolist()
        return [b - a for a, b in itertools.pairwise(points)]

    def propagate(self, t0: Tensor, t1: Tensor, y0: Tensor) -> Propagation:
        """Step every row from step ``t0`` to step ``t1``."""
        start, end = t0.round().long(), t1.round().long()
        counts = end - start
        y = y0
        for k in range(int(counts.max()) if len(counts) else 0):
            live = counts > k
            if bool(live.all()):
                out = yield Request(t0 + k, y)
                y = self.stepper.step(start + k, y, out[:, 0])
            else:
                rows = live.nonzero().squeeze(1)
                out = yield Request(t0[rows] + k, y[rows], rows)
                y = y.index_copy(0, rows, self.stepper.step(start[rows] + k, y[rows], out[:, 0]))
        return y


class HeldOutput:
    """The coarse propagator: one model evaluation at the start of a slice, then the
    scheduler's steps across the slice with that output held fixed.

    For DDIM and Euler with an epsilon (or flow velocity) model, holding the output fixed
    over the steps equals one first-order step over the whole slice.
    """

    depth = 1

    def __init__(self, stepper: SchedulerStep) -> None:
        self.stepper = stepper

    def __repr__(self) -> str:
        return f"HeldOutput({self.stepper.cls.__name__})"

    def propagate(self, t0: Tensor, t1: Tensor, y0: Tensor) -> Propagation:
        """Evaluate at ``t0``, then step to ``t1`` without further evaluations."""
        start, end = t0.round().long(), t1.round().long()
        out = (yield Request(t0, y0))[:, 0]
        y = y0
        counts = end - start
        for k in range(int(counts.max())):
            rows = (counts > k).nonzero().squeeze(1)
            if len(rows) == len(y):
                y = self.stepper.step(start + k, y, out)
            else:
                y = y.index_copy(0, rows, self.stepper.step(start[rows] + k, y[rows], out[rows]))
        return y


ModelCall = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``model(latents_in, timesteps, index) -> model output``: rows' scaled latents, their
timesteps and each row's sample index (to pick its conditioning)."""


def scheduler_trajectory(scheduler: Any, model: ModelCall, latents: Tensor, *,
                         step_kwargs: dict[str, Any] | None = None,
                         key: Any = None) -> Trajectory:
    """What a parallel sampler integrates when it drives a diffusers scheduler.

    Args:
        scheduler: a deterministic scheduler after ``set_timesteps`` (see
            :class:`SchedulerStep`); it is copied, never changed.
        model: ``model(latents_in, timesteps, index) -> output``, batched over rows; ``index``
            holds each row's sample (position in ``latents``), e.g. to pick its conditioning.
            Guidance is part of the model (see :class:`pint_diffusion.families.Guided`).
        latents: the pipeline's initial latents ``(B, *latent_shape)``.
        step_kwargs: extra keyword arguments for ``scheduler.step``.
        key: what identifies the model's cost (e.g. the network and whether guidance doubles
            its rows), so that ``window="auto"`` measures its cost curve once per process
            (:attr:`Trajectory.model`); ``None``: ``model`` itself.

    Returns:
        A :class:`pint_diffusion.samplers.Trajectory`: states ``(B, 1 + H, *latent_shape)``
        (float32 for half-precision latents), grid ``0, 1, ..., N`` (the step numbers), fine
        propagator :class:`SchedulerPropagator`, coarse :class:`HeldOutput`, output the latents
        (in their dtype), one evaluation per step, ``scale`` 1 (changes are in latent units).
        Solve it with any sampler object: ``pint_diffusion.SRDS(...).solve(trajectory)``.

    Example::

        pipe.scheduler.set_timesteps(20)
        trajectory = scheduler_trajectory(pipe.scheduler, model, latents)
        latents, info = pint_diffusion.SRDS(tol=0).solve(trajectory)  # == the serial loop
    """
    stepper = SchedulerStep(scheduler, latents.shape[1:], dtype=latents.dtype,
                               device=latents.device, step_kwargs=step_kwargs)
    y0 = stepper.augment(latents)
    n = len(stepper.timesteps)
    coarse = HeldOutput(stepper)

    def field(t: Tensor, y: Tensor, index: Tensor) -> Tensor:
        x_in, timesteps = stepper.model_input(t, y)
        out = model(x_in, timesteps, index)
        stepper.output_dtype = out.dtype  # the state holds it exactly; step casts back
        full = torch.zeros_like(y)
        full[:, 0] = out.to(y.dtype)
        return full

    def describe(point: int) -> str:
        sigmas = stepper.sigmas
        sigma = "" if sigmas is None else f", sigma {float(sigmas[min(point, n)]):.4g}"
        if point >= n:
            return f"the end (after step {n - 1}{sigma})"
        return f"step {point} (timestep {float(stepper.timesteps[point]):.6g}{sigma})"

    return Trajectory(
        field=field,
        y0=y0,
        grid=torch.arange(n + 1, dtype=y0.dtype, device=latents.device),
        fine=SchedulerPropagator(stepper),
        coarse=lambda points: coarse,
        output=lambda state: state[:, 0].to(stepper.latent_dtype),
        step_depths=[1] * n,
        describe=describe,
        scale=torch.ones(n + 1, dtype=y0.dtype, device=latents.device),
        model=model if key is None else key,
    )


def serial_loop(scheduler: Any, model: ModelCall, latents: Tensor,
                step_kwargs: dict[str, Any] | None = None) -> Tensor:
    """The scheduler's own serial sampling loop (a reference): ``scheduler`` after
    ``set_timesteps``; ``model`` as for :func:`scheduler_trajectory`. The scheduler is copied."""
    sched = copy.deepcopy(scheduler)
    index = torch.arange(latents.shape[0], device=latents.device)
    x = latents
    for t in sched.timesteps:
        x_in = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
        out = model(x_in, t.expand(x.shape[0]), index)
        x = sched.step(out, t, x, **(step_kwargs or {}), return_dict=False)[0]
    return x
