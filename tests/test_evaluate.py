from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsseg.data import ClassList, VOCDataset, write_label_png
from wsseg.errors import DataError
from wsseg.evaluate import ConfusionMatrix, evaluate_arrays, evaluate_directory


def test_confusion_iou_and_miou_match_a_hand_computation() -> None:
    truth = np.array([[0, 0, 1, 1],
                      [0, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 1],
                     [2, 2, 0, 3]])
    # rows = truth, columns = prediction; the void pixel is ignored whatever is predicted there.
    expected = np.array([[1, 1, 1, 0],
                         [0, 2, 0, 0],
                         [1, 0, 1, 0],  # truth 2: predicted 2 once, 0 once
                         [0, 0, 0, 0]])
    confusion = ConfusionMatrix(4)
    confusion.update(pred, truth)
    np.testing.assert_array_equal(confusion.matrix, expected)
    iou = confusion.iou()
    assert iou[0] == pytest.approx(1 / (3 + 2 - 1))  # diag 1, row 3, column 2
    assert iou[1] == pytest.approx(2 / (2 + 3 - 2))
    assert iou[2] == pytest.approx(1 / (2 + 2 - 1))
    assert iou[3] is None  # absent from truth and prediction: left out of the mean
    assert confusion.miou() == pytest.approx(np.mean([1 / 4, 2 / 3, 1 / 3]))
    assert confusion.pixel_accuracy() == pytest.approx(4 / 7)


def test_class_only_predicted_counts_as_zero_and_predicted_void_is_background() -> None:
    confusion = ConfusionMatrix(3)
    confusion.update(np.array([2, 255, 0]), np.array([0, 0, 0]))
    assert confusion.iou() == [pytest.approx(2 / 3), None, 0.0]
    assert confusion.miou() == pytest.approx(1 / 3)


def test_streaming_equals_one_shot() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, (10, 30, 30))
    pred = rng.integers(0, 4, (10, 30, 30))
    truth[truth == 3] = 255
    once = ConfusionMatrix(4)
    once.update(pred, truth)
    result = evaluate_arrays(list(pred), list(truth), ClassList(("a", "b", "c")))
    np.testing.assert_array_equal(result.confusion.matrix, once.matrix)
    assert result.n_images == 10


def test_labels_out_of_range_are_rejected() -> None:
    with pytest.raises(ValueError, match="prediction has labels outside"):
        ConfusionMatrix(3).update(np.array([5]), np.array([0]))


def _predictions(tmp_path: Path, dataset: VOCDataset) -> Path:
    out = tmp_path / "pred"
    for sample in dataset:
        write_label_png(out / f"{sample.id}.png", np.where(sample.mask == 255, 0, sample.mask))
    return out


def test_directory_evaluation_of_perfect_predictions(tiny_voc: Path, tmp_path: Path) -> None:
    dataset = VOCDataset(tiny_voc, "train")
    result = evaluate_directory(_predictions(tmp_path, dataset), dataset, progress=False).to_dict()
    assert set(result) >= {"miou", "pixel_accuracy", "iou", "n_images", "confusion"}
    assert result["miou"] == 1.0 and result["pixel_accuracy"] == 1.0 and result["n_images"] == 2
    assert result["iou"] == {"background": 1.0, "cat": 1.0, "dog": None, "person": 1.0}
    json.dumps(result)


def test_missing_or_missized_prediction_names_the_image(tiny_voc: Path, tmp_path: Path) -> None:
    dataset = VOCDataset(tiny_voc, "train")
    pred = _predictions(tmp_path, dataset)
    (pred / "000123.png").unlink()
    with pytest.raises(DataError, match=r"000123\.png: prediction is missing"):
        evaluate_directory(pred, dataset, progress=False)
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(pred / "000123.png")
    with pytest.raises(DataError, match=r"000123\.png: prediction is 3x3 but the ground truth is 8x6"):
        evaluate_directory(pred, dataset, progress=False)
    result = evaluate_directory(pred, dataset, skip_bad=True, progress=False)
    assert result.n_images == 1 and result.n_skipped == 1
