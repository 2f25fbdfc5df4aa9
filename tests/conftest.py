"""Tiny VOC-layout datasets built inside the tests (offline, milliseconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsseg.data.images import write_label_png

CLASSES = ("cat", "dog", "person")


def write_voc(root: Path, samples: dict[str, dict], split: str = "train", classes=CLASSES) -> Path:
    """samples: id -> {"mask": HxW array, "objects": [names] or None (no XML), "image": array}."""
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages").mkdir(exist_ok=True)
    (root / "Annotations").mkdir(exist_ok=True)
    if classes is not None:
        (root / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    for image_id, spec in samples.items():
        mask = np.asarray(spec["mask"], np.uint8)
        image = spec.get("image")
        if image is None:
            image = np.random.default_rng(0).integers(0, 255, (*mask.shape, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.png")
        write_label_png(root / "SegmentationClass" / f"{image_id}.png", mask)
        objects = spec.get("objects")
        if objects is not None:
            body = "".join(f"<object><name>{name}</name></object>" for name in objects)
            (root / "Annotations" / f"{image_id}.xml").write_text(f"<annotation>{body}</annotation>")
    (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in samples))
    return root


def all_background_miou(dataset) -> float:
    """The mIoU of labelling every pixel background: the floor any method must beat."""
    from wsseg.evaluate import ConfusionMatrix

    matrix = ConfusionMatrix(dataset.num_classes + 1)
    for image_id in dataset.ids:
        truth = dataset.load_mask(image_id)
        matrix.update(np.zeros_like(truth), truth)
    return matrix.miou()


@pytest.fixture
def tiny_voc(tmp_path: Path) -> Path:
    """Two images with VOC-style ids that look like numbers (they must stay strings)."""
    a = np.zeros((6, 8), np.uint8)
    a[1:4, 1:4] = 1
    a[0, :] = 255
    b = np.zeros((6, 8), np.uint8)
    b[2:5, 4:8] = 3
    return write_voc(tmp_path / "voc", {
        "2007_000032": {"mask": a, "objects": ["cat"]},
        "000123": {"mask": b, "objects": None},
    })


@pytest.fixture(scope="session")
def tiny_bench(tmp_path_factory) -> Path:
    """A small synthetic benchmark: 8 train and 4 val images of 64 px."""
    from wsseg.data import SynthConfig, write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("bench"), SynthConfig(train=8, val=4, size=64),
                                   progress=False)


@pytest.fixture(scope="session")
def tiny_run(tiny_bench: Path, tmp_path_factory) -> Path:
    """A classifier trained for one epoch on the tiny benchmark."""
    from wsseg.train import TrainOptions, train

    run = tmp_path_factory.mktemp("run")
    train(TrainOptions(data=str(tiny_bench), out=str(run), epochs=1, image_size=64, batch_size=4, progress=False))
    return run
