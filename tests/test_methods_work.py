"""The methods must work, not only run: on a classifier trained here, in the test session, every
segmentation method beats an all-background prediction, and dcsm-crf beats cam.

The fixture: the shapes benchmark, 64 train / 16 val images of 96 px, the classifier trained
8 epochs (fixed seed), pipeline A's mi-SVM on the train split; val segmented with the
ground-truth image labels (pseudo-label mode) and DCSM/CAM at one scale. About 60 s on 2 CPU
cores (and the random-walk methods' affinity network, trained 4 epochs on confident dcsm-crf
pseudo-labels of train, about 15 s more). The margins below held over seeds 0, 1 and 2 (dataset and training seed), measured as
val mIoU in points (all-background / weakest method / cam / dcsm-crf):

    seed  all-background  weakest method            cam    dcsm-crf
    0     11.29           gradient 13.43 (+2.1)     15.45  40.19 (+24.7 over cam)
    1     11.29           cam/gradcam 16.95 (+5.7)  16.95  53.33 (+36.4)
    2     11.70           gradient 15.29 (+3.6)     19.61  52.45 (+32.8)

(with the segmentation defaults searched on the train splits, docs/method.md 3.1; gradient's
threshold 0.05 makes it the weakest), so the test asks for 1.5 points over all-background from
every method and 15 points from dcsm-crf over cam (measured with OMP_NUM_THREADS=1; the slack
covers other thread counts' rounding).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import all_background_miou

from wsseg.data import SynthConfig, VOCDataset, write_synthetic_dataset
from wsseg.evaluate import evaluate_directory
from wsseg.models.run import load_run
from wsseg.pipelines import build_segmenter
from wsseg.registry import SEGMENT_METHODS
from wsseg.runner import SplitSource
from wsseg.segment import SegmentOptions, segment_dataset, segment_split
from wsseg.train import TrainOptions, train
from wsseg.train_affinity import AffinityOptions, train_affinity
from wsseg.train_misvm import train_misvm_on_split

SEED = 0
FIXTURE = SynthConfig(train=64, val=16, size=96, seed=SEED)
EPOCHS = 8
MARGIN_OVER_BACKGROUND = 1.5  # mIoU points every method must add to the all-background prediction
MARGIN_DCSM_CRF_OVER_CAM = 15.0  # mIoU points dcsm-crf must add to cam


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[VOCDataset, Path]:
    root = tmp_path_factory.mktemp("trained")
    data = write_synthetic_dataset(root / "data", FIXTURE, progress=False)
    run = root / "run"
    train(TrainOptions(data=str(data), out=str(run), epochs=EPOCHS, image_size=FIXTURE.size, batch_size=8,
                       patience=None, seed=SEED, progress=False))
    model, _ = load_run(run)
    train_misvm_on_split(model, VOCDataset(data, "train"), run, progress=False, seed=SEED)
    # the random-walk methods' affinity network, on confident dcsm-crf pseudo-labels of train
    pseudo = root / "pseudo"
    segment_dataset(SplitSource(run, data, "train"), pseudo,
                    SegmentOptions("dcsm-crf", scales=(1.0,), ignore_uncertain=True), progress=False)
    train_affinity(AffinityOptions(run=str(run), data=str(data), pseudo=str(pseudo), epochs=4, seed=SEED,
                                   progress=False))
    return VOCDataset(data, "val"), run


def test_every_method_beats_all_background_and_dcsm_crf_beats_cam(trained, tmp_path: Path) -> None:
    val, run = trained
    model, _ = load_run(run)
    scores = {}
    for name in SEGMENT_METHODS:
        segment_split(model, val, build_segmenter(name, run, scales=(1.0,)), tmp_path / name, progress=False)
        scores[name] = 100 * evaluate_directory(tmp_path / name, val, progress=False).confusion.miou()
    floor = 100 * all_background_miou(val)
    losing = {name: round(score, 2) for name, score in scores.items() if score < floor + MARGIN_OVER_BACKGROUND}
    assert not losing, f"no better than all background ({floor:.2f}) + {MARGIN_OVER_BACKGROUND}: {losing}"
    assert scores["dcsm-crf"] >= scores["cam"] + MARGIN_DCSM_CRF_OVER_CAM, scores
