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
