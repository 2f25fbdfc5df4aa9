"""Zoom-out superpixel features (Mostajabi et al., CVPR 2015), from the classifier's own layers.

For each superpixel and each of several layers, the layer's feature maps (bilinearly
up-sampled to the image) averaged over four nested extents: the superpixel, it and its
neighbours, everything within two neighbour steps, and the whole image. The layers are the
backbone's feature taps, the deepest one at each stride (early, middle and late features).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse

from wsseg.maps.hooks import capture_outputs, inference_state, prepare_inputs


def zoomout_layers(model: torch.nn.Module) -> list[str]:
    """The deepest of the model's feature taps at each stride (EfficientNet-Lite0: blocks 4, 10
    and 15, 40 + 112 + 320 channels; VGG16: the inputs of conv3_3, conv4_3 and conv5_3)."""
    deepest = {tap.stride: tap.module for tap in model.feature_taps}  # taps are in forward order
    return list(deepest.values())


def layer_features(model: torch.nn.Module, images: torch.Tensor, layers: Sequence[str]) -> list[np.ndarray]:
    """Per image, the named layers' outputs up-sampled to the image and stacked: [D, H, W] float32."""
    with inference_state(model), torch.no_grad(), capture_outputs(model, layers) as captured:
        model(prepare_inputs(images, requires_grad=False))
    size = list(images.shape[2:])
    with torch.no_grad():
        stacked = torch.cat([F.interpolate(captured[name].float(), size=size, mode="bilinear", align_corners=False)
                             for name in layers], dim=1)
    return [array for array in stacked.cpu().numpy()]


def adjacency(superpixels: np.ndarray) -> sparse.csr_matrix:
    """Symmetric P x P 0/1 matrix of superpixels that touch (4-connectivity)."""
    count = int(superpixels.max()) + 1
    pairs = [np.stack([superpixels[:, :-1].ravel(), superpixels[:, 1:].ravel()]),
             np.stack([superpixels[:-1].ravel(), superpixels[1:].ravel()])]
    a, b = np.concatenate(pairs, axis=1)
    different = a != b
    matrix = sparse.coo_matrix((np.ones(different.sum()), (a[different], b[different])), shape=(count, count)).tocsr()
    matrix = ((matrix + matrix.T) > 0).astype(np.float64)
    return matrix


def zoomout(features: np.ndarray, superpixels: np.ndarray) -> np.ndarray:
    """[D, H, W] features and superpixels -> [P, 4 D] zoom-out descriptors."""
    count = int(superpixels.max()) + 1
    flat = superpixels.ravel()
    assign = sparse.csr_matrix((np.ones(flat.size), (flat, np.arange(flat.size))), shape=(count, flat.size))
    sums = assign @ features.reshape(features.shape[0], -1).T.astype(np.float64)  # [P, D]
    area = np.asarray(assign.sum(axis=1)).ravel()
    near = adjacency(superpixels) + sparse.identity(count, format="csr")
    wide = ((near @ near) > 0).astype(np.float64)
    levels = [sums / area[:, None]]
    for region in (near, wide):
        levels.append((region @ sums) / (region @ area)[:, None])
    levels.append(np.broadcast_to(sums.sum(0) / area.sum(), sums.shape))
    return np.concatenate(levels, axis=1).astype(np.float32)
