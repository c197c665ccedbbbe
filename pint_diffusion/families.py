"""Model calls per family: how each denoising network is called, and guidance.

A *family* call turns rows of latents, their timesteps (the scheduler's, one per row) and a
conditioning dict into the model output that the scheduler's ``step`` expects:

- :class:`UNetCall`: Stable Diffusion 1.x/2.x and SDXL (``UNet2DConditionModel``;
  SDXL's ``added_cond_kwargs={"text_embeds", "time_ids"}`` is just more conditioning);
- :class:`SD3Call`: the SD3 ``SD3Transformer2DModel`` (timestep in ``[0, 1000]``, pooled
  projections);
- :class:`FluxCall`: the ``FluxTransformer2DModel`` (timestep divided by 1000, the distilled
  ``guidance`` input, ``img_ids``/``txt_ids``, packed latents).

:class:`Guided` adds classifier-free guidance over any family call and picks each row's
conditioning by its sample index (the rows of a parallel sampler come from many samples and
grid points at once), giving the ``model(latents_in, timesteps, index)`` that
:class:`pint_diffusion.schedulers.SchedulerTrajectory` integrates. A new family is one small
class with a ``__call__(x, timesteps, cond)``::

    class MyCall:
        def __init__(self, net):
            self.net = net
        def __call__(self, x, timesteps, cond):
            return self.net(x, timesteps / 1000, **cond, return_dict=False)[0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["FamilyCall", "FluxCall", "Guided", "SD3Call", "UNetCall", "cat_tree", "take"]

FamilyCall = Callable[[Tensor, Tensor, dict[str, Any]], Tensor]
"""``call(x, timesteps, cond) -> model output`` for rows ``x``, their timesteps ``(R,)`` and
their conditioning (every per-sample leaf has ``R`` rows)."""


def take(tree: Any, index: Tensor, batch: int) -> Any:
    """Pick rows ``index`` of every leaf of ``tree`` whose leading axis is the batch.

    ``tree`` is nested dicts, lists and tuples; a tensor leaf with ``batch`` rows is indexed,
    every other leaf (shared tensors such as Flux's ``img_ids``, numbers, None) passes unchanged.
    """
    if isinstance(tree, dict):
        return {k: take(v, index, batch) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(take(v, index, batch) for v in tree)
    if isinstance(tree, Tensor) and tree.ndim > 0 and tree.shape[0] == batch:
        return tree[index.to(tree.device)]
    return tree


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


class UNetCall:
    """Stable Diffusion and SDXL: ``unet(x, t, **cond, cross_attention_kwargs=...)``.

    ``cond`` holds ``encoder_hidden_states`` and, for SDXL, ``added_cond_kwargs`` (and any
    other per-sample UNet input, e.g. ``timestep_cond``).
    """

    def __init__(self, unet: nn.Module, cross_attention_kwargs: dict[str, Any] | None = None):
        self.unet = unet
        self.cross_attention_kwargs = cross_attention_kwargs

    def __call__(self, x: Tensor, timesteps: Tensor, cond: dict[str, Any]) -> Tensor:
        """The UNet's output (epsilon, v or x0, as the scheduler's config says)."""
        return _out(self.unet(x, timesteps, **cond,
                              cross_attention_kwargs=self.cross_attention_kwargs,
                              return_dict=False))


class SD3Call:
    """Stable Diffusion 3: the transformer sees the scheduler's timestep (sigma * 1000).

    ``cond`` holds ``encoder_hidden_states`` and ``pooled_projections``.
    """

    def __init__(self, transformer: nn.Module,
                 joint_attention_kwargs: dict[str, Any] | None = None):
        self.transformer = transformer
        self.joint_attention_kwargs = joint_attention_kwargs

    def __call__(self, x: Tensor, timesteps: Tensor, cond: dict[str, Any]) -> Tensor:
        """The flow velocity."""
        return _out(self.transformer(hidden_states=x, timestep=timesteps, **cond,
                                     joint_attention_kwargs=self.joint_attention_kwargs,
                                     return_dict=False))


class FluxCall:
    """Flux: the transformer sees ``timestep / 1000`` and, for guidance-distilled models
    (``config.guidance_embeds``), the guidance scale as an input.

    ``cond`` holds ``encoder_hidden_states`` and ``pooled_projections``; ``img_ids`` and
    ``txt_ids`` (shared by all rows) are given here.

    Args:
        transformer: a ``FluxTransformer2DModel``.
        img_ids: the packed latents' position ids.
        txt_ids: the text tokens' position ids.
        guidance: the distilled guidance scale (used when the model embeds guidance).
        joint_attention_kwargs: passed unchanged.
    """

    def __init__(self, transformer: nn.Module, img_ids: Tensor, txt_ids: Tensor,
                 guidance: float | None = None,
                 joint_attention_kwargs: dict[str, Any] | None = None):
        self.transformer = transformer
        self.img_ids = img_ids
        self.txt_ids = txt_ids
        embeds = getattr(getattr(transformer, "config", None), "guidance_embeds", False)
        self.guidance = guidance if embeds else None
        self.joint_attention_kwargs = joint_attention_kwargs

    def __call__(self, x: Tensor, timesteps: Tensor, cond: dict[str, Any]) -> Tensor:
        """The flow velocity of packed latents ``x``."""
        guidance = None
        if self.guidance is not None:
            guidance = torch.full((x.shape[0],), float(self.guidance), device=x.device,
                                  dtype=torch.float32)
        return _out(self.transformer(hidden_states=x, timestep=timesteps / 1000,
                                     guidance=guidance, img_ids=self.img_ids,
                                     txt_ids=self.txt_ids, **cond,
                                     joint_attention_kwargs=self.joint_attention_kwargs,
                                     return_dict=False))


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
        cond = take(self.cond, index, self.batch)
        if self.uncond is None:
            return self.call(x, timesteps, cond)
        uncond = take(self.uncond, index, self.batch)
        if self.batched:
            both = self.call(torch.cat([x, x]), torch.cat([timesteps, timesteps]),
                             cat_tree(uncond, cond, len(index)))
            out_uncond, out_cond = both.chunk(2)
        else:
            out_cond = self.call(x, timesteps, cond)
            out_uncond = self.call(x, timesteps, uncond)
        return out_uncond + self.scale * (out_cond - out_uncond)
