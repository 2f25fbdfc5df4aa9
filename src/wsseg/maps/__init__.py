"""Class maps: one interface for every method, raw maps out, normalisation a separate step.

    maps = class_maps(model, images, classes, method="dcsm", scales=(1.0,))

``images`` is a float tensor [N, 3, H, W] (values in [0, 1] for wsseg classifiers); ``classes``
gives, per image, the class indices to explain (0-based classifier outputs). The result is
[N, K, H, W] at image resolution, K = the most classes asked for any image (unused slots are
zero). ``gradient`` and ``guided`` accept any classifier returning [N, C] logits; the other
methods need a wsseg FCN classifier (score maps and named layers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from wsseg.errors import WssegError
from wsseg.maps.cam import cam_maps, gradcam_maps
from wsseg.maps.distinct import DCSMResult, dcsm, dcsm_maps
from wsseg.maps.gradient import gradient_maps, guided_maps
from wsseg.maps.hooks import capture_outputs, guided_relus, inference_state
from wsseg.maps.layers import layer_maps

METHODS: dict[str, Callable[..., torch.Tensor]] = {
    "gradient": gradient_maps,
    "guided": guided_maps,
    "layers": layer_maps,
    "dcsm": dcsm_maps,
    "cam": cam_maps,
    "gradcam": gradcam_maps,
}


def class_maps(model: nn.Module, images: torch.Tensor, classes: Sequence[Sequence[int]],
               method: str = "dcsm", **options) -> torch.Tensor:
    """Raw class maps [N, K, H, W] of ``method`` (see ``METHODS``) for the asked classes."""
    if method not in METHODS:
        raise WssegError(f"unknown map method {method!r}; choose from {', '.join(METHODS)}")
    if images.dim() != 4:
        raise WssegError(f"images must be a [N, C, H, W] tensor, got shape {tuple(images.shape)}")
    return METHODS[method](model, images, classes, **options)


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


__all__ = ["DCSMResult", "METHODS", "cam_maps", "capture_outputs", "class_maps", "dcsm", "dcsm_maps",
           "gradcam_maps", "gradient_maps", "guided_maps", "guided_relus", "inference_state", "layer_maps",
           "normalize_maps"]
