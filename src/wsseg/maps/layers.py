"""Derivatives of an expected class score with respect to intermediate layers.

The expected class score of class c is a map of ones on c's score map and zeros on every
other class's (the authors' DCSM target); with ``target="logit"`` the pooled image score is
differentiated instead. Per layer the saliency map is max over channels of |derivative|,
up-sampled bilinearly to the image size.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wsseg.errors import WssegError
from wsseg.maps.hooks import capture_outputs, guided_relus, inference_state, prepare_inputs
from wsseg.maps.targets import make_targets


@contextlib.contextmanager
def stopwatch(timings: dict[str, float] | None, part: str) -> Iterator[None]:
    """Add the block's wall time to ``timings[part]`` (when timings are asked for)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[part] = timings.get(part, 0.0) + time.perf_counter() - started


def require_fcn(model: nn.Module, method: str) -> None:
    """Methods that read score maps and named layers need a wsseg FCN classifier."""
    for attribute in ("score_maps", "pool", "saliency_layers", "classifier", "features"):
        if not hasattr(model, attribute):
            raise WssegError(f"method {method!r} needs a wsseg FCN classifier (score maps and named layers); "
                             f"{type(model).__name__} has no {attribute!r}")


@dataclass
class ForwardPass:
    """One forward pass at one scale, with the graph kept for several backward passes."""

    inputs: torch.Tensor
    score_maps: torch.Tensor  # [N, C, h, w]
    logits: torch.Tensor  # [N, C]
    layers: dict[str, torch.Tensor]


def forward_pass(model: nn.Module, images: torch.Tensor, layer_names: Sequence[str], scale: float = 1.0) -> ForwardPass:
    """Forward ``images`` resized by ``scale``, capturing the named layers' outputs.

    Call inside ``inference_state`` (and ``guided_relus`` for guided derivatives).
    """
    inputs = images.detach()
    if scale != 1.0:
        size = [max(1, round(side * scale)) for side in images.shape[2:]]
        inputs = F.interpolate(inputs, size=size, mode="bilinear", align_corners=False)
    # no gradient at the input: the graph starts at the first captured layer (see capture_outputs)
    inputs = prepare_inputs(inputs, requires_grad=False)
    with capture_outputs(model, layer_names) as captured:
        score_maps = model.score_maps(inputs)
    return ForwardPass(inputs, score_maps, model.pool(score_maps), dict(captured.outputs))


def layer_saliency(pass_: ForwardPass, selector: torch.Tensor, layer_names: Sequence[str],
                   size: Sequence[int], absolute: bool = True, target: str = "map",
                   out: torch.Tensor | None = None, timings: dict[str, float] | None = None) -> torch.Tensor:
    """Per-layer saliency maps [N, L, H, W] for the classes picked by ``selector`` [N, C].

    One backward pass; it stops at the deepest of the named layers. Written into ``out`` when given;
    seconds of the backward pass and of the reduction and up-sampling added to ``timings``.
    """
    if target == "map":
        outputs, grad_outputs = pass_.score_maps, selector[:, :, None, None].expand_as(pass_.score_maps)
    elif target == "logit":
        outputs, grad_outputs = pass_.logits, selector
    else:
        raise WssegError(f"target must be 'map' or 'logit', not {target!r}")
    tensors = [pass_.layers[name] for name in layer_names]
    with stopwatch(timings, "backward"):
        grads = torch.autograd.grad(outputs, tensors, grad_outputs.to(outputs), retain_graph=True, allow_unused=True)
    with stopwatch(timings, "max over channels, up-sampling"):
        return _reduce_and_grow(grads, tensors, selector.shape[0], size, absolute, out)


def _reduce_and_grow(grads: Sequence[torch.Tensor | None], tensors: Sequence[torch.Tensor], batch: int,
                     size: Sequence[int], absolute: bool, out: torch.Tensor | None) -> torch.Tensor:
    if out is None:
        out = torch.empty(batch, len(tensors), *size, device=tensors[0].device)
    for index, (grad, tensor) in enumerate(zip(grads, tensors)):
        if grad is None:
            out[:, index] = 0
            continue
        reduced = grad.abs().amax(dim=1, keepdim=True) if absolute else grad.amax(dim=1, keepdim=True)
        out[:, index] = F.interpolate(reduced, size=list(size), mode="bilinear", align_corners=False)[:, 0]
    return out


def layer_maps(model: nn.Module, images: torch.Tensor, classes: Sequence[Sequence[int]],
               layers: Sequence[str] | None = None, guided: bool = True, target: str = "map",
               absolute: bool = True) -> torch.Tensor:
    """Sum over layers of the per-layer saliency maps: [N, K, H, W] (non-distinct BP saliency)."""
    require_fcn(model, "layers")
    names = list(layers or model.saliency_layers)
    with inference_state(model), (guided_relus(model) if guided else contextlib.nullcontext()):
        pass_ = forward_pass(model, images, names)
        targets = make_targets(classes, images.shape[0], pass_.logits.shape[1])
        maps = torch.zeros(images.shape[0], targets.slots, *images.shape[2:], device=images.device)
        for slot in range(targets.slots):
            selector = targets.one_hot(slot, pass_.logits.shape[1])
            per_layer = layer_saliency(pass_, selector, names, images.shape[2:], absolute, target)
            maps[:, slot] = per_layer.sum(dim=1) * targets.valid[:, slot].to(per_layer).view(-1, 1, 1)
    return maps
