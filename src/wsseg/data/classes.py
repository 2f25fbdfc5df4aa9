"""Class lists. Index 0 is always background; foreground classes are 1..C in masks.

The one convention past the dataset reader: a class is its 0-based index (the classifier's output,
a map's channel, a mi-SVM's column). Mask values 1..C live in label maps and what writes them
(the dataset's masks and image-level labels as read, a segmenter's ``SegmentInput.labels``, a
maps file's ``labels``); :func:`class_indices` and :func:`mask_values` are the one conversion.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from wsseg.errors import DataError
from wsseg.io import require_inside_root, write_text_atomic

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
BACKGROUND = "background"
VOID = 255
# 255 marks void pixels, so at most 254 foreground classes fit in an 8-bit mask.
MAX_CLASSES = 254


def class_indices(values: Iterable[int]) -> list[int]:
    """Mask values 1..C -> 0-based class indices."""
    return [int(value) - 1 for value in values]


def mask_values(classes: Iterable[int]) -> list[int]:
    """0-based class indices -> mask values 1..C."""
    return [int(index) + 1 for index in classes]


@dataclass(frozen=True)
class ClassList:
    """The foreground classes of a dataset, in label order (mask value = position + 1)."""

    foreground: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.foreground:
            raise ValueError("a class list needs at least one foreground class")
        if len(self.foreground) > MAX_CLASSES:
            raise ValueError(f"at most {MAX_CLASSES} foreground classes fit in 8-bit masks")
        if len(set(self.foreground)) != len(self.foreground):
            raise ValueError("class names must be unique")

    @property
    def num_classes(self) -> int:
        """Number of foreground classes C (the classifier's outputs)."""
        return len(self.foreground)

    @property
    def names(self) -> tuple[str, ...]:
        """All C + 1 names, background first, indexed like mask values."""
        return (BACKGROUND, *self.foreground)

    def label_of(self, name: str) -> int | None:
        """Mask value (1..C) of a foreground class name, or None when unknown."""
        try:
            return self.foreground.index(name) + 1
        except ValueError:
            return None


VOC_CLASS_LIST = ClassList(VOC_CLASSES)


def class_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a foreground class that classes.txt carries unchanged (None: it can):
    read_class_file strips lines, skips '#' lines, and takes a leading 'background' for index 0."""
    if not name.strip():
        return "is empty"
    if len(name.splitlines()) != 1:
        return "has a line break"
    if name != name.strip():
        return "has leading or trailing spaces"
    if name.startswith("#"):
        return "starts with '#' (a comment in classes.txt)"
    if name.lower() in (BACKGROUND, "__background__"):
        return "is background, always index 0 and never a category"
    return None


def read_class_file(path: str | Path) -> ClassList:
    """Read ``classes.txt``: one foreground class per line; a leading 'background' line is allowed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM is not part of the first class's name
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read class list ({exc.__class__.__name__})") from None
    names = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if names and names[0].lower() in (BACKGROUND, "__background__"):
        names = names[1:]
    if not names:
        raise DataError(path, "class list is empty")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(path, f"class {name[:40]!r} is listed twice")
        if name.lower() == BACKGROUND:
            raise DataError(path, "'background' may only be the first line (it is always index 0)")
        seen.add(name)
    if len(names) > MAX_CLASSES:
        raise DataError(path, f"{len(names)} classes; at most {MAX_CLASSES} fit in 8-bit masks")
    return ClassList(tuple(names))


def load_class_list(root: str | Path) -> ClassList:
    """``ROOT/classes.txt`` when present, else the 20 PASCAL VOC classes. A classes.txt whose
    real location (after symlinks) is outside the root is refused, as images are."""
    path = Path(root) / "classes.txt"
    if not path.exists():
        return VOC_CLASS_LIST
    return read_class_file(require_inside_root(path, root))


def write_class_file(path: str | Path, classes: ClassList) -> None:
    write_text_atomic(path, "".join(f"{name}\n" for name in classes.foreground))
