"""MS COCO-format datasets, read as they come: an instances JSON and an images folder.

Layout (ROOT), as COCO 2014 ships:
    annotations/instances_<split>.json   images, annotations (polygons or RLE) and categories
    <split>/<file_name>                  the images (file names may name subfolders); else the first of
                                         images/<split>/<file_name>, images/<file_name>, <file_name> that exists

``--data`` may also name the JSON itself: its split is the file's name (``instances_val2014.json``
-> ``val2014``), its ROOT the folder holding ``annotations/`` (or the JSON's own folder).

What is read and how:

* Classes: the ``categories`` in the file's order become mask values 1..C (COCO's 80 ids, 1..90 with
  gaps, become 1..80), named by their ``name``.
* Image ids: the stem of each ``file_name`` (``val2014/COCO_val2014_000000000042.jpg`` ->
  ``COCO_val2014_000000000042``); two images with the same stem are refused (ids name output files).
* Image-level labels: the categories of an image's non-crowd annotations.
* Masks, rendered on demand with pycocotools: objects are painted largest first, so a smaller object
  lying on a larger one stays visible (the rule of the COCO-WSSS mask conversions); crowd regions
  (``iscrowd=1``) are painted last as void (255): their pixels are not labelled object by object.
* Box-only annotations (``"segmentation": []`` or none, as Label Studio writes rectangles) still give
  their image its label; their ``bbox`` is painted void after everything else (which pixels inside it are
  the object is unknown). An annotation with neither a segmentation nor a valid bbox is refused.
* Polygon coordinates must be finite and within one image size of the image (-W..2W, -H..2H), and a
  run-length encoding (a list of runs or a compressed string) must cover its image exactly: anything
  else is refused when the file is read, never handed to pycocotools.
* An image with an EXIF orientation is read as viewers show it (as every wsseg image is); its mask,
  drawn on the stored pixels as COCO's are, is turned the same way. Where the size cannot tell whether
  the JSON describes the stored or the shown pixels (a mirror or half turn, orientations 2-4, or a
  turned square image), the image is refused, as in the VOC layout.
* An image without a non-crowd annotation has no label: the trainers skip it (and say how many);
  evaluation keeps it, as all background (void where a crowd region lies).

The JSON is parsed once per process (a cache keyed by resolved path, modification time and size) into a
compact index -- numpy arrays and one bytes buffer holding every image's annotations, the parsed dicts
dropped -- so loader workers forked from the process share its pages without copying them.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from wsseg.data.classes import MAX_CLASSES, VOID, ClassList, class_name_problem
from wsseg.data.images import mask_orientation
from wsseg.data.voc import Sample, VOCDataset, check_id, excerpt
from wsseg.errors import DataError, WssegError
from wsseg.outputs import COCO_ANNOTATIONS, dataset_root_of

ANNOTATIONS_FOLDER = COCO_ANNOTATIONS
# instances_train2014.json is ~450 MB; a larger file is refused before it is read
DEFAULT_MAX_ANNOTATION_SIZE = 2 ** 30


def annotation_name(split: str) -> str:
    """The annotations file of a split, as COCO names it: ``val2014`` -> ``instances_val2014.json``."""
    return f"instances_{split}.json"


def split_of(json_path: Path) -> str:
    """The split a COCO annotations file names: ``instances_val2014.json`` -> ``val2014``."""
    stem = json_path.stem
    return stem[len("instances_"):] if stem.startswith("instances_") and len(stem) > len("instances_") else stem


def find_coco(data: str | Path, split: str, split_beside_json: bool = False) -> tuple[Path, Path, str] | None:
    """(ROOT, annotations file, split) when ``data`` is a COCO dataset, else None (a VOC layout).

    A COCO dataset is a ``.json`` file, or a folder that has ``annotations/instances_*.json`` and no
    ``ImageSets`` folder (a VOC layout's). A JSON is its own split, whatever ``split`` says, unless
    ``split_beside_json``: then ``split`` names ``instances_<split>.json`` in the JSON's folder (a trainer's
    --val-split)."""
    data = Path(data)
    if data.is_file() and data.suffix.lower() == ".json":
        root = dataset_root_of(data)
        if split_beside_json:
            return root, data.parent / annotation_name(split), split
        return root, data, split_of(data)
    if data.is_dir() and not (data / "ImageSets").is_dir():
        folder = data / ANNOTATIONS_FOLDER
        if folder.is_dir() and any(folder.glob("instances_*.json")):
            return data, folder / annotation_name(split), split
    return None


def image_folders(root: Path, split: str) -> tuple[Path, ...]:
    """Where a split's ``file_name``s are looked up, in order: ROOT/<split>/ (COCO 2014),
    ROOT/images/<split>/ (CVAT and Datumaro), ROOT/images/, ROOT/ (Label Studio's
    ``images/x.jpg`` beside result.json, Roboflow's images beside the JSON)."""
    return root / split, root / "images" / split, root / "images", root


# -- the index --------------------------------------------------------------------------------

@dataclass(frozen=True)
class COCOIndex:
    """One annotations file, parsed and validated, in a compact form (see the module docstring)."""

    path: Path
    classes: ClassList
    category_ids: np.ndarray  # int64 (C,): the COCO id of mask value k + 1
    ids: tuple[str, ...]  # image ids (file stems), in the file's order
    names: bytes  # every file_name, UTF-8, concatenated
    name_offsets: np.ndarray  # int64 (N + 1,)
    heights: np.ndarray  # int32 (N,)
    widths: np.ndarray  # int32 (N,)
    labels: np.ndarray  # uint8 (N, C) multi-hot of the non-crowd categories
    objects: np.ndarray  # int32 (N,) annotations per image, crowd included
    annotations: bytes  # each image's annotations as compact JSON, concatenated
    offsets: np.ndarray  # int64 (N + 1,)

    def file_name(self, position: int) -> str:
        """The ``file_name`` of the image at ``position``, as the JSON gives it (it may name subfolders)."""
        return self.names[self.name_offsets[position]:self.name_offsets[position + 1]].decode("utf-8")

    def annotations_of(self, position: int) -> list[list[Any]]:
        """[[mask value, iscrowd, segmentation], ...] of one image, in the file's order (a box-only
        annotation's segmentation is ``{"bbox": [x, y, w, h]}``)."""
        return json.loads(self.annotations[self.offsets[position]:self.offsets[position + 1]])

    def labels_of(self, position: int) -> tuple[int, ...]:
        """The image-level labels of the image at ``position``: mask values 1..C, sorted."""
        return tuple(int(k) + 1 for k in np.flatnonzero(self.labels[position]))

    def render(self, position: int) -> np.ndarray:
        """The H x W uint8 mask of one image (see the module docstring for the rules)."""
        height, width = int(self.heights[position]), int(self.widths[position])
        entries = self.annotations_of(position)
        # painted in pycocotools' column-major order (each object's pixels contiguous: 3x faster)
        mask = np.zeros((height, width), dtype=np.uint8, order="F")
        drawn = [k for k, (_, _, segmentation) in enumerate(entries) if "bbox" not in segmentation]
        if drawn:
            try:
                rles = [_rle(entries[k][2], height, width) for k in drawn]
                areas = mask_utils.area(rles)
                with warnings.catch_warnings():  # pycocotools 2.0.11's decode under numpy >= 2: harmless
                    warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
                    decoded = mask_utils.decode(rles)  # H x W x K
            except ValueError as exc:  # what the index's checks did not foresee: still one line
                raise DataError(self.path, f"{self.file_name(position)}: cannot render its annotations "
                                           f"({str(exc)[:80]})") from None
            objects = [j for j, k in enumerate(drawn) if not entries[k][1]]
            crowds = [j for j, k in enumerate(drawn) if entries[k][1]]
            for j in [*sorted(objects, key=lambda j: -int(areas[j])), *crowds]:  # stable: equal areas in file order
                value = VOID if entries[drawn[j]][1] else entries[drawn[j]][0]
                np.copyto(mask, np.uint8(value), where=decoded[:, :, j].view(bool))
        for _, _, segmentation in entries:  # boxes without a segmentation: which pixels are the object is unknown
            if "bbox" in segmentation:
                x, y, w, h = segmentation["bbox"]
                rows = slice(max(0, math.floor(y)), max(0, math.ceil(y + h)))
                mask[rows, max(0, math.floor(x)):max(0, math.ceil(x + w))] = VOID
        return np.ascontiguousarray(mask)


def _rle(segmentation: Any, height: int, width: int) -> dict:
    """One object's run-length encoding (polygons merged) by pycocotools."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}


# what Pillow's ImageOps.exif_transpose does for each EXIF orientation (read_image applies it)
_EXIF_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                   4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
                   7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}

# a training run reads two files (its split and its val split); a few more are kept for library users
_CACHE_SIZE = 4
_CACHE: dict[tuple[str, int, int], COCOIndex] = {}


def load_index(path: str | Path, max_size: int | None = DEFAULT_MAX_ANNOTATION_SIZE) -> COCOIndex:
    """The index of an annotations file: parsed once per process (cached by resolved path, mtime, size)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "COCO annotations file is missing")
    stat = path.stat()
    if max_size is not None and stat.st_size > max_size:
        raise DataError(path, f"annotations file is {stat.st_size / 2 ** 20:.0f} MiB, above the "
                              f"{max_size / 2 ** 20:.0f} MiB limit; refused unread")
    key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size)
    index = _CACHE.get(key)
    if index is None:
        index = build_index(path, _parse(path))
        gc.collect()  # the parsed dicts are gone: give their memory back before work starts
        _release_free_memory()
        while len(_CACHE) >= _CACHE_SIZE:  # the oldest goes (its datasets keep it while they live)
            del _CACHE[next(iter(_CACHE))]
        _CACHE[key] = index
    return index


def _release_free_memory() -> None:
    """Hand the C allocator's freed pages back to the system (glibc's malloc_trim), so that the
    parse's peak is not kept for the process's life nor inherited by forked workers."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _parse(path: Path) -> Any:
    try:
        with open(path, "rb") as handle:
            return json.load(handle)
    except RecursionError:
        raise DataError(path, "not a COCO annotations file: JSON nested too deeply to read") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(path, f"not a COCO annotations file: invalid JSON ({str(exc)[:80]})") from None
    except OSError as exc:
        raise DataError(path, f"cannot read annotations file ({exc.__class__.__name__})") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _quote(value: Any) -> str:
    """A value from the file for a message: a whole number as it is, anything else quoted and cut short."""
    return str(value) if _is_int(value) else excerpt(str(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require(entry: Any, keys: Sequence[str], path: Path, where: str) -> dict:
    if not isinstance(entry, dict):
        raise DataError(path, f"{where} is not an object")
    missing = [key for key in keys if key not in entry]
    if missing:
        raise DataError(path, f"{where} has no {', '.join(repr(k) for k in missing)}")
    return entry


def _in_range(values: list[Any], height: int, width: int) -> bool:
    """x, y pairs that are numbers within one image size of the image (NaN and infinity are not):
    pycocotools rasterises a polygon edge by edge, so a coordinate of 1e7 would take gigabytes.
    Built-ins only (COCO train2014 has tens of millions of coordinates): a NaN makes min/max return
    it or skip it, never a value out of range, and the sum then shows it."""
    if not values or not set(map(type, values)) <= {int, float}:
        return False
    xs, ys = values[0::2], values[1::2]
    return (-width <= min(xs) and max(xs) <= 2 * width and -height <= min(ys) and max(ys) <= 2 * height
            and math.isfinite(sum(values)))


# a compressed RLE run is at most 7 characters (35 bits): pycocotools reads a longer one into an overflowing long
_MAX_RUN_CHARACTERS = 7


def rle_string_counts(counts: str) -> list[int] | None:
    """The runs of a COCO compressed RLE string, decoded as pycocotools' rleFrString does (6-bit groups,
    ``0`` = 48, 5 value bits and a continuation bit, the last group's 0x10 its sign; from the fourth
    run on, each is a difference from the run two before); None when the string is not one."""
    runs: list[int] = []
    value = shift = 0
    for character in counts:
        code = ord(character) - 48
        if not 0 <= code < 64 or shift == 5 * _MAX_RUN_CHARACTERS:
            return None
        value |= (code & 0x1F) << shift
        shift += 5
        if code & 0x20:
            continue
        if code & 0x10:
            value |= -1 << shift
        runs.append(value + runs[-2] if len(runs) > 2 else value)
        value = shift = 0
    return runs if shift == 0 else None


def _check_segmentation(segmentation: Any, height: int, width: int, path: Path, where: str) -> None:
    """Refuse, in one line, a segmentation pycocotools would crash on, eat memory for, or render from
    memory it never wrote (a run-length encoding that does not cover its image exactly)."""
    if isinstance(segmentation, list):
        for number, polygon in enumerate(segmentation):
            in_range = isinstance(polygon, list) and _in_range(polygon, height, width)  # one pass for most
            if not in_range and not (isinstance(polygon, list) and all(_is_number(v) for v in polygon)):
                raise DataError(path, f"{where}: polygon {number} is not a list of numbers")
            if len(polygon) % 2 or len(polygon) < 6:
                raise DataError(path, f"{where}: polygon {number} has {len(polygon) / 2:g} points; a polygon "
                                      "needs at least 3 (x, y pairs)")
            if not in_range:
                raise DataError(path, f"{where}: polygon {number} has a coordinate that is not a finite number "
                                      f"within one image size of its {width}x{height} image")
    elif isinstance(segmentation, dict):
        counts, size = segmentation.get("counts"), segmentation.get("size")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
            raise DataError(path, f"{where}: RLE has no [height, width] 'size'")
        if list(size) != [height, width]:
            raise DataError(path, f"{where}: RLE size {size[0]}x{size[1]} (HxW) is not its image's "
                                  f"{height}x{width}")
        if isinstance(counts, str):
            counts = rle_string_counts(counts)
            if counts is None:
                raise DataError(path, f"{where}: RLE 'counts' is not a valid compressed RLE string")
        elif not isinstance(counts, list):
            raise DataError(path, f"{where}: RLE 'counts' is neither a list nor a compressed string")
        if not all(_is_int(v) and v >= 0 for v in counts) or sum(counts) != height * width:
            raise DataError(path, f"{where}: RLE counts are not non-negative runs covering the image")
    else:
        raise DataError(path, f"{where}: segmentation is neither polygons nor RLE")


def _check_box(annotation: dict, height: int, width: int, path: Path, where: str) -> list[float]:
    """The [x, y, width, height] box of an annotation without a segmentation (Label Studio writes
    rectangles so): painted void, so it must be a real box on its image."""
    box = annotation.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and _in_range(box[:2], height, width)
            and _in_range(box[2:], height, width) and box[2] > 0 and box[3] > 0):
        raise DataError(path, f"{where}: has neither a segmentation nor a valid 'bbox' [x, y, width, height] "
                              f"on its {width}x{height} image")
    return [float(v) for v in box]


def build_index(path: Path, data: Any) -> COCOIndex:
    """Validate a parsed instances file and pack it (raises DataError naming the first problem)."""
    _require(data, ("images", "annotations", "categories"), path, "the file")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise DataError(path, f"{key!r} is not a list")
    # categories, in the file's order -> 1..C
    values: dict[int, int] = {}
    names: list[str] = []
    for number, category in enumerate(data["categories"]):
        where = f"categories[{number}]"
        _require(category, ("id", "name"), path, where)
        if not _is_int(category["id"]) or not isinstance(category["name"], str) or not category["name"].strip():
            raise DataError(path, f"{where}: 'id' must be a whole number and 'name' a non-empty text")
        problem = class_name_problem(category["name"])
        if problem is not None:  # the class name runs record, and export-voc's classes.txt, must carry it
            raise DataError(path, f"{where}: name {excerpt(category['name'])} {problem}")
        if category["id"] in values:
            raise DataError(path, f"{where}: category id {category['id']} is listed twice")
        values[category["id"]] = len(values) + 1
        names.append(category["name"])
    if not names:
        raise DataError(path, "'categories' is empty")
    if len(names) > MAX_CLASSES:
        raise DataError(path, f"{len(names)} categories; at most {MAX_CLASSES} fit in 8-bit masks")
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise DataError(path, f"two categories have the same name {excerpt(twice)}")
    classes = ClassList(tuple(names))
    # images
    positions: dict[int, int] = {}
    stems: dict[str, int] = {}
    file_names: list[str] = []
    heights, widths = [], []
    for number, image in enumerate(data["images"]):
        where = f"images[{number}]"
        _require(image, ("id", "file_name", "height", "width"), path, where)
        if not _is_int(image["id"]):
            raise DataError(path, f"{where}: 'id' is not a whole number")
        if image["id"] in positions:
            raise DataError(path, f"{where}: image id {image['id']} is listed twice")
        name = image["file_name"]
        if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
            raise DataError(path, f"{where}: 'file_name' {excerpt(str(name))} is not a relative file name")
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts:
            raise DataError(path, f"{where}: 'file_name' {excerpt(name)} leads outside the images folder")
        stem = check_id(pure.stem, f"{path}, {where}")
        if stem in stems:
            raise DataError(path, f"{where}: file name {excerpt(name)} has the same stem as images[{stems[stem]}] "
                                  "(image ids are file stems and name output files; they must be unique)")
        if not (_is_int(image["height"]) and _is_int(image["width"]) and image["height"] > 0 and image["width"] > 0):
            raise DataError(path, f"{where}: 'height' and 'width' must be positive whole numbers")
        positions[image["id"]] = number
        stems[stem] = number
        file_names.append(name)
        heights.append(image["height"])
        widths.append(image["width"])
    count = len(file_names)
    # annotations, grouped by image in the file's order
    per_image: list[list[list[Any]]] = [[] for _ in range(count)]
    labels = np.zeros((count, len(names)), dtype=np.uint8)
    for number, annotation in enumerate(data["annotations"]):
        where = f"annotations[{number}]"
        _require(annotation, ("image_id", "category_id"), path, where)
        position = positions.get(annotation["image_id"]) if _is_int(annotation["image_id"]) else None
        if position is None:
            raise DataError(path, f"{where}: image_id {_quote(annotation['image_id'])} is not in 'images'")
        value = values.get(annotation["category_id"]) if _is_int(annotation["category_id"]) else None
        if value is None:
            raise DataError(path, f"{where}: category_id {_quote(annotation['category_id'])} is not in "
                                  "'categories'")
        crowd = annotation.get("iscrowd", 0)
        if crowd not in (0, 1) or isinstance(crowd, bool):
            raise DataError(path, f"{where}: 'iscrowd' must be 0 or 1")
        segmentation = annotation.get("segmentation")
        if segmentation is None or segmentation == []:  # a box alone: void inside it
            segmentation = {"bbox": _check_box(annotation, heights[position], widths[position], path, where)}
        else:
            _check_segmentation(segmentation, heights[position], widths[position], path, where)
        per_image[position].append([value, crowd, segmentation])
        if not crowd:
            labels[position, value - 1] = 1
    del data
    objects = np.array([len(entries) for entries in per_image], dtype=np.int32)
    chunks = [json.dumps(entries, separators=(",", ":")).encode("ascii") for entries in per_image]
    del per_image
    name_chunks = [name.encode("utf-8") for name in file_names]
    return COCOIndex(
        path=path, classes=classes, category_ids=np.array(list(values), dtype=np.int64), ids=tuple(stems),
        names=b"".join(name_chunks), name_offsets=_offsets(name_chunks),
        heights=np.array(heights, dtype=np.int32), widths=np.array(widths, dtype=np.int32), labels=labels,
        objects=objects,
        annotations=b"".join(chunks), offsets=_offsets(chunks))


def _offsets(chunks: Sequence[bytes]) -> np.ndarray:
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    np.cumsum([len(chunk) for chunk in chunks], out=offsets[1:])
    return offsets


# -- the dataset ------------------------------------------------------------------------------

class COCODataset(VOCDataset):
    """A COCO-format split with VOCDataset's interface (``ids``, ``load``, ``load_mask``, ...).

    ``masks`` is accepted for the same signature and not used: masks are rendered from the
    annotations. ``split`` names ``annotations/instances_<split>.json`` unless ``annotations`` is
    given (``--data`` naming the JSON)."""

    def __init__(self, *args: Any, annotations: str | Path | None = None, **kwargs: Any) -> None:
        """VOCDataset's arguments, and ``annotations``: the JSON, when ``--data`` named it."""
        self.annotations = Path(annotations) if annotations is not None else None
        super().__init__(*args, **kwargs)

    def _open_split(self, classes: ClassList | None, ids: Sequence[str] | None) -> None:
        """The annotations file's index, its categories as the class list, its images as the ids."""
        self.mask_dir = None  # rendered from the annotations
        split, annotations = self.split, self.annotations
        if annotations is None:
            check_id(split, "--split")
            annotations = self.root / ANNOTATIONS_FOLDER / annotation_name(split)
        if not annotations.is_file():  # the splits there are, named from the files beside it
            found = sorted(split_of(p) for p in annotations.parent.glob("instances_*.json"))
            raise WssegError(f"{annotations}: no COCO annotations for split {split!r} (this dataset has "
                             f"{', '.join(found) or 'none'})")
        self.annotations = self._inside(Path(annotations))
        self.index = load_index(self.annotations)
        self.classes = classes if classes is not None else self.index.classes
        if self.classes != self.index.classes:
            raise WssegError(f"{self.annotations}: its categories are not the class list given "
                             f"({self.index.classes.num_classes} vs {self.classes.num_classes} classes)")
        self.image_folders = image_folders(self.root, self.split)
        self._positions = {image_id: position for position, image_id in enumerate(self.index.ids)}
        if ids is None:
            self.ids = list(self.index.ids)
        else:
            self.ids = [check_id(i, "ids") for i in ids]
            unknown = [i for i in self.ids if i not in self._positions]
            if unknown:
                raise DataError(self.annotations, f"image {excerpt(unknown[0])} is not in this file")
        self.skipped_unannotated = 0

    def __getstate__(self) -> dict:
        """Pickled (a spawned loader worker): the index is left out and read again from the cache."""
        state = dict(self.__dict__)
        state["index"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.index = load_index(self.annotations)

    def position(self, image_id: str) -> int:
        try:
            return self._positions[image_id]
        except KeyError:
            raise DataError(self.annotations, f"image {excerpt(image_id)} is not in this file") from None

    def annotated(self, image_id: str) -> bool:
        """Whether the image has a non-crowd annotation (an image-level label)."""
        return bool(self.index.labels[self.position(image_id)].any())

    def for_training(self) -> COCODataset:
        """This split without the images that have no label (``skipped_unannotated`` counts them)."""
        kept = [image_id for image_id in self.ids if self.annotated(image_id)]
        if len(kept) == len(self.ids):
            return self
        subset = COCODataset(self.root, self.split, classes=self.classes, ids=kept, max_side=self.max_side,
                             max_file_size=self.max_file_size, annotations=self.annotations,
                             data_argument=self.data_argument)
        subset.skipped_unannotated = len(self.ids) - len(kept)
        return subset

    # -- paths -------------------------------------------------------------------------------
    def _find_image(self, position: int) -> Path | None:
        """The first of the image folders holding the image's ``file_name`` (None: none does)."""
        name = self.index.file_name(position)
        return next((folder / name for folder in self.image_folders if (folder / name).is_file()), None)

    def image_path(self, image_id: str) -> Path:
        path = self._find_image(self.position(image_id))
        if path is None:
            name = self.index.file_name(self.position(image_id))
            raise DataError(self.image_folders[0] / name, "image file is missing (also looked for it under "
                            f"{', '.join(str(folder) for folder in self.image_folders[1:])})")
        return self._inside(path)

    def mask_path(self, image_id: str) -> Path | None:
        """The file the mask is rendered from (the annotations)."""
        return self.annotations

    def annotation_path(self, image_id: str) -> Path | None:
        return None

    # -- loading -----------------------------------------------------------------------------
    def load_mask(self, image_id: str, required: bool = True) -> np.ndarray | None:
        """The rendered mask, turned as the image is when read: COCO's annotations are drawn on the
        stored pixels, and an image with an EXIF orientation is read as viewers show it. The VOC rule
        (``mask_orientation``) refuses what cannot be told: a mirror, a half turn, a turned square,
        and a size in the JSON that fits the image neither as stored nor as shown."""
        position = self.position(image_id)
        mask = self.index.render(position)
        path = self._find_image(position)
        if path is None:
            return mask  # no image (scoring needs none): no orientation to follow
        orientation = mask_orientation(self.annotations, mask.shape, self._inside(path), drawn_on_stored=True)
        if orientation == 1:
            return mask
        return np.asarray(Image.fromarray(mask).transpose(_EXIF_TRANSPOSE[orientation]))

    def load_labels(self, image_id: str, mask: np.ndarray | None = None) -> tuple[int, ...]:
        return self.index.labels_of(self.position(image_id))

    def load(self, image_id: str) -> Sample:
        image = self.load_image(image_id)
        mask = self.load_mask(image_id)
        if mask is not None and mask.shape != image.shape[:2]:
            raise DataError(self.image_path(image_id), f"image is {image.shape[1]}x{image.shape[0]} but its "
                            f"annotations in {self.annotations.name} say {mask.shape[1]}x{mask.shape[0]}")
        return Sample(image_id, image, self.load_labels(image_id), mask)
