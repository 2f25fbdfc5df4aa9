"""Normalising raw class maps to [0, 1] (a separate step: methods return raw maps)."""

from __future__ import annotations

import torch

from wsseg.errors import WssegError


def normalize_maps(maps: torch.Tensor, mode: str = "max", eps: float = 1e-12) -> torch.Tensor:
    """Scale each [H, W] map to at most 1: ``max`` divides by its maximum (negatives clipped to 0),
    ``minmax`` maps [min, max] onto [0, 1]. All-zero maps stay zero."""
    if mode == "max":
        clipped = maps.clamp(min=0)
        return clipped / clipped.amax(dim=(-2, -1), keepdim=True).clamp(min=eps)
    if mode == "minmax":
        low = maps.amin(dim=(-2, -1), keepdim=True)
        span = (maps.amax(dim=(-2, -1), keepdim=True) - low).clamp(min=eps)
        return (maps - low) / span
    raise WssegError(f"unknown normalisation {mode!r}; use 'max' or 'minmax'")


def otsu_thresholds(maps: torch.Tensor, bins: int = 64) -> torch.Tensor:
    """Otsu's threshold of each [H, W] map with values in [0, 1]: the cut (a bin edge) that best
    separates its pixels into two groups (the largest between-group variance). [..., H, W] -> [...]."""
    flat = maps.detach().reshape(-1, maps.shape[-2] * maps.shape[-1]).float()
    index = (flat * bins).long().clamp(0, bins - 1)
    share = flat.new_zeros(flat.shape[0], bins).scatter_add_(1, index, torch.ones_like(flat)) / max(flat.shape[1], 1)
    centres = (torch.arange(bins, dtype=flat.dtype, device=flat.device) + 0.5) / bins  # on the maps' device
    weight, mass = share.cumsum(1), (share * centres).cumsum(1)
    between = (mass[:, -1:] * weight - mass) ** 2 / (weight * (1 - weight)).clamp(min=1e-12)
    cut = (between[:, :-1].argmax(1) + 1).float() / bins
    return cut.reshape(maps.shape[:-2])


def centre_on_otsu(maps: torch.Tensor, low: float = 0.02, high: float = 0.98) -> torch.Tensor:
    """Bend each [H, W] map in [0, 1] piecewise-linearly (0 and 1 stay) so that its Otsu threshold
    (kept within [low, high]) lands on 0.5. A background threshold then means the same thing on a
    map whose object stands near its peak (synthetic images) and on one whose object sits well
    below a few peak pixels (photographs): docs/method.md 3.4."""
    cut = otsu_thresholds(maps).clamp(low, high)[..., None, None].to(maps.dtype)
    return torch.where(maps < cut, 0.5 * maps / cut, 0.5 + 0.5 * (maps - cut) / (1 - cut))
