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
from wsseg.models.affinity import pair_affinities, pair_offsets

PSA_BETA = 8.0
PSA_LOGT = 8


def transition_matrix(embedding: torch.Tensor, radius: int, beta: float = PSA_BETA) -> torch.Tensor:
    """[D, h, w] embedding -> [P, P] sparse CSR transition matrix (P = h w, row-major), rows summing to 1."""
    height, width = embedding.shape[-2:]
    count = height * width
    device = embedding.device
    index = torch.arange(count, device=device).view(height, width)
    rows, cols, values = [index.flatten()], [index.flatten()], [torch.ones(count, device=device)]
    with torch.no_grad():
        affinities = pair_affinities(embedding[None].float(), radius)
    for (dy, dx), affinity in zip(pair_offsets(radius), affinities):
        x0, x1 = max(0, -dx), width - max(0, dx)
        first = index[: height - dy, x0:x1].flatten()
        second = index[dy:, x0 + dx:x1 + dx].flatten()
        weight = affinity[0].flatten().pow(beta)
        rows += [first, second]  # both directions: A is symmetric
        cols += [second, first]
        values += [weight, weight]
    rows_, cols_, values_ = torch.cat(rows), torch.cat(cols), torch.cat(values)
    degree = torch.zeros(count, device=device).index_add_(0, rows_, values_)
    values_ = values_ / degree[rows_]
    matrix = torch.sparse_coo_tensor(torch.stack([rows_, cols_]), values_, (count, count),
                                     check_invariants=False).coalesce()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta": it works on CPU and GPU
        return matrix.to_sparse_csr()


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
