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
from wsseg.maps.hooks import inference_state
from wsseg.maps.methods import MapMethod, map_method
from wsseg.models.classifier import FCNClassifier

LABEL_SOURCES = ("gt", "predicted")


@dataclass
class ImageItem:
    id: str
    image: np.ndarray
    labels: tuple[int, ...]  # ground-truth mask values 1..C (empty when unknown)
    done: bool = False  # its output exists already (computed again only as a batch neighbour)


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
                 need_labels: bool, on_skip=None, is_done=None) -> Iterator[list[ImageItem]]:
    """Batches of equal-size images, cut from fixed blocks of ``batch_size`` consecutive ids.

    The blocks depend on the position in ``ids`` only, never on what is left to do: an image is
    always computed with the same batch neighbours, so a resumed run, or a rank of a sharded one
    (given whole blocks, see ``ProcessGroup.shard_blocks``), gets the same floats as one
    uninterrupted process (batched kernels round differently for another batch). With
    ``is_done``, a batch whose outputs all exist is not yielded (a whole block not even read);
    items mark ``done`` the images computed only as neighbours. Bad files raise or are skipped.
    """
    for start in range(0, len(ids), batch_size):
        block = ids[start:start + batch_size]
        done = [bool(is_done and is_done(image_id)) for image_id in block]
        if all(done):
            continue
        runs: list[list[ImageItem]] = []  # consecutive images of one size
        for image_id, image_done in zip(block, done):
            try:
                image = dataset.load_image(image_id)
                labels = dataset.load_labels(image_id) if need_labels else ()
            except DataError:
                if not skip_bad:
                    raise
                if on_skip:
                    on_skip(image_id)
                continue
            if not runs or runs[-1][0].image.shape != image.shape:
                runs.append([])
            runs[-1].append(ImageItem(image_id, image, labels, image_done))
        yield from (run for run in runs if not all(item.done for item in run))


def heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a [0, 1] heat map (jet colours) over an RGB image."""
    from matplotlib import colormaps

    colours = colormaps["jet"](np.clip(heat, 0, 1))[..., :3] * 255
    return np.clip(image * (1 - alpha) + colours * alpha, 0, 255).astype(np.uint8)


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez_compressed``'s format, but byte-reproducible: numpy stamps each member with the
    current time, so two runs (or two ranks) would differ in bytes; here the stamp is fixed."""
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(member, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())


def compute_split_maps(model: FCNClassifier, dataset: VOCDataset, method: MapMethod | str, out: str | Path,
                       labels: str = "gt", scales: Sequence[float] | None = None, batch_size: int = 8,
                       threshold: float = 0.5, skip_bad: bool = False, progress: bool = True,
                       device: str | torch.device = "cpu", ids: Sequence[str] | None = None) -> dict[str, int]:
    """Write maps for every image of the split not already done; returns counts.

    ``method``: a map method, or its name (with ``scales`` for the methods that take them).
    """
    from PIL import Image
    from tqdm import tqdm

    if labels not in LABEL_SOURCES:
        raise WssegError(f"--labels must be one of {', '.join(LABEL_SOURCES)}, not {labels!r}")
    method = (map_method(method) if isinstance(method, str) else method).with_scales(scales)
    out = Path(out)
    wanted = list(ids if ids is not None else dataset.ids)

    def is_done(image_id: str) -> bool:
        return (out / f"{image_id}.npz").exists() and (out / f"{image_id}.png").exists()

    done_before = sum(map(is_done, wanted))
    counts = {"written": 0, "skipped_bad": 0, "already_done": done_before}
    model = model.to(device)
    bar = tqdm(total=len(wanted) - done_before, desc=f"maps ({method.name})", unit="img", disable=not progress)

    def skipped(_image_id: str) -> None:
        counts["skipped_bad"] += 1
        bar.update(1)

    for batch in iter_batches(dataset, wanted, batch_size, skip_bad, labels == "gt", skipped, is_done):
        images = batch_tensor([item.image for item in batch], device)
        classes = batch_classes(model, batch, labels, threshold, images)
        maps, extras = method.with_extras(model, images, classes)
        shown = method.normalize(maps).cpu().numpy()
        for n, item in enumerate(batch):
            if item.done:
                continue
            count = len(classes[n])
            arrays = {"maps": maps[n, :count].detach().cpu().numpy().astype(np.float16),
                      "labels": np.array([c + 1 for c in classes[n]], dtype=np.int16)}
            arrays.update({key: value[n].detach().cpu().numpy().astype(np.float16) for key, value in extras.items()})
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
