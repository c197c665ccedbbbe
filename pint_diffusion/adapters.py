"""Adapters from diffusers models and schedulers to k-diffusion denoisers.

k-diffusion's convention (see ``DESIGN.md`` section 3): the state ``x`` is in variance-exploding
(VE) form at noise level ``sigma``, and a *denoiser* ``D(x, sigma, **extra) -> x0_hat`` takes
``sigma`` as a tensor of shape ``(batch,)``. The probability-flow ODE is
``dx/dsigma = (x - D(x, sigma)) / sigma`` and a sampler walks down a decreasing ``sigmas`` schedule.

:class:`DiffusersDenoiser` wraps a diffusers ``UNet2DModel`` or ``UNet2DConditionModel`` and its
``DDIMScheduler`` or ``EulerDiscreteScheduler`` so that **Euler on the adapter's schedule
reproduces the diffusers sampler** (DDIM with ``eta=0`` is Euler in VE coordinates):

- :meth:`DiffusersDenoiser.sigmas` builds the schedule from the scheduler's own ``set_timesteps``
  result, and remembers which model timestep belongs to each schedule point;
- calling the denoiser maps every row's sigma to its timestep by exact lookup in that table
  (never by interpolation), so the model sees exactly the timesteps the scheduler would feed it;
- :meth:`DiffusersDenoiser.to_ve` and :meth:`DiffusersDenoiser.from_ve` convert between the
  pipeline's latents and the VE state.

Example::

    import k_diffusion.sampling as K
    from pint_diffusion.adapters import DiffusersDenoiser

    denoiser = DiffusersDenoiser(pipe.unet, pipe.scheduler, guidance_scale=7.5)
    sigmas = denoiser.sigmas(50)
    x = denoiser.to_ve(latents, sigmas[0])  # latents as the pipeline prepares them
    x = K.sample_euler(denoiser, x, sigmas, extra_args={
        "encoder_hidden_states": prompt_embeds,
        "uncond_encoder_hidden_states": negative_prompt_embeds,
    })
    latents = denoiser.from_ve(x, sigmas[-1])  # what pipe(..., output_type="latent") returns

diffusers is imported lazily: importing this module does not need it.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

from .parameterizations import from_config

__all__ = ["CONDITIONING_KEYS", "SUPPORTED_SCHEDULERS", "DiffusersDenoiser"]

#: Names of the diffusers scheduler classes :class:`DiffusersDenoiser` accepts.
SUPPORTED_SCHEDULERS: tuple[str, ...] = ("DDIMScheduler", "EulerDiscreteScheduler")

#: Conditioning keyword arguments of the UNet that the denoiser accepts. For classifier-free
#: guidance each has an unconditional counterpart with the prefix ``uncond_`` (for example
#: ``uncond_encoder_hidden_states``); ``added_cond_kwargs`` is a dict of tensors.
CONDITIONING_KEYS: tuple[str, ...] = (
    "encoder_hidden_states",
    "class_labels",
    "added_cond_kwargs",
    "encoder_attention_mask",
    "timestep_cond",
)

_PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_SHARED_KEYS = ("cross_attention_kwargs",)


def _supported_names() -> str:
    return ", ".join(SUPPORTED_SCHEDULERS)


def _scheduler_kind(scheduler: Any) -> str:
    """Return ``"ddim"`` or ``"euler"``, or raise TypeError for any other scheduler class."""
    try:
        from diffusers import DDIMScheduler, EulerDiscreteScheduler
    except ImportError as err:  # pragma: no cover - diffusers is needed to have a scheduler at all
        raise ImportError("DiffusersDenoiser needs diffusers (pip install diffusers)") from err
    # Exact class match: a subclass may override step() and sample something else.
    if type(scheduler) is DDIMScheduler:
        return "ddim"
    if type(scheduler) is EulerDiscreteScheduler:
        return "euler"
    raise TypeError(
        f"DiffusersDenoiser does not support the scheduler {type(scheduler).__name__}; "
        f"supported schedulers: {_supported_names()}. Any deterministic scheduler runs "
        f"through pint_diffusion.pipelines.ParallelStableDiffusionPipeline (or "
        f"pint_diffusion.schedulers.scheduler_trajectory)"
    )


def _check_config(kind: str, config: Any) -> str:
    """Refuse every scheduler option that breaks the ODE view; return the prediction type."""
    prediction_type = config.get("prediction_type", "epsilon")
    if prediction_type == "original_sample":  # EulerDiscreteScheduler's alias of "sample"
        prediction_type = "sample"
    if prediction_type not in _PREDICTION_TYPES:
        raise ValueError(
            f"unsupported prediction_type={prediction_type!r}; DiffusersDenoiser supports "
            f"{', '.join(_PREDICTION_TYPES)}"
        )
    if config.get("thresholding", False):
        raise ValueError(
            "thresholding=True (dynamic thresholding of the predicted x0) breaks the "
            "probability-flow ODE view; set thresholding=False in the scheduler config"
        )
    if config.get("clip_sample", False):
        raise ValueError(
            "clip_sample=True (clipping the predicted x0) breaks the probability-flow ODE view; "
            "set clip_sample=False in the scheduler config"
        )
    eta = config.get("eta", 0.0)
    if eta:
        raise ValueError(f"eta={eta} makes the sampler stochastic; only eta=0 is an ODE sampler")
    if kind == "ddim" and config.get("timestep_spacing", "leading") not in (
        "leading",
        "trailing",
        "linspace",
    ):
        raise ValueError(f"unsupported timestep_spacing={config.get('timestep_spacing')!r}")
    return prediction_type


def _short_list(values: Tensor, n: int = 6) -> str:
    items = [f"{v:.6g}" for v in values.tolist()]
    if len(items) > 2 * n:
        items = [*items[:n], "...", *items[-n:]]
    return "[" + ", ".join(items) + "]"


def _batch_to(value: Any, batch: int, name: str) -> Any:
    """Tile a conditioning tensor (or dict of tensors) along dim 0 to ``batch`` rows."""
    if isinstance(value, dict):
        return {k: _batch_to(v, batch, f"{name}[{k!r}]") for k, v in value.items()}
    if not isinstance(value, Tensor) or value.ndim == 0:
        return value
    rows = value.shape[0]
    if rows == batch:
        return value
    if rows == 0 or batch % rows:
        raise ValueError(
            f"{name} has {rows} rows, which does not divide the batch of {batch} state rows"
        )
    return value.repeat(batch // rows, *([1] * (value.ndim - 1)))


def _cat(a: Any, b: Any, name: str) -> Any:
    """Concatenate unconditional and conditional values (tensors or dicts of tensors)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            raise ValueError(f"uncond_{name} and {name} have different keys")
        return {k: _cat(a[k], b[k], f"{name}[{k!r}]") for k in a}
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return torch.cat([a, b])
    raise ValueError(f"cannot batch uncond_{name} and {name} of types {type(a)}, {type(b)}")


class DiffusersDenoiser(nn.Module):
    """A k-diffusion denoiser ``D(x, sigma, **extra) -> x0_hat`` of a diffusers UNet + scheduler.

    Euler steps (for example ``k_diffusion.sampling.sample_euler``) on :meth:`sigmas` reproduce the
    scheduler's own sampling loop: DDIM (``eta=0``) through the change of variables
    ``sigma_t = sqrt((1 - abar_t) / abar_t)``, ``x_VE = x_VP * sqrt(1 + sigma_t**2)``, and
    ``EulerDiscreteScheduler`` directly (it already works in VE coordinates).

    Args:
        unet: a diffusers ``UNet2DModel`` or ``UNet2DConditionModel`` (any module with the same
            call signature ``unet(sample, timestep, **conditioning, return_dict=False)``).
        scheduler: a ``DDIMScheduler`` or ``EulerDiscreteScheduler``. The denoiser keeps a private
            copy, so later ``set_timesteps`` calls on the caller's scheduler do not affect it.
        guidance_scale: classifier-free guidance weight ``w``; the output is
            ``out_uncond + w * (out_cond - out_uncond)`` on the model output, as diffusers'
            pipelines compute it. ``w <= 1`` disables guidance (one UNet row per state row, like
            the pipelines); with ``w > 1`` the unconditional and conditional rows go through ONE
            batched UNet call (unconditional rows first).
        guidance_rescale: must be ``0``; guidance rescaling is refused.

    Attributes:
        unet: the wrapped UNet (a submodule: ``denoiser.to(device)`` moves it).
        scheduler: the private copy of the scheduler.
        kind: ``"ddim"`` or ``"euler"``.
        prediction_type: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``.
        parameterization: the matching :mod:`pint_diffusion.parameterizations` object.
        guidance_scale: the classifier-free guidance weight (may be changed between calls).
        timesteps: the scheduler's timesteps of the last :meth:`sigmas` call (``None`` before),
            ``timesteps[i]`` belonging to ``sigmas[i]``.

    Raises:
        TypeError: for a scheduler class other than those in :data:`SUPPORTED_SCHEDULERS`.
        ValueError: for ``clip_sample=True``, ``thresholding=True``, a non-zero ``eta`` in the
            config, ``guidance_rescale != 0`` or a ``prediction_type`` other than ``epsilon``,
            ``v_prediction`` or ``sample``.

    Calling the denoiser (``denoiser(x, sigma, **extra)``):

    - ``x``: VE state, shape ``(batch, C, H, W)``.
    - ``sigma``: tensor of shape ``(batch,)`` (or a scalar); rows may sit at different schedule
      points. Every sigma must be a point of the most recent :meth:`sigmas` schedule (the last
      point too when it is a training noise level); anything else raises ValueError.
    - ``extra``: the conditioning of :data:`CONDITIONING_KEYS` (``encoder_hidden_states``,
      ``class_labels``, ...) and their ``uncond_`` counterparts for guidance, plus
      ``cross_attention_kwargs`` passed to the UNet unchanged. A conditioning tensor with ``b``
      rows serves a state batch of ``k * b`` rows by tiling (``repeat``), the row order of
      flattening a ``(k, b, ...)`` tensor, e.g. ``k`` time slices of ``b`` samples.

    Example::

        denoiser = DiffusersDenoiser(unet, scheduler, guidance_scale=3.0)
        sigmas = denoiser.sigmas(10)
        x = denoiser.to_ve(torch.randn(2, 4, 8, 8) * scheduler.init_noise_sigma, sigmas[0])
        x0 = denoiser(x, sigmas[0] * x.new_ones(2), class_labels=labels,
                      uncond_class_labels=torch.full_like(labels, null_class))
    """

    def __init__(
        self,
        unet: nn.Module,
        scheduler: Any,
        *,
        guidance_scale: float = 1.0,
        guidance_rescale: float = 0.0,
    ) -> None:
        super().__init__()
        self.kind = _scheduler_kind(scheduler)
        self.prediction_type = _check_config(self.kind, scheduler.config)
        self.parameterization = from_config({"prediction_type": self.prediction_type})
        if guidance_rescale != 0:
            raise ValueError(
                f"guidance_rescale={guidance_rescale} is not supported by DiffusersDenoiser; "
                "use guidance_rescale=0"
            )
        self.unet = unet
        self.scheduler = copy.deepcopy(scheduler)
        self.guidance_scale = guidance_scale
        self.timesteps: Tensor | None = None
        self._num_inference_steps: int | None = None
        self._table_sigmas: Tensor | None = None  # float64, CPU: the evaluable schedule points
        self._table_timesteps: Tensor | None = None  # the model timestep of each of them

    @property
    def guidance_scale(self) -> float:
        """The classifier-free guidance weight (finite; may be changed between calls)."""
        return self._guidance_scale

    @guidance_scale.setter
    def guidance_scale(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise ValueError(f"guidance_scale must be a finite number, got {value!r}")
        self._guidance_scale = float(value)

    # ------------------------------------------------------------------ schedule
    def sigmas(
        self,
        num_inference_steps: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """The sampler's noise levels for ``num_inference_steps`` steps: decreasing, N+1 values.

        Built from the scheduler's own ``set_timesteps(num_inference_steps)``:

        - ``DDIMScheduler``: ``sigma_i = sqrt((1 - abar[t_i]) / abar[t_i])`` for its timesteps
          ``t_i``, and the last value is the sigma of the abar DDIM's last step goes to
          (``final_alpha_cumprod``: 0 when ``set_alpha_to_one=True``, ``sigma(alphas_cumprod[0])``
          otherwise). DDIM steps from ``t`` to ``t - num_train_timesteps // N``; the schedule is
          only an ODE schedule when that is the next timestep, which holds for
          ``timestep_spacing="leading"`` and for ``"trailing"`` when N divides
          ``num_train_timesteps``; otherwise ValueError.
        - ``EulerDiscreteScheduler``: its ``sigmas`` array (the first N+1 entries, so that with
          ``interpolation_type="log_linear"`` the schedule ends where the scheduler's N steps end).
          Karras, exponential and beta sigmas are taken as the scheduler made them.

        The call also (re)builds the table that maps each schedule point to the timestep the
        scheduler feeds the model there; the denoiser then accepts exactly these sigmas. It
        replaces the table of any earlier call.

        Args:
            num_inference_steps: N, the number of sampler steps.
            device: device of the returned tensor.
            dtype: dtype of the returned tensor (keep it float32 or wider: the lookup is exact
                up to the rounding of the dtype).

        Returns:
            Tensor of shape ``(N + 1,)``, strictly decreasing except in one diffusers corner
            case: when the last timestep is 0 (e.g. ``steps_offset=0`` with ``"leading"``, or
            ``"linspace"``) and the schedule ends at ``sigma(alphas_cumprod[0])`` rather than 0
            (DDIM with ``set_alpha_to_one=False``, Euler with ``final_sigmas_type="sigma_min"``),
            the last step goes from that sigma to itself: ``sigmas[-2] == sigmas[-1]``. In
            diffusers that step costs a model evaluation and leaves the state unchanged; the
            samplers leave the state unchanged too but skip the evaluation.

        Example::

            sigmas = denoiser.sigmas(50)
            denoiser.timesteps  # the scheduler's 50 timesteps, one per sigmas[:-1]
        """
        limit = self.scheduler.config.num_train_timesteps
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or (
                not 1 <= num_inference_steps <= limit):
            raise ValueError(f"num_inference_steps must be an integer in [1, {limit}] (the "
                             f"scheduler's training timesteps), got {num_inference_steps!r}")
        sched = self.scheduler
        sched.set_timesteps(num_inference_steps)
        timesteps = sched.timesteps.detach().cpu()
        n = len(timesteps)
        if self.kind == "ddim":
            sig, last_t = self._ddim_schedule(timesteps, num_inference_steps)
        else:
            sig = sched.sigmas.detach().cpu().to(torch.float64)[: n + 1]
            last_t = None
            if sched.config.get("timestep_type", "discrete") == "discrete":
                train = self._train_sigmas()
                if sig[-1] > 0 and bool(torch.isclose(sig[-1], train[0], rtol=1e-6, atol=0.0)):
                    last_t = torch.zeros((), dtype=timesteps.dtype)  # final_sigmas_type="sigma_min"
        if len(sig) != n + 1:
            raise ValueError(f"the scheduler gave {n} timesteps but {len(sig)} sigmas")
        if not bool(torch.isfinite(sig).all()):
            raise ValueError(
                "the schedule has an infinite sigma (abar = 0, e.g. rescale_betas_zero_snr=True "
                "with a timestep at the end of training): not representable in VE coordinates"
            )
        # Strictly decreasing, except that the last step may have length 0: DDIM with
        # set_alpha_to_one=False, or Euler with final_sigmas_type="sigma_min", whose last
        # timestep is 0 step from sigma(alphas_cumprod[0]) to itself.
        if not bool((sig[1:-1] < sig[:-2]).all() and sig[-1] <= sig[-2]):
            raise ValueError(f"the scheduler's sigmas are not decreasing: {sig.tolist()}")
        table_s, table_t = sig[:n], timesteps
        if last_t is not None and sig[-1] > 0 and sig[-1] < sig[-2]:
            table_s = torch.cat([table_s, sig[-1:]])
            table_t = torch.cat([table_t, last_t.reshape(1).to(timesteps.dtype)])
        self._table_sigmas = table_s
        self._table_timesteps = table_t
        self._num_inference_steps = num_inference_steps
        self.timesteps = timesteps.clone()
        return sig.to(device=device, dtype=dtype)

    def _train_sigmas(self) -> Tensor:
        abar = self.scheduler.alphas_cumprod.detach().cpu().to(torch.float64)
        return ((1 - abar) / abar).sqrt()

    def _ddim_schedule(self, timesteps: Tensor, n_steps: int) -> tuple[Tensor, Tensor | None]:
        sched = self.scheduler
        abar = sched.alphas_cumprod.detach().cpu().to(torch.float64)
        final = torch.as_tensor(sched.final_alpha_cumprod).detach().cpu().to(torch.float64)
        ratio = sched.config.num_train_timesteps // sched.num_inference_steps
        ts = [int(t) for t in timesteps]
        if ts and not 0 <= min(ts) <= max(ts) < len(abar):
            raise ValueError(
                f"num_inference_steps={n_steps}: the scheduler's timesteps run from {min(ts)} "
                f"to {max(ts)}, outside its {len(abar)} training timesteps (steps_offset="
                f"{sched.config.get('steps_offset', 0)}); use fewer steps")
        abars = [abar[t] for t in ts]
        for i, t in enumerate(ts):  # DDIMScheduler.step goes from t to t - ratio
            prev = t - ratio
            nxt = ts[i + 1] if i + 1 < len(ts) else None
            if nxt is not None and prev != nxt:
                raise ValueError(
                    f"DDIMScheduler with timestep_spacing={sched.config.timestep_spacing!r} and "
                    f"num_inference_steps={n_steps} steps from timestep {t} to {prev}, not to the "
                    f"next timestep {nxt}: that is not an ODE schedule. Use "
                    "timestep_spacing='leading', or 'trailing' with a num_inference_steps that "
                    "divides num_train_timesteps"
                )
        last_prev = ts[-1] - ratio
        last_t: Tensor | None
        if last_prev >= 0:
            abars.append(abar[last_prev])
            last_t = torch.tensor(last_prev, dtype=timesteps.dtype)
        else:
            abars.append(final)
            # set_alpha_to_one=False: the last point is training timestep 0
            last_t = torch.tensor(0, dtype=timesteps.dtype) if bool(final == abar[0]) else None
        a = torch.stack([torch.as_tensor(v) for v in abars])
        return ((1 - a) / a).sqrt(), last_t

    def sigma_to_timestep(self, sigma: Tensor | float) -> Tensor:
        """The model timestep(s) of schedule point(s) ``sigma``, by exact lookup (no interpolation).

        Args:
            sigma: a scalar or a 1-D tensor of values from the current :meth:`sigmas` schedule.

        Returns:
            The timesteps, with the dtype of the scheduler's ``timesteps``, on CPU, with the
            shape of ``sigma`` (0-d for a scalar).

        Raises:
            ValueError: for a sigma that is not an evaluable point of the schedule, or when
                :meth:`sigmas` was not called yet.

        Example::

            sigmas = denoiser.sigmas(10)
            denoiser.sigma_to_timestep(sigmas[:-1])  # == denoiser.timesteps
        """
        s = torch.as_tensor(sigma)
        idx = self._lookup(s.reshape(-1))
        assert self._table_timesteps is not None
        return self._table_timesteps[idx].reshape(s.shape)

    def _lookup(self, sigma: Tensor) -> Tensor:
        if self._table_sigmas is None or self._table_timesteps is None:
            raise ValueError(
                "no schedule yet: call denoiser.sigmas(num_inference_steps) and sample on its "
                "values; the denoiser maps sigma to timestep by exact lookup in that schedule"
            )
        table = self._table_sigmas
        query = sigma.detach().to(device="cpu", dtype=torch.float64)
        eps = torch.finfo(torch.float32).eps
        if sigma.is_floating_point():
            eps = max(eps, torch.finfo(sigma.dtype).eps)
        # The schedule is strictly decreasing and a point's tolerance grows with it, so the
        # points within tolerance of a query are contiguous around its insertion point: four
        # candidates there decide none, one or several matches (O(R log N), not O(R N)).
        size = len(table)
        ascending = table.flip(0)
        around = torch.searchsorted(ascending, query).unsqueeze(1) + torch.arange(-2, 2)
        inside = (around >= 0) & (around < size)
        candidate = size - 1 - around.clamp(0, size - 1)  # back to the schedule's order
        value = table[candidate]
        ok = inside & ((query[:, None] - value).abs() <= 4 * eps * value + 1e-12)
        hits = ok.sum(dim=1)
        if bool((hits != 1).any()):
            bad = query[hits != 1]
            if bool((hits > 1).any()):
                reason = "matches several schedule points (dtype too coarse)"
            else:
                reason = "is not a point of the schedule"
            raise ValueError(
                f"sigma={bad[0].item():.9g} {reason}: DiffusersDenoiser maps sigma to the model "
                "timestep by exact lookup in the schedule of its last sigmas(num_inference_steps="
                f"{self._num_inference_steps}) call and never interpolates; evaluate it only at "
                f"those values (evaluable points: {_short_list(table)})"
            )
        return candidate.gather(1, ok.to(torch.int64).argmax(dim=1, keepdim=True)).squeeze(1)

    # ------------------------------------------------------------ conversions
    def to_ve(self, latents: Tensor, sigma: Tensor | float) -> Tensor:
        """VE state from the initial latents as the diffusers pipeline prepares them.

        The pipelines start from ``latents = noise * scheduler.init_noise_sigma``
        (``prepare_latents``). For ``DDIMScheduler`` (``init_noise_sigma = 1``) these are VP
        latents at the first timestep and the VE state is ``latents * sqrt(1 + sigma**2)``. For
        ``EulerDiscreteScheduler`` the latents already are the VE state (whatever
        ``init_noise_sigma`` was) and are returned unchanged.

        Args:
            latents: the pipeline's latents before its first step.
            sigma: the first schedule value, ``sigmas[0]`` (a scalar or a tensor that broadcasts
                from the batch dimension, e.g. shape ``(batch,)``).

        Example::

            x = denoiser.to_ve(latents, sigmas[0])
        """
        if self.kind == "euler":
            return latents
        return latents * self._vp_scale(sigma, latents, inverse=True)

    def from_ve(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """The pipeline's latents from the VE state ``x`` at noise level ``sigma``.

        For ``DDIMScheduler``: ``x / sqrt(1 + sigma**2)``; at the end of sampling
        (``sigma = sigmas[-1]``) these are the latents the serial pipeline outputs
        (``output_type="latent"``), ``x`` itself when ``set_alpha_to_one=True``. For
        ``EulerDiscreteScheduler``: ``x`` unchanged.

        Args:
            x: VE state.
            sigma: its noise level (scalar, or a tensor that broadcasts from the batch dimension).

        Example::

            latents = denoiser.from_ve(x, sigmas[-1])
        """
        if self.kind == "euler":
            return x
        return x * self._vp_scale(sigma, x, inverse=False)

    @staticmethod
    def _vp_scale(sigma: Tensor | float, like: Tensor, *, inverse: bool) -> Tensor | float:
        if not isinstance(sigma, Tensor):
            s2 = 1.0 + float(sigma) ** 2
            return math.sqrt(s2) if inverse else 1.0 / math.sqrt(s2)
        s = sigma.to(device=like.device, dtype=torch.float64)
        scale = (1 + s**2).sqrt() if inverse else (1 + s**2).rsqrt()
        scale = scale.to(like.dtype)
        if scale.ndim == 1 and like.ndim > 1:
            scale = scale.reshape(-1, *([1] * (like.ndim - 1)))
        return scale

    # ---------------------------------------------------------------- denoise
    def forward(self, x: Tensor, sigma: Tensor | float, **extra: Any) -> Tensor:
        """Denoise: ``x0_hat = D(x, sigma)`` for the VE state ``x`` (see the class docs).

        Args:
            x: VE state, ``(batch, C, H, W)``.
            sigma: ``(batch,)`` noise levels (or a scalar), each a point of the schedule.
            **extra: conditioning (:data:`CONDITIONING_KEYS` and ``uncond_`` counterparts) and
                ``cross_attention_kwargs``.

        Returns:
            The denoised estimate, shape and dtype of ``x``.
        """
        batch = x.shape[0]
        sigma_t = torch.as_tensor(sigma)
        if sigma_t.ndim == 0:
            sigma_t = sigma_t.expand(batch)
        sigma_t = sigma_t.reshape(-1)
        if sigma_t.shape[0] != batch:
            raise ValueError(f"sigma has {sigma_t.shape[0]} values for a batch of {batch} rows")
        idx = self._lookup(sigma_t)
        assert self._table_sigmas is not None and self._table_timesteps is not None
        s64 = self._table_sigmas[idx].to(x.device, non_blocking=True)
        timesteps = self._table_timesteps[idx].to(x.device, non_blocking=True)
        bcast = (-1, *([1] * (x.ndim - 1)))
        c_in = (1 + s64**2).rsqrt().to(x.dtype).reshape(bcast)  # = sqrt(abar)
        s = s64.to(x.dtype).reshape(bcast)

        cond, uncond, shared = self._split_extra(extra)
        guided = self.guidance_scale > 1.0
        model_in = x * c_in
        if guided:
            missing = [k for k in cond if k not in uncond]
            if not cond or missing:
                raise ValueError(
                    f"guidance_scale={self.guidance_scale} > 1 needs unconditional conditioning: "
                    f"pass uncond_<key> for {missing or list(CONDITIONING_KEYS)}"
                )
            kwargs = {
                k: _cat(_batch_to(uncond[k], batch, "uncond_" + k), _batch_to(v, batch, k), k)
                for k, v in cond.items()
            }
            out = self._unet(
                torch.cat([model_in, model_in]), torch.cat([timesteps, timesteps]), kwargs, shared
            )
            out_uncond, out_cond = out.chunk(2)
            out = out_uncond + self.guidance_scale * (out_cond - out_uncond)
        else:
            kwargs = {k: _batch_to(v, batch, k) for k, v in cond.items()}
            out = self._unet(model_in, timesteps, kwargs, shared)
        out = out.to(x.dtype)
        if out.shape != x.shape:
            raise ValueError(
                f"the UNet output has shape {tuple(out.shape)}, the state {tuple(x.shape)} "
                "(learned-variance models are not supported)"
            )
        # x0 from the network output at the VP input (signal scale c_in, noise scale s * c_in)
        return self.parameterization.denoise(model_in, out, c_in, s * c_in)

    def _split_extra(self, extra: dict[str, Any]) -> tuple[dict, dict, dict]:
        cond: dict[str, Any] = {}
        uncond: dict[str, Any] = {}
        shared: dict[str, Any] = {}
        for key, value in extra.items():
            if key in CONDITIONING_KEYS:
                if value is not None:
                    cond[key] = value
            elif key.startswith("uncond_") and key[7:] in CONDITIONING_KEYS:
                if value is not None:
                    uncond[key[7:]] = value
            elif key in _SHARED_KEYS:
                if value is not None:
                    shared[key] = value
            else:
                accepted = [
                    *CONDITIONING_KEYS,
                    *("uncond_" + k for k in CONDITIONING_KEYS),
                    *_SHARED_KEYS,
                ]
                raise TypeError(
                    f"DiffusersDenoiser got an unexpected keyword argument {key!r}; "
                    f"accepted: {', '.join(accepted)}"
                )
        return cond, uncond, shared

    def _unet(self, sample: Tensor, timesteps: Tensor, kwargs: dict, shared: dict) -> Tensor:
        dtype = getattr(self.unet, "dtype", sample.dtype)
        if isinstance(dtype, torch.dtype) and dtype != sample.dtype:
            sample = sample.to(dtype)
        out = self.unet(sample, timesteps, **kwargs, **shared, return_dict=False)
        return out[0] if isinstance(out, tuple | list) else out

    def extra_repr(self) -> str:
        """Scheduler, prediction type and guidance scale (shown by ``print(denoiser)``)."""
        return (
            f"scheduler={type(self.scheduler).__name__}, prediction_type={self.prediction_type!r},"
            f" guidance_scale={self.guidance_scale}"
        )
