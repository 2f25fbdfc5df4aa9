"""Deciding background from class maps.

Hard: a pixel is background where every class map is below ``threshold`` (IRN's rule: pad the
maps with a constant background score and take the argmax). Soft, for a CRF: psa's background
probability (1 - max_k map_k)^alpha, with alpha chosen so that background and a class tie
exactly at the threshold: (1 - t)^alpha = t.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from wsseg.errors import WssegError


# the background thresholds accepted: psa's exponent log(t) / log(1 - t) divides by zero as t nears 0
# (1e-300) and grows without bound as it nears 1; no map is normalised finer than this
THRESHOLD_RANGE = (0.001, 0.999)


def check_threshold(threshold: float) -> float:
    """The background threshold, refused (naming --threshold) outside :data:`THRESHOLD_RANGE`."""
    low, high = THRESHOLD_RANGE
    if not low <= threshold <= high:
        raise WssegError(f"--threshold {threshold:g}: a background threshold must be from {low:g} to {high:g}")
    return float(threshold)


def alpha_for_threshold(threshold: float) -> float:
    """The psa exponent alpha for which (1 - t)^alpha = t."""
    threshold = check_threshold(threshold)
    return math.log(threshold) / math.log(1.0 - threshold)


def labels_from_maps(maps: np.ndarray, labels: Sequence[int], threshold: float) -> np.ndarray:
    """[K, H, W] maps in [0, 1] of the classes ``labels`` (mask values) -> H x W label map."""
    check_threshold(threshold)
    maps = np.asarray(maps, dtype=np.float32)
    if maps.shape[0] != len(labels):
        raise ValueError(f"{maps.shape[0]} maps for {len(labels)} labels")
    if not len(labels):
        return np.zeros(maps.shape[1:], np.uint8)
    padded = np.concatenate([np.full((1, *maps.shape[1:]), threshold, np.float32), maps])
    lookup = np.array([0, *labels], dtype=np.uint8)
    return lookup[np.argmax(padded, axis=0)]


def soft_background(maps: np.ndarray, threshold: float) -> np.ndarray:
    """[K, H, W] maps in [0, 1] -> psa's background score (1 - max_k map_k)^alpha, [H, W]."""
    maps = np.clip(np.asarray(maps, dtype=np.float32), 0.0, 1.0)
    peak = maps.max(axis=0) if len(maps) else np.zeros(maps.shape[1:], np.float32)
    return np.power(1.0 - peak, alpha_for_threshold(threshold)).astype(np.float32)


def soft_probabilities(maps: np.ndarray, threshold: float) -> np.ndarray:
    """[K, H, W] maps in [0, 1] -> [K + 1, H, W] probabilities (background first), summing to 1."""
    maps = np.clip(np.asarray(maps, dtype=np.float32), 0.0, 1.0)
    stacked = np.concatenate([soft_background(maps, threshold)[None], maps]) + 1e-5
    return (stacked / stacked.sum(axis=0, keepdims=True)).astype(np.float32)
