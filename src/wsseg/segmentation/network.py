"""Stage 2's segmenter: a trained segmentation network, one forward pass per image."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from wsseg.data.transforms import batch_tensor
from wsseg.fusion.crf import DEEPLAB, dense_crf
from wsseg.maps import MapMethod
from wsseg.models.segnet import SegmentationNet, segment_probabilities
from wsseg.segmentation.base import timed


@dataclass(frozen=True)
class NetworkSegmenter:
    """Stage 2's ``seg`` method: a trained segmentation network labels images in one forward pass,
    with no image labels, maps or thresholds; ``tta`` averages scales 0.75/1/1.25 and their flips,
    ``crf`` refines the softmax with DeepLab's dense CRF."""

    model: SegmentationNet
    tta: bool = False
    crf: bool = False
    fusions: ClassVar[tuple[str, ...]] = ("network",)
    uses_labels: ClassVar[bool] = False  # labels every pixel by itself: no image labels, maps or threshold
    maps: ClassVar[tuple[MapMethod, ...]] = ()

    def segment_batch(self, model: object, images: Sequence[np.ndarray], classes: Sequence[Sequence[int]],
                      timings: dict[str, float],
                      maps: Mapping[MapMethod, Sequence[np.ndarray]] | None = None) -> list[np.ndarray]:
        """As :meth:`wsseg.segmentation.base.Segmenter.segment_batch`: the network is its own model,
        and reads no classes or maps."""
        return self(images, timings)

    def __call__(self, images: Sequence[np.ndarray], timings: dict[str, float] | None = None) -> list[np.ndarray]:
        """Label maps for equally sized RGB images."""
        timings = timings if timings is not None else defaultdict(float)
        with timed(timings, "network"):
            batch = batch_tensor(images, next(self.model.parameters()).device)
            probabilities = segment_probabilities(self.model, batch, self.tta).cpu().numpy()
        if not self.crf:
            return [p.argmax(0).astype(np.uint8) for p in probabilities]
        with timed(timings, "crf"):
            return [dense_crf(image, p, DEEPLAB).argmax(0).astype(np.uint8) for image, p in zip(images, probabilities)]
