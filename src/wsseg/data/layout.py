"""One door to a dataset, whatever its layout: ``--data`` names a VOC-layout root, or a COCO dataset
(a folder with ``annotations/instances_<split>.json``, or that JSON itself; see :mod:`wsseg.data.coco`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from wsseg.data.classes import ClassList
from wsseg.data.coco import COCODataset, find_coco
from wsseg.data.images import DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_SIDE
from wsseg.data.voc import VOCDataset


def is_coco(data: str | Path, split: str = "train") -> bool:
    return find_coco(data, split) is not None


def open_dataset(
    data: str | Path,
    split: str = "train",
    masks: str | None = "SegmentationClass",
    classes: ClassList | None = None,
    ids: Sequence[str] | None = None,
    max_side: int | None = DEFAULT_MAX_SIDE,
    max_file_size: int | None = DEFAULT_MAX_FILE_SIZE,
    beside: bool = False,
) -> VOCDataset:
    """The split of the dataset ``data`` names: a COCODataset for a COCO layout, else a VOCDataset.
    Both have the same interface; ``masks`` is not used by COCO (its masks are rendered). With
    ``beside``, a ``data`` naming a COCO JSON gives the split ``split`` names beside it (a val split)."""
    found = find_coco(data, split, beside)
    if found is None:
        return VOCDataset(data, split, masks=masks, classes=classes, ids=ids, max_side=max_side,
                          max_file_size=max_file_size)
    root, annotations, coco_split = found
    return COCODataset(root, coco_split, classes=classes, ids=ids, max_side=max_side, max_file_size=max_file_size,
                       annotations=annotations if Path(data).is_file() else None, given=data)
