"""The VOC-shaped rehearsal dataset has PASCAL VOC 2012 + SBD's shape, file for file."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsseg.data import VOCDataset
from wsseg.data.classes import VOC_CLASS_LIST, VOC_CLASSES
from wsseg.data.voc_shaped import write_voc_shaped
from wsseg.errors import WssegError


@pytest.fixture(scope="module")
def voc_shaped(tmp_path_factory) -> tuple[Path, dict[str, list[str]]]:
    root = tmp_path_factory.mktemp("rehearsal") / "VOC2012"
    return root, write_voc_shaped(root, train_aug=14, val=4, seed=1, progress=False)


def test_layout_ids_and_splits_are_vocs(voc_shaped) -> None:
    root, splits = voc_shaped
    assert not (root / "classes.txt").exists() and not root.with_name("VOC2012-glyphs").exists()
    sets = root / "ImageSets" / "Segmentation"
    assert sorted(p.name for p in sets.iterdir()) == ["train.txt", "train_aug.txt", "val.txt"]
    for name, ids in splits.items():
        assert sets.joinpath(f"{name}.txt").read_text().split() == ids == sorted(ids)
        assert all(re.fullmatch(r"20(0[7-9]|1[01])_\d{6}", i) for i in ids)
    assert len(splits["train_aug"]) == 14 and len(splits["val"]) == 4 and len(splits["train"]) == 2
    assert set(splits["train"]) <= set(splits["train_aug"]) and not set(splits["val"]) & set(splits["train_aug"])
    plain = {p.stem for p in (root / "SegmentationClass").iterdir()}
    augmented = {p.stem for p in (root / "SegmentationClassAug").iterdir()}
    assert plain == set(splits["train"]) | set(splits["val"])
    assert augmented == set(splits["train_aug"]) | set(splits["val"])


def test_images_have_vocs_sizes_and_xml_its_fields(voc_shaped) -> None:
    root, splits = voc_shaped
    dataset = VOCDataset(root, "train_aug", masks="SegmentationClassAug")
    assert dataset.classes == VOC_CLASS_LIST
    for image_id in splits["train_aug"]:
        with Image.open(root / "JPEGImages" / f"{image_id}.jpg") as image:
            assert image.format == "JPEG" and max(image.size) == 500 and 281 <= min(image.size) <= 500
            width, height = image.size
        annotation = ET.parse(root / "Annotations" / f"{image_id}.xml").getroot()
        assert annotation.findtext("filename") == f"{image_id}.jpg"
        assert (int(annotation.findtext("size/width")), int(annotation.findtext("size/height"))) == (width, height)
        objects = annotation.findall("object")
        assert objects and all(o.findtext("name") in VOC_CLASSES for o in objects)
        for field in ("pose", "truncated", "difficult", "bndbox/xmin", "bndbox/ymin", "bndbox/xmax", "bndbox/ymax"):
            assert all(o.findtext(field) is not None for o in objects)
        mask = dataset.load_mask(image_id)
        assert mask.shape == (height, width)
        labels = dataset.load_labels(image_id)  # from the XML
        assert set(labels) == {int(v) for v in np.unique(mask) if v not in (0, 255)}


def test_same_seed_same_files_and_a_used_folder_is_refused(voc_shaped, tmp_path: Path) -> None:
    root, splits = voc_shaped
    again = write_voc_shaped(tmp_path / "VOC2012", train_aug=14, val=4, seed=1, progress=False)
    assert again == splits
    image_id = splits["val"][0]
    for folder, suffix in (("JPEGImages", "jpg"), ("SegmentationClass", "png"), ("Annotations", "xml")):
        assert (tmp_path / "VOC2012" / folder / f"{image_id}.{suffix}").read_bytes() == \
            (root / folder / f"{image_id}.{suffix}").read_bytes()
    with pytest.raises(WssegError, match="not empty"):
        write_voc_shaped(root, train_aug=2, val=1, progress=False)
