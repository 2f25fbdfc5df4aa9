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
