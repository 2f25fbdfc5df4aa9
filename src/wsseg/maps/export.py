"""Class maps for a whole split, written per image: ``<id>.npz`` (float16 maps + class ids) and
``<id>.png`` (heat-map overlays). Finished images are skipped, so an interrupted run resumes."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wsseg.data.transforms import batch_tensor
from wsseg.data.voc import VOCDataset
from wsseg.errors import DataError, WssegError
from wsseg.io import atomic_write
from wsseg.maps import class_maps, dcsm, normalize_maps
from wsseg.maps.hooks import inference_state
from wsseg.models.classifier import FCNClassifier

LABEL_SOURCES = ("gt", "predicted")


@dataclass
class ImageItem:
    id: str
    image: np.ndarray
    labels: tuple[int, ...]  # ground-truth mask values 1..C (empty when unknown)


def predict_labels(model: FCNClassifier, images: torch.Tensor, threshold: float = 0.5) -> list[list[int]]:
    """Classes (0-based) whose sigmoid score passes ``threshold``; the top class when none does
    (every image is assumed to show at least one object, as in PASCAL VOC)."""
    with inference_state(model), torch.no_grad():
        scores = torch.sigmoid(model(images))
    result = []
    for row in scores:
        chosen = torch.nonzero(row > threshold).flatten().tolist()
        result.append(chosen or [int(row.argmax())])
    return result


def batch_classes(model: FCNClassifier, batch: Sequence[ImageItem], labels: str, threshold: float = 0.5,
                  images: torch.Tensor | None = None) -> list[list[int]]:
    """The classes (0-based) to explain per image: its ground-truth labels, or the classifier's."""
    if labels == "gt":
        return [[label - 1 for label in item.labels] for item in batch]
    if images is None:
        images = batch_tensor([item.image for item in batch], next(model.parameters()).device)
    return predict_labels(model, images, threshold)


def iter_batches(dataset: VOCDataset, ids: Sequence[str], batch_size: int, skip_bad: bool,
                 need_labels: bool, on_skip=None) -> Iterator[list[ImageItem]]:
    """Consecutive images of equal size, up to ``batch_size`` per batch; bad files raise or are skipped."""
    batch: list[ImageItem] = []
    for image_id in ids:
        try:
            image = dataset.load_image(image_id)
            labels = dataset.load_labels(image_id) if need_labels else ()
        except DataError:
            if not skip_bad:
                raise
            if on_skip:
                on_skip(image_id)
            continue
        if batch and (len(batch) == batch_size or batch[0].image.shape != image.shape):
            yield batch
            batch = []
        batch.append(ImageItem(image_id, image, labels))
    if batch:
        yield batch


def heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a [0, 1] heat map (jet colours) over an RGB image."""
    from matplotlib import colormaps

    colours = colormaps["jet"](np.clip(heat, 0, 1))[..., :3] * 255
    return np.clip(image * (1 - alpha) + colours * alpha, 0, 255).astype(np.uint8)


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())


def compute_split_maps(model: FCNClassifier, dataset: VOCDataset, method: str, out: str | Path,
                       labels: str = "gt", scales: Sequence[float] | None = None, batch_size: int = 8,
                       threshold: float = 0.5, skip_bad: bool = False, progress: bool = True,
                       device: str | torch.device = "cpu", ids: Sequence[str] | None = None) -> dict[str, int]:
    """Write maps for every image of the split not already done; returns counts."""
    from PIL import Image
    from tqdm import tqdm

    if labels not in LABEL_SOURCES:
        raise WssegError(f"--labels must be one of {', '.join(LABEL_SOURCES)}, not {labels!r}")
    out = Path(out)
    todo = [i for i in (ids if ids is not None else dataset.ids)
            if not ((out / f"{i}.npz").exists() and (out / f"{i}.png").exists())]
    counts = {"written": 0, "skipped_bad": 0, "already_done": len(dataset.ids if ids is None else ids) - len(todo)}
    model = model.to(device)
    bar = tqdm(total=len(todo), desc=f"maps ({method})", unit="img", disable=not progress)

    def skipped(_image_id: str) -> None:
        counts["skipped_bad"] += 1
        bar.update(1)

    options = {} if scales is None or method not in ("dcsm", "cam") else {"scales": tuple(scales)}
    for batch in iter_batches(dataset, todo, batch_size, skip_bad, labels == "gt", skipped):
        images = batch_tensor([item.image for item in batch], device)
        classes = batch_classes(model, batch, labels, threshold, images)
        agnostic = None
        if method == "dcsm":
            result = dcsm(model, images, classes, **options)
            maps, agnostic = result.maps, result.agnostic
        else:
            maps = class_maps(model, images, classes, method, **options)
        shown = normalize_maps(maps).cpu().numpy()
        for n, item in enumerate(batch):
            count = len(classes[n])
            arrays = {"maps": maps[n, :count].detach().cpu().numpy().astype(np.float16),
                      "labels": np.array([c + 1 for c in classes[n]], dtype=np.int16)}
            if agnostic is not None:
                arrays["agnostic"] = agnostic[n].detach().cpu().numpy().astype(np.float16)
            write_npz(out / f"{item.id}.npz", **arrays)
            tiles = [item.image] + [heat_overlay(item.image, shown[n, k]) for k in range(count)]
            with atomic_write(out / f"{item.id}.png") as handle:
                Image.fromarray(np.concatenate(tiles, axis=1)).save(handle, format="PNG")
            counts["written"] += 1
            bar.update(1)
    bar.close()
    return counts


def read_maps(path: str | Path) -> dict[str, np.ndarray]:
    """Load one ``<id>.npz`` written by :func:`compute_split_maps` (maps as float32)."""
    path = Path(path)
    try:
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(path, f"cannot read maps ({exc})") from None
    arrays["maps"] = arrays["maps"].astype(np.float32)
    return arrays
