"""Named segmentation methods built from the parts: class maps -> background -> (CRF) -> labels.

Every method takes an image with the classes present (ground-truth image labels, or the
classifier's predictions) and returns a label map (0 background, 1..C classes).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wsseg.data.images import voc_palette, write_label_png
from wsseg.data.transforms import batch_tensor
from wsseg.data.voc import VOCDataset
from wsseg.errors import WssegError
from wsseg.fusion.background import check_threshold, labels_from_maps, soft_probabilities
from wsseg.fusion.crf import dense_crf
from wsseg.maps import class_maps, normalize_maps
from wsseg.maps.export import batch_classes, iter_batches
from wsseg.models.classifier import FCNClassifier


def unsaturate_dcsm(maps: torch.Tensor) -> torch.Tensor:
    """Undo DCSM's final tanh(3x) and stretch each map to [0, 1].

    The authors' final maps saturate (tanh(3x) > 0.76 wherever x > 1/4 of the maximum), and their
    sums carry a pedestal over the whole image, so thresholds on them must sit close to 1. In the
    linear, min-max stretched domain a threshold means a fraction of the map's range.
    """
    linear = torch.atanh(maps.clamp(0.0, 1.0 - 1e-6)) / 3.0
    return normalize_maps(linear, "minmax")


@contextlib.contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Add the block's wall time to ``timings[stage]`` (the per-stage split of the benchmarks)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - started


def threshold_fusion(image: np.ndarray, maps: dict[str, np.ndarray], labels: list[int], threshold: float,
                     timings: dict[str, float], **extras) -> np.ndarray:
    with timed(timings, "threshold"):
        return labels_from_maps(next(iter(maps.values())), labels, threshold)


def crf_fusion(image: np.ndarray, maps: dict[str, np.ndarray], labels: list[int], threshold: float,
               timings: dict[str, float], **extras) -> np.ndarray:
    with timed(timings, "crf"):
        refined = dense_crf(image, soft_probabilities(next(iter(maps.values())), threshold))
    return np.array([0, *labels], np.uint8)[np.argmax(refined, axis=0)]


def pipeline_b_fusion(image: np.ndarray, maps: dict[str, np.ndarray], labels: list[int], threshold: float,
                      timings: dict[str, float], **extras) -> np.ndarray:
    """CAM enhanced by objectness, averaged with the DCSM saliency, decided per superpixel by an ILP."""
    from wsseg.fusion.ilp import solve_labels
    from wsseg.fusion.objectness import border_contrast
    from wsseg.fusion.superpixels import slic_superpixels, superpixel_areas, superpixel_means

    with timed(timings, "superpixels"):
        superpixels = slic_superpixels(image)
        objectness = border_contrast(image, superpixels)
    with timed(timings, "ilp"):
        enhanced = maps["cam"] * (0.5 + 0.5 * objectness)[None]
        enhanced = enhanced / np.maximum(enhanced.reshape(len(labels), -1).max(axis=1), 1e-12)[:, None, None]
        combined = 0.5 * enhanced + 0.5 * maps["dcsm"]
        choice = solve_labels(superpixel_means(combined, superpixels), superpixel_areas(superpixels), threshold)
    return np.array([0, *labels], np.uint8)[choice][superpixels]


PIPELINE_A_PIXELS_PER_SUPERPIXEL = 200


def pipeline_a_fusion(image: np.ndarray, maps: dict[str, np.ndarray], labels: list[int], threshold: float,
                      timings: dict[str, float], **extras) -> np.ndarray:
    """DCSM per superpixel weighted by the mi-SVM's class probabilities on zoom-out features,
    refined by a CRF over the superpixel graph."""
    from wsseg.fusion.spcrf import contrast_weights, mean_field
    from wsseg.fusion.superpixels import slic_superpixels, superpixel_means
    from wsseg.fusion.zoomout import zoomout

    if extras.get("misvm") is None:
        raise WssegError("pipeline-a needs a trained mi-SVM: run `wsseg train-misvm --run RUN --data ROOT` first")
    with timed(timings, "superpixels"):
        superpixels = slic_superpixels(image, PIPELINE_A_PIXELS_PER_SUPERPIXEL)
        descriptors = zoomout(extras["features"], superpixels)
    with timed(timings, "svm"):
        probabilities = extras["misvm"].probabilities(descriptors)[:, [label - 1 for label in labels]]  # [P, K]
    with timed(timings, "superpixel crf"):
        # as pipeline B's objectness: the mi-SVM can halve a superpixel's saliency, never create it
        unified = superpixel_means(maps["dcsm"], superpixels) * (0.5 + 0.5 * probabilities)
        unary = soft_probabilities(unified.T[:, :, None], threshold)[:, :, 0].T  # [P, K + 1]
        refined = mean_field(unary, contrast_weights(image, superpixels))
    return np.array([0, *labels], np.uint8)[np.argmax(refined, axis=1)][superpixels]


@dataclass(frozen=True)
class SegmentMethod:
    name: str
    maps: tuple[str, ...]  # the wsseg.maps methods it needs
    fusion: Callable[..., np.ndarray]
    threshold: float  # default background threshold on the prepared maps (in [0, 1])
    description: str
    needs_features: bool = False  # zoom-out features from the classifier's layers (pipeline A)


SEGMENT_METHODS: dict[str, SegmentMethod] = {m.name: m for m in (
    SegmentMethod("cam", ("cam",), threshold_fusion, 0.15,
                  "class activation maps, background below 0.15 (IRN's threshold)"),
    SegmentMethod("cam-crf", ("cam",), crf_fusion, 0.15, "CAM as soft unaries of the dense CRF"),
    SegmentMethod("gradcam", ("gradcam",), threshold_fusion, 0.15, "Grad-CAM baseline"),
    SegmentMethod("gradient", ("gradient",), threshold_fusion, 0.15,
                  "input-gradient saliency baseline (Simonyan et al.)"),
    SegmentMethod("guided", ("guided",), threshold_fusion, 0.15, "guided back-propagation saliency baseline"),
    SegmentMethod("dcsm", ("dcsm",), threshold_fusion, 0.5,
                  "distinct class-specific saliency maps, background below half their range"),
    SegmentMethod("dcsm-crf", ("dcsm",), crf_fusion, 0.5,
                  "DCSM as unary potentials of the dense CRF (the ECCV paper)"),
    SegmentMethod("pipeline-a", ("dcsm",), pipeline_a_fusion, 0.5,
                  "DCSM weighted by a mi-SVM on zoom-out superpixel features, refined by a superpixel CRF "
                  "(the poster's A)",
                  needs_features=True),
    SegmentMethod("pipeline-b", ("cam", "dcsm"), pipeline_b_fusion, 0.5,
                  "CAM x objectness and DCSM averaged per superpixel, labelled by an ILP (the poster's B)"),
)}


def get_method(name: str) -> SegmentMethod:
    if name not in SEGMENT_METHODS:
        raise WssegError(f"unknown segmentation method {name!r}; choose from {', '.join(SEGMENT_METHODS)}")
    return SEGMENT_METHODS[name]


def prepared_maps(model: FCNClassifier, batch: torch.Tensor, classes: Sequence[Sequence[int]], method: str,
                  scales: Sequence[float] | None = None) -> np.ndarray:
    """Class maps of one wsseg.maps method, brought to [0, 1] as the fusion steps expect them."""
    options = {"scales": tuple(scales)} if scales is not None and method in ("dcsm", "cam") else {}
    raw = class_maps(model, batch, classes, method, **options)
    return (unsaturate_dcsm(raw) if method == "dcsm" else normalize_maps(raw)).cpu().numpy()


def segment_images(model: FCNClassifier, images: Sequence[np.ndarray], classes: Sequence[Sequence[int]],
                   method: str, threshold: float | None = None, scales: Sequence[float] | None = None,
                   timings: dict[str, float] | None = None, misvm=None) -> list[np.ndarray]:
    """Label maps for equally sized RGB images; ``classes`` are 0-based classifier outputs per image.

    ``misvm`` (a :class:`wsseg.fusion.misvm.MiSVM`) is needed by pipeline A only.
    """
    spec = get_method(method)
    threshold = check_threshold(spec.threshold if threshold is None else threshold)
    timings = timings if timings is not None else defaultdict(float)
    batch = batch_tensor(images, next(model.parameters()).device)
    all_maps = {}
    for map_method in spec.maps:
        with timed(timings, f"maps ({map_method})"):
            all_maps[map_method] = prepared_maps(model, batch, classes, map_method, scales)
    features: list[np.ndarray | None] = [None] * len(images)
    if spec.needs_features:
        from wsseg.fusion.zoomout import DEFAULT_LAYERS, layer_features

        with timed(timings, "features"):
            features = layer_features(model, batch, DEFAULT_LAYERS)
    results = []
    for n, (image, per_image) in enumerate(zip(images, classes)):
        labels = [c + 1 for c in per_image]
        if not labels:
            results.append(np.zeros(image.shape[:2], np.uint8))
            continue
        maps = {name: values[n, : len(labels)] for name, values in all_maps.items()}
        results.append(spec.fusion(image, maps, labels, threshold, timings, features=features[n], misvm=misvm))
    return results


def segment_split(model: FCNClassifier, dataset: VOCDataset, method: str, out: str | Path, labels: str = "gt",
                  threshold: float | None = None, scales: Sequence[float] | None = None, batch_size: int = 8,
                  label_threshold: float = 0.5, skip_bad: bool = False, progress: bool = True,
                  ids: Sequence[str] | None = None, misvm=None) -> dict:
    """Write ``out/<id>.png`` (VOC palette) for every image not done yet; returns counts and timings.

    ``ids`` (default: the split) are cut into fixed blocks of ``batch_size`` (see ``iter_batches``):
    give a rank whole blocks and its outputs are the bytes a single process would write.
    """
    from tqdm import tqdm

    get_method(method)
    if labels not in ("gt", "predicted"):
        raise WssegError(f"--labels must be gt or predicted, not {labels!r}")
    out = Path(out)
    wanted = list(ids if ids is not None else dataset.ids)

    def is_done(image_id: str) -> bool:
        return (out / f"{image_id}.png").exists()

    done_before = sum(map(is_done, wanted))
    report: dict = {"written": 0, "skipped_bad": 0, "already_done": done_before, "timings": defaultdict(float)}
    bar = tqdm(total=len(wanted) - done_before, desc=f"segment ({method})", unit="img", disable=not progress)

    def skipped(_image_id: str) -> None:
        report["skipped_bad"] += 1
        bar.update(1)

    for batch in iter_batches(dataset, wanted, batch_size, skip_bad, labels == "gt", skipped, is_done):
        images = [item.image for item in batch]
        classes = batch_classes(model, batch, labels, label_threshold)
        for item, label_map in zip(batch, segment_images(model, images, classes, method, threshold, scales,
                                                         report["timings"], misvm=misvm)):
            if item.done:
                continue
            write_label_png(out / f"{item.id}.png", label_map)
            report["written"] += 1
            bar.update(1)
    bar.close()
    report["timings"] = dict(report["timings"])
    return report


def label_overlay(image: np.ndarray, label_map: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The image with each labelled region tinted in its VOC colour (background untouched)."""
    colours = voc_palette()[label_map].astype(np.float32)
    tinted = image.astype(np.float32) * (1 - alpha) + colours * alpha
    keep = (label_map == 0) | (label_map == 255)
    return np.where(keep[..., None], image, tinted).astype(np.uint8)
