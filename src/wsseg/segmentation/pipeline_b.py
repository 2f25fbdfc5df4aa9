"""The poster's pipeline B: CAM x objectness and DCSM averaged per superpixel, labelled by an ILP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from wsseg.fusion.ilp import solve_labels
from wsseg.fusion.objectness import border_contrast
from wsseg.fusion.superpixels import slic_superpixels, superpixel_areas, superpixel_means
from wsseg.maps import CAM, DCSM, MapMethod
from wsseg.segmentation.base import CRF_GRID, SegmentInput, Segmenter, timed, to_labels

# chosen on the train splits of both synthetic benchmarks (docs/method.md 3.1)
PIPELINE_B_OBJECTNESS_WEIGHT = 1.0
PIPELINE_B_CAM_WEIGHT = 0.5


@dataclass(frozen=True)
class _SuperpixelsB:
    superpixels: np.ndarray  # H x W ids
    objectness: np.ndarray  # H x W in [0, 1]
    areas: np.ndarray  # [P]


@dataclass(frozen=True, eq=False)
class PipelineB(Segmenter):
    """CAM enhanced by objectness, averaged with the DCSM saliency, decided per superpixel by an ILP.

    ``objectness_weight``: how much objectness may dim CAM (CAM x (1 - w + w objectness));
    ``cam_weight``: CAM's share of the average with DCSM.
    """

    cam: CAM = CAM()
    dcsm: DCSM = DCSM()
    objectness_weight: float = PIPELINE_B_OBJECTNESS_WEIGHT
    cam_weight: float = PIPELINE_B_CAM_WEIGHT
    grid: ClassVar[tuple[float, ...]] = CRF_GRID
    fusions: ClassVar[tuple[str, ...]] = ("pipeline-b",)

    @property
    def maps(self) -> tuple[MapMethod, ...]:
        return (self.cam, self.dcsm)

    def prepare(self, inputs: SegmentInput, timings: dict[str, float]) -> _SuperpixelsB:
        with timed(timings, "superpixels"):
            superpixels = slic_superpixels(inputs.image)
            return _SuperpixelsB(superpixels, border_contrast(inputs.image, superpixels),
                                 superpixel_areas(superpixels))

    def fuse(self, inputs: SegmentInput, prepared: _SuperpixelsB, timings: dict[str, float]) -> np.ndarray:
        with timed(timings, "ilp"):
            dimming = 1.0 - self.objectness_weight + self.objectness_weight * prepared.objectness
            enhanced = inputs.maps[self.cam] * dimming[None]
            enhanced = enhanced / np.maximum(enhanced.reshape(len(enhanced), -1).max(axis=1), 1e-12)[:, None, None]
            combined = self.cam_weight * enhanced + (1.0 - self.cam_weight) * inputs.maps[self.dcsm]
            choice = solve_labels(superpixel_means(combined, prepared.superpixels), prepared.areas, self.threshold)
        return to_labels(inputs.labels, choice)[prepared.superpixels]
