"""The simplest segmenter: one method's maps, background where every map is below the threshold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from wsseg.fusion.background import labels_from_maps
from wsseg.maps import MapMethod
from wsseg.segmentation.base import SegmentInput, Segmenter, timed


@dataclass(frozen=True, eq=False)
class Thresholded(Segmenter):
    """One method's maps; background where every map is below the threshold."""

    method: MapMethod
    fusions: ClassVar[tuple[str, ...]] = ("threshold",)

    @property
    def maps(self) -> tuple[MapMethod, ...]:
        return (self.method,)

    def fuse(self, inputs: SegmentInput, prepared: object, timings: dict[str, float]) -> np.ndarray:
        with timed(timings, "threshold"):
            return labels_from_maps(inputs.maps[self.method], inputs.labels, self.threshold)
