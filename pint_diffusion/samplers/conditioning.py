"""Per-sample conditioning: the rows of a batched model call get their own sample's arguments.

A parallel sampler calls the model on rows from many grid points and samples at once, and drops
samples that have converged, so every per-sample argument must follow its rows. Conditioning is
a tree (SDXL's ``added_cond_kwargs={"text_embeds": ..., "time_ids": ...}``): every tensor leaf,
however deeply it sits in dicts, lists and tuples, whose leading axis is the batch is split per
row; a leaf with a leading axis of 1 is shared by every sample; other leaves pass unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

__all__ = ["conditioned", "per_row"]


def _check(value: Any, batch: int, name: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _check(item, batch, f"{name}[{key!r}]")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check(item, batch, f"{name}[{i}]")
    elif isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] not in (batch, 1):
        raise ValueError(
            f"{name} has leading size {value.shape[0]} but x has batch size {batch}; "
            f"per-sample arguments must have x's batch size (or 1, shared by every sample)"
        )


def per_row(value: Any, index: Tensor, batch: int) -> Any:
    """``value`` (a conditioning tree) for rows whose samples are ``index``."""
    if isinstance(value, dict):
        return {key: per_row(item, index, batch) for key, item in value.items()}
    if isinstance(value, list | tuple):
        items = [per_row(item, index, batch) for item in value]
        # a namedtuple's constructor takes its fields as arguments, not one iterable
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, Tensor) and value.ndim >= 1:
        if value.shape[0] == batch:
            return value[index.to(value.device)]
        return value.expand(len(index), *value.shape[1:])
    return value


def conditioned(model: Callable[..., Tensor], extra_args: dict[str, Any] | None,
                batch: int) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``call(x, sigma, index)``: ``model(x, sigma, **extra_args)`` with every per-sample leaf of
    ``extra_args`` taken at the rows' samples ``index``.

    Raises:
        TypeError: ``extra_args`` is neither a mapping nor ``None``.
        ValueError: a tensor leaf whose leading size is neither ``batch`` nor 1 (the message
            names the leaf's path).
    """
    if extra_args is not None and not isinstance(extra_args, Mapping):
        raise TypeError(f"extra_args must be a dict of keyword arguments for the model, or None; "
                        f"got {type(extra_args).__name__}")
    args = dict(extra_args or {})
    for key, value in args.items():
        _check(value, batch, f"extra_args[{key!r}]")

    def call(x: Tensor, sigma: Tensor, index: Tensor) -> Tensor:
        return model(x, sigma, **per_row(args, index, batch))

    return call
