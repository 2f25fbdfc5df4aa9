"""The per-image map files of ``wsseg maps``: ``<id>.npz`` (float32 raw maps + class ids) and
``<id>.png`` (the image, then one heat-map overlay per class).

The raw maps are float32 because float16 cannot hold DCSM's: its final tanh leaves them within a
few thousandths below 1 (values 0.992-0.995 on a briefly trained classifier), where float16's
step is 0.0005, and ``DCSM.normalize`` (atanh, then a min-max stretch) magnifies that rounding
into whole-map errors. Fused from float16-rounded maps, dcsm-crf's val mIoU moved by 0.04 points
on the full demo's classifier (0.1% of pixels changed) but by 8 points on the one-epoch test
classifier, whose maps are nearly flat. From float32 files ``wsseg segment --maps`` writes the
bytes it computes itself, whatever the classifier; the price is files twice as large.

Only one image's files live here; the split driver that writes them for a whole split, and the
reader that fuses them, are in :mod:`wsseg.map_folders` (on the segmentation floor).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

from wsseg.errors import DataError
from wsseg.io import atomic_write


def heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a [0, 1] heat map (jet colours) over an RGB image."""
    colours = colormaps["jet"](np.clip(heat, 0, 1))[..., :3] * 255
    return np.clip(image * (1 - alpha) + colours * alpha, 0, 255).astype(np.uint8)


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez_compressed``'s format, but byte-reproducible: numpy stamps each member with the
    current time, so two runs (or two ranks) would differ in bytes; here the stamp is fixed."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(member, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())


def maps_written(out: Path, image_id: str) -> bool:
    """Whether both files of an image are there (each is written atomically, the PNG last)."""
    return (out / f"{image_id}.npz").exists() and (out / f"{image_id}.png").exists()


def write_image_maps(out: Path, image_id: str, image: np.ndarray, raw: np.ndarray, labels: Sequence[int],
                     shown: np.ndarray, extras: Mapping[str, np.ndarray] | None = None) -> None:
    """One image's files: ``raw`` [K, H, W] maps of the classes ``labels`` (mask values 1..C) as
    float32, ``extras`` beside them as float16 (for viewing), and ``shown`` (the normalised maps)
    drawn over the image."""
    arrays = {"maps": np.asarray(raw, dtype=np.float32), "labels": np.asarray(labels, dtype=np.int16)}
    arrays.update({key: np.asarray(value).astype(np.float16) for key, value in (extras or {}).items()})
    write_npz(out / f"{image_id}.npz", **arrays)
    tiles = [image] + [heat_overlay(image, shown[k]) for k in range(len(labels))]
    with atomic_write(out / f"{image_id}.png") as handle:
        Image.fromarray(np.concatenate(tiles, axis=1)).save(handle, format="PNG")


# deflate expands at most ~1032 times: a member claiming more than that of its compressed bytes lies
DEFLATE_MAX_RATIO = 1032
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _check_member_sizes(path: Path) -> None:
    """Refuse, unread, an .npz whose array headers claim more bytes than its members could hold (a
    300-byte file claiming 3.6 TiB would otherwise be allocated), or arrays of Python objects."""
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            with archive.open(info) as member:
                reader = _HEADER_READERS.get(np.lib.format.read_magic(member))
                if reader is None:
                    raise ValueError(f"{info.filename}: unknown .npy format version")
                shape, _, dtype = reader(member)
            if dtype.hasobject:
                raise ValueError(f"{info.filename} holds Python objects")
            claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
            capacity = info.file_size if info.compress_type == zipfile.ZIP_STORED else \
                min(info.file_size, info.compress_size * DEFLATE_MAX_RATIO)
            if claimed > capacity:
                raise DataError(path, f"{info.filename} claims {claimed} bytes, more than the file could hold; "
                                "refused unread")


def read_maps(path: str | Path, image_shape: tuple[int, int] | None = None,
              num_classes: int | None = None) -> dict[str, np.ndarray]:
    """Load one ``<id>.npz`` written by :func:`write_image_maps` (maps as float32), validated before
    use: sizes checked unread, numeric arrays, maps [K, H, W] for K labels, finite, of the image's
    ``image_shape`` (H, W) and with labels in 1..``num_classes`` when given; else a DataError."""
    path = Path(path)
    try:
        _check_member_sizes(path)
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(path, f"cannot read maps ({exc})") from None
    if "maps" not in arrays or "labels" not in arrays:
        raise DataError(path, "not a wsseg maps file (no 'maps'/'labels')")
    maps, labels = arrays["maps"], arrays["labels"]
    if maps.dtype.kind not in "fiu" or labels.dtype.kind not in "iu":
        raise DataError(path, f"maps must be numbers and labels whole numbers, not {maps.dtype} and {labels.dtype}")
    if maps.ndim != 3 or labels.ndim != 1 or len(labels) != len(maps):
        raise DataError(path, f"maps must be [K, H, W] for K labels, not {list(maps.shape)} for {labels.size}")
    if image_shape is not None and maps.shape[1:] != tuple(image_shape):
        raise DataError(path, f"maps are {maps.shape[2]}x{maps.shape[1]} but the image is "
                        f"{image_shape[1]}x{image_shape[0]}")
    if num_classes is not None and not ((labels >= 1) & (labels <= num_classes)).all():
        raise DataError(path, f"labels must be class values from 1 to {num_classes}, not {labels.tolist()[:8]}")
    if not np.isfinite(maps).all():
        raise DataError(path, "maps hold values that are not finite (NaN or infinity)")
    arrays["maps"] = maps.astype(np.float32)
    return arrays
