from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsseg.cli import main
from wsseg.errors import WssegError
from wsseg.fusion import alpha_for_threshold, dense_crf, labels_from_maps, soft_probabilities


def test_threshold_background_by_hand() -> None:
    maps = np.array([[[0.9, 0.1, 0.3]], [[0.2, 0.05, 0.6]]], np.float32)  # classes 3 and 7
    np.testing.assert_array_equal(labels_from_maps(maps, [3, 7], 0.25), [[3, 0, 7]])
    np.testing.assert_array_equal(labels_from_maps(np.zeros((0, 1, 2)), [], 0.25), [[0, 0]])
    with pytest.raises(WssegError):
        labels_from_maps(maps, [3, 7], 1.5)


def test_soft_background_ties_with_a_class_at_the_threshold() -> None:
    threshold = 0.125
    assert (1 - threshold) ** alpha_for_threshold(threshold) == pytest.approx(threshold)
    probabilities = soft_probabilities(np.array([[[threshold, 0.9, 0.0]]]), threshold)
    assert probabilities.shape == (2, 1, 3)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, rtol=1e-5)
    assert probabilities[0, 0, 0] == pytest.approx(probabilities[1, 0, 0], rel=1e-3)
    assert probabilities[1, 0, 1] > 0.9 and probabilities[0, 0, 2] > 0.99


def test_dense_crf_cleans_a_noisy_unary() -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros((48, 64), np.int64)
    truth[:, 32:] = 1
    truth[10:30, 5:20] = 2
    colours = np.array([[200, 40, 40], [40, 40, 200], [40, 200, 40]], np.float32)
    image = np.clip(colours[truth] + rng.normal(0, 10, (48, 64, 3)), 0, 255).astype(np.uint8)
    clean = np.eye(3, dtype=np.float32)[truth].transpose(2, 0, 1)
    noisy = 0.45 * clean + rng.uniform(0, 1, clean.shape).astype(np.float32)
    noisy /= noisy.sum(0, keepdims=True)
    image.flags.writeable = False  # e.g. np.asarray of a PIL image: pydensecrf needs a writable buffer
    before = (noisy.argmax(0) == truth).mean()
    after = (dense_crf(image, noisy).argmax(0) == truth).mean()
    assert before < 0.85 and after > 0.98


def test_segment_split_scores_and_single_image(tiny_run: Path, tiny_bench: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "seg"
    for method in ("cam", "dcsm-crf", "pipeline-b"):
        assert main(["segment", "--run", str(tiny_run), "--data", str(tiny_bench), "--split", "val",
                     "--method", method, "--out", str(out / method), "--scales", "1", "--quiet"]) == 0
        assert main(["evaluate", "--pred", str(out / method), "--data", str(tiny_bench), "--split", "val",
                     "--quiet"]) == 0
    assert "4 images scored" in capsys.readouterr().out
    image = next((tiny_bench / "JPEGImages").glob("val_*.jpg"))
    assert main(["segment", "--run", str(tiny_run), "--image", str(image), "--method", "cam",
                 "--out", str(tmp_path / "one.png")]) == 0
    assert Image.open(tmp_path / "one.png").size == (64, 64)
    assert Image.open(tmp_path / "one_overlay.png").size == (64, 64)


def test_tune_background_stores_an_oracle_choice_that_segment_uses(tiny_run: Path, tiny_bench: Path, tmp_path: Path,
                                                                   capsys) -> None:
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(["tune-background", "--run", str(run), "--data", str(tiny_bench), "--split", "val",
                 "--method", "cam", "--thresholds", "0.1,0.3,0.6", "--quiet"]) == 0
    stored = json.loads((run / "background.json").read_text())["cam"]
    assert stored["tuned_on_ground_truth"] and stored["threshold"] in (0.1, 0.3, 0.6)
    assert stored["miou"] == max(row["miou"] for row in stored["curve"])
    out = tmp_path / "seg"
    assert main(["segment", "--run", str(run), "--data", str(tiny_bench), "--split", "val", "--method", "cam",
                 "--out", str(out), "--quiet"]) == 0
    assert "oracle" in capsys.readouterr().err
    meta = json.loads((out / "segment.json").read_text())
    assert meta["tuned_on_ground_truth"] and meta["threshold"] == stored["threshold"]
    assert main(["evaluate", "--pred", str(out), "--data", str(tiny_bench), "--split", "val", "--quiet",
                 "--json", str(tmp_path / "s.json")]) == 0
    assert "oracle" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["tuned_on_ground_truth"] is True


def test_cli_lists_every_segmentation_method() -> None:
    from wsseg.cli import SEGMENT_METHOD_NAMES
    from wsseg.pipelines import SEGMENT_METHODS

    assert SEGMENT_METHOD_NAMES == tuple(SEGMENT_METHODS)


def test_ilp_keeps_its_constraints() -> None:
    from wsseg.fusion.ilp import solve_labels

    scores = np.array([[0.9, 0.0], [0.8, 0.1], [0.1, 0.2], [0.0, 0.05]])
    areas = np.array([10.0, 10.0, 10.0, 70.0])
    # plain thresholding at 0.5 would give class 2 nothing; the area constraint keeps it present
    labels = solve_labels(scores, areas, threshold=0.5, min_area=0.05)
    assert labels[0] == 1 and labels[1] == 1 and (labels == 2).any()
    covered = [areas[labels == c].sum() for c in (1, 2)]
    assert min(covered) >= 0.05 * areas.sum()
    assert labels[3] == 0  # the big low-scoring superpixel stays background
    # with min_area 0 it is thresholding per superpixel
    np.testing.assert_array_equal(solve_labels(scores, areas, 0.5, min_area=0.0), [1, 1, 0, 0])
    # impossible constraints (3 classes x 40% of the image) are dropped, not crashed on
    assert solve_labels(np.zeros((2, 3)), np.ones(2), 0.5, min_area=0.4).shape == (2,)


def test_objectness_and_superpixels() -> None:
    from wsseg.fusion.objectness import border_contrast
    from wsseg.fusion.superpixels import slic_superpixels, superpixel_means

    image = np.clip(np.random.default_rng(0).normal(120, 6, (64, 64, 3)), 0, 255).astype(np.uint8)
    image[24:40, 24:40] = (250, 30, 30)
    superpixels = slic_superpixels(image, pixels_per_superpixel=64)
    assert superpixels.shape == (64, 64) and superpixels.min() == 0
    objectness = border_contrast(image, superpixels)
    inside = np.zeros((64, 64), bool)
    inside[26:38, 26:38] = True
    assert objectness[inside].mean() > 0.8 and objectness[~inside].mean() < 0.3
    means = superpixel_means(np.stack([np.ones((64, 64)), np.zeros((64, 64))]), superpixels)
    np.testing.assert_allclose(means, np.tile([1.0, 0.0], (superpixels.max() + 1, 1)))


def test_misvm_finds_the_planted_positive_instance() -> None:
    from wsseg.fusion.misvm import train_misvm

    rng = np.random.default_rng(0)
    features, bags, bag_labels, planted = [], [], [], []
    for bag in range(60):
        instances = rng.normal(0, 1, (12, 5))
        positive = bag % 2 == 0
        if positive:
            spot = int(rng.integers(12))
            instances[spot, 0] += 6.0  # the one instance that makes the bag positive
            planted.append(bag * 12 + spot)
        features.append(instances)
        bags.append(np.full(12, bag))
        bag_labels.append([0] if positive else [])
    features, bags = np.concatenate(features), np.concatenate(bags)
    svm = train_misvm(features, bags, bag_labels, num_classes=1)
    probability = svm.probabilities(features)[:, 0]
    for index in planted:  # in every positive bag the planted instance scores highest
        members = np.nonzero(bags == bags[index])[0]
        assert members[np.argmax(probability[members])] == index
    others = np.setdiff1d(np.arange(len(features)), planted)
    assert probability[planted].min() > 0.5 > np.median(probability[others])


def test_pipeline_a_needs_and_uses_a_trained_misvm(tiny_run: Path, tiny_bench: Path, tmp_path: Path, capsys) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    args = ["segment", "--run", str(run), "--data", str(tiny_bench), "--split", "val", "--method", "pipeline-a",
            "--scales", "1", "--out", str(tmp_path / "a"), "--quiet"]
    assert main(args) == 2
    assert "train-misvm" in capsys.readouterr().err
    assert main(["train-misvm", "--run", str(run), "--data", str(tiny_bench), "--quiet"]) == 0
    assert (run / "misvm.npz").exists()
    assert main(args) == 0
    assert main(["evaluate", "--pred", str(tmp_path / "a"), "--data", str(tiny_bench), "--split", "val",
                 "--quiet"]) == 0
