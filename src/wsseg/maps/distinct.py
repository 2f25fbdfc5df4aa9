"""Distinct class-specific saliency maps (Shimoda & Yanai, ECCV 2016), as the authors computed them.

``variant="matconvnet"`` follows their MatConvNet code (mat_dcsm, dcsm.m), with which the paper
was measured:
  * for each scale (default 0.8, 1.0, 1.2) one forward pass; class score = the model's pooled
    score through a sigmoid (for a gmp model exactly their spatial max); detected = score > 0.5;
  * candidates = the classes asked for, plus the top-scoring other classes (by score summed
    over scales) until there are ``min_candidates`` (4): those only serve as "other classes";
  * one guided backward pass per candidate and scale with the expected class score (ones on
    its score map); per layer M_l = max over channels of |derivative|, up-sampled;
  * for a class t, at every scale where t is detected, for every other candidate t2 and every
    layer: D = M_l^t - M_l^t2; D = D / max(D); D = tanh(3 D); if max(D) > 0 then D[D <= 0] = 1e-20
    and S_t += D (like their code, a negative max flips the sign; a zero max is skipped);
  * S_t = tanh(3 S_t / max(S_t)), values <= 0 set to 1e-20; the class-agnostic map is
    tanh(3 A / max(A)) with A = max over classes of S_t / max(S_t).
  A class asked for that is detected at no scale (e.g. a ground-truth label the classifier
  misses) uses every scale, so pseudo-labels can still be made for it.

``variant="caffe"`` follows their Caffe code: signed derivatives (no absolute value), the top 3
candidates, and per layer N(sum over others of tanh(N(M_t - M_j))) through tanh, with
N(x) = 3 x / max(x) (0 when max(x) <= 0), summed over layers and scales, then divided by its max.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from wsseg.errors import WssegError
from wsseg.maps.hooks import folded_batchnorm, guided_relus, inference_state
from wsseg.maps.layers import forward_pass, layer_saliency, require_fcn, stopwatch
from wsseg.maps.targets import Targets, make_targets

TINY = 1e-20
VARIANTS = ("matconvnet", "caffe")


@dataclass
class DCSMResult:
    maps: torch.Tensor  # [N, K, H, W] distinct maps of the classes asked for (zeros in padding slots)
    agnostic: torch.Tensor  # [N, H, W] class-agnostic saliency
    candidates: torch.Tensor  # [N, J] class indices: asked classes first, then the padding ones
    candidate_valid: torch.Tensor  # [N, J]
    scores: torch.Tensor  # [N, S, C] sigmoid class scores at each scale


def choose_candidates(targets: Targets, scores: torch.Tensor, minimum: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asked classes, then the best-scoring others until ``minimum`` candidates (per image)."""
    total = scores.sum(dim=1)  # [N, C], summed over scales as in dcsm.m
    rows = []
    for n in range(targets.index.shape[0]):
        asked = targets.index[n][targets.valid[n]].tolist()
        others = [c for c in torch.argsort(total[n], descending=True).tolist() if c not in asked]
        rows.append(asked + others[: max(0, minimum - len(asked))])
    width = max(len(r) for r in rows)
    index = torch.zeros(len(rows), width, dtype=torch.long)
    valid = torch.zeros(len(rows), width, dtype=torch.bool)
    for n, row in enumerate(rows):
        index[n, : len(row)] = torch.tensor(row, dtype=torch.long)
        valid[n, : len(row)] = True
    return index, valid


def distinct_sum_matconvnet(target: torch.Tensor, others: torch.Tensor, sharpness: float = 3.0) -> torch.Tensor:
    """Sum over other classes and layers of the authors' distinct difference maps.

    target: [L, H, W] maps of class t; others: [J, L, H, W] maps of the other candidates (t itself
    may be among them: its difference is zero, and zero-max differences are skipped).
    """
    diff = target.unsqueeze(0) - others  # [J, L, H, W]
    peak = diff.amax(dim=(-2, -1), keepdim=True)
    usable = peak != 0
    diff.div_(torch.where(usable, peak, torch.ones_like(peak))).mul_(sharpness).tanh_()
    keep = (diff.amax(dim=(-2, -1), keepdim=True) > 0) & usable
    # D[D <= 0] = 1e-20 (clamping also lifts values in (0, 1e-20), far below float32 resolution of the sums)
    diff.clamp_(min=TINY).mul_(keep)
    return diff.sum(dim=(0, 1))


def _max_normalize(x: torch.Tensor, prior: float = 3.0) -> torch.Tensor:
    """Their Caffe MaxNormalize layer: prior * x / max(x) over the last two dims, 0 when max <= 0."""
    peak = x.amax(dim=(-2, -1), keepdim=True)
    return torch.where(peak > 0, prior * x / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(x))


def distinct_sum_caffe(target: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """Their Caffe variant for one class: sum over layers of tanh(N(sum_j tanh(N(M_t - M_j))))."""
    pairs = torch.tanh(_max_normalize(target.unsqueeze(0) - others))  # [J, L, H, W]
    per_layer = torch.tanh(_max_normalize(pairs.sum(dim=0)))  # [L, H, W]
    return per_layer.sum(dim=0)


def finish_matconvnet(sums: torch.Tensor, valid: torch.Tensor, sharpness: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """S_t -> tanh(3 S_t / max S_t) with values <= 0 at 1e-20, and the class-agnostic map."""
    peak = sums.amax(dim=(-2, -1), keepdim=True)
    normalised = torch.where(peak > 0, sums / torch.where(peak > 0, peak, torch.ones_like(peak)),
                             torch.zeros_like(sums))
    valid = valid.to(sums.device)  # the class lists are built on the CPU; the maps may be on a GPU
    normalised = normalised * valid[:, :, None, None]
    agnostic = normalised.amax(dim=1) if normalised.shape[1] else sums.new_zeros(sums.shape[0], *sums.shape[2:])
    agnostic_peak = agnostic.amax(dim=(-2, -1), keepdim=True)
    agnostic = torch.tanh(sharpness * agnostic / torch.where(agnostic_peak > 0, agnostic_peak,
                                                             torch.ones_like(agnostic_peak)))
    final = torch.tanh(sharpness * normalised)
    final = torch.where(final <= 0, torch.full_like(final, TINY), final) * valid[:, :, None, None]
    return final, agnostic


def dcsm(model: nn.Module, images: torch.Tensor, classes: Sequence[Sequence[int]],
         scales: Sequence[float] | None = None, layers: Sequence[str] | None = None,
         variant: str = "matconvnet", threshold: float = 0.5, min_candidates: int | None = None,
         sharpness: float = 3.0, fold_bn: bool = True, guided: bool = True,
         timings: dict[str, float] | None = None) -> DCSMResult:
    """Distinct class-specific saliency maps of ``classes`` (0-based, per image) for ``images``.

    ``fold_bn`` folds batch norms into convolutions while computing (faster; float rounding only);
    ``guided=False`` takes plain gradients instead of guided back-propagation's (for comparison);
    ``timings``: seconds per part (forward, backward, up-sampling, distinct sums) are added to it.
    """
    require_fcn(model, "dcsm")
    if variant not in VARIANTS:
        raise WssegError(f"unknown DCSM variant {variant!r}; choose from {', '.join(VARIANTS)}")
    caffe = variant == "caffe"
    scales = tuple(scales) if scales is not None else ((1.0,) if caffe else (0.8, 1.0, 1.2))
    if not scales or any(s <= 0 for s in scales):
        raise WssegError(f"scales must be positive numbers, got {scales}")
    minimum = min_candidates if min_candidates is not None else (3 if caffe else 4)
    names = list(layers or model.saliency_layers)
    batch, size = images.shape[0], images.shape[2:]
    with inference_state(model), (guided_relus(model) if guided else contextlib.nullcontext()), \
            (folded_batchnorm(model) if fold_bn else contextlib.nullcontext()):
        with stopwatch(timings, "forward"):
            passes = [forward_pass(model, images, names, scale) for scale in scales]
        scores = torch.stack([torch.sigmoid(p.logits.detach()) for p in passes], dim=1)  # [N, S, C]
        num_classes = scores.shape[2]
        targets = make_targets(classes, batch, num_classes)
        candidates, candidate_valid = choose_candidates(targets, scores, min(minimum, num_classes))
        detected = torch.gather(scores, 2, candidates.to(scores.device).unsqueeze(1).expand(-1, len(scales), -1)) \
            > threshold
        anywhere = detected.any(dim=1, keepdim=True)
        use_scale = detected | ~anywhere  # [N, S, J]
        candidate_targets = Targets(candidates, candidate_valid)
        sums = torch.zeros(batch, targets.slots, *size, device=images.device)
        combine = distinct_sum_caffe if caffe else distinct_sum_matconvnet
        saliency = torch.empty(batch, candidates.shape[1], len(names), *size, device=images.device)
        for s, pass_ in enumerate(passes):
            for j in range(candidates.shape[1]):  # one backward pass per candidate
                layer_saliency(pass_, candidate_targets.one_hot(j, num_classes), names, size,
                               absolute=not caffe, out=saliency[:, j], timings=timings)
            with stopwatch(timings, "distinct sums"):
                for n in range(batch):
                    count = int(candidate_valid[n].sum())
                    for k in range(int(targets.valid[n].sum())):
                        if count == 1:  # a one-class classifier: nothing to be distinct from
                            sums[n, k] += saliency[n, k].sum(0)
                        elif caffe or bool(use_scale[n, s, k]):
                            # t against every candidate: t - t is 0 everywhere, which both rules skip
                            sums[n, k] += combine(saliency[n, k], saliency[n, :count])
        passes.clear()
    if caffe:
        peak = sums.amax(dim=(-2, -1), keepdim=True)
        maps = torch.where(peak > 0, sums / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(sums))
        maps = maps * targets.valid.to(maps.device)[:, :, None, None]
        agnostic = maps.amax(dim=1) if maps.shape[1] else maps.new_zeros(batch, *size)
    else:
        maps, agnostic = finish_matconvnet(sums, targets.valid, sharpness)
    return DCSMResult(maps, agnostic, candidates, candidate_valid, scores)


def dcsm_maps(model: nn.Module, images: torch.Tensor, classes: Sequence[Sequence[int]], **options) -> torch.Tensor:
    """The distinct maps only ([N, K, H, W]); see :func:`dcsm` for the options."""
    return dcsm(model, images, classes, **options).maps
