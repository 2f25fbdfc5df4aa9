"""``wsseg tune-background``: choose a method's background threshold on a labelled split.

This looks at ground truth, so results made with the chosen threshold are "oracle" numbers:
the choice is stored in RUN/background.json with ``tuned_on_ground_truth: true``, and
``wsseg segment`` records that flag beside the segmentations it makes with it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wsseg.data.transforms import batch_tensor
from wsseg.data.voc import VOCDataset
from wsseg.errors import WssegError
from wsseg.evaluate import ConfusionMatrix
from wsseg.fusion.zoomout import DEFAULT_LAYERS, layer_features
from wsseg.io import write_json_atomic
from wsseg.maps.export import iter_batches
from wsseg.models.classifier import FCNClassifier
from wsseg.pipelines import get_method, prepared_maps, threshold_fusion

BACKGROUND_FILE = "background.json"
# saturating maps (DCSM ends in tanh(3x)) need thresholds close to 1
DEFAULT_GRID = tuple(round(t, 3) for t in np.linspace(0.05, 0.95, 19)) + (0.97, 0.98, 0.99, 0.995)
CRF_GRID = tuple(round(t, 3) for t in np.linspace(0.05, 0.85, 9))


def tune_background(model: FCNClassifier, dataset: VOCDataset, method: str,
                    thresholds: Sequence[float] | None = None, scales: Sequence[float] | None = None,
                    batch_size: int = 8, skip_bad: bool = False, progress: bool = True, misvm=None) -> list[dict]:
    """mIoU of ``method`` on the split (ground-truth image labels) for each threshold."""
    from tqdm import tqdm

    spec = get_method(method)
    grid = tuple(thresholds or (CRF_GRID if spec.fusion is not threshold_fusion else DEFAULT_GRID))
    matrices = [ConfusionMatrix(dataset.num_classes + 1) for _ in grid]
    bar = tqdm(total=len(dataset), desc=f"tune ({method})", unit="img", disable=not progress)
    device = next(model.parameters()).device
    timings: dict[str, float] = {}
    for batch in iter_batches(dataset, dataset.ids, batch_size, skip_bad, True, lambda _i: bar.update(1)):
        images = batch_tensor([item.image for item in batch], device)
        classes = [[label - 1 for label in item.labels] for item in batch]
        all_maps = {name: prepared_maps(model, images, classes, name, scales) for name in spec.maps}
        features = layer_features(model, images, DEFAULT_LAYERS) if spec.needs_features else [None] * len(batch)
        for n, item in enumerate(batch):
            truth = dataset.load_mask(item.id)
            labels = list(item.labels)
            maps = {name: values[n, : len(labels)] for name, values in all_maps.items()}
            for matrix, threshold in zip(matrices, grid):
                if labels:
                    prediction = spec.fusion(item.image, maps, labels, threshold, timings, features=features[n],
                                             misvm=misvm)
                else:
                    prediction = np.zeros(truth.shape, np.uint8)
                matrix.update(prediction, truth)
            bar.update(1)
    bar.close()
    return [{"threshold": t, "miou": m.miou()} for t, m in zip(grid, matrices)]


def store_choice(run: str | Path, method: str, curve: list[dict], split: str) -> dict:
    best = max(curve, key=lambda row: -1.0 if row["miou"] is None else row["miou"])
    path = Path(run) / BACKGROUND_FILE
    stored = load_choices(run)
    stored[method] = {"threshold": best["threshold"], "miou": best["miou"], "split": split,
                      "tuned_on_ground_truth": True, "curve": curve}
    write_json_atomic(path, stored)
    return stored[method]


def load_choices(run: str | Path) -> dict:
    path = Path(run) / BACKGROUND_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WssegError(f"{path}: unreadable ({exc})") from None
