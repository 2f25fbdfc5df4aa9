"""PASCAL VOC-layout datasets, read lazily so that a 10,582-id split opens instantly.

Layout (ROOT):
    ImageSets/Segmentation/<split>.txt   one image id per line (ids are strings)
    JPEGImages/<id>.jpg (or .png)
    SegmentationClass/<id>.png           or another mask folder (``masks=``)
    Annotations/<id>.xml                 <object><name> give the image-level labels
    classes.txt                          optional; else the 20 VOC classes
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsseg.data.classes import VOID, ClassList, load_class_list
from wsseg.data.images import (DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_SIDE, mask_orientation, read_image,
                               read_label_png)
from wsseg.errors import DataError, WssegError
from wsseg.io import require_inside_root

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


@dataclass(frozen=True)
class Sample:
    """One image with what is known about it."""

    id: str
    image: np.ndarray  # H x W x 3 uint8 RGB
    labels: tuple[int, ...]  # present foreground classes as mask values 1..C, sorted
    mask: np.ndarray | None  # H x W uint8: 0 background, 1..C classes, 255 void; None if absent


def excerpt(text: str, limit: int = 40) -> str:
    """A short, escaped quotation of untrusted text for an error message (never a file's contents)."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def check_id(image_id: str, where: str) -> str:
    """Refuse ids that could escape the dataset root (separators, '..', absolute paths)."""
    if not image_id or image_id in (".", "..") or ".." in image_id:
        raise DataError(where, f"image id {excerpt(image_id)} is not allowed ('..' or empty)")
    if "/" in image_id or "\\" in image_id or os.sep in image_id or "\x00" in image_id:
        raise DataError(where, f"image id {excerpt(image_id)} contains a path separator")
    return image_id


# VOC's ImageSets/Main files carry a second column: 1 (present), -1 (absent) or 0 (difficult)
_MAIN_FLAGS = ("1", "-1", "0")


def read_split_file(path: str | Path) -> list[str]:
    """Ids listed in a split file, one per line (blank lines skipped), as strings.

    An id may not contain spaces (VOC's never do): a line with two fields is read as VOC's
    ``ImageSets/Main`` format (id and a 1/-1/0 flag); any other line with spaces is refused, since
    cutting it at the first space would silently name another image. A UTF-8 BOM is ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise WssegError(f"{path}: split file is missing")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise WssegError(f"{path}: cannot read split file ({exc.__class__.__name__})") from None
    ids = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) == 2 and fields[1] in _MAIN_FLAGS:
            fields = fields[:1]
        if len(fields) != 1:
            raise DataError(path, f"line {number}: {excerpt(line.strip())} is not one image id "
                                  "(ids with spaces are not supported)")
        ids.append(check_id(fields[0], f"{path}, line {number}"))
    if len(set(ids)) != len(ids):
        raise WssegError(f"{path}: split file lists some ids twice")
    return ids


class VOCDataset(Sequence[Sample]):
    """A split of a VOC-layout dataset. Nothing is read until an item is asked for.

    The setup every layout shares is here; a layout's own (its class list and ids) is
    :meth:`_open_split`, which COCODataset overrides. ``data_argument``: what ``--data`` named, when
    it is not the root (a COCO dataset's JSON); runs record it."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        masks: str | None = "SegmentationClass",
        classes: ClassList | None = None,
        ids: Sequence[str] | None = None,
        max_side: int | None = DEFAULT_MAX_SIDE,
        max_file_size: int | None = DEFAULT_MAX_FILE_SIZE,
        data_argument: str | Path | None = None,
    ) -> None:
        self.root = Path(root)
        self.data_argument = Path(data_argument) if data_argument is not None else self.root
        self.max_side = max_side
        self.max_file_size = max_file_size
        if not self.root.is_dir():
            raise WssegError(f"{self.root}: dataset root is not a directory")
        self.split = split
        self.mask_dir = masks
        self._open_split(classes, ids)

    def _open_split(self, classes: ClassList | None, ids: Sequence[str] | None) -> None:
        """The class list (``classes``, else ROOT/classes.txt, else VOC's) and the ids (``ids``, else
        the split file's)."""
        self.classes = classes if classes is not None else load_class_list(self.root)
        if ids is None:
            check_id(self.split, "--split")
            split_file = self.root / "ImageSets" / "Segmentation" / f"{self.split}.txt"
            ids = read_split_file(self._inside(split_file) if split_file.exists() else split_file)
        self.ids: list[str] = [check_id(i, "ids") for i in ids]

    def __len__(self) -> int:
        return len(self.ids)

    def require_images(self) -> VOCDataset:
        """This split, refused when it lists no image: every command stops the same way on an empty split
        (before writing anything), rather than writing an empty result."""
        if not self.ids:
            raise WssegError(f"{self.root}: split {self.split!r} is empty")
        return self

    # images without any label: none in a VOC layout (a COCO one skips them for training)
    skipped_unannotated = 0

    def for_training(self) -> VOCDataset:
        """The split the trainers learn from: the whole split here; a COCO split drops its images
        without any label (and counts them in ``skipped_unannotated``)."""
        return self

    def require_used(self, skipped: int, used: int) -> None:
        """--skip-bad means the same for every command: bad images are counted and skipped, but a split
        whose every image was bad is refused, as an empty one is, never a result made of nothing."""
        if skipped and not used:
            raise WssegError(f"{self.root}: every image of split {self.split!r} was skipped as bad ({skipped}); "
                             "nothing to work on")

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        return self.load(self.ids[index])

    def __iter__(self) -> Iterator[Sample]:
        for image_id in self.ids:
            yield self.load(image_id)

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    # -- paths -------------------------------------------------------------------------------
    def _inside(self, path: Path) -> Path:
        """Refuse files whose real location (after symlinks) is outside the dataset root."""
        return require_inside_root(path, self.root)

    def image_path(self, image_id: str) -> Path:
        folder = self.root / "JPEGImages"
        for suffix in IMAGE_SUFFIXES:
            candidate = folder / f"{image_id}{suffix}"
            if candidate.exists():
                return self._inside(candidate)
        raise DataError(folder / f"{image_id}.jpg", "image file is missing (tried .jpg and .png)")

    def mask_path(self, image_id: str) -> Path | None:
        if self.mask_dir is None:
            return None
        path = self.root / self.mask_dir / f"{image_id}.png"
        return self._inside(path) if path.exists() else None

    def annotation_path(self, image_id: str) -> Path | None:
        path = self.root / "Annotations" / f"{image_id}.xml"
        return self._inside(path) if path.exists() else None

    # -- loading -----------------------------------------------------------------------------
    def load_image(self, image_id: str) -> np.ndarray:
        return read_image(self.image_path(image_id), self.max_side, self.max_file_size)

    def load_mask(self, image_id: str, required: bool = True) -> np.ndarray | None:
        path = self.mask_path(image_id)
        if path is None:
            if required:
                folder = self.root / (self.mask_dir or "SegmentationClass")
                raise DataError(folder / f"{image_id}.png", "ground-truth mask is missing")
            return None
        mask = read_label_png(path, self.num_classes, max_file_size=self.max_file_size)
        try:
            image_path = self.image_path(image_id)
        except DataError:
            return mask  # no image (scoring needs none): no orientation to follow
        mask_orientation(path, mask.shape, image_path)  # an EXIF-rotated image is read as shown: refused otherwise
        return mask

    def load_labels(self, image_id: str, mask: np.ndarray | None = None) -> tuple[int, ...]:
        """Image-level labels from the XML annotation, else from the classes in the mask."""
        xml_path = self.annotation_path(image_id)
        if xml_path is not None:
            return read_annotation_labels(xml_path, self.classes)
        if mask is None:
            mask = self.load_mask(image_id, required=False)
        if mask is None:
            raise DataError(self.root / "Annotations" / f"{image_id}.xml",
                            "no image-level labels: neither an annotation nor a mask exists")
        return labels_from_mask(mask)

    def load(self, image_id: str) -> Sample:
        image = self.load_image(image_id)
        mask = self.load_mask(image_id, required=False)
        if mask is not None and mask.shape != image.shape[:2]:
            raise DataError(self.mask_path(image_id), f"mask is {mask.shape[1]}x{mask.shape[0]} but the image "
                            f"is {image.shape[1]}x{image.shape[0]}")
        return Sample(image_id, image, self.load_labels(image_id, mask), mask)


def labels_from_mask(mask: np.ndarray) -> tuple[int, ...]:
    values = np.unique(mask)
    return tuple(int(v) for v in values if v != 0 and v != VOID)


def read_annotation_labels(path: str | Path, classes: ClassList) -> tuple[int, ...]:
    """Mask values of the classes named by ``<object><name>`` in a VOC XML annotation."""
    path = Path(path)
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as exc:
        raise DataError(path, f"cannot parse annotation XML ({exc})") from None
    labels = set()
    for name_node in tree.getroot().iter("object"):
        name = (name_node.findtext("name") or "").strip()
        if not name:
            raise DataError(path, "an <object> has no <name>")
        label = classes.label_of(name)
        if label is None:
            raise DataError(path, f"unknown class {excerpt(name)} (not in the class list)")
        labels.add(label)
    return tuple(sorted(labels))


def labels_to_vector(labels: Sequence[int], num_classes: int) -> np.ndarray:
    """Multi-hot float32 vector over the C foreground classes (classifier output order)."""
    vector = np.zeros(num_classes, dtype=np.float32)
    for label in labels:
        vector[label - 1] = 1.0
    return vector
