"""Named segmentation methods built from the parts: class maps -> background -> (CRF) -> labels.

Every method takes an image with the classes present (ground-truth image labels, or the
classifier's predictions) and returns a label map (0 background, 1..C classes).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wsseg.data.images import voc_palette, write_label_png
from wsseg.data.transforms import to_tensor
from wsseg.data.voc import VOCDataset
from wsseg.errors import WssegError
from wsseg.fusion.background import check_threshold, labels_from_maps, soft_probabilities
from wsseg.fusion.crf import dense_crf
from wsseg.maps import class_maps, normalize_maps
from wsseg.maps.export import iter_batches, predict_labels
from wsseg.models.classifier import FCNClassifier


@dataclass(frozen=True)
class SegmentMethod:
    name: str
    maps: str  # the wsseg.maps method
    crf: bool
    threshold: float  # default background threshold on maps normalised to max 1
    description: str
    map_options: dict = field(default_factory=dict)


SEGMENT_METHODS: dict[str, SegmentMethod] = {m.name: m for m in (
    SegmentMethod("cam", "cam", False, 0.15, "class activation maps, background below 0.15 (IRN's threshold)"),
    SegmentMethod("cam-crf", "cam", True, 0.15, "CAM as soft unaries of the dense CRF"),
    SegmentMethod("gradcam", "gradcam", False, 0.15, "Grad-CAM baseline"),
    SegmentMethod("gradient", "gradient", False, 0.15, "input-gradient saliency baseline (Simonyan et al.)"),
    SegmentMethod("guided", "guided", False, 0.15, "guided back-propagation saliency baseline"),
    SegmentMethod("dcsm", "dcsm", False, 0.125, "distinct class-specific saliency maps, thresholded at 0.125"),
    SegmentMethod("dcsm-crf", "dcsm", True, 0.125, "DCSM as unary potentials of the dense CRF (the ECCV paper)"),
)}


def get_method(name: str) -> SegmentMethod:
    if name not in SEGMENT_METHODS:
        raise WssegError(f"unknown segmentation method {name!r}; choose from {', '.join(SEGMENT_METHODS)}")
    return SEGMENT_METHODS[name]


def segment_images(model: FCNClassifier, images: Sequence[np.ndarray], classes: Sequence[Sequence[int]],
                   method: str, threshold: float | None = None, scales: Sequence[float] | None = None,
                   timings: dict[str, float] | None = None) -> list[np.ndarray]:
    """Label maps for equally sized RGB images; ``classes`` are 0-based classifier outputs per image."""
    spec = get_method(method)
    threshold = check_threshold(spec.threshold if threshold is None else threshold)
    timings = timings if timings is not None else defaultdict(float)
    options = dict(spec.map_options)
    if scales is not None and spec.maps in ("dcsm", "cam"):
        options["scales"] = tuple(scales)
    device = next(model.parameters()).device
    started = time.perf_counter()
    batch = torch.stack([to_tensor(image) for image in images]).to(device)
    maps = normalize_maps(class_maps(model, batch, classes, spec.maps, **options)).cpu().numpy()
    timings["maps"] = timings.get("maps", 0.0) + time.perf_counter() - started
    results = []
    for image, per_image, image_maps in zip(images, classes, maps):
        labels = [c + 1 for c in per_image]
        image_maps = image_maps[: len(labels)]
        started = time.perf_counter()
        if spec.crf and labels:
            refined = dense_crf(image, soft_probabilities(image_maps, threshold))
            results.append(np.array([0, *labels], np.uint8)[np.argmax(refined, axis=0)])
            timings["crf"] = timings.get("crf", 0.0) + time.perf_counter() - started
        else:
            results.append(labels_from_maps(image_maps, labels, threshold))
            timings["threshold"] = timings.get("threshold", 0.0) + time.perf_counter() - started
    return results


def segment_split(model: FCNClassifier, dataset: VOCDataset, method: str, out: str | Path, labels: str = "gt",
                  threshold: float | None = None, scales: Sequence[float] | None = None, batch_size: int = 8,
                  label_threshold: float = 0.5, skip_bad: bool = False, progress: bool = True,
                  ids: Sequence[str] | None = None) -> dict:
    """Write ``out/<id>.png`` (VOC palette) for every image not done yet; returns counts and timings."""
    from tqdm import tqdm

    get_method(method)
    if labels not in ("gt", "predicted"):
        raise WssegError(f"--labels must be gt or predicted, not {labels!r}")
    out = Path(out)
    wanted = list(ids if ids is not None else dataset.ids)
    todo = [i for i in wanted if not (out / f"{i}.png").exists()]
    report: dict = {"written": 0, "skipped_bad": 0, "already_done": len(wanted) - len(todo),
                    "timings": defaultdict(float)}
    bar = tqdm(total=len(todo), desc=f"segment ({method})", unit="img", disable=not progress)

    def skipped(_image_id: str) -> None:
        report["skipped_bad"] += 1
        bar.update(1)

    device = next(model.parameters()).device
    for batch in iter_batches(dataset, todo, batch_size, skip_bad, labels == "gt", skipped):
        images = [item.image for item in batch]
        if labels == "gt":
            classes = [[label - 1 for label in item.labels] for item in batch]
        else:
            tensor = torch.stack([to_tensor(image) for image in images]).to(device)
            classes = predict_labels(model, tensor, label_threshold)
        for item, label_map in zip(batch, segment_images(model, images, classes, method, threshold, scales,
                                                         report["timings"])):
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
