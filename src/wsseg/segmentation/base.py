"""The segmenter's contract: what it sees of one image (:class:`SegmentInput`), what it declares
(:class:`Segmenter`: the map methods it reads, whether it needs features, its threshold grid),
and how a batch of images becomes its inputs (:func:`segment_inputs`).

A segmenter turns one image's class maps (and features) into a label map (0 background, 1..C
classes). Each kind lives in a module of its own beside this one (threshold, crf, pipeline_a,
pipeline_b, random_walk, network, confident); :mod:`wsseg.segmentation.methods` names them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from wsseg.data.classes import mask_values
from wsseg.data.images import voc_palette
from wsseg.data.transforms import batch_tensor
from wsseg.fusion.background import check_threshold
from wsseg.fusion.zoomout import layer_features, zoomout_layers
from wsseg.maps import MapMethod
from wsseg.maps.layers import stopwatch
from wsseg.models.classifier import FCNClassifier
from wsseg.registry import MethodInfo

# saturating maps need thresholds close to 1; a CRF moves slowly with the threshold, so a coarse grid
THRESHOLD_GRID = tuple(round(t, 3) for t in np.linspace(0.05, 0.95, 19)) + (0.97, 0.98, 0.99, 0.995)
CRF_GRID = tuple(round(t, 3) for t in np.linspace(0.05, 0.85, 9))


# the per-stage split of the benchmarks: the block's wall time added to timings[stage]
timed = stopwatch


@dataclass(frozen=True, eq=False)
class SegmentInput:
    """What a segmenter sees of one image."""

    image: np.ndarray  # [H, W, 3] uint8
    labels: list[int]  # mask values 1..C of the classes to segment
    maps: Mapping[MapMethod, np.ndarray]  # per declared map method: [len(labels), H, W] in [0, 1]
    # what Segmenter.image_features gives, when declared: zoom-out source features [D, H, W]
    # (pipeline A), or the affinity embedding [D, h, w] on the walk's grid (torch, on the model's device)
    features: np.ndarray | torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class Segmenter:
    """Base of the segmenters: ``threshold`` is the background threshold on the normalised maps."""

    threshold: float = dataclasses.field(kw_only=True)
    needs_features: ClassVar[bool] = False
    grid: ClassVar[tuple[float, ...]] = THRESHOLD_GRID  # thresholds `wsseg tune-background` tries
    fusions: ClassVar[tuple[str, ...]] = ()  # the registry's fusion kinds this class implements
    uses_labels: ClassVar[bool] = True  # segments the classes each image is labelled with

    @classmethod
    def from_row(cls, info: MethodInfo, threshold: float, maps: Sequence[MapMethod],
                 artefacts: Mapping[str, Any]) -> Segmenter:
        """The segmenter of the registry's row ``info``: its map methods (in the row's order), the
        trained artefacts it reads (loaded, by file name) and its background threshold."""
        return cls(*maps, threshold=threshold)

    def __post_init__(self) -> None:
        check_threshold(self.threshold)

    @property
    def maps(self) -> tuple[MapMethod, ...]:
        """The map methods whose normalised maps :meth:`fuse` reads."""
        raise NotImplementedError

    def image_features(self, model: FCNClassifier, batch: torch.Tensor) -> list[np.ndarray | torch.Tensor | None]:
        """Per image of the batch, the features :meth:`prepare` reads (when ``needs_features``):
        by default the zoom-out sources, the model's feature taps up-sampled to the image."""
        if not self.needs_features:
            return [None] * len(batch)
        return list(layer_features(model, batch, zoomout_layers(model)))

    def prepare(self, inputs: SegmentInput, timings: dict[str, float]) -> object:
        """What :meth:`fuse` needs from the image and features alone (superpixels, objectness, the
        mi-SVM's probabilities), never from the maps, threshold or weights: segmenters that differ
        only in those share it (a threshold or weight search prepares each image once)."""
        return None

    def fuse(self, inputs: SegmentInput, prepared: object, timings: dict[str, float]) -> np.ndarray:
        """The label map of an image with at least one class; stage times added to ``timings``."""
        raise NotImplementedError

    def segment_batch(self, model: FCNClassifier, images: Sequence[np.ndarray], classes: Sequence[Sequence[int]],
                      timings: dict[str, float],
                      maps: Mapping[MapMethod, Sequence[np.ndarray]] | None = None) -> list[np.ndarray]:
        """Label maps of equally sized RGB images (``classes``: 0-based, per image), the way every
        segmenter, stage 2's network included, is run over a split."""
        return [self(inputs, timings) for inputs in segment_inputs(model, images, classes, self, timings, maps)]

    def __call__(self, inputs: SegmentInput, timings: dict[str, float] | None = None,
                 prepared: object = None) -> np.ndarray:
        """H x W label map; all background when the image has no class to segment. ``prepared``:
        :meth:`prepare`'s result for this image, when already computed."""
        if not inputs.labels:
            return np.zeros(inputs.image.shape[:2], np.uint8)
        timings = timings if timings is not None else {}
        if prepared is None:
            prepared = self.prepare(inputs, timings)
        return self.fuse(inputs, prepared, timings)


def to_labels(labels: Sequence[int], choice: np.ndarray) -> np.ndarray:
    """Index 0 -> background, k -> the k-th class's mask value."""
    return np.array([0, *labels], np.uint8)[choice]


def segment_inputs(model: FCNClassifier, images: Sequence[np.ndarray], classes: Sequence[Sequence[int]],
                   segmenter: Segmenter, timings: dict[str, float],
                   maps: Mapping[MapMethod, Sequence[np.ndarray]] | None = None) -> list[SegmentInput]:
    """One :class:`SegmentInput` per equally sized RGB image, with the maps and features ``segmenter``
    declares; ``classes`` are 0-based classifier outputs per image.

    ``maps``: the declared maps already normalised, per image [K, H, W] (e.g. read from the folders
    ``wsseg maps`` writes); computed from the model when not given.
    """
    batch = batch_tensor(images, next(model.parameters()).device)
    prepared = dict(maps) if maps is not None else {}
    for method in segmenter.maps:
        if method in prepared:
            continue
        with timed(timings, f"maps ({method.name})"):
            prepared[method] = method.normalize(method(model, batch, classes)).cpu().numpy()
    features: list[np.ndarray | torch.Tensor | None] = [None] * len(images)
    if segmenter.needs_features:
        with timed(timings, "features"):
            features = segmenter.image_features(model, batch)
    return [SegmentInput(image, mask_values(per_image),
                         {method: values[n][: len(per_image)] for method, values in prepared.items()}, features[n])
            for n, (image, per_image) in enumerate(zip(images, classes))]


def label_overlay(image: np.ndarray, label_map: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The image with each labelled region tinted in its VOC colour (background untouched)."""
    colours = voc_palette()[label_map].astype(np.float32)
    tinted = image.astype(np.float32) * (1 - alpha) + colours * alpha
    keep = (label_map == 0) | (label_map == 255)
    return np.where(keep[..., None], image, tinted).astype(np.uint8)
