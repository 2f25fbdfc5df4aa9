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
from wsseg.models.segnet import SegmentationNet, network_probabilities
from wsseg.segmentation.base import timed


@dataclass(frozen=True)
class NetworkSegmenter:
    """Stage 2's ``seg`` method: a trained segmentation network labels images in one forward pass,
    with no maps or thresholds; ``tta`` averages scales 0.75/1/1.25 and their flips, ``crf``
    refines the softmax with DeepLab's dense CRF. ``max_side``: the network sees each image
    shrunk to at most this many pixels on its longer side (the crop size it was trained at, see
    :func:`wsseg.models.segnet.network_probabilities`); ``None``: the image's own size.

    ``restrict``: each pixel chooses among background and the image's classes only (given to
    :meth:`segment_batch`: the classifier's predicted labels, or the true ones). Why: a network
    trained on a hundred photos recognises classes far worse than it outlines them, and a class
    it paints into a photo that holds none costs that class's whole IoU; the classifier, which
    saw the same photos, says which classes are there much better.
    """

    model: SegmentationNet
    tta: bool = False
    crf: bool = False
    max_side: int | None = None
    restrict: bool = False
    fusions: ClassVar[tuple[str, ...]] = ("network",)
    maps: ClassVar[tuple[MapMethod, ...]] = ()

    @property
    def uses_labels(self) -> bool:
        """Whether it reads each image's classes (only to restrict the network's choice to them)."""
        return self.restrict

    def segment_batch(self, model: object, images: Sequence[np.ndarray], classes: Sequence[Sequence[int]],
                      timings: dict[str, float],
                      maps: Mapping[MapMethod, Sequence[np.ndarray]] | None = None) -> list[np.ndarray]:
        """As :meth:`wsseg.segmentation.base.Segmenter.segment_batch`: the network is its own model;
        ``classes`` (0-based, per image) are read only with ``restrict``."""
        return self(images, timings, classes if self.restrict else None)

    def __call__(self, images: Sequence[np.ndarray], timings: dict[str, float] | None = None,
                 classes: Sequence[Sequence[int]] | None = None) -> list[np.ndarray]:
        """Label maps for equally sized RGB images; with ``classes``, each image's pixels choose
        among background and its classes only."""
        timings = timings if timings is not None else defaultdict(float)
        with timed(timings, "network"):
            batch = batch_tensor(images, next(self.model.parameters()).device)
            probabilities = network_probabilities(self.model, batch, self.tta, self.max_side).cpu().numpy()
        if classes is not None:
            probabilities = [keep_classes(p, present) for p, present in zip(probabilities, classes, strict=True)]
        if not self.crf:
            return [p.argmax(0).astype(np.uint8) for p in probabilities]
        with timed(timings, "crf"):
            return [dense_crf(image, p, DEEPLAB).argmax(0).astype(np.uint8) for image, p in zip(images, probabilities)]


def keep_classes(probabilities: np.ndarray, present: Sequence[int]) -> np.ndarray:
    """[C + 1, H, W] softmax with every class but background and ``present`` (0-based) set to 0,
    the rest renormalised (so the dense CRF reads a distribution over the allowed labels)."""
    allowed = np.zeros(probabilities.shape[0], bool)
    allowed[0] = True
    allowed[[c + 1 for c in present]] = True
    kept = np.where(allowed[:, None, None], probabilities, 0.0)
    return kept / np.maximum(kept.sum(0, keepdims=True), 1e-12)
