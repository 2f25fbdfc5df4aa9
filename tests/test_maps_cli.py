from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wsseg.cli import main
from wsseg.data.transforms import batch_tensor
from wsseg.data.voc import VOCDataset
from wsseg.maps import CAM
from wsseg.maps.export import predict_labels, read_maps
from wsseg.models.run import load_run


def test_maps_command_writes_npz_and_overlays_and_resumes(tiny_run: Path, tiny_bench: Path, tmp_path: Path,
                                                          capsys) -> None:
    out = tmp_path / "maps"
    args = ["maps", "--run", str(tiny_run), "--data", str(tiny_bench), "--split", "val", "--method", "dcsm",
            "--out", str(out), "--scales", "1", "--quiet"]
    assert main(args) == 0
    ids = (tiny_bench / "ImageSets/Segmentation/val.txt").read_text().split()
    for image_id in ids:
        arrays = read_maps(out / f"{image_id}.npz")
        mask = np.asarray(Image.open(tiny_bench / "SegmentationClass" / f"{image_id}.png"))
        present = sorted(int(v) for v in np.unique(mask) if v not in (0, 255))
        assert arrays["labels"].tolist() == present  # --labels gt
        assert arrays["maps"].shape == (len(present), 64, 64) and arrays["agnostic"].shape == (64, 64)
        overlay = Image.open(out / f"{image_id}.png")
        assert overlay.size == (64 * (1 + len(present)), 64)
    first = (out / f"{ids[0]}.npz").stat().st_mtime_ns
    assert main(args) == 0
    assert "0 written, 4 already done" in capsys.readouterr().out
    assert (out / f"{ids[0]}.npz").stat().st_mtime_ns == first


def test_predicted_labels_and_other_methods(tiny_run: Path, tiny_bench: Path, tmp_path: Path) -> None:
    dataset = VOCDataset(tiny_bench, "val")
    model, _ = load_run(tiny_run)
    images = batch_tensor([dataset.load_image(image_id) for image_id in dataset.ids])
    for threshold in (0.5, 0.0):  # 0: every class scores above it
        out = tmp_path / f"cam{threshold}"
        assert main(["maps", "--run", str(tiny_run), "--data", str(tiny_bench), "--split", "val", "--method", "cam",
                     "--labels", "predicted", "--label-threshold", str(threshold), "--out", str(out),
                     "--quiet"]) == 0
        predicted = predict_labels(model, images, threshold)
        expected = CAM().normalize(CAM()(model, images, predicted)) if threshold else None
        for n, image_id in enumerate(dataset.ids):
            arrays = read_maps(out / f"{image_id}.npz")
            assert arrays["labels"].tolist() == [c + 1 for c in predicted[n]] and "agnostic" not in arrays
            if threshold:
                raw = torch.from_numpy(arrays["maps"])[None]
                torch.testing.assert_close(CAM().normalize(raw)[0], expected[n, : len(predicted[n])],
                                           atol=2e-3, rtol=0)
            else:
                assert arrays["labels"].tolist() == list(range(1, dataset.num_classes + 1))


def test_maps_refuses_a_dataset_with_other_classes(tiny_run: Path, tiny_voc: Path, tmp_path: Path, capsys) -> None:
    assert main(["maps", "--run", str(tiny_run), "--data", str(tiny_voc), "--split", "train",
                 "--out", str(tmp_path / "m"), "--quiet"]) == 2
    assert "class lists must match" in capsys.readouterr().err
