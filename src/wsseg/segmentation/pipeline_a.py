"""The poster's pipeline A: DCSM weighted by a mi-SVM on zoom-out superpixel features, refined by
a CRF over the superpixel graph."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import sparse

from wsseg.data.classes import class_indices
from wsseg.fusion.background import soft_probabilities
from wsseg.fusion.misvm import PIXELS_PER_SUPERPIXEL, MiSVM
from wsseg.fusion.spcrf import contrast_weights, mean_field
from wsseg.fusion.superpixels import slic_superpixels, superpixel_means
from wsseg.fusion.zoomout import layer_features, zoomout, zoomout_layers
from wsseg.maps import DCSM, MapMethod
from wsseg.maps.resolution import grow_ids, shrink, shrink_image
from wsseg.models.classifier import FCNClassifier
from wsseg.registry import MISVM, MethodInfo
from wsseg.segmentation.base import CRF_GRID, SegmentInput, Segmenter, timed, to_labels

# chosen on the train splits of both synthetic benchmarks (docs/method.md 3.1)
PIPELINE_A_MISVM_WEIGHT = 0.25  # the smallest tried above 0: without the mi-SVM (0) scored 1.6 points higher


@dataclass(frozen=True)
class _SuperpixelsA:
    superpixels: np.ndarray  # H x W ids
    probabilities: np.ndarray  # [P, K] the mi-SVM's, for the image's classes
    contrast: sparse.csr_matrix  # [P, P] the superpixel CRF's pairwise weights


@dataclass(frozen=True, eq=False)
class PipelineA(Segmenter):
    """DCSM per superpixel weighted by the mi-SVM's class probabilities on zoom-out features,
    refined by a CRF over the superpixel graph.

    ``misvm_weight``: how much the mi-SVM may dim a superpixel's saliency (DCSM x (1 - w + w p)):
    like pipeline B's objectness, it can lower saliency, never create it.
    """

    misvm: MiSVM
    dcsm: DCSM = DCSM()
    misvm_weight: float = PIPELINE_A_MISVM_WEIGHT
    needs_features: ClassVar[bool] = True
    grid: ClassVar[tuple[float, ...]] = CRF_GRID
    fusions: ClassVar[tuple[str, ...]] = ("pipeline-a",)

    @classmethod
    def from_row(cls, info: MethodInfo, threshold: float, maps: Sequence[MapMethod],
                 artefacts: Mapping[str, Any]) -> PipelineA:
        return cls(artefacts[MISVM.file], *maps, threshold=threshold)

    @property
    def maps(self) -> tuple[MapMethod, ...]:
        return (self.dcsm,)

    def image_features(self, model: FCNClassifier, batch: torch.Tensor) -> list[np.ndarray | torch.Tensor | None]:
        """Zoom-out source features of the images shrunk to the side the mi-SVM was trained at."""
        return list(layer_features(model, shrink(batch, self.misvm.max_side), zoomout_layers(model)))

    def prepare(self, inputs: SegmentInput, timings: dict[str, float]) -> _SuperpixelsA:
        if inputs.features is None:
            raise ValueError("pipeline-a needs the image's zoom-out source features (SegmentInput.features)")
        with timed(timings, "superpixels"):
            # superpixels, their features and the CRF's graph on the shrunk image (as the mi-SVM was
            # trained); the superpixels grown back to the image's size carry the labels
            small_image = shrink_image(inputs.image, self.misvm.max_side)
            small = slic_superpixels(small_image, PIXELS_PER_SUPERPIXEL)
            descriptors = zoomout(inputs.features, small)
            contrast = contrast_weights(small_image, small)
        with timed(timings, "svm"):
            probabilities = self.misvm.probabilities(descriptors)[:, class_indices(inputs.labels)]  # [P, K]
        return _SuperpixelsA(grow_ids(small, inputs.image.shape[:2]), probabilities, contrast)

    def fuse(self, inputs: SegmentInput, prepared: _SuperpixelsA, timings: dict[str, float]) -> np.ndarray:
        with timed(timings, "superpixel crf"):
            dimming = 1.0 - self.misvm_weight + self.misvm_weight * prepared.probabilities
            unified = superpixel_means(inputs.maps[self.dcsm], prepared.superpixels) * dimming
            unary = soft_probabilities(unified.T[:, :, None], self.threshold)[:, :, 0].T  # [P, K + 1]
            refined = mean_field(unary, prepared.contrast)
        return to_labels(inputs.labels, np.argmax(refined, axis=1))[prepared.superpixels]
