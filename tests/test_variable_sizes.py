"""Splits whose images all differ in size (as in PASCAL VOC): an image's maps and segmentation
must not depend on which images share its batch, and no padding may enter the computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import write_voc
from wsseg.cli import main
from wsseg.data import SHAPES, VOCDataset, read_label_png
from wsseg.evaluate import load_result

# (height, width) per image: mostly all different, one equal pair side by side (shares a batch)
SIZES = [(64, 48), (40, 64), (56, 56), (56, 56), (64, 36), (48, 64), (33, 50)]


@pytest.fixture(scope="module")
def mixed(tiny_bench: Path, tmp_path_factory) -> Path:
    """Crops of the tiny benchmark's images (and masks) at the sizes above."""
    source = VOCDataset(tiny_bench, "train")
    samples = {}
    for index, (height, width) in enumerate(SIZES):
        sample = source[index % len(source)]
        crop = (slice(0, height), slice(0, width))
        if not set(np.unique(sample.mask[crop])) - {0, 255}:  # keep an object in view
            crop = (slice(-height, None), slice(-width, None))
        mask = sample.mask[crop]
        samples[f"2008_{index:06d}"] = {"mask": mask, "image": np.ascontiguousarray(sample.image[crop]),
                                         "objects": [SHAPES[c - 1] for c in np.unique(mask) if 0 < c < 255]}
    return write_voc(tmp_path_factory.mktemp("mixed"), samples, split="val", classes=SHAPES)


def _run(args: list[str]) -> None:
    assert main(args + ["--quiet"]) == 0


def test_maps_and_segmentations_do_not_depend_on_batch_neighbours(mixed: Path, tiny_run: Path, tmp_path: Path) -> None:
    common = ["--run", str(tiny_run), "--data", str(mixed), "--split", "val"]
    for batch in ("1", "4"):
        _run(["maps", *common, "--method", "dcsm", "--scales", "1", "--batch-size", batch,
              "--out", str(tmp_path / f"maps{batch}")])
        _run(["segment", *common, "--method", "dcsm-crf", "--scales", "1", "--batch-size", batch,
              "--out", str(tmp_path / f"seg{batch}")])
    dataset = VOCDataset(mixed, "val")
    for image_id, (height, width) in zip(dataset.ids, SIZES):
        alone_png = read_label_png(tmp_path / "seg1" / f"{image_id}.png", 6)
        assert alone_png.shape == (height, width)
        if SIZES.count((height, width)) > 1:
            continue  # shares a batch with its equal-size neighbour: checked in float32 below
        # an image of its own size is its own batch whatever --batch-size says: the same bytes
        for folder, suffix in (("maps", "npz"), ("seg", "png")):
            assert (tmp_path / f"{folder}1" / f"{image_id}.{suffix}").read_bytes() == \
                (tmp_path / f"{folder}4" / f"{image_id}.{suffix}").read_bytes()


def test_an_equal_size_batch_neighbour_changes_maps_only_by_float_rounding(mixed: Path, tiny_run: Path) -> None:
    import torch

    from wsseg.data.transforms import batch_tensor
    from wsseg.maps import DCSM
    from wsseg.models.run import load_run

    model, _ = load_run(tiny_run)
    dataset = VOCDataset(mixed, "val")
    pair = [i for i, size in enumerate(SIZES) if SIZES.count(size) > 1]
    images = batch_tensor([dataset.load_image(dataset.ids[i]) for i in pair])
    classes = [[label - 1 for label in dataset.load_labels(dataset.ids[i])] for i in pair]
    method = DCSM(scales=(1.0,))
    together = method(model, images, classes)
    for n in range(len(pair)):
        alone = method(model, images[n:n + 1], classes[n:n + 1])
        count = len(classes[n])
        assert torch.allclose(together[n, :count], alone[0, :count], atol=1e-5)


def test_evaluation_scores_a_split_of_mixed_sizes(mixed: Path, tiny_run: Path, tmp_path: Path) -> None:
    _run(["segment", "--run", str(tiny_run), "--data", str(mixed), "--split", "val", "--method", "cam",
          "--out", str(tmp_path / "cam")])
    _run(["evaluate", "--pred", str(tmp_path / "cam"), "--data", str(mixed), "--split", "val",
          "--json", str(tmp_path / "cam.json")])
    result = load_result(tmp_path / "cam.json")
    assert result["n_images"] == len(SIZES) and 0 < result["miou"] <= 1
