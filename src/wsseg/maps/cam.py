"""Class activation maps from the classifier's own score maps, and Grad-CAM as a baseline."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wsseg.maps.hooks import capture_outputs, inference_state, prepare_inputs
from wsseg.maps.layers import require_fcn
from wsseg.maps.targets import make_targets


def _gather(per_class: torch.Tensor, classes: Sequence[Sequence[int]]) -> torch.Tensor:
    """[N, C, H, W] -> [N, K, H, W] for the asked classes (zeros in padding slots)."""
    targets = make_targets(classes, per_class.shape[0], per_class.shape[1])
    index = targets.index.to(per_class.device)[:, :, None, None].expand(-1, -1, *per_class.shape[2:])
    return torch.gather(per_class, 1, index) * targets.valid.to(per_class)[:, :, None, None]


def cam_maps(model: nn.Module, images: torch.Tensor, classes: Sequence[Sequence[int]],
             scales: Sequence[float] = (1.0,)) -> torch.Tensor:
    """CAM (Zhou et al. 2016): ReLU(w_c . features), bilinearly up-sampled and summed over scales.

    The classifier's bias is left out, as in torchcam and IRN.
    """
    require_fcn(model, "cam")
    size = images.shape[2:]
    total = None
    with inference_state(model), torch.no_grad():
        for scale in scales:
            inputs = prepare_inputs(images if scale == 1.0 else F.interpolate(
                images, scale_factor=scale, mode="bilinear", align_corners=False, recompute_scale_factor=False),
                requires_grad=False)
            cams = F.relu(F.conv2d(model.features(inputs), model.classifier.weight))
            cams = F.interpolate(cams, size=list(size), mode="bilinear", align_corners=False)
            total = cams if total is None else total + cams
    return _gather(total, classes)


def gradcam_maps(model: nn.Module, images: torch.Tensor, classes: Sequence[Sequence[int]],
                 layer: str | None = None) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) at ``layer`` (default: the backbone's output)."""
    if layer is None:
        require_fcn(model, "gradcam")
        layer = "backbone"
    with inference_state(model):
        inputs = prepare_inputs(images)
        with capture_outputs(model, [layer]) as captured:
            logits = model(inputs)
        activations = captured[layer]
        targets = make_targets(classes, inputs.shape[0], logits.shape[1])
        maps = torch.zeros(inputs.shape[0], targets.slots, *inputs.shape[2:], device=inputs.device)
        for slot in range(targets.slots):
            selector = targets.one_hot(slot, logits.shape[1]).to(logits)
            (grad,) = torch.autograd.grad(logits, activations, selector, retain_graph=slot < targets.slots - 1)
            weights = grad.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((weights * activations).sum(dim=1, keepdim=True)).detach()
            cam = F.interpolate(cam, size=list(inputs.shape[2:]), mode="bilinear", align_corners=False)
            maps[:, slot] = cam[:, 0] * targets.valid[:, slot].to(cam).view(-1, 1, 1)
    return maps
