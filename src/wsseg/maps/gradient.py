"""Input-gradient saliency (Simonyan et al. 2014) and its guided back-propagation version."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from wsseg.maps.hooks import guided_relus, inference_state, prepare_inputs
from wsseg.maps.targets import make_targets


def input_gradient_maps(model: nn.Module, images: torch.Tensor, classes: Sequence[Sequence[int]],
                        guided: bool = False) -> torch.Tensor:
    """max over colour channels of |d logit_c / d input|: [N, K, H, W], one backward per slot.

    Works for any model returning [N, C] logits.
    """
    with inference_state(model), (guided_relus(model) if guided else contextlib.nullcontext()):
        inputs = prepare_inputs(images)
        logits = model(inputs)
        targets = make_targets(classes, inputs.shape[0], logits.shape[1])
        maps = torch.zeros(inputs.shape[0], targets.slots, *inputs.shape[2:], device=inputs.device)
        for slot in range(targets.slots):
            selector = targets.one_hot(slot, logits.shape[1]).to(logits)
            (grad,) = torch.autograd.grad(logits, inputs, selector, retain_graph=slot < targets.slots - 1)
            maps[:, slot] = grad.abs().amax(dim=1) * targets.valid[:, slot].to(grad).view(-1, 1, 1)
    return maps


def gradient_maps(model: nn.Module, images: torch.Tensor, classes: Sequence[Sequence[int]]) -> torch.Tensor:
    """Vanilla gradient saliency (Simonyan et al. 2014)."""
    return input_gradient_maps(model, images, classes, guided=False)


def guided_maps(model: nn.Module, images: torch.Tensor, classes: Sequence[Sequence[int]]) -> torch.Tensor:
    """Guided back-propagation saliency (Springenberg et al. 2015) at the input image."""
    return input_gradient_maps(model, images, classes, guided=True)
