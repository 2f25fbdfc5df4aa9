"""One door to a dataset, whatever its layout: ``--data`` names a VOC-layout root, or a COCO dataset
(a folder with ``annotations/instances_<split>.json``, or that JSON itself; see :mod:`wsseg.data.coco`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wsseg.data.coco import COCODataset, find_coco
from wsseg.data.voc import VOCDataset


def is_coco(data: str | Path, split: str = "train") -> bool:
    """Whether ``data`` names a COCO dataset (a folder with ``annotations/instances_*.json`` and no
    ``ImageSets``, or a JSON file) rather than a VOC layout: for callers that word things by layout."""
    return find_coco(data, split) is not None


def open_dataset(data: str | Path, split: str = "train", split_beside_json: bool = False,
                 **options: Any) -> VOCDataset:
    """The split of the dataset ``data`` names: a COCODataset for a COCO layout, else a VOCDataset.
    Both have the same interface and take the same ``options`` (VOCDataset's: ``masks``, ``classes``,
    ``ids``, ``max_side``, ``max_file_size``; COCO does not use ``masks``: its masks are rendered).
    With ``split_beside_json``, a ``data`` naming a COCO JSON gives the split ``split`` names beside
    it (a trainer's val split)."""
    found = find_coco(data, split, split_beside_json)
    if found is None:
        return VOCDataset(data, split, **options)
    root, annotations, coco_split = found
    return COCODataset(root, coco_split, annotations=annotations if Path(data).is_file() else None,
                       data_argument=data, **options)
