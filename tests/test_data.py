from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsseg.data import VOC_CLASSES, VOCDataset, labels_to_vector, read_image, read_label_png
from wsseg.data.classes import read_class_file
from wsseg.data.images import voc_palette
from wsseg.errors import DataError, WssegError

from conftest import write_voc


def test_ids_stay_strings_and_labels_come_from_xml_then_mask(tiny_voc: Path) -> None:
    dataset = VOCDataset(tiny_voc, "train")
    assert dataset.ids == ["2007_000032", "000123"]
    assert dataset.classes.foreground == ("cat", "dog", "person")
    first, second = dataset[0], dataset[1]
    assert first.id == "2007_000032" and first.labels == (1,)
    assert second.id == "000123" and second.labels == (3,)  # no XML: classes present in the mask
    assert first.image.shape == (6, 8, 3) and first.image.dtype == np.uint8
    assert first.mask[0, 0] == 255 and first.mask[2, 2] == 1
    np.testing.assert_array_equal(labels_to_vector(second.labels, 3), [0, 0, 1])


def test_default_class_list_is_voc_and_class_file_may_start_with_background(tmp_path: Path) -> None:
    root = write_voc(tmp_path / "d", {"a": {"mask": np.zeros((2, 2)), "objects": ["dog"]}}, classes=None)
    assert VOCDataset(root, "train").classes.foreground == VOC_CLASSES
    assert VOCDataset(root, "train")[0].labels == (VOC_CLASSES.index("dog") + 1,)
    path = tmp_path / "classes.txt"
    path.write_text("background\nfoo\nbar\n\n")
    assert read_class_file(path).foreground == ("foo", "bar")
    path.write_text("foo\nfoo\n")
    with pytest.raises(DataError, match="twice"):
        read_class_file(path)


def test_opening_a_huge_split_reads_no_image(tmp_path: Path) -> None:
    sets = tmp_path / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "trainaug.txt").write_text("".join(f"2008_{i:06d}\n" for i in range(10582)))
    start = time.perf_counter()
    dataset = VOCDataset(tmp_path, "trainaug")
    assert len(dataset) == 10582 and dataset.ids[5] == "2008_000005"
    assert time.perf_counter() - start < 2.0  # would be far slower if it touched 10,582 files
    with pytest.raises(DataError, match="2008_000000.jpg: image file is missing"):
        dataset[0]


def test_other_mask_folder(tiny_voc: Path) -> None:
    aug = tiny_voc / "SegmentationClassAug"
    aug.mkdir()
    Image.fromarray(np.full((6, 8), 2, np.uint8)).save(aug / "000123.png")  # plain 8-bit index PNG
    sample = VOCDataset(tiny_voc, "train", masks="SegmentationClassAug").load("000123")
    assert sample.labels == (2,) and (sample.mask == 2).all()


@pytest.mark.parametrize("bad_id", ["../etc/passwd", "a/b", "..", "/abs"])
def test_ids_that_escape_the_root_are_refused(tiny_voc: Path, bad_id: str) -> None:
    (tiny_voc / "ImageSets" / "Segmentation" / "evil.txt").write_text(f"{bad_id}\n")
    with pytest.raises(DataError, match="not allowed|separator"):
        VOCDataset(tiny_voc, "evil")


def test_symlink_out_of_root_is_refused(tiny_voc: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(outside)
    os.symlink(outside, tiny_voc / "JPEGImages" / "sneaky.png")
    with pytest.raises(DataError, match="outside the dataset root"):
        VOCDataset(tiny_voc, "train", ids=["sneaky"]).load_image("sneaky")


def test_unknown_class_in_xml_names_file_and_class(tiny_voc: Path) -> None:
    (tiny_voc / "Annotations" / "2007_000032.xml").write_text("<annotation><object><name>unicorn</name></object></annotation>")
    with pytest.raises(DataError, match=r"2007_000032\.xml: unknown class 'unicorn'"):
        VOCDataset(tiny_voc, "train")[0]


def test_mask_values_outside_range_and_size_mismatch(tiny_voc: Path) -> None:
    mask = np.zeros((6, 8), np.uint8)
    mask[0, 0] = 7
    Image.fromarray(mask).save(tiny_voc / "SegmentationClass" / "000123.png")
    with pytest.raises(DataError, match=r"000123\.png: mask has values \[7\] outside 0..3"):
        VOCDataset(tiny_voc, "train")[1]
    Image.fromarray(np.zeros((5, 8), np.uint8)).save(tiny_voc / "SegmentationClass" / "000123.png")
    with pytest.raises(DataError, match="mask is 8x5 but the image is 8x6"):
        VOCDataset(tiny_voc, "train")[1]


def test_rgb_colour_masks_map_back_through_the_palette(tmp_path: Path) -> None:
    labels = np.array([[0, 1], [2, 255]], np.uint8)
    Image.fromarray(voc_palette()[labels]).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "m.png", 3), labels)
    Image.fromarray(np.full((2, 2, 3), 7, np.uint8)).save(tmp_path / "odd.png")
    with pytest.raises(DataError, match="not a VOC palette class colour"):
        read_label_png(tmp_path / "odd.png", 3)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "CMYK", "P", "I;16", "1"])
def test_every_colour_mode_becomes_rgb(tmp_path: Path, mode: str) -> None:
    rgb = np.random.default_rng(1).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    image = Image.fromarray(rgb)
    if mode == "I;16":
        image = Image.fromarray((np.arange(35).reshape(5, 7) * 1800).astype(np.uint16))
    else:
        image = image.convert(mode)
    suffix = ".jpg" if mode == "CMYK" else ".png"
    image.save(tmp_path / f"x{suffix}")
    array = read_image(tmp_path / f"x{suffix}")
    assert array.shape == (5, 7, 3) and array.dtype == np.uint8
    if mode == "I;16":
        assert array[-1, -1, 0] == round(34 * 1800 / 65535 * 255)  # scaled, not clipped


@pytest.mark.parametrize("content,problem", [
    (b"", "empty"), (b"not an image at all", "cannot decode"), ("truncated", "cannot decode"),
])
def test_broken_images_name_the_file(tmp_path: Path, content, problem: str) -> None:
    path = tmp_path / "broken.jpg"
    if content == "truncated":
        Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 90).save(path, quality=95)
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"broken\.jpg: .*{problem}"):
        read_image(path)


def test_missing_split_is_a_clear_error(tiny_voc: Path) -> None:
    with pytest.raises(WssegError, match="nosuch.txt: split file is missing"):
        VOCDataset(tiny_voc, "nosuch")
