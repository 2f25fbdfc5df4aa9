"""Class maps: typed methods, raw maps out, each method owning its normalisation.

    method = DCSM(scales=(1.0,))
    maps = method.normalize(method(model, images, classes))
    maps = class_maps(model, images, classes, "dcsm", scales=(1.0,))  # the same raw maps, by name

``images`` is a float tensor [N, 3, H, W] (values in [0, 1] for wsseg classifiers); ``classes``
gives, per image, the class indices to explain (0-based classifier outputs). The result is
[N, K, H, W] at image resolution, K = the most classes asked for any image (unused slots are
zero). ``gradient`` and ``guided`` accept any classifier returning [N, C] logits; the other
methods need a wsseg FCN classifier (score maps and feature taps).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from wsseg.errors import WssegError
from wsseg.maps.cam import cam_maps, gradcam_maps
from wsseg.maps.distinct import DCSMResult, dcsm, dcsm_maps
from wsseg.maps.gradient import gradient_maps, guided_maps
from wsseg.maps.hooks import capture_outputs, guided_relus, inference_state
from wsseg.maps.layers import layer_maps
from wsseg.maps.methods import CAM, DCSM, MAP_METHODS, GradCAM, Gradient, Guided, Layers, MapMethod, map_method
from wsseg.maps.normalize import normalize_maps


def class_maps(model: nn.Module, images: torch.Tensor, classes: Sequence[Sequence[int]],
               method: str = "dcsm", **options) -> torch.Tensor:
    """Raw class maps [N, K, H, W] of the method named ``method`` built with ``options``."""
    if images.dim() != 4:
        raise WssegError(f"images must be a [N, C, H, W] tensor, got shape {tuple(images.shape)}")
    return map_method(method, **options)(model, images, classes)


__all__ = ["CAM", "DCSM", "DCSMResult", "GradCAM", "Gradient", "Guided", "Layers", "MAP_METHODS",
           "MapMethod", "cam_maps", "capture_outputs", "class_maps", "dcsm", "dcsm_maps", "gradcam_maps",
           "gradient_maps", "guided_maps", "guided_relus", "inference_state", "layer_maps", "map_method",
           "normalize_maps"]
