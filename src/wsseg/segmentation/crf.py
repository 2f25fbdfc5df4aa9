"""One method's maps as soft unaries of the fully-connected (dense) CRF."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from wsseg.fusion.background import soft_probabilities
from wsseg.fusion.crf import PSA, CRFParams, dense_crf
from wsseg.segmentation.base import CRF_GRID, SegmentInput, timed, to_labels
from wsseg.segmentation.threshold import Thresholded

# the fusion defaults, chosen on the train splits of both synthetic benchmarks (docs/method.md 3.1)
# psa's parameters, on a grid of at most 320 px: 3x faster on a 640x480 photo, within 0.3 mIoU of the full
# grid on the real photos, and the same on images of up to 320 px (docs/method.md 2.1)
DEFAULT_CRF = dataclasses.replace(PSA, max_side=320)


@dataclass(frozen=True, eq=False)
class DenseCRF(Thresholded):
    """One method's maps as soft unaries (psa's background rule) of the fully-connected CRF."""

    crf: CRFParams = DEFAULT_CRF
    grid: ClassVar[tuple[float, ...]] = CRF_GRID
    fusions: ClassVar[tuple[str, ...]] = ("crf",)

    def fuse(self, inputs: SegmentInput, prepared: object, timings: dict[str, float]) -> np.ndarray:
        with timed(timings, "crf"):
            refined = dense_crf(inputs.image, soft_probabilities(inputs.maps[self.method], self.threshold), self.crf)
        return to_labels(inputs.labels, np.argmax(refined, axis=0))
