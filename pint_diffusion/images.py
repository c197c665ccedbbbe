"""Images in ``[-1, 1]`` to pixels and PNG grids (the demo's and the command's sample grids)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["save_grid", "to_uint8"]


def to_uint8(images: Tensor, upscale: int = 1) -> np.ndarray:
    """Images in [-1, 1], shape (B, C, H, W) -> uint8 arrays (B, H*upscale, W*upscale)."""
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0]
    return pixels.repeat_interleave(upscale, 1).repeat_interleave(upscale, 2).numpy()


def save_grid(images: Tensor, path: Path, columns: int, upscale: int = 6, pad: int = 2) -> Path:
    """Write ``images`` in [-1, 1] (B, 1, H, W) as a PNG grid, ``columns`` per row."""
    from PIL import Image

    tiles = to_uint8(images, upscale)
    rows = -(-len(tiles) // columns)
    h, w = tiles.shape[1:]
    canvas = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h,
               pad + c * (w + pad):pad + c * (w + pad) + w] = tile
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
    return path

