from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wsseg.cli import main
from wsseg.data.transforms import batch_tensor
from wsseg.data.voc import VOCDataset
from wsseg.maps import CAM
from wsseg.maps.export import read_maps
from wsseg.runner import predict_labels
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


def test_segment_fuses_stored_maps_as_it_fuses_computed_ones(tiny_run: Path, tiny_bench: Path, tmp_path: Path,
                                                             capsys) -> None:
    import json
    import shutil

    run = tmp_path / "run"  # a copy, to give it pipeline A's mi-SVM
    shutil.copytree(tiny_run, run)
    common = ["--run", str(run), "--data", str(tiny_bench), "--split", "val", "--scales", "1", "--quiet"]
    assert main(["train-misvm", "--run", str(run), "--data", str(tiny_bench), "--quiet"]) == 0
    assert main(["maps", *common, "--method", "dcsm", "--out", str(tmp_path / "dcsm")]) == 0
    record = json.loads((tmp_path / "dcsm" / "maps.json").read_text())
    assert record["method"] == "dcsm" and record["options"]["scales"] == [1.0] and record["labels"] == "gt"
    assert main(["maps", *common, "--method", "cam", "--out", str(tmp_path / "cam")]) == 0
    scores = {}
    for name, extra in (("computed", []), ("stored", ["--maps", str(tmp_path / "dcsm")])):
        out = tmp_path / name
        assert main(["segment", *common, "--method", "dcsm-crf", "--out", str(out), *extra]) == 0
        both = ["--maps", str(tmp_path / "cam"), "--maps", str(tmp_path / "dcsm")] if extra else []
        assert main(["segment", *common, "--method", "pipeline-b", "--out", str(out / "b"), *both]) == 0
        assert main(["segment", *common, "--method", "pipeline-a", "--out", str(out / "a"), *extra]) == 0
        assert main(["evaluate", "--pred", str(out), "--data", str(tiny_bench), "--split", "val", "--quiet",
                     "--json", str(tmp_path / f"{name}.json")]) == 0
        scores[name] = json.loads((tmp_path / f"{name}.json").read_text())["miou"]
    assert json.loads((tmp_path / "stored" / "segment.json").read_text())["stored_maps"] == {
        "dcsm": str(tmp_path / "dcsm")}
    # float32 files (float16 ones moved this mIoU by 8 points, see wsseg.maps.export): the same segmentations
    assert scores["computed"] == scores["stored"]
    ids = VOCDataset(tiny_bench, "val").ids
    for image_id in ids:
        for method in ("", "b/", "a/"):  # dcsm-crf, pipeline-b from two folders, pipeline-a with its features
            assert (tmp_path / "computed" / f"{method}{image_id}.png").read_bytes() == (
                tmp_path / "stored" / f"{method}{image_id}.png").read_bytes()
    # maps stored by a wsseg whose default DCSM normalisation was another: the files are raw maps,
    # normalised as they are read, so they still give today's segmentations
    record["options"]["normalization"] = "linear-minmax"
    (tmp_path / "dcsm" / "maps.json").write_text(json.dumps(record))
    older = tmp_path / "older"
    assert main(["segment", *common, "--method", "dcsm-crf", "--out", str(older),
                 "--maps", str(tmp_path / "dcsm")]) == 0
    for image_id in ids:
        assert (older / f"{image_id}.png").read_bytes() == (tmp_path / "computed" / f"{image_id}.png").read_bytes()


def test_segment_refuses_stored_maps_made_another_way(tiny_run: Path, tiny_bench: Path, tmp_path: Path,
                                                      capsys) -> None:
    import shutil

    from wsseg.models.run import read_checkpoint

    common = ["--run", str(tiny_run), "--data", str(tiny_bench), "--split", "val", "--quiet"]
    maps = tmp_path / "dcsm"
    assert main(["maps", *common, "--method", "dcsm", "--scales", "1", "--out", str(maps)]) == 0
    capsys.readouterr()
    other_run = tmp_path / "run"
    shutil.copytree(tiny_run, other_run)
    state = read_checkpoint(other_run / "model.pt")
    state["model"] = {key: value + 1e-3 if value.is_floating_point() else value
                      for key, value in state["model"].items()}
    torch.save(state, other_run / "model.pt")
    cases = [(["--method", "dcsm-crf"], "scales"),  # default three scales asked, one stored
             (["--method", "dcsm-crf", "--scales", "1", "--labels", "predicted"], "--labels gt here, predicted"),
             (["--method", "cam", "--scales", "1"], "dcsm maps, but cam reads cam maps"),
             (["--method", "pipeline-b", "--scales", "1"], "give a --maps folder for cam too"),
             (["--method", "dcsm-crf", "--scales", "1", "--run", str(other_run)], "made by the weights of")]
    for n, (extra, message) in enumerate(cases):
        out = tmp_path / f"seg{n}"
        assert main(["segment", *common, *extra, "--maps", str(maps), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"{maps / 'maps.json'}" in err or "--maps folder" in err
        assert message in err and err.count("\n") == 1, err
        assert not out.exists() or not any(out.glob("*.png"))  # nothing written
    image = tiny_bench / "JPEGImages" / f"{VOCDataset(tiny_bench, 'val').ids[0]}.jpg"
    assert main(["segment", "--run", str(tiny_run), "--image", str(image), "--maps", str(maps),
                 "--out", str(tmp_path / "one.png"), "--quiet"]) == 2
    assert "--maps fuses the maps of a split" in capsys.readouterr().err and not (tmp_path / "one.png").exists()
    # resuming a maps folder with other options would mix two kinds of maps
    assert main(["maps", *common, "--method", "dcsm", "--out", str(maps)]) == 2
    assert "holds other maps" in capsys.readouterr().err


def test_segment_refuses_to_resume_a_folder_made_with_other_options(tiny_run: Path, tiny_bench: Path,
                                                                    tmp_path: Path, capsys) -> None:
    out = tmp_path / "seg"
    common = ["segment", "--run", str(tiny_run), "--data", str(tiny_bench), "--split", "val", "--method", "cam",
              "--out", str(out), "--quiet"]
    assert main(common) == 0
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert main([*common, "--threshold", "0.3"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'segment.json'}: this folder holds segmentations made with another threshold" in err
    assert err.count("\n") == 1 and {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == written
    assert main(common) == 0 and "0 written, 4 already done" in capsys.readouterr().out  # same options resume


def test_map_side_changes_the_maps_is_recorded_and_a_useless_one_is_refused(tiny_run: Path, tiny_bench: Path,
                                                                             tmp_path: Path, capsys) -> None:
    """--map-side 32 computes the 64 px images' maps at 32 px (the run was trained at 64, so auto
    leaves them as they are): other maps, at the image's size, recorded in maps.json."""
    import json

    common = ["maps", "--run", str(tiny_run), "--data", str(tiny_bench), "--split", "val", "--method", "dcsm",
              "--scales", "1", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "auto")]) == 0
    assert main([*common, "--out", str(tmp_path / "small"), "--map-side", "32"]) == 0
    image_id = (tiny_bench / "ImageSets/Segmentation/val.txt").read_text().split()[0]
    auto, small = read_maps(tmp_path / "auto" / f"{image_id}.npz"), read_maps(tmp_path / "small" / f"{image_id}.npz")
    assert auto["maps"].shape == small["maps"].shape == (len(auto["labels"]), 64, 64)
    assert not np.allclose(auto["maps"], small["maps"], atol=1e-4)  # the stored maps are the raw, saturated ones
    assert json.loads((tmp_path / "small" / "maps.json").read_text())["options"]["max_side"] == 32
    capsys.readouterr()
    import pytest

    with pytest.raises(SystemExit) as refused:  # argparse's own refusal: usage and one error line
        main([*common, "--out", str(tmp_path / "tiny"), "--map-side", "8"])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "--map-side" in err and "at least 32" in err and "Traceback" not in err
    assert not (tmp_path / "tiny").exists()
    # maps that have no map side refuse one rather than ignore it
    assert main([*common, "--out", str(tmp_path / "grad"), "--map-side", "32", "--method", "gradient"]) == 2
    assert "no map side" in capsys.readouterr().err and not (tmp_path / "grad").exists()
