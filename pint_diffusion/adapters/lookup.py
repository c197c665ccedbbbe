"""The exact sigma -> timestep lookup of a noise schedule, shared by every denoiser adapter."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SigmaTable"]


def _short_list(values: Tensor, n: int = 6) -> str:
    items = [f"{v:.6g}" for v in values.tolist()]
    if len(items) > 2 * n:
        items = [*items[:n], "...", *items[-n:]]
    return "[" + ", ".join(items) + "]"


class SigmaTable:
    """The evaluable points of a schedule and the model timestep of each: an exact lookup.

    A sampler evaluates the denoiser at schedule points only; the network must see exactly the
    timestep the scheduler feeds it there, so sigma is matched to a point of the table (within
    ``4 eps(dtype) * sigma + 1e-12``, eps of float32 or of the query's dtype if coarser), never
    interpolated.

    Args:
        sigmas: the evaluable noise levels, 1-D, strictly decreasing (kept as float64 on CPU).
        timesteps: the model timestep of each, same length.
        hint: appended to the error for a query off the schedule (how to get valid sigmas).

    Raises:
        ValueError: tables of different lengths, or sigmas that are not strictly decreasing.
    """

    def __init__(self, sigmas: Tensor, timesteps: Tensor, *, hint: str = "") -> None:
        sigmas = sigmas.detach().to(device="cpu", dtype=torch.float64)
        if sigmas.ndim != 1 or sigmas.shape != timesteps.shape:
            raise ValueError(f"sigmas and timesteps must be 1-D of one length, got "
                             f"{tuple(sigmas.shape)} and {tuple(timesteps.shape)}")
        if not bool((sigmas[1:] < sigmas[:-1]).all()):
            raise ValueError(f"the schedule's sigmas must decrease strictly: {sigmas.tolist()}")
        self.sigmas = sigmas
        self.timesteps = timesteps.detach().cpu()
        self.hint = hint

    def __len__(self) -> int:
        return len(self.sigmas)

    def index(self, sigma: Tensor) -> Tensor:
        """The table position of every value of the 1-D ``sigma`` (CPU, int64).

        Raises:
            ValueError: a value that is no point of the table, or is near several (its dtype
                is too coarse), naming it and the table.
        """
        table = self.sigmas
        query = sigma.detach().to(device="cpu", dtype=torch.float64)
        eps = torch.finfo(torch.float32).eps
        if sigma.is_floating_point():
            eps = max(eps, torch.finfo(sigma.dtype).eps)
        # Strictly decreasing with a tolerance growing with sigma: the points within tolerance
        # of a query are contiguous around its insertion point, so four candidates there decide
        # none, one or several matches (O(R log N), not O(R N)).
        size = len(table)
        around = torch.searchsorted(table.flip(0), query).unsqueeze(1) + torch.arange(-2, 2)
        inside = (around >= 0) & (around < size)
        candidate = size - 1 - around.clamp(0, size - 1)  # back to the schedule's order
        value = table[candidate]
        ok = inside & ((query[:, None] - value).abs() <= 4 * eps * value + 1e-12)
        hits = ok.sum(dim=1)
        if bool((hits != 1).any()):
            bad = query[hits != 1]
            reason = ("matches several schedule points (dtype too coarse)"
                      if bool((hits > 1).any()) else "is not a point of the schedule")
            raise ValueError(f"sigma={bad[0].item():.9g} {reason}: the timestep of a sigma is "
                             f"looked up exactly, never interpolated{self.hint} (evaluable "
                             f"points: {_short_list(table)})")
        return candidate.gather(1, ok.to(torch.int64).argmax(dim=1, keepdim=True)).squeeze(1)

    def timesteps_of(self, sigma: Tensor | float) -> Tensor:
        """The model timestep(s) of schedule point(s) ``sigma`` (CPU, the shape of ``sigma``)."""
        s = torch.as_tensor(sigma)
        return self.timesteps[self.index(s.reshape(-1))].reshape(s.shape)
