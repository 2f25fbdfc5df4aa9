"""Segmenters: typed objects that turn one image's class maps (and features) into a label map.

    segmenter = build_segmenter("pipeline-a", run="runs/x")  # its mi-SVM loaded from the run
    labels = segment_images(model, rgb_images, classes, segmenter)

Each segmenter declares the map methods it needs (typed :mod:`wsseg.maps` objects) and whether
it needs feature taps; it receives one :class:`SegmentInput` per image and returns a label map
(0 background, 1..C classes). Trained artefacts and the background threshold are constructor
arguments. The names, descriptions and default thresholds are :mod:`wsseg.registry`'s table;
``BUILDERS`` here makes each name a segmenter.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from scipy import sparse

from wsseg.data.images import voc_palette
from wsseg.data.transforms import batch_tensor
from wsseg.errors import WssegError
from wsseg.fusion.background import check_threshold, labels_from_maps, soft_probabilities
from wsseg.data.classes import VOID
from wsseg.fusion.crf import DEEPLAB, PSA, CRFParams, crf_from_labels, dense_crf
from wsseg.fusion.ilp import solve_labels
from wsseg.fusion.misvm import MISVM_FILE, PIXELS_PER_SUPERPIXEL, MiSVM
from wsseg.fusion.objectness import border_contrast
from wsseg.fusion.random_walk import PSA_LOGT, transition_matrix, walk_with_background
from wsseg.fusion.spcrf import contrast_weights, mean_field
from wsseg.fusion.superpixels import slic_superpixels, superpixel_areas, superpixel_means
from wsseg.fusion.zoomout import layer_features, zoomout, zoomout_layers
from wsseg.maps import CAM, DCSM, GradCAM, Gradient, Guided, MapMethod
from wsseg.maps.layers import stopwatch
from wsseg.maps.resolution import MaxSide, grow_ids, refuse_useless_map_side, shrink, shrink_image
from wsseg.models.affinity import AffinityModel, load_affinity
from wsseg.models.classifier import FCNClassifier
from wsseg.models.run import RunConfig
from wsseg.models.segnet import SegmentationNet, segment_probabilities
from wsseg.registry import SEGMENT_METHODS, method_info

# saturating maps need thresholds close to 1; a CRF moves slowly with the threshold, so a coarse grid
THRESHOLD_GRID = tuple(round(t, 3) for t in np.linspace(0.05, 0.95, 19)) + (0.97, 0.98, 0.99, 0.995)
CRF_GRID = tuple(round(t, 3) for t in np.linspace(0.05, 0.85, 9))
# the fusion defaults, chosen on the train splits of both synthetic benchmarks (docs/method.md 3.1)
# psa's parameters, on a grid of at most 320 px: 3x faster on a 640x480 photo, within 0.3 mIoU of the full
# grid on the real photos, and the same on images of up to 320 px (docs/method.md 2.1)
DEFAULT_CRF = dataclasses.replace(PSA, max_side=320)
PIPELINE_A_MISVM_WEIGHT = 0.25  # the smallest tried above 0: without the mi-SVM (0) scored 1.6 points higher
PIPELINE_B_OBJECTNESS_WEIGHT = 1.0
PIPELINE_B_CAM_WEIGHT = 0.5
RW_BETA = 32.0  # chosen on both train splits: psa's 8 scored 4.6 points lower, 16 tied (docs/method.md 7.1)
RW_LOGT = PSA_LOGT  # psa's 2^8 steps


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


def _to_labels(labels: Sequence[int], choice: np.ndarray) -> np.ndarray:
    """Index 0 -> background, k -> the k-th class's mask value."""
    return np.array([0, *labels], np.uint8)[choice]


@dataclass(frozen=True, eq=False)
class Thresholded(Segmenter):
    """One method's maps; background where every map is below the threshold."""

    method: MapMethod

    @property
    def maps(self) -> tuple[MapMethod, ...]:
        return (self.method,)

    def fuse(self, inputs: SegmentInput, prepared: object, timings: dict[str, float]) -> np.ndarray:
        with timed(timings, "threshold"):
            return labels_from_maps(inputs.maps[self.method], inputs.labels, self.threshold)


@dataclass(frozen=True, eq=False)
class DenseCRF(Thresholded):
    """One method's maps as soft unaries (psa's background rule) of the fully-connected CRF."""

    crf: CRFParams = DEFAULT_CRF
    grid: ClassVar[tuple[float, ...]] = CRF_GRID

    def fuse(self, inputs: SegmentInput, prepared: object, timings: dict[str, float]) -> np.ndarray:
        with timed(timings, "crf"):
            refined = dense_crf(inputs.image, soft_probabilities(inputs.maps[self.method], self.threshold), self.crf)
        return _to_labels(inputs.labels, np.argmax(refined, axis=0))


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
        return _to_labels(inputs.labels, choice)[prepared.superpixels]


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
            probabilities = self.misvm.probabilities(descriptors)[:, [label - 1 for label in inputs.labels]]  # [P, K]
        return _SuperpixelsA(grow_ids(small, inputs.image.shape[:2]), probabilities, contrast)

    def fuse(self, inputs: SegmentInput, prepared: _SuperpixelsA, timings: dict[str, float]) -> np.ndarray:
        with timed(timings, "superpixel crf"):
            dimming = 1.0 - self.misvm_weight + self.misvm_weight * prepared.probabilities
            unified = superpixel_means(inputs.maps[self.dcsm], prepared.superpixels) * dimming
            unary = soft_probabilities(unified.T[:, :, None], self.threshold)[:, :, 0].T  # [P, K + 1]
            refined = mean_field(unary, prepared.contrast)
        return _to_labels(inputs.labels, np.argmax(refined, axis=1))[prepared.superpixels]


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
        return _to_labels(inputs.labels, np.argmax(scores, axis=0))


@dataclass(frozen=True, eq=False)
class Confident(Segmenter):
    """Confident pseudo-labels, by IRN's rule: the base segmenter at a higher and at a lower
    background threshold, each refined by IRN's CRF on hard labels (``crf_from_labels``). A
    pixel keeps a class where the higher threshold still gives it one, is background where even
    the lower threshold leaves it background, and is 255 (uncertain, ignored by training and by
    ``wsseg evaluate --ignore-uncertain``) in between. The thresholds lie halfway from the base's
    threshold t to 0 and to 1 (t / 2 and (1 + t) / 2); IRN uses 0.05 and 0.30 around its 0.15.
    """

    base: Segmenter
    grid: ClassVar[tuple[float, ...]] = ()

    def __post_init__(self) -> None:
        check_threshold(self.threshold)
        if isinstance(self.base, Confident):
            raise WssegError("confident pseudo-labels of confident pseudo-labels make no sense")

    @classmethod
    def of(cls, base: Segmenter) -> Confident:
        return cls(base, threshold=base.threshold)

    @property
    def maps(self) -> tuple[MapMethod, ...]:
        return self.base.maps

    @property
    def needs_features(self) -> bool:  # type: ignore[override]
        return self.base.needs_features

    def image_features(self, model: FCNClassifier, batch: torch.Tensor) -> list[np.ndarray | torch.Tensor | None]:
        return self.base.image_features(model, batch)

    def prepare(self, inputs: SegmentInput, timings: dict[str, float]) -> object:
        return self.base.prepare(inputs, timings)

    def fuse(self, inputs: SegmentInput, prepared: object, timings: dict[str, float]) -> np.ndarray:
        low, high = self.threshold / 2, (1 + self.threshold) / 2
        index = np.zeros(256, np.int32)
        index[[0, *inputs.labels]] = np.arange(len(inputs.labels) + 1)
        refined = []
        for threshold in (low, high):
            labels = dataclasses.replace(self.base, threshold=threshold).fuse(inputs, prepared, timings)
            with timed(timings, "confidence crf"):
                refined.append(crf_from_labels(inputs.image, index[labels], len(inputs.labels) + 1))
        loose, strict = refined  # loose: little background; strict: much background
        choice = np.where(strict > 0, strict, np.where(loose == 0, 0, -1))
        return np.where(choice < 0, VOID, _to_labels(inputs.labels, np.maximum(choice, 0))).astype(np.uint8)


def _misvm(run: Path | None) -> MiSVM:
    if run is None:
        raise WssegError("pipeline-a needs a trained mi-SVM: build it from a run folder (build_segmenter(name, run))"
                         " after `wsseg train-misvm --run RUN --data ROOT`")
    return MiSVM.load(run / MISVM_FILE, RunConfig.load(run).classes)


def _affinity(run: Path | None) -> AffinityModel:
    if run is None:
        raise WssegError("the random-walk methods need a trained affinity network: build them from a run folder "
                         "(build_segmenter(name, run)) after `wsseg train-affinity --run RUN --data ROOT --pseudo "
                         "PSEUDO`")
    return load_affinity(run)


Scales = tuple[float, ...] | None
# name -> segmenter from (threshold, scales, run folder); the names are wsseg.registry's
BUILDERS: dict[str, Callable[[float, Scales, Path | None], Segmenter]] = {
    "cam": lambda t, s, run: Thresholded(CAM().with_scales(s), threshold=t),
    "cam-crf": lambda t, s, run: DenseCRF(CAM().with_scales(s), threshold=t),
    "gradcam": lambda t, s, run: Thresholded(GradCAM(), threshold=t),
    "gradient": lambda t, s, run: Thresholded(Gradient(), threshold=t),
    "guided": lambda t, s, run: Thresholded(Guided(), threshold=t),
    "dcsm": lambda t, s, run: Thresholded(DCSM().with_scales(s), threshold=t),
    "dcsm-crf": lambda t, s, run: DenseCRF(DCSM().with_scales(s), threshold=t),
    "pipeline-a": lambda t, s, run: PipelineA(_misvm(run), DCSM().with_scales(s), threshold=t),
    "pipeline-b": lambda t, s, run: PipelineB(CAM().with_scales(s), DCSM().with_scales(s), threshold=t),
    "cam-rw": lambda t, s, run: RandomWalk(CAM().with_scales(s), affinity=_affinity(run), threshold=t),
    "dcsm-rw": lambda t, s, run: RandomWalk(DCSM().with_scales(s), affinity=_affinity(run), threshold=t),
    "cam-rw-crf": lambda t, s, run: RandomWalk(CAM().with_scales(s), affinity=_affinity(run), crf=DEFAULT_CRF,
                                               threshold=t),
    "dcsm-rw-crf": lambda t, s, run: RandomWalk(DCSM().with_scales(s), affinity=_affinity(run), crf=DEFAULT_CRF,
                                                threshold=t),
}
if list(BUILDERS) != list(SEGMENT_METHODS):
    raise ImportError("wsseg.pipelines.BUILDERS and wsseg.registry.SEGMENT_METHODS list different methods")


def build_segmenter(name: str, run: str | Path | None = None, threshold: float | None = None,
                    scales: Sequence[float] | None = None, map_side: MaxSide = "auto") -> Segmenter:
    """The registry's method ``name``: trained artefacts it needs loaded from ``run``; ``threshold``
    (default: the method's), ``scales`` (input scales of its dcsm and cam maps) and ``map_side``
    (the longest side they are computed at: wsseg.maps.resolution) as given."""
    info = method_info(name)
    segmenter = BUILDERS[name](info.threshold if threshold is None else threshold,
                               None if scales is None else tuple(scales), None if run is None else Path(run))
    return with_map_side(segmenter, map_side)


def with_map_side(segmenter: Segmenter, map_side: MaxSide) -> Segmenter:
    """The segmenter with every map method that has a resolution option computing at ``map_side``;
    refused for a segmenter whose maps have none (a side given there would be silently ignored)."""
    changes = {field.name: value.with_max_side(map_side) for field in dataclasses.fields(segmenter)
               if isinstance(value := getattr(segmenter, field.name), MapMethod) and value.has_max_side}
    refuse_useless_map_side(map_side, bool(changes), "this method's")
    return dataclasses.replace(segmenter, **changes) if changes else segmenter


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
    return [SegmentInput(image, [c + 1 for c in per_image],
                         {method: values[n][: len(per_image)] for method, values in prepared.items()}, features[n])
            for n, (image, per_image) in enumerate(zip(images, classes))]


def _segmenter(method: Segmenter | str) -> Segmenter:
    return build_segmenter(method) if isinstance(method, str) else method


def segment_images(model: FCNClassifier, images: Sequence[np.ndarray], classes: Sequence[Sequence[int]],
                   method: Segmenter | str, timings: dict[str, float] | None = None) -> list[np.ndarray]:
    """Label maps for equally sized RGB images; ``classes`` are 0-based classifier outputs per image.

    ``method``: a segmenter, or a registry name with its defaults (``build_segmenter``).
    """
    segmenter = _segmenter(method)
    timings = timings if timings is not None else defaultdict(float)
    return [segmenter(inputs, timings) for inputs in segment_inputs(model, images, classes, segmenter, timings)]


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


def label_overlay(image: np.ndarray, label_map: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The image with each labelled region tinted in its VOC colour (background untouched)."""
    colours = voc_palette()[label_map].astype(np.float32)
    tinted = image.astype(np.float32) * (1 - alpha) + colours * alpha
    keep = (label_map == 0) | (label_map == 255)
    return np.where(keep[..., None], image, tinted).astype(np.uint8)
