"""Stage 2's segmenter: a trained segmentation network, one forward pass per image."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wsseg.data.transforms import batch_tensor
from wsseg.fusion.crf import DEEPLAB, dense_crf
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
