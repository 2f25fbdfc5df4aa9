"""PASCAL VOC segmentation scoring: a streaming confusion matrix, per-class IoU and mIoU.

Conventions (as psa/IRN and the VOC devkit): pixels whose ground truth is 255 (void) are
ignored; IoU = diag / (row + col - diag); mIoU is the mean over background and every class,
leaving out a class absent from both ground truth and prediction (its IoU is None).
A predicted 255 counts as background (IRN's convention for 'uncertain' pseudo-label pixels).

:func:`score_segmentations` is ``wsseg evaluate``: a folder of PNGs scored on a split, each rank
its share, with the oracle flag its ``segment.json`` carries.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from wsseg.data.classes import VOID, ClassList
from wsseg.data.images import DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_SIDE, read_label_png
from wsseg.data.layout import open_dataset
from wsseg.data.voc import VOCDataset
from wsseg.distributed import ProcessGroup, process_group
from wsseg.errors import DataError, WssegError
from wsseg.io import write_json_atomic
from wsseg.outputs import check_may_write, read_segment_record


class ConfusionMatrix:
    """Accumulates a (C+1) x (C+1) matrix; rows are ground truth, columns predictions."""

    def __init__(self, num_labels: int) -> None:
        if num_labels < 2:
            raise ValueError("need at least two labels (background and one class)")
        self.num_labels = num_labels
        self.matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
        self.ignored = 0  # labelled pixels left out as uncertain (update(..., ignore_uncertain=True))

    def update(self, prediction: np.ndarray, truth: np.ndarray, ignore_uncertain: bool = False) -> None:
        """Add one image (or any batch of pixels) to the matrix. A predicted 255 counts as
        background, or, with ``ignore_uncertain`` (confident pseudo-labels), is left out and
        counted in ``ignored``."""
        prediction = np.asarray(prediction)
        truth = np.asarray(truth)
        if prediction.shape != truth.shape:
            raise ValueError(f"prediction shape {prediction.shape} differs from ground truth {truth.shape}")
        valid = truth != VOID
        if ignore_uncertain:
            uncertain = valid & (prediction == VOID)
            self.ignored += int(uncertain.sum())
            valid &= ~uncertain
        gt = truth[valid].astype(np.int64)
        pred = prediction[valid].astype(np.int64)
        pred[pred == VOID] = 0
        n = self.num_labels
        if gt.size and (gt.max() >= n or gt.min() < 0):
            raise ValueError(f"ground truth has labels outside 0..{n - 1} and {VOID}")
        if pred.size and (pred.max() >= n or pred.min() < 0):
            raise ValueError(f"prediction has labels outside 0..{n - 1} and {VOID}")
        self.matrix += np.bincount(gt * n + pred, minlength=n * n).reshape(n, n)

    def merge(self, other: ConfusionMatrix | np.ndarray, ignored: int = 0) -> None:
        """Add another matrix (e.g. from another process)."""
        self.matrix += other.matrix if isinstance(other, ConfusionMatrix) else np.asarray(other, np.int64)
        self.ignored += other.ignored if isinstance(other, ConfusionMatrix) else int(ignored)

    def ignored_fraction(self) -> float | None:
        """The share of labelled (non-void) pixels left out as uncertain."""
        total = int(self.matrix.sum()) + self.ignored
        return self.ignored / total if total else None

    def iou(self) -> list[float | None]:
        diag = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - diag
        return [None if u == 0 else float(d / u) for d, u in zip(diag, union)]

    def miou(self) -> float | None:
        present = [value for value in self.iou() if value is not None]
        return float(np.mean(present)) if present else None

    def pixel_accuracy(self) -> float | None:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else None


@dataclass
class EvaluationResult:
    class_names: tuple[str, ...]
    confusion: ConfusionMatrix
    n_images: int
    n_skipped: int = 0

    def to_dict(self) -> dict:
        return {
            "miou": self.confusion.miou(),
            "pixel_accuracy": self.confusion.pixel_accuracy(),
            "iou": dict(zip(self.class_names, self.confusion.iou())),
            "n_images": self.n_images,
            "n_skipped": self.n_skipped,
            "ignored_fraction": self.confusion.ignored_fraction() if self.confusion.ignored else None,
            "confusion": self.confusion.matrix.tolist(),
        }

    def table(self) -> str:
        """A readable per-class table with the summary lines."""
        width = max(12, *(len(name) for name in self.class_names))
        lines = [f"{'class':<{width}}  {'IoU':>7}"]
        for name, value in zip(self.class_names, self.confusion.iou()):
            lines.append(f"{name:<{width}}  {'-' if value is None else f'{100 * value:6.2f}%':>7}")
        miou, accuracy = self.confusion.miou(), self.confusion.pixel_accuracy()
        lines.append("-" * (width + 9))
        lines.append(f"{'mIoU':<{width}}  {'-' if miou is None else f'{100 * miou:6.2f}%':>7}")
        lines.append(f"{'pixel acc.':<{width}}  {'-' if accuracy is None else f'{100 * accuracy:6.2f}%':>7}")
        lines.append(f"{self.n_images} images scored" + (f", {self.n_skipped} skipped" if self.n_skipped else ""))
        if self.confusion.ignored:
            lines.append(f"{100 * self.confusion.ignored_fraction():.1f}% of the labelled pixels left out as uncertain "
                         "(predicted 255)")
        return "\n".join(lines)


def evaluate_arrays(predictions: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                    classes: ClassList) -> EvaluationResult:
    """Score in-memory label maps (values 0..C, 255 void) with the VOC protocol."""
    confusion = ConfusionMatrix(classes.num_classes + 1)
    count = 0
    for prediction, truth in zip(predictions, truths, strict=True):
        confusion.update(prediction, truth)
        count += 1
    return EvaluationResult(classes.names, confusion, count)


def evaluate_directory(pred_dir: str | Path, dataset: VOCDataset, skip_bad: bool = False,
                       progress: bool = True, ids: Sequence[str] | None = None) -> EvaluationResult:
    """Score ``pred_dir/<id>.png`` against the dataset's masks for every id of its split.

    A missing or mis-sized prediction is an error naming the image; with ``skip_bad`` the
    image is skipped and counted instead.
    """
    result = score_predictions(pred_dir, dataset, dataset.ids if ids is None else ids, skip_bad, progress)
    check_scored(result, pred_dir)
    return result


def score_predictions(pred_dir: str | Path, dataset: VOCDataset, ids: Sequence[str], skip_bad: bool = False,
                      progress: bool = True, ignore_uncertain: bool = False) -> EvaluationResult:
    """The confusion matrix of some images (one rank's share); zero images is not an error here."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise WssegError(f"{pred_dir}: prediction directory does not exist")
    confusion = ConfusionMatrix(dataset.num_classes + 1)
    scored = skipped = 0
    for image_id in tqdm(ids, desc="evaluate", unit="img", disable=not progress):
        try:
            truth = dataset.load_mask(image_id)
            pred_path = pred_dir / f"{image_id}.png"
            if not pred_path.exists():
                raise DataError(pred_path, "prediction is missing")
            prediction = read_label_png(pred_path, dataset.num_classes, what="prediction")
            if prediction.shape != truth.shape:
                raise DataError(pred_path, f"prediction is {prediction.shape[1]}x{prediction.shape[0]} but the "
                                f"ground truth is {truth.shape[1]}x{truth.shape[0]}")
        except DataError:
            if not skip_bad:
                raise
            skipped += 1
            continue
        confusion.update(prediction, truth, ignore_uncertain)
        scored += 1
    return EvaluationResult(dataset.classes.names, confusion, scored, skipped)


def sum_over_ranks(result: EvaluationResult, group: ProcessGroup) -> EvaluationResult:
    """The result of all ranks' shares together (confusion matrices and counts added)."""
    confusion = ConfusionMatrix(result.confusion.matrix.shape[0])
    confusion.merge(group.all_sum(result.confusion.matrix), int(group.all_sum(np.array([result.confusion.ignored]))[0]))
    scored, skipped = (int(n) for n in group.all_sum(np.array([result.n_images, result.n_skipped])))
    return EvaluationResult(result.class_names, confusion, scored, skipped)


def check_scored(result: EvaluationResult, pred_dir: str | Path, split: str | None = None) -> None:
    if result.n_images == 0:
        of = f" of split {split!r}" if split is not None else ""
        raise WssegError(f"{pred_dir}: no image{of} could be scored ({result.n_skipped} skipped as bad)")


def save_result(path: str | Path, result: EvaluationResult, extra: dict | None = None) -> None:
    data = result.to_dict()
    if extra:
        data.update(extra)
    write_json_atomic(path, data)


def load_result(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


@dataclass(frozen=True)
class Scores:
    """A split's scores, and whether the segmentations used an oracle threshold."""

    result: EvaluationResult
    oracle: bool  # the segmentations' threshold was tuned on ground truth


def score_segmentations(pred: str | Path, data: str | Path, split: str = "val", masks: str = "SegmentationClass",
                        max_side: int = DEFAULT_MAX_SIDE, skip_bad: bool = False, progress: bool = True,
                        json_path: str | Path | None = None, extra: dict[str, Any] | None = None,
                        max_file_size: int | None = DEFAULT_MAX_FILE_SIZE,
                        ignore_uncertain: bool = False) -> Scores | None:
    """``wsseg evaluate``: score the PNGs in ``pred`` (each rank its share, summed); the scores,
    also saved as JSON (with ``extra``) when asked, on the main rank (None on the others)."""
    if json_path is not None:  # before scoring: the scores must not replace a prediction or the dataset's files
        check_may_write(json_path, inputs=[pred], dataset_root=data, masks=masks)
    dataset = open_dataset(data, split, masks=masks, max_side=max_side, max_file_size=max_file_size).require_images()
    with process_group("cpu") as group:
        with group.together():
            result = score_predictions(pred, dataset, group.shard(dataset.ids), skip_bad=skip_bad,
                                       progress=progress and group.is_main, ignore_uncertain=ignore_uncertain)
        result = sum_over_ranks(result, group)  # every rank scored its share: add them up
    check_scored(result, pred, split)
    if not group.is_main:
        return None
    record = read_segment_record(pred) or {}
    oracle = bool(record.get("tuned_on_ground_truth"))
    if json_path is not None:
        save_result(json_path, result, {"pred": str(pred), "split": dataset.split, "tuned_on_ground_truth": oracle,
                                        **(extra or {})})
    return Scores(result, oracle)
