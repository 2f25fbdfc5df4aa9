"""One method's maps spread by a random walk over learnt pixel affinities (psa's AffinityNet)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from wsseg.fusion.crf import CRFParams, dense_crf
from wsseg.fusion.random_walk import PSA_LOGT, transition_matrix, walk_with_background
from wsseg.models.affinity import AffinityModel
from wsseg.maps import MapMethod
from wsseg.models.classifier import FCNClassifier
from wsseg.registry import AFFINITY, MethodInfo
from wsseg.segmentation.base import CRF_GRID, SegmentInput, timed, to_labels
from wsseg.segmentation.crf import DEFAULT_CRF
from wsseg.segmentation.threshold import Thresholded

RW_BETA = 32.0  # chosen on both train splits: psa's 8 scored 4.6 points lower, 16 tied (docs/method.md 7.1)
RW_LOGT = PSA_LOGT  # psa's 2^8 steps


def walked_probabilities(scores: np.ndarray) -> np.ndarray:
    """Walked [K + 1, H, W] scores -> per-pixel probabilities for the dense CRF's unary."""
    scores = np.maximum(scores, 0.0) + 1e-5
    return (scores / scores.sum(axis=0, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class _Walk:
    transition: torch.Tensor  # [P, P] sparse CSR, rows summing to 1
    grid: tuple[int, int]  # the walk's grid (h, w)


@dataclass(frozen=True, eq=False)
class RandomWalk(Thresholded):
    """One method's maps, with the CRF unary's background channel, spread by a random walk over
    the affinity network's transition matrix (psa), then the argmax; with ``crf``, the walked
    scores are the dense CRF's unaries instead.

    ``beta``: the power of the affinities (sharpens the edges); ``logt``: the walk takes 2^logt steps.
    """

    affinity: AffinityModel = dataclasses.field(kw_only=True)
    beta: float = RW_BETA
    logt: int = RW_LOGT
    crf: CRFParams | None = None
    needs_features: ClassVar[bool] = True
    grid: ClassVar[tuple[float, ...]] = CRF_GRID
    fusions: ClassVar[tuple[str, ...]] = ("random-walk", "random-walk-crf")  # the walk alone; with the dense CRF

    @classmethod
    def from_row(cls, info: MethodInfo, threshold: float, maps: Sequence[MapMethod],
                 artefacts: Mapping[str, Any]) -> RandomWalk:
        crf = DEFAULT_CRF if info.fusion == "random-walk-crf" else None
        return cls(*maps, affinity=artefacts[AFFINITY.file], crf=crf, threshold=threshold)

    def image_features(self, model: FCNClassifier, batch: torch.Tensor) -> list[np.ndarray | torch.Tensor | None]:
        return list(self.affinity.embed(model, batch))

    def prepare(self, inputs: SegmentInput, timings: dict[str, float]) -> _Walk:
        if not isinstance(inputs.features, torch.Tensor):
            raise ValueError("a random walk needs the image's affinity embedding (SegmentInput.features)")
        with timed(timings, "transition matrix"):
            transition = transition_matrix(inputs.features, self.affinity.config.radius, self.beta)
        return _Walk(transition, tuple(inputs.features.shape[-2:]))

    def fuse(self, inputs: SegmentInput, prepared: _Walk, timings: dict[str, float]) -> np.ndarray:
        with timed(timings, "random walk"):
            scores = walk_with_background(inputs.maps[self.method], prepared.transition, prepared.grid,
                                          self.threshold, self.logt)
        if self.crf is not None:
            with timed(timings, "crf"):
                scores = dense_crf(inputs.image, walked_probabilities(scores), self.crf)
        return to_labels(inputs.labels, np.argmax(scores, axis=0))
