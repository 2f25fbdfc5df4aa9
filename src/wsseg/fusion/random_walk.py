"""Spreading class maps by a random walk over learnt affinities (psa's AffinityNet inference).

On the affinity network's grid (stride 4), every pixel is linked to the pixels within the
radius; A holds their affinities raised to beta (and 1 on the diagonal: a pixel is its own
neighbour), T = D^-1 A, so each row sums to 1. Applying T 2^logt times to the class maps (plus
their background channel) lets each pixel take the average of its neighbours' scores, weighted
by how surely they belong together: scores flow inside a region and stop at its edges.

T is a torch sparse CSR matrix with at most P x (2 n + 1) non-zeros for P grid pixels and n
offsets of :func:`wsseg.models.affinity.pair_offsets` (69 for radius 5, below pi r^2 + 1),
never a dense P x P matrix; the walk is 2^logt sparse products on the device the embedding
lives on (CPU or GPU).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from wsseg.fusion.background import soft_background
from wsseg.models.affinity import pair_offsets

PSA_BETA = 8.0
PSA_LOGT = 8


def transition_matrix(embedding: torch.Tensor, radius: int, beta: float = PSA_BETA) -> torch.Tensor:
    """[D, h, w] embedding -> [P, P] sparse CSR transition matrix (P = h w, row-major), rows summing to 1.

    Built row by row without sorting: every pixel's neighbours, in the order of their linear
    offset (so each row's columns ascend, as CSR wants), the pixel itself among them."""
    height, width = embedding.shape[-2:]
    count = height * width
    device = embedding.device
    half = pair_offsets(radius)
    offsets = sorted([(0, 0), *half, *((-dy, -dx) for dy, dx in half)], key=lambda o: o[0] * width + o[1])
    rows, cols = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device),
                                indexing="ij")
    values = torch.zeros(count, len(offsets), device=device)
    valid = torch.zeros(count, len(offsets), dtype=torch.bool, device=device)
    features = embedding.float()
    with torch.no_grad():
        for k, (dy, dx) in enumerate(offsets):
            inside = (rows + dy >= 0) & (rows + dy < height) & (cols + dx >= 0) & (cols + dx < width)
            y0, y1, x0, x1 = max(0, -dy), height - max(0, dy), max(0, -dx), width - max(0, dx)
            affinity = torch.zeros(height, width, device=device)
            if y1 > y0 and x1 > x0:
                here = features[:, y0:y1, x0:x1]
                there = features[:, y0 + dy:y1 + dy, x0 + dx:x1 + dx]
                affinity[y0:y1, x0:x1] = torch.exp(-(here - there).abs().mean(dim=0)).pow(beta)
            values[:, k] = affinity.flatten()
            valid[:, k] = inside.flatten()
    values = values / values.sum(dim=1, keepdim=True)  # the pixel itself has affinity 1: never 0
    linear = torch.tensor([dy * width + dx for dy, dx in offsets], device=device)
    columns = (torch.arange(count, device=device)[:, None] + linear[None])[valid]
    crow = torch.zeros(count + 1, dtype=torch.int64, device=device)
    crow[1:] = valid.sum(dim=1).cumsum(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta": it works on CPU and GPU
        return torch.sparse_csr_tensor(crow, columns, values[valid], (count, count), check_invariants=False)


def random_walk(scores: torch.Tensor, transition: torch.Tensor, logt: int = PSA_LOGT) -> torch.Tensor:
    """[C, h, w] scores -> T^(2^logt) applied to each channel, [C, h, w]."""
    channels, height, width = scores.shape
    vectors = scores.reshape(channels, -1).T.contiguous().to(transition.device, torch.float32)  # [P, C]
    for _ in range(2 ** logt):
        vectors = transition @ vectors
    return vectors.T.reshape(channels, height, width)


def walk_scores(channels: np.ndarray, transition: torch.Tensor, grid: tuple[int, int],
                logt: int = PSA_LOGT) -> np.ndarray:
    """[C, H, W] scores -> averaged onto the walk's grid, walked, bilinearly up-sampled back: [C, H, W].

    Every step is linear, so channels may be walked apart (a threshold search walks the class
    maps once and each threshold's background channel alone)."""
    height, width = channels.shape[1:]
    on_grid = F.adaptive_avg_pool2d(torch.from_numpy(np.ascontiguousarray(channels, np.float32))
                                    .to(transition.device)[None], grid)[0]
    walked = random_walk(on_grid, transition, logt)
    upsampled = F.interpolate(walked[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    return upsampled.cpu().numpy()


def walk_with_background(maps: np.ndarray, transition: torch.Tensor, grid: tuple[int, int], threshold: float,
                         logt: int = PSA_LOGT) -> np.ndarray:
    """[K, H, W] class maps in [0, 1] -> [K + 1, H, W] walked scores, background first.

    The background channel is the CRF unary's, psa's (1 - max)^alpha with alpha from the
    threshold (:func:`wsseg.fusion.background.soft_background`), so background and a class tie
    exactly at the threshold before the walk; as psa, the channels are walked unnormalised.
    """
    maps = np.clip(np.asarray(maps, np.float32), 0.0, 1.0)
    channels = np.concatenate([soft_background(maps, threshold)[None], maps])
    return walk_scores(channels, transition, grid, logt)
