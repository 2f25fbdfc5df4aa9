"""COCO-format datasets read as they come: recognition, rendering rules, the empty-image rule,
the same predictions and scores as the same data in the VOC layout, and one-line refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from wsseg.cli import main
from wsseg.data import VOCDataset, open_dataset
from wsseg.data.coco import COCODataset, rle_string_counts

H, W = 24, 32  # every test image is 32 x 24
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 90, "name": "toothbrush"}]


def rle_of(mask: np.ndarray, compressed: bool) -> dict:
    """pycocotools' RLE of a binary mask: compressed (a string) or as COCO writes crowds (a list of runs)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    if compressed:
        return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
    flat = mask.astype(np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0, *runs]
    return {"size": list(mask.shape), "counts": runs}


def box(x0: int, y0: int, x1: int, y1: int) -> list[float]:
    """A rectangle polygon; pycocotools fills pixels x0..x1-1, y0..y1-1."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def write_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)


def tiny_coco(root: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """The test dataset and each image's mask as computed by hand."""
    crowd = np.zeros((H, W), bool)
    crowd[:, 26:30] = True
    dog = np.zeros((H, W), bool)
    dog[5:9, 6:11] = True
    images = [
        {"id": 7, "file_name": "COCO_val2014_000000000007.jpg", "height": H, "width": W},
        {"id": 3, "file_name": "sub/COCO_val2014_000000000003.png", "height": H, "width": W},
        {"id": 11, "file_name": "COCO_val2014_000000000011.png", "height": H, "width": W},
    ]
    annotations = [
        # image 7: a person (polygon), a dog on it (uncompressed RLE, smaller: drawn over), a crowd (compressed RLE)
        {"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "segmentation": [box(2, 2, 20, 14)]},
        {"id": 2, "image_id": 7, "category_id": 18, "iscrowd": 0, "segmentation": rle_of(dog, False)},
        {"id": 3, "image_id": 7, "category_id": 1, "iscrowd": 1, "segmentation": rle_of(crowd, True)},
        # image 3: a small toothbrush of two polygons listed before a large person over the whole image
        {"id": 4, "image_id": 3, "category_id": 90, "iscrowd": 0,
         "segmentation": [box(0, 0, 4, 3), box(10, 10, 12, 20)]},
        {"id": 5, "image_id": 3, "category_id": 1, "iscrowd": 0, "segmentation": [box(0, 0, 32, 24)]},
        # image 11: no annotation at all
    ]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(
        {"info": {}, "images": images, "annotations": annotations, "categories": CATEGORIES}))
    for seed, image in enumerate(images):
        write_image(root / "val2014" / image["file_name"], seed)
    first = np.zeros((H, W), np.uint8)
    first[2:14, 2:20] = 1
    first[5:9, 6:11] = 2
    first[:, 26:30] = 255
    second = np.ones((H, W), np.uint8)
    second[0:3, 0:4] = 3
    second[10:20, 10:12] = 3
    expected = {"COCO_val2014_000000000007": first, "COCO_val2014_000000000003": second,
                "COCO_val2014_000000000011": np.zeros((H, W), np.uint8)}
    return root, expected


def test_masks_labels_and_ids_are_as_computed_by_hand(tmp_path: Path) -> None:
    root, expected = tiny_coco(tmp_path / "coco")
    dataset = open_dataset(root, "val2014")
    assert isinstance(dataset, COCODataset)
    # ids are file stems (the subfolder dropped), in the file's order; categories 1, 18, 90 -> 1, 2, 3
    assert dataset.ids == list(expected)
    assert dataset.classes.foreground == ("person", "dog", "toothbrush")
    for image_id, mask in expected.items():
        rendered = dataset.load_mask(image_id)
        assert rendered.dtype == np.uint8 and np.array_equal(rendered, mask), image_id
    # labels: non-crowd categories only; the image without annotations has none
    assert dataset.load_labels("COCO_val2014_000000000007") == (1, 2)
    assert dataset.load_labels("COCO_val2014_000000000003") == (1, 3)
    assert dataset.load_labels("COCO_val2014_000000000011") == ()
    sample = dataset.load("COCO_val2014_000000000003")
    assert sample.image.shape == (H, W, 3) and sample.labels == (1, 3)
    assert dataset.image_path("COCO_val2014_000000000003") == root / "val2014" / "sub" / "COCO_val2014_000000000003.png"


def test_the_json_itself_and_the_folder_are_recognised_and_voc_stays_voc(tmp_path: Path, tiny_voc: Path) -> None:
    root, expected = tiny_coco(tmp_path / "coco")
    by_file = open_dataset(root / "annotations" / "instances_val2014.json", "val")  # the JSON is its own split
    assert isinstance(by_file, COCODataset) and by_file.split == "val2014" and by_file.ids == list(expected)
    assert np.array_equal(by_file.load_mask("COCO_val2014_000000000007"), expected["COCO_val2014_000000000007"])
    assert type(open_dataset(tiny_voc, "train")) is VOCDataset
    with pytest.raises(Exception, match="no COCO annotations for split 'train2014'.*val2014"):
        open_dataset(root, "train2014")


def test_images_without_annotations_are_skipped_for_training_and_kept_for_evaluation(tmp_path: Path) -> None:
    root, _ = tiny_coco(tmp_path / "coco")
    dataset = open_dataset(root, "val2014")
    training = dataset.for_training()
    assert training.ids == ["COCO_val2014_000000000007", "COCO_val2014_000000000003"]
    assert training.skipped_unannotated == 1 and dataset.skipped_unannotated == 0
    # evaluation: scored as all background
    pred = tmp_path / "pred"
    pred.mkdir()
    for image_id in dataset.ids:
        Image.fromarray(np.zeros((H, W), np.uint8)).save(pred / f"{image_id}.png")
    assert main(["evaluate", "--pred", str(pred), "--data", str(root), "--split", "val2014", "--json",
                 str(tmp_path / "s.json"), "--quiet"]) == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["n_images"] == 3
    confusion = np.array(scores["confusion"])
    valid = sum(int((mask != 255).sum()) for mask in tiny_coco(tmp_path / "again")[1].values())
    assert confusion.sum() == valid and confusion[:, 0].sum() == valid  # void ignored, every pixel predicted 0


def test_the_index_is_built_once_per_process(tmp_path: Path) -> None:
    root, _ = tiny_coco(tmp_path / "coco")
    first, second = open_dataset(root, "val2014"), open_dataset(root, "val2014")
    assert first.index is second.index
    import pickle

    clone = pickle.loads(pickle.dumps(first))  # a spawned worker's copy: the index is not pickled
    assert clone.index is first.index and len(pickle.dumps(first)) < len(first.index.annotations) + 4000


def test_duplicate_stems_are_refused(tmp_path: Path) -> None:
    root, _ = tiny_coco(tmp_path / "coco")
    path = root / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    data["images"][2]["file_name"] = "other/COCO_val2014_000000000007.png"
    path.write_text(json.dumps(data))
    with pytest.raises(Exception, match="same stem"):
        open_dataset(root, "val2014")


def _voc_as_coco(voc: Path, split: str, out: Path, coco_split: str) -> None:
    """The VOC split ``split`` written as COCO: each class of a mask one object (RLE), void one crowd
    region, category ids with gaps, half the images in a subfolder."""
    dataset = VOCDataset(voc, split)
    categories = [{"id": 3 * k + 2, "name": name} for k, name in enumerate(dataset.classes.foreground)]
    images, annotations = [], []
    for number, image_id in enumerate(dataset.ids):
        mask = dataset.load_mask(image_id)
        source = dataset.image_path(image_id)
        name = f"{'deep/' if number % 2 else ''}{image_id}{source.suffix}"
        (out / coco_split / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out / coco_split / name)
        images.append({"id": 1000 + number, "file_name": name, "height": mask.shape[0], "width": mask.shape[1]})
        for value in [*dataset.load_labels(image_id), 255]:
            region = mask == value
            if region.any():
                annotations.append({"id": len(annotations) + 1, "image_id": 1000 + number, "iscrowd": int(value == 255),
                                    "category_id": categories[0 if value == 255 else value - 1]["id"],
                                    "segmentation": rle_of(region, compressed=bool(number % 2))})
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    (out / "annotations" / f"instances_{coco_split}.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}))


def test_the_same_data_as_voc_and_as_coco_gives_the_same_predictions_and_scores(
        tiny_bench: Path, tiny_run: Path, tmp_path: Path) -> None:
    coco = tmp_path / "coco"
    _voc_as_coco(tiny_bench, "val", coco, "val2014")
    voc_set, coco_set = VOCDataset(tiny_bench, "val"), open_dataset(coco, "val2014")
    assert coco_set.ids == voc_set.ids
    for image_id in voc_set.ids:
        assert coco_set.load_labels(image_id) == voc_set.load_labels(image_id)
        assert np.array_equal(coco_set.load_mask(image_id), voc_set.load_mask(image_id))
    outputs = {}
    for name, data, split in (("voc", tiny_bench, "val"), ("coco", coco, "val2014")):
        common = ["--run", str(tiny_run), "--data", str(data), "--split", split, "--quiet"]
        for labels in ("gt", "predicted"):
            out = tmp_path / f"{name}-{labels}"
            assert main(["segment", *common, "--method", "cam", "--labels", labels, "--out", str(out)]) == 0
            scores = tmp_path / f"{name}-{labels}.json"
            assert main(["evaluate", "--pred", str(out), "--data", str(data), "--split", split, "--json", str(scores),
                         "--quiet"]) == 0
            outputs[name, labels] = ({p.name: p.read_bytes() for p in sorted(out.glob("*.png"))},
                                     json.loads(scores.read_text()))
    for labels in ("gt", "predicted"):
        (voc_pngs, voc_scores), (coco_pngs, coco_scores) = outputs["voc", labels], outputs["coco", labels]
        assert len(voc_pngs) == len(voc_set) and voc_pngs == coco_pngs
        for key in ("miou", "confusion", "iou", "n_images"):
            assert voc_scores.get(key) == coco_scores.get(key), key


def test_train_on_coco_records_the_categories_and_skips_unannotated_images(
        tiny_bench: Path, tmp_path: Path, capsys) -> None:
    coco = tmp_path / "coco"
    _voc_as_coco(tiny_bench, "train", coco, "train2014")
    _voc_as_coco(tiny_bench, "val", coco, "val2014")
    path = coco / "annotations" / "instances_train2014.json"
    data = json.loads(path.read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 1000]  # image 0: no annotation
    path.write_text(json.dumps(data))
    run = tmp_path / "run"
    assert main(["train", "--data", str(coco), "--split", "train2014", "--val-split", "val2014", "--out", str(run),
                 "--epochs", "1", "--image-size", "64", "--batch-size", "4", "--device", "cpu", "--workers", "1"]) == 0
    assert "1 image(s) without any annotation skipped" in capsys.readouterr().out  # read by a forked worker
    config = json.loads((run / "config.json").read_text())
    assert config["classes"] == list(VOCDataset(tiny_bench, "val").classes.foreground)


def test_export_voc_writes_a_voc_copy_that_reads_the_same(tmp_path: Path) -> None:
    root, expected = tiny_coco(tmp_path / "coco")
    out = tmp_path / "voc"
    assert main(["export-voc", "--data", str(root), "--split", "val2014", "--out", str(out), "--quiet"]) == 0
    copy = VOCDataset(out, "val2014")
    assert copy.ids == list(expected) and copy.classes.foreground == ("person", "dog", "toothbrush")
    for image_id, mask in expected.items():
        assert np.array_equal(copy.load_mask(image_id), mask)
    assert copy.load_labels("COCO_val2014_000000000007") == (1, 2)
    assert copy.load_labels("COCO_val2014_000000000011") == ()
    # again into the same folder: allowed (its record); a folder of other files: refused
    assert main(["export-voc", "--data", str(root), "--split", "val2014", "--out", str(out), "--quiet"]) == 0
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("x")
    assert main(["export-voc", "--data", str(root), "--split", "val2014", "--out", str(tmp_path / "theirs"),
                 "--quiet"]) == 2


def _spoil(root: Path, how: str) -> Path:
    path = root / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    if how == "missing keys":
        del data["categories"]
    elif how == "two-point polygon":
        data["annotations"][0]["segmentation"] = [[1, 1, 5, 5]]
    elif how == "unknown category":
        data["annotations"][1]["category_id"] = 2
    elif how == "NaN coordinate":
        data["annotations"][0]["segmentation"] = [[1, 1, float("nan"), 1, 10, 8]]
    elif how == "huge coordinate":  # pycocotools would walk 10 million pixels of edge
        data["annotations"][0]["segmentation"] = [[1, 1, 1e7, 1, 10, 8]]
    elif how in ("short RLE", "long RLE", "RLE characters", "cut RLE"):
        side = {"short RLE": (2, 2), "long RLE": (H * 2, W)}.get(how, (H, W))
        counts = rle_of(np.ones(side, bool), True)["counts"]
        counts = {"RLE characters": "~~~~", "cut RLE": counts + "h"}.get(how, counts)  # 'h': a continuation
        data["annotations"][2]["segmentation"] = {"size": [H, W], "counts": counts}
    elif how == "neither segmentation nor box":
        del data["annotations"][0]["segmentation"]
    elif how == "missing image":
        os.unlink(root / "val2014" / "sub" / "COCO_val2014_000000000003.png")
    elif how == "2 GB":
        path.write_text("{}")
        os.truncate(path, 2 * 2 ** 30 + 1)  # sparse: the size is claimed, not written
        return path
    elif how == "deep":
        path.write_text("[" * 100_000 + "]" * 100_000)
        return path
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("how, problem", [
    ("missing keys", "has no 'categories'"),
    ("two-point polygon", "polygon 0 has 2 points"),
    ("unknown category", "category_id 2 is not in 'categories'"),
    ("missing image", "image file is missing"),
    ("NaN coordinate", "polygon 0 has a coordinate that is not a finite number"),
    ("huge coordinate", "polygon 0 has a coordinate that is not a finite number within one image size"),
    ("short RLE", "RLE counts are not non-negative runs covering the image"),
    ("long RLE", "RLE counts are not non-negative runs covering the image"),
    ("RLE characters", "not a valid compressed RLE string"),
    ("cut RLE", "not a valid compressed RLE string"),
    ("neither segmentation nor box", "has neither a segmentation nor a valid 'bbox'"),
    ("2 GB", "above the 1024 MiB limit"),
    ("deep", "nested too deeply"),
])
def test_bad_coco_files_are_one_line_and_exit_2(tmp_path: Path, capsys, how: str, problem: str) -> None:
    root, _ = tiny_coco(tmp_path / "coco")
    _spoil(root, how)
    code = main(["export-voc", "--data", str(root), "--split", "val2014", "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert problem in err and ("instances_val2014.json" in err or "COCO_val2014_000000000003.png" in err), err


def test_a_deep_json_is_one_line_in_a_real_process(tmp_path: Path) -> None:
    root, _ = tiny_coco(tmp_path / "coco")
    path = _spoil(root, "deep")
    done = subprocess.run([sys.executable, "-m", "wsseg", "evaluate", "--pred", str(tmp_path), "--data", str(path)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "nested too deeply" in done.stderr


@pytest.fixture(scope="module")
def coco_bench(tiny_bench: Path, tmp_path_factory) -> Path:
    """tiny_bench as COCO (train2014, val2014), its first training image left without annotations."""
    coco = tmp_path_factory.mktemp("coco-bench")
    _voc_as_coco(tiny_bench, "train", coco, "train2014")
    _voc_as_coco(tiny_bench, "val", coco, "val2014")
    path = coco / "annotations" / "instances_train2014.json"
    data = json.loads(path.read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 1000]
    path.write_text(json.dumps(data))
    return coco


def test_every_command_runs_on_coco(coco_bench: Path, tiny_run: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    train = ["--data", str(coco_bench), "--split", "train2014", "--quiet"]
    val = ["--data", str(coco_bench), "--split", "val2014", "--quiet"]
    assert main(["maps", "--run", str(run), *val, "--method", "cam", "--scales", "1", "--out",
                 str(tmp_path / "maps")]) == 0
    assert len(list((tmp_path / "maps").glob("*.npz"))) == 4
    assert main(["tune-background", "--run", str(run), *val, "--method", "cam", "--thresholds", "0.3,0.5",
                 "--scales", "1"]) == 0
    pseudo = tmp_path / "pseudo"  # the image without annotations gets an all-background pseudo-label
    assert main(["segment", "--run", str(run), *train, "--labels", "gt", "--method", "cam-crf", "--ignore-uncertain",
                 "--scales", "1", "--out", str(pseudo)]) == 0
    assert len(list(pseudo.glob("*.png"))) == 8
    assert main(["train-affinity", "--run", str(run), *train, "--pseudo", str(pseudo), "--epochs", "1",
                 "--batch-size", "4"]) == 0
    seg = tmp_path / "seg"
    assert main(["train-seg", *train, "--val-split", "val2014", "--pseudo", str(pseudo), "--out", str(seg),
                 "--epochs", "1", "--batch-size", "4", "--crop-size", "64", "--device", "cpu"]) == 0
    folder = tmp_path / "results"
    assert main(["segment", "--run", str(seg), *val, "--method", "seg", "--out", str(folder / "predictions" / "seg")]) == 0
    assert main(["evaluate", "--pred", str(folder / "predictions" / "seg"), *val, "--json",
                 str(folder / "scores" / "seg.json")]) == 0
    assert main(["report", str(folder), "--data", str(coco_bench), "--run", str(run), "--split", "val2014",
                 "--examples", "2", "--quiet"]) == 0
    assert (folder / "report" / "index.html").is_file()
    assert json.loads((seg / "config.json").read_text())["classes"] == json.loads(
        (run / "config.json").read_text())["classes"]


def test_torchrun_sharding_on_coco_equals_one_process(coco_bench: Path, tiny_run: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": os.pathsep.join(sys.path)}
    args = ["segment", "--run-dir", str(tiny_run), "--data", str(coco_bench), "--split", "train2014",
            "--batch-size", "3", "--method", "cam", "--scales", "1", "--quiet"]
    one = subprocess.run([sys.executable, "-m", "wsseg", *args, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=300, env=env)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29571", "-m", "wsseg", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    files = {name: {p.name: p.read_bytes() for p in sorted((tmp_path / name).glob("*.png"))} for name in ("one", "two")}
    assert len(files["one"]) == 8 and files["one"] == files["two"]


def test_outputs_inside_a_coco_dataset_s_folders_are_refused(tmp_path: Path, capsys) -> None:
    root, expected = tiny_coco(tmp_path / "coco")
    pred = tmp_path / "pred"
    pred.mkdir()
    for image_id, mask in expected.items():
        Image.fromarray(mask).save(pred / f"{image_id}.png")
    for where in (root / "val2014" / "scores.json", root / "annotations" / "scores.json"):
        for data in (root, root / "annotations" / "instances_val2014.json"):
            assert main(["evaluate", "--pred", str(pred), "--data", str(data), "--split", "val2014", "--json",
                         str(where), "--quiet"]) == 2
            assert "dataset's" in capsys.readouterr().err
    assert not (root / "val2014" / "scores.json").exists()


def test_an_exif_turned_image_gets_its_mask_turned_alike(tmp_path: Path) -> None:
    root, expected = tiny_coco(tmp_path / "coco")
    path = root / "val2014" / "sub" / "COCO_val2014_000000000003.png"
    image = Image.open(path)
    exif = image.getexif()
    exif[0x0112] = 6  # shown turned a quarter: 24 wide, 32 high
    image.save(path, exif=exif)
    dataset = open_dataset(root, "val2014")
    sample = dataset.load("COCO_val2014_000000000003")
    assert sample.image.shape == (W, H, 3)
    turned = np.asarray(Image.fromarray(expected["COCO_val2014_000000000003"]).transpose(Image.Transpose.ROTATE_270))
    assert np.array_equal(sample.mask, turned)


def test_the_json_named_as_data_records_its_own_split_for_the_trainers(coco_bench: Path, tiny_run: Path,
                                                                       tmp_path: Path) -> None:
    """--data naming the JSON: segment records the JSON's split, so train-affinity on it accepts them."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    data = coco_bench / "annotations" / "instances_train2014.json"
    pseudo = tmp_path / "pseudo"
    assert main(["segment", "--run", str(run), "--data", str(data), "--labels", "gt", "--method", "cam",
                 "--scales", "1", "--out", str(pseudo), "--quiet"]) == 0
    assert json.loads((pseudo / "segment.json").read_text())["split"] == "train2014"
    assert main(["train-affinity", "--run", str(run), "--data", str(data), "--pseudo", str(pseudo), "--epochs", "1",
                 "--batch-size", "4", "--limit", "4", "--quiet"]) == 0


def test_evaluate_json_never_replaces_a_file_of_a_coco_dataset_named_by_its_json(tmp_path: Path, capsys) -> None:
    """Roboflow's layout (train/_annotations.coco.json beside the images and a README): --data naming
    the JSON protects the whole dataset, not the JSON alone."""
    root, expected = tiny_coco(tmp_path / "coco")
    train = tmp_path / "rf" / "train"
    shutil.copytree(root / "val2014", train)
    shutil.copy(root / "annotations" / "instances_val2014.json", train / "_annotations.coco.json")
    readme = train / "README.roboflow.txt"
    readme.write_text("the user's notes")
    pred = tmp_path / "pred"
    pred.mkdir()
    for image_id, mask in expected.items():
        Image.fromarray(mask).save(pred / f"{image_id}.png")
    for target in (readme, train / "COCO_val2014_000000000007.jpg"):
        before = target.read_bytes()
        assert main(["evaluate", "--pred", str(pred), "--data", str(train / "_annotations.coco.json"), "--json",
                     str(target), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "is a file of the dataset" in err and len(err.strip().splitlines()) == 1, err
        assert target.read_bytes() == before
    # Label Studio's result.json beside images/: a new file inside its images folder is refused too
    (tmp_path / "ls" / "images").mkdir(parents=True)
    shutil.copy(train / "_annotations.coco.json", tmp_path / "ls" / "result.json")
    assert main(["evaluate", "--pred", str(pred), "--data", str(tmp_path / "ls" / "result.json"), "--json",
                 str(tmp_path / "ls" / "images" / "scores.json"), "--quiet"]) == 2
    assert "dataset's images folder" in capsys.readouterr().err


def test_compressed_rle_strings_decode_to_pycocotools_runs() -> None:
    """The check of a compressed string decodes it as pycocotools does: the same runs as the mask's."""
    rng = np.random.default_rng(0)
    for density in (0.02, 0.5, 0.98):
        mask = rng.random((H, W)) < density
        mask[0, 0] = density > 0.9  # a mask starting with a 1 too
        assert rle_string_counts(rle_of(mask, True)["counts"]) == rle_of(mask, False)["counts"]
    big = np.zeros((300, 400), bool)
    big[1:, :] = True  # runs longer than one 5-bit group, and a difference from the run two before
    assert rle_string_counts(rle_of(big, True)["counts"]) == rle_of(big, False)["counts"]


def test_a_box_without_a_segmentation_labels_its_image_and_is_void_in_its_mask(tmp_path: Path) -> None:
    """Label Studio's rectangles ("segmentation": []) and a missing segmentation alike: the image's
    label, and void (unknown) inside the box, over any object drawn there."""
    root, expected = tiny_coco(tmp_path / "coco")
    path = root / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    data["annotations"] += [
        {"id": 20, "image_id": 11, "category_id": 18, "segmentation": [], "bbox": [3, 4, 5.5, 2]},
        {"id": 21, "image_id": 11, "category_id": 90, "bbox": [-2, 20, 4, 10]},  # reaches past the corner
        {"id": 22, "image_id": 7, "category_id": 90, "segmentation": [], "bbox": [0, 0, 3, 3]},
    ]
    path.write_text(json.dumps(data))
    dataset = open_dataset(root, "val2014")
    assert dataset.load_labels("COCO_val2014_000000000011") == (2, 3)
    assert dataset.load_labels("COCO_val2014_000000000007") == (1, 2, 3)
    empty = np.zeros((H, W), np.uint8)
    empty[4:6, 3:9] = 255  # x 3..8.5 -> columns 3..8, y 4..6 -> rows 4, 5
    empty[20:24, 0:2] = 255
    assert np.array_equal(dataset.load_mask("COCO_val2014_000000000011"), empty)
    first = expected["COCO_val2014_000000000007"].copy()
    first[0:3, 0:3] = 255  # over the person drawn at 2..
    assert np.array_equal(dataset.load_mask("COCO_val2014_000000000007"), first)


def test_a_pycocotools_error_while_rendering_is_one_data_error(tmp_path: Path, monkeypatch) -> None:
    """Anything pycocotools refuses that the index's checks did not foresee names the file (so
    --skip-bad can skip the image) rather than ending in a traceback."""
    from wsseg.data import coco
    from wsseg.errors import DataError

    root, _ = tiny_coco(tmp_path / "coco")
    dataset = open_dataset(root, "val2014")

    def refuse(*args, **kwargs):
        raise ValueError("Invalid RLE mask representation")

    monkeypatch.setattr(coco.mask_utils, "decode", refuse)
    with pytest.raises(DataError, match="COCO_val2014_000000000007.jpg: cannot render its annotations"):
        dataset.load_mask("COCO_val2014_000000000007")


def _one_image_coco(json_path: Path, file_name: str) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": file_name, "height": H, "width": W}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 18, "segmentation": [box(2, 2, 20, 14)]}],
        "categories": CATEGORIES}))


@pytest.mark.parametrize("tool", ["Label Studio", "CVAT"])
def test_the_images_of_label_studio_and_cvat_exports_are_found(tmp_path: Path, tool: str) -> None:
    """Label Studio: result.json beside images/, file_name 'images/x.png'; CVAT and Datumaro:
    annotations/instances_default.json and images/default/x.png, file_name 'x.png'."""
    root = tmp_path / "export"
    if tool == "Label Studio":
        data, image = root / "result.json", root / "images" / "x.png"
        _one_image_coco(data, "images/x.png")
    else:
        data, image = root, root / "images" / "default" / "x.png"
        _one_image_coco(root / "annotations" / "instances_default.json", "x.png")
    write_image(image, 0)
    dataset = open_dataset(data, "default")
    assert dataset.ids == ["x"] and dataset.image_path("x") == image
    sample = dataset.load("x")
    assert sample.labels == (2,) and sample.image.shape == (H, W, 3) and (sample.mask == 2).sum() == 18 * 12


def test_an_image_linked_from_outside_the_dataset_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "export"
    _one_image_coco(root / "result.json", "x.png")
    write_image(tmp_path / "elsewhere.png", 0)
    (root / "images").mkdir()
    (root / "images" / "x.png").symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(Exception, match="outside"):
        open_dataset(root / "result.json").load("x")


@pytest.mark.parametrize("orientation, side", [(3, (H, W)), (2, (H, W)), (6, (H, H))])
def test_a_mask_whose_exif_orientation_cannot_be_told_is_refused(tmp_path: Path, orientation: int,
                                                                  side: tuple[int, int]) -> None:
    """A half turn or a mirror keeps the size, as does a turned square: whether the JSON describes the
    stored or the shown pixels cannot be told, so the image is refused (the VOC rule), never guessed."""
    root = tmp_path / "coco"
    path = root / "default" / "x.png"
    path.parent.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.zeros((*side, 3), np.uint8)).save(path, exif=exif)
    _one_image_coco(root / "annotations" / "instances_default.json", "x.png")
    data = json.loads((root / "annotations" / "instances_default.json").read_text())
    data["images"][0].update(height=side[0], width=side[1])
    (root / "annotations" / "instances_default.json").write_text(json.dumps(data))
    dataset = open_dataset(root, "default")
    with pytest.raises(Exception, match=f"EXIF orientation {orientation}"):
        dataset.load_mask("x")
    assert main(["export-voc", "--data", str(root), "--split", "default", "--out", str(tmp_path / "out"),
                 "--quiet"]) == 2


def _rename_image(root: Path, number: int, file_name: str) -> None:
    """Give images[number] of tiny_coco another file name (the file moved alike)."""
    path = root / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    old = root / "val2014" / data["images"][number]["file_name"]
    data["images"][number]["file_name"] = file_name
    path.write_text(json.dumps(data))
    Image.open(old).save(root / "val2014" / file_name)
    old.unlink()


def test_export_voc_converts_images_the_voc_reader_does_not_open(tmp_path: Path) -> None:
    """.webp and .bmp images become PNGs: the copy reads back with the same pixels and masks."""
    root, expected = tiny_coco(tmp_path / "coco")
    _rename_image(root, 1, "COCO_val2014_000000000003.webp")
    _rename_image(root, 2, "COCO_val2014_000000000011.bmp")
    coco = open_dataset(root, "val2014")
    out = tmp_path / "voc"
    assert main(["export-voc", "--data", str(root), "--split", "val2014", "--out", str(out), "--quiet"]) == 0
    copy = VOCDataset(out, "val2014")
    for image_id, mask in expected.items():
        sample = copy.load(image_id)
        assert np.array_equal(sample.mask, mask) and np.array_equal(sample.image, coco.load_image(image_id))
    assert sorted(p.name for p in (out / "JPEGImages").iterdir()) == [
        "COCO_val2014_000000000003.png", "COCO_val2014_000000000007.jpg", "COCO_val2014_000000000011.png"]


def test_export_voc_refuses_ids_with_spaces_before_writing_and_skips_them_with_skip_bad(tmp_path: Path,
                                                                                        capsys) -> None:
    root, expected = tiny_coco(tmp_path / "coco")
    _rename_image(root, 2, "photo 1.png")
    out = tmp_path / "voc"
    assert main(["export-voc", "--data", str(root), "--split", "val2014", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "image id 'photo 1' has a space" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    assert main(["export-voc", "--data", str(root), "--split", "val2014", "--out", str(out), "--skip-bad"]) == 0
    assert "1 bad images skipped" in capsys.readouterr().out
    copy = VOCDataset(out, "val2014")
    assert copy.ids == ["COCO_val2014_000000000007", "COCO_val2014_000000000003"]
    assert np.array_equal(copy.load_mask("COCO_val2014_000000000003"), expected["COCO_val2014_000000000003"])


@pytest.mark.parametrize("name, problem", [
    ("Background", "is background"), ("__background__", "is background"), ("#dog", "starts with '#'"),
    ("big\ndog", "has a line break"), (" dog", "leading or trailing spaces"), ("person", "same name 'person'"),
])
def test_category_names_classes_txt_cannot_carry_are_refused(tmp_path: Path, capsys, name: str,
                                                             problem: str) -> None:
    """Every category name must read back from export-voc's classes.txt as itself (VOC's reader strips
    lines, skips '#' lines and takes 'background' for index 0)."""
    root, _ = tiny_coco(tmp_path / "coco")
    path = root / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    data["categories"][1]["name"] = name
    path.write_text(json.dumps(data))
    assert main(["export-voc", "--data", str(root), "--split", "val2014", "--out", str(tmp_path / "voc"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert problem in err and "instances_val2014.json" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "voc").exists()


def test_export_voc_never_replaces_an_image_another_split_of_the_folder_lists(tmp_path: Path, capsys) -> None:
    root, _ = tiny_coco(tmp_path / "coco")
    out = tmp_path / "voc"
    assert main(["export-voc", "--data", str(root), "--split", "val2014", "--out", str(out), "--quiet"]) == 0
    # another split whose images have the same stems but other pixels
    shutil.copy(root / "annotations" / "instances_val2014.json", root / "annotations" / "instances_other.json")
    for image in (root / "val2014").rglob("*.*"):
        write_image(root / "other" / image.relative_to(root / "val2014"), 99)
    before = {p.name: p.read_bytes() for p in (out / "JPEGImages").iterdir()}
    assert main(["export-voc", "--data", str(root), "--split", "other", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "val2014.txt: already lists image 'COCO_val2014_000000000007'" in err, err
    assert {p.name: p.read_bytes() for p in (out / "JPEGImages").iterdir()} == before
    assert not (out / "ImageSets" / "Segmentation" / "other.txt").exists()
