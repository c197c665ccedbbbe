"""Model calls per family: how each denoising network is called, and guidance.

A *family* call turns rows of latents, their timesteps (the scheduler's, one per row) and a
conditioning dict into the model output that the scheduler's ``step`` expects:

- :class:`UNetCall`: Stable Diffusion 1.x/2.x and SDXL (``UNet2DConditionModel``;
  SDXL's ``added_cond_kwargs={"text_embeds", "time_ids"}`` is just more conditioning);
- :class:`SD3Call`: the SD3 ``SD3Transformer2DModel`` (timestep in ``[0, 1000]``, pooled
  projections);
- :class:`FluxCall`: the ``FluxTransformer2DModel`` (timestep divided by 1000, the distilled
  ``guidance`` input per row, shared ``img_ids``/``txt_ids``, packed latents).

:class:`Guided` adds classifier-free guidance over any family call and picks each row's
conditioning by its sample index (the rows of a parallel sampler come from many samples and
grid points at once), giving the ``model(latents_in, timesteps, index)`` that
:func:`pint_diffusion.schedulers.scheduler_trajectory` integrates. A new family is one small
set of class attributes on :class:`FamilyCall`::

    class MyCall(FamilyCall):
        sample_key = "hidden_states"      # how the network names its latents input
        timestep_divisor = 1000           # it sees timesteps / 1000
        shared_keys = ("img_ids",)        # inputs shared by every row
        batched_guidance = False          # guidance as two calls, conditional first
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .samplers.conditioning import per_row

__all__ = ["FamilyCall", "FluxCall", "Guided", "SD3Call", "UNetCall", "cat_tree"]


def cat_tree(a: Any, b: Any, rows: int) -> Any:
    """Concatenate two conditioning trees along the rows (leaves with ``rows`` rows)."""
    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            raise ValueError(f"the unconditional and conditional conditioning differ in keys: "
                             f"{sorted(a)} vs {sorted(b) if isinstance(b, dict) else b!r}")
        return {k: cat_tree(a[k], b[k], rows) for k in a}
    if isinstance(a, list | tuple):
        return type(a)(cat_tree(x, y, rows) for x, y in zip(a, b, strict=True))
    if isinstance(a, Tensor) and a.ndim > 0 and a.shape[0] == rows:
        return torch.cat([a, b])
    return a


def _out(result: Any) -> Tensor:
    return result[0] if isinstance(result, tuple | list) else result


class FamilyCall:
    """How one family calls its network: ``model(**{sample_key: x, "timestep": t'}, **shared,
    **cond, return_dict=False)[0]`` with ``t' = timesteps / timestep_divisor``.

    Subclasses set the class attributes; that is a whole family. Build one directly
    (``UNetCall(unet, cross_attention_kwargs=...)``) or from a call a pipeline made
    (:meth:`from_call`).

    Args:
        model: the network (UNet or transformer).
        timestep_dtype: cast the timesteps to this dtype before dividing (as the pipeline does);
            ``None`` keeps them.
        **shared: the keyword arguments of :attr:`shared_keys` (the same for every row).

    Attributes:
        sample_key: the keyword of the latents (``"sample"``, ``"hidden_states"``).
        timestep_divisor: the model sees ``timesteps / timestep_divisor``.
        shared_keys: keyword arguments that are not per sample (attention options, position
            ids); every other input is per-sample conditioning.
        batched_guidance: the pipeline batches unconditional and conditional rows in one call
            (unconditional first); ``False``: two calls, conditional first.
    """

    sample_key = "sample"
    timestep_divisor = 1
    shared_keys: tuple[str, ...] = ()
    batched_guidance = True

    def __init__(self, model: nn.Module, *, timestep_dtype: torch.dtype | None = None,
                 **shared: Any) -> None:
        unknown = set(shared) - set(self.shared_keys)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected shared arguments "
                            f"{sorted(unknown)}; shared arguments: {list(self.shared_keys)}")
        self.model = model
        self.timestep_dtype = timestep_dtype
        self.shared = shared

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"

    def __call__(self, x: Tensor, timesteps: Tensor, cond: dict[str, Any]) -> Tensor:
        """The network's output for rows ``x`` at ``timesteps`` (``(R,)``) under ``cond``."""
        if self.timestep_dtype is not None:
            timesteps = timesteps.to(self.timestep_dtype)
        if self.timestep_divisor != 1:
            timesteps = timesteps / self.timestep_divisor
        inputs = {self.sample_key: x, "timestep": timesteps}
        return _out(self.model(**inputs, **self.shared, **cond, return_dict=False))

    @classmethod
    def from_call(cls, model: nn.Module, args: tuple, kwargs: dict[str, Any]
                  ) -> tuple[FamilyCall, dict[str, Any]]:
        """The family call and the conditioning of one call ``model(*args, **kwargs)`` that a
        pipeline made: ``(call, cond)``, ``cond`` holding every per-row input."""
        import inspect

        bound = inspect.signature(model.forward).bind(*args, **kwargs).arguments
        bound.pop("return_dict", None)
        bound.pop(cls.sample_key)
        timestep = bound.pop("timestep")
        shared = {k: bound.pop(k) for k in cls.shared_keys if k in bound}
        dtype = timestep.dtype if isinstance(timestep, Tensor) else None
        return cls(model, timestep_dtype=dtype, **shared), bound


class UNetCall(FamilyCall):
    """Stable Diffusion 1.x/2.x and SDXL (``UNet2DConditionModel``): ``cond`` holds
    ``encoder_hidden_states`` and, for SDXL, ``added_cond_kwargs={"text_embeds", "time_ids"}``."""

    shared_keys = ("cross_attention_kwargs",)


class SD3Call(FamilyCall):
    """Stable Diffusion 3 (``SD3Transformer2DModel``): timestep in ``[0, 1000]``; ``cond``
    holds ``encoder_hidden_states`` and ``pooled_projections``."""

    sample_key = "hidden_states"
    shared_keys = ("joint_attention_kwargs",)


class FluxCall(FamilyCall):
    """Flux (``FluxTransformer2DModel``): timestep divided by 1000, packed latents;
    ``img_ids``/``txt_ids`` shared; ``cond`` holds ``encoder_hidden_states``,
    ``pooled_projections`` and, for guidance-distilled models, ``guidance`` (one per row).
    True classifier-free guidance is two calls (conditional first)."""

    sample_key = "hidden_states"
    timestep_divisor = 1000
    shared_keys = ("img_ids", "txt_ids", "joint_attention_kwargs")
    batched_guidance = False


class Guided:
    """Classifier-free guidance over a family call, with per-sample conditioning.

    ``out = out_uncond + scale * (out_cond - out_uncond)``, as diffusers' pipelines compute it.

    Args:
        call: the family call (:class:`UNetCall`, :class:`SD3Call`, :class:`FluxCall`, ...).
        cond: the conditioning of the ``batch`` samples (a dict whose per-sample leaves have
            ``batch`` rows).
        batch: the number of samples.
        uncond: the unconditional (negative) conditioning, same structure; ``None`` (or
            ``scale`` 1) disables guidance: one model row per state row.
        scale: the guidance scale.
        batched: ``True``: one call on the unconditional and conditional rows together (SD,
            SDXL, SD3); ``False``: two calls (Flux's true CFG, as ``FluxPipeline`` does).

    Calling it as ``guided(x, timesteps, index)`` gives the guided model output of rows ``x``
    belonging to samples ``index``.
    """

    def __init__(self, call: FamilyCall, cond: dict[str, Any], batch: int, *,
                 uncond: dict[str, Any] | None = None, scale: float = 1.0,
                 batched: bool = True) -> None:
        self.call = call
        self.cond = cond
        self.uncond = uncond if uncond is not None and scale != 1.0 else None
        self.batch = batch
        self.scale = float(scale)
        self.batched = batched

    def __call__(self, x: Tensor, timesteps: Tensor, index: Tensor) -> Tensor:
        """The guided model output of rows ``x`` (samples ``index``) at ``timesteps``."""
        cond = per_row(self.cond, index, self.batch)
        if self.uncond is None:
            return self.call(x, timesteps, cond)
        uncond = per_row(self.uncond, index, self.batch)
        if self.batched:
            both = self.call(torch.cat([x, x]), torch.cat([timesteps, timesteps]),
                             cat_tree(uncond, cond, len(index)))
            out_uncond, out_cond = both.chunk(2)
        else:
            out_cond = self.call(x, timesteps, cond)
            out_uncond = self.call(x, timesteps, uncond)
        return out_uncond + self.scale * (out_cond - out_uncond)
