"""Class maps at a capped resolution: the map methods compute on the image shrunk to at most
``max_side`` pixels on its longer side and up-sample their raw maps to the image.

Why: a classifier trained on crops of S pixels learnt its objects at that scale, and its maps
have the resolution of its output stride whatever the input size; on a 640x480 photograph
through a classifier trained at 256 px, computing at full size costs about six times the time
of computing at 256 (DCSM's backward passes and its per-pixel distinct sums scale with the
pixel count) for maps that the CRF then refines at full resolution anyway.
``"auto"`` takes the side the classifier was trained at (``FCNClassifier.input_size``, set from
the run's config.json), ``None`` computes at the image's own size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsseg.data.transforms import grow, shrink  # here for their callers: they live below the models
from wsseg.errors import WssegError

__all__ = ["MIN_MAP_SIDE", "MaxSide", "check_max_side", "grow", "grow_ids", "refuse_useless_map_side",
           "resolve_max_side", "shrink", "shrink_image"]

MaxSide = int | str | None
# below this the backbones' strided convolutions leave too few score-map cells to locate anything
MIN_MAP_SIDE = 32


def check_max_side(max_side: MaxSide) -> None:
    """``max_side`` is "auto", None or a whole number of pixels >= MIN_MAP_SIDE."""
    if max_side is None or max_side == "auto":
        return
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < MIN_MAP_SIDE:
        raise WssegError(f"map side {max_side!r}: give 'auto', 'none' or a whole number of pixels >= {MIN_MAP_SIDE}")


def refuse_useless_map_side(max_side: MaxSide, applies: bool, what: str) -> None:
    """A map side given (not "auto") for maps that have none would be silently ignored: refuse it."""
    if max_side != "auto" and not applies:
        raise WssegError(f"--map-side: {what} maps have no map side (only dcsm and cam are computed on a shrunk "
                         "image); leave it out")


def resolve_max_side(model: nn.Module, max_side: MaxSide) -> int | None:
    """The side to compute at: ``"auto"`` -> the classifier's training side (None when unknown)."""
    if max_side == "auto":
        return getattr(model, "input_size", None)
    return max_side  # type: ignore[return-value]


def shrink_image(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """An H x W x 3 uint8 image shrunk as :func:`shrink` shrinks a batch (the same size, so that
    features computed on the shrunk batch line up with superpixels cut on the shrunk image)."""
    if max_side is None or max(image.shape[:2]) <= max_side:
        return image
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float()
    return np.ascontiguousarray(shrink(tensor, max_side)[0].round().clamp(0, 255).byte().permute(1, 2, 0).numpy())


def grow_ids(ids: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """An h x w map of integer ids (superpixels, labels) up-sampled to ``size`` by nearest neighbour."""
    if tuple(ids.shape) == tuple(size):
        return ids
    grown = F.interpolate(torch.from_numpy(ids.astype(np.int64))[None, None].double(), size=list(size), mode="nearest")
    return grown[0, 0].numpy().astype(ids.dtype)
