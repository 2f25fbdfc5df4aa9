"""``wsseg tune-background``: choose a method's background threshold on a labelled split.

This looks at ground truth, so results made with the chosen threshold are "oracle" numbers:
the choice is stored in RUN/background.json with ``tuned_on_ground_truth: true``, and
``wsseg segment`` records that flag beside the segmentations it makes with it.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from collections.abc import Sequence
from pathlib import Path

from wsseg.data.classes import class_indices
from wsseg.data.voc import VOCDataset
from wsseg.errors import WssegError
from wsseg.evaluate import ConfusionMatrix
from wsseg.io import read_json_or_refuse, write_json_atomic
from wsseg.maps.methods import DCSM, EARLIER_DCSM_NORMALIZATION
from wsseg.maps.resolution import MaxSide
from wsseg.models.classifier import FCNClassifier
from wsseg.registry import method_info
from wsseg.segmentation.base import SegmentInput, Segmenter, segment_inputs
from wsseg.segmentation.methods import build_segmenter
from wsseg.segmentation.runner import ImageItem, SplitSource, open_split, run_split

BACKGROUND_FILE = "background.json"


def tune_background(model: FCNClassifier, dataset: VOCDataset, method: Segmenter | str,
                    thresholds: Sequence[float] | None = None, batch_size: int = 8, skip_bad: bool = False,
                    progress: bool = True) -> list[dict]:
    """mIoU of the segmenter (or registry name) on the split (ground-truth image labels) for each
    threshold (default: the segmenter's grid); the maps are computed once for all thresholds."""
    segmenter = build_segmenter(method) if isinstance(method, str) else method
    grid = tuple(thresholds or segmenter.grid)
    candidates = [dataclasses.replace(segmenter, threshold=t) for t in grid]
    matrices = [ConfusionMatrix(dataset.num_classes + 1) for _ in grid]
    timings: dict[str, float] = {}

    def compute(batch: list[ImageItem]) -> list[SegmentInput]:
        classes = [class_indices(item.labels) for item in batch]
        return segment_inputs(model, [item.image for item in batch], classes, segmenter, timings)

    def finish(item: ImageItem, inputs: SegmentInput) -> None:
        truth = dataset.load_mask(item.id)
        prepared = segmenter.prepare(inputs, timings) if inputs.labels else None  # shared by the thresholds
        for matrix, candidate in zip(matrices, candidates):
            matrix.update(candidate(inputs, timings, prepared), truth)

    run_split(dataset, compute, finish, batch_size=batch_size, skip_bad=skip_bad, progress=progress, desc="tune")
    return [{"threshold": t, "miou": m.miou()} for t, m in zip(grid, matrices)]


def tune_background_on_split(source: SplitSource, method: str, thresholds: Sequence[float] | None = None,
                             scales: Sequence[float] | None = None, batch_size: int = 8, device: str = "auto",
                             skip_bad: bool = False, progress: bool = True,
                             map_side: MaxSide = "auto") -> tuple[list[dict], dict]:
    """``wsseg tune-background``: the curve on the split, and the best threshold stored in the run."""
    with open_split(source, device, batch_size, shard=False) as split:
        segmenter = build_segmenter(method, source.run, scales=scales, map_side=map_side)
        curve = tune_background(split.model, split.dataset, segmenter, thresholds, batch_size, skip_bad, progress)
    return curve, store_choice(source.run, method, curve, source.split, map_settings(scales, map_side, method))


def map_settings(scales: Sequence[float] | None, map_side: MaxSide, method: str | None = None) -> dict[str, Any]:
    """What shapes the maps a threshold is tuned on, besides the method: their scales and map side,
    and for a method that reads DCSM's maps, their normalisation (a threshold is a level on it)."""
    settings: dict[str, Any] = {"scales": None if scales is None else [float(s) for s in scales],
                                "map_side": map_side}
    if method is not None and "dcsm" in method_info(method).maps:
        settings["dcsm_normalization"] = DCSM().normalization
    return settings


def tuned_for_other_maps(stored: dict, scales: Sequence[float] | None, map_side: MaxSide,
                         method: str | None = None) -> str | None:
    """How the maps a stored threshold was tuned on differ from these (None: they do not, or the
    choice predates this record and cannot say: it is used as before). A DCSM threshold stored
    before its normalisation was recorded was tuned on linear-minmax maps."""
    recorded = stored.get("maps")
    recorded = recorded if isinstance(recorded, dict) else {}
    wanted = map_settings(scales, map_side, method)
    if "dcsm_normalization" in wanted:
        recorded = {"dcsm_normalization": EARLIER_DCSM_NORMALIZATION, **recorded}
    changed = [f"{key} {recorded[key]!r} (now {wanted[key]!r})" for key in recorded
               if key in wanted and recorded[key] != wanted[key]]
    return ", ".join(changed) or None


def store_choice(run: str | Path, method: str, curve: list[dict], split: str,
                 maps: dict[str, Any] | None = None) -> dict:
    """Store the curve's best threshold for ``method`` in RUN/background.json (an oracle choice),
    with ``maps``: the scales, map side and DCSM normalisation of the maps it was tuned on (a
    threshold belongs to them; default: the method's default maps, ``map_settings(None, "auto", method)``)."""
    best = max(curve, key=lambda row: -1.0 if row["miou"] is None else row["miou"])
    path = Path(run) / BACKGROUND_FILE
    if best["miou"] is None:  # nothing was scored: a stored choice would replace a good one with a guess
        raise WssegError(f"split {split!r}: no threshold could be scored (no labelled pixel); {path} left unchanged")
    stored = load_choices(run)
    stored[method] = {"threshold": best["threshold"], "miou": best["miou"], "split": split,
                      "tuned_on_ground_truth": True, "curve": curve,
                      "maps": map_settings(None, "auto", method) if maps is None else maps}
    write_json_atomic(path, stored)
    return stored[method]


def load_choices(run: str | Path) -> dict:
    """The thresholds `wsseg tune-background` stored in the run, by method name."""
    path = Path(run) / BACKGROUND_FILE
    if not path.exists():
        return {}
    stored = read_json_or_refuse(path, "tuned thresholds")
    if not isinstance(stored, dict):
        raise WssegError(f"{path}: must map method names to tuned thresholds; delete it or tune again")
    for method, choice in stored.items():
        threshold = choice.get("threshold") if isinstance(choice, dict) else None
        if not (isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and 0 < threshold < 1
                and isinstance(choice.get("split"), str)):
            raise WssegError(f"{path}: the entry of {method[:40]!r} is damaged (needs a threshold in (0, 1) and "
                             "a split); delete it or tune again")
    return stored
