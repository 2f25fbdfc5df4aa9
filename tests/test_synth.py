from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from scipy import ndimage

from wsseg.data import SHAPES, SynthConfig, VOCDataset, write_synthetic_dataset
from wsseg.data.voc import labels_from_mask


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    config = SynthConfig(train=6, val=3, size=64, seed=3)
    a = _digest(write_synthetic_dataset(tmp_path / "a", config, progress=False))
    b = _digest(write_synthetic_dataset(tmp_path / "b", config, progress=False))
    c = _digest(write_synthetic_dataset(tmp_path / "c", SynthConfig(train=6, val=3, size=64, seed=4), progress=False))
    assert a == b
    assert len(a) == 9 * 3 + 5  # image, mask, xml per image; 3 split files, classes.txt, synth.json
    assert a["JPEGImages/train_000000.jpg"] != c["JPEGImages/train_000000.jpg"]


def test_benchmark_is_a_valid_voc_dataset_with_void_bands(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "s", SynthConfig(train=24, val=4, size=80), progress=False)
    train = VOCDataset(root, "train")
    assert train.classes.foreground == SHAPES and len(SHAPES) >= 6
    assert len(train) == 24 and len(VOCDataset(root, "val")) == 4
    seen = set()
    for sample in train:
        assert sample.image.shape == (80, 80, 3)
        assert 1 <= len(sample.labels) <= 3
        # every annotated object is visible in the mask, and nothing else is
        assert sample.labels == labels_from_mask(sample.mask)
        # no object pixel touches a background pixel: a void band always separates them
        objects = (sample.mask != 0) & (sample.mask != 255)
        grown = ndimage.binary_dilation(objects, structure=np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]]))
        assert not (grown & (sample.mask == 0)).any()
        seen.update(sample.labels)
    assert len(seen) >= 5


def test_colour_does_not_tell_the_classes_apart(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "s", SynthConfig(train=60, val=0, size=64), progress=False)
    means: dict[int, list[np.ndarray]] = {}
    for sample in VOCDataset(root, "train"):
        for label in sample.labels:
            means.setdefault(label, []).append(sample.image[sample.mask == label].mean(0))
    class_means = np.array([np.mean(v, 0) for v in means.values()])
    spread_within = np.mean([np.std(v, 0).mean() for v in means.values()])
    assert np.ptp(class_means, axis=0).max() < spread_within  # classes overlap in colour


def test_glyphs_are_deterministic_and_masks_agree_with_xml_and_class_list(tmp_path: Path) -> None:
    from wsseg.data.glyphs import GLYPHS
    from wsseg.data.voc import read_annotation_labels

    config = SynthConfig(kind="glyphs", train=30, val=6, size=160, seed=5)
    root = write_synthetic_dataset(tmp_path / "a", config, progress=False)
    assert _digest(root) == _digest(write_synthetic_dataset(tmp_path / "b", config, progress=False))
    train = VOCDataset(root, "train")
    assert train.classes.foreground == tuple(GLYPHS) and len(GLYPHS) == 20
    aspects, areas, counts, seen = [], [], [], set()
    for sample in train:
        height, width = sample.image.shape[:2]
        assert sample.mask.shape == (height, width)
        assert 0.6 * 160 - 1 <= max(height, width) <= 160
        aspects.append(width / height)
        # the XML names exactly the classes visible in the mask, and records the image's size
        xml = root / "Annotations" / f"{sample.id}.xml"
        assert set(read_annotation_labels(xml, train.classes)) == set(labels_from_mask(sample.mask))
        text = xml.read_text()
        assert f"<width>{width}</width>" in text and f"<height>{height}</height>" in text
        counts.append(text.count("<object>"))
        for label in labels_from_mask(sample.mask):
            areas.append((sample.mask == label).mean())
        objects = (sample.mask != 0) & (sample.mask != 255)
        grown = ndimage.binary_dilation(objects, structure=np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]]))
        assert not (grown & (sample.mask == 0)).any()  # 1-pixel void band
        seen.update(sample.labels)
    assert min(aspects) < 0.85 and max(aspects) > 1.2  # portrait and landscape
    assert min(counts) == 1 and max(counts) >= 3 and max(counts) <= 4
    assert min(areas) < 0.05 and max(areas) > 0.2  # small and large objects
    assert len(seen) >= 12


def test_each_kind_keeps_its_own_defaults() -> None:
    assert (SynthConfig().resolved().train, SynthConfig().resolved().size) == (400, 128)
    glyphs = SynthConfig(kind="glyphs").resolved()
    assert (glyphs.train, glyphs.val, glyphs.size) == (600, 200, 224)
    assert SynthConfig(kind="glyphs", size=500).resolved().size == 500


def test_synth_refuses_a_folder_that_is_not_empty_unless_forced(tmp_path: Path, capsys) -> None:
    from wsseg.cli import main

    dataset = tmp_path / "mine"
    (dataset / "ImageSets" / "Segmentation").mkdir(parents=True)
    split = dataset / "ImageSets" / "Segmentation" / "train.txt"
    split.write_text("2007_000032\n")
    assert main(["synth", str(dataset), "--train", "2", "--val", "1", "--size", "32", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty" in err[0] and "--force" in err[0]
    assert split.read_text() == "2007_000032\n" and not (dataset / "classes.txt").exists()
    assert main(["synth", str(dataset), "--train", "2", "--val", "1", "--size", "32", "--quiet", "--force"]) == 0
    assert split.read_text() == "train_000000\ntrain_000001\n"
