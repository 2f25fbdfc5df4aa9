"""SLIC superpixels (scikit-image) and per-superpixel statistics."""

from __future__ import annotations

import numpy as np


def slic_superpixels(image: np.ndarray, pixels_per_superpixel: int = 120, compactness: float = 20.0) -> np.ndarray:
    """H x W int32 superpixel ids 0..P-1 (about one per ``pixels_per_superpixel`` pixels)."""
    from skimage.segmentation import slic  # local: scikit-image takes about a second to import

    height, width = image.shape[:2]
    segments = max(8, round(height * width / pixels_per_superpixel))
    labels = slic(image, n_segments=segments, compactness=compactness, start_label=0, channel_axis=-1)
    _, dense = np.unique(labels, return_inverse=True)  # ids without gaps
    return dense.reshape(height, width).astype(np.int32)


def superpixel_means(values: np.ndarray, superpixels: np.ndarray) -> np.ndarray:
    """[K, H, W] maps -> [P, K] mean of each map over each superpixel."""
    count = int(superpixels.max()) + 1
    flat = superpixels.ravel()
    area = np.bincount(flat, minlength=count).astype(np.float64)
    sums = np.stack([np.bincount(flat, weights=v.ravel(), minlength=count) for v in values], axis=1)
    return sums / np.maximum(area, 1)[:, None]


def superpixel_areas(superpixels: np.ndarray) -> np.ndarray:
    return np.bincount(superpixels.ravel(), minlength=int(superpixels.max()) + 1).astype(np.float64)
