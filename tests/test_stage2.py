"""Stage 2: the segmentation network trained on label maps (`wsseg train-seg`, `segment --method seg`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import all_background_miou

from wsseg.cli import main
from wsseg.data.images import read_label_png, write_label_png
from wsseg.data.voc import VOCDataset
from wsseg.errors import WssegError
from wsseg.io import file_sha256
from wsseg.models.run import load_run
from wsseg.models.segnet import (build_segmentation_net, init_backbone_from_classifier, load_segmentation_run,
                                 segment_probabilities)
from wsseg.segmentation.network import NetworkSegmenter, keep_classes
from wsseg.segmentation.runner import predict_labels
from wsseg.train_options import SegTrainOptions
from wsseg.train_seg import backbone_start, label_source, score_network, segmentation_loss, train_segmentation

# small and fast: 64 px crops, batches of 4
FAST = dict(crop_size=64, batch_size=4, progress=False, device="cpu")


def test_loss_gradient_is_exactly_zero_at_pixels_labelled_255() -> None:
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    labels = torch.randint(0, 4, (2, 8, 8))
    labels[0, :3] = 255
    labels[1, :, 5:] = 255
    segmentation_loss(logits, labels).backward()
    ignored = (labels == 255).unsqueeze(1).expand_as(logits)
    assert torch.count_nonzero(logits.grad[ignored]) == 0
    assert torch.count_nonzero(logits.grad[~ignored]) == (~ignored).sum()  # every labelled pixel is learnt from


def test_loss_of_a_batch_with_no_labelled_pixel_is_zero_not_nan() -> None:
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((1, 4, 4), 255))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.count_nonzero(logits.grad) == 0


@pytest.mark.parametrize("head", ["deeplabv3plus", "lraspp"])
def test_network_outputs_logits_at_the_input_size(head: str) -> None:
    torch.manual_seed(0)
    net = build_segmentation_net(3, head=head, pretrained=False).eval()
    images = torch.rand(2, 3, 50, 70)
    assert net(images).shape == (2, 4, 50, 70)
    probabilities = segment_probabilities(net, images, tta=True)
    assert probabilities.shape == (2, 4, 50, 70)
    assert torch.allclose(probabilities.sum(1), torch.ones(2, 50, 70), atol=1e-5)


def test_a_tiny_network_fits_ground_truth_masks_well_above_all_background(tiny_bench: Path, tmp_path: Path) -> None:
    history = train_segmentation(SegTrainOptions(data=str(tiny_bench), out=str(tmp_path / "seg"), ground_truth=True,
                                                 epochs=12, val_split=None, scale_range=(0.9, 1.1), jitter=0.0,
                                                 **FAST))
    assert len(history) == 12 and history[-1]["loss"] < history[0]["loss"]
    model, config = load_segmentation_run(tmp_path / "seg")
    train = VOCDataset(tiny_bench, "train")
    fitted = score_network(model, train)[0].miou()
    assert fitted >= all_background_miou(train) + 0.2, (fitted, all_background_miou(train))
    assert config.labels == {"source": "ground-truth", "masks": "SegmentationClass"}


def test_resume_equals_an_uninterrupted_run(tiny_bench: Path, tmp_path: Path) -> None:
    common = dict(data=str(tiny_bench), ground_truth=True, epochs=2, val_split="val", **FAST)
    train_segmentation(SegTrainOptions(out=str(tmp_path / "whole"), **common))
    train_segmentation(SegTrainOptions(out=str(tmp_path / "cut"), stop_after=1, **common))
    assert len(json.loads((tmp_path / "cut" / "history.json").read_text())) == 1
    train_segmentation(SegTrainOptions(out=str(tmp_path / "cut"), resume=True, **common))
    whole = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["model"]
    cut = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(whole[key], cut[key]) for key in whole)
    losses = [[r["loss"] for r in json.loads((tmp_path / run / "history.json").read_text())] for run in ("whole", "cut")]
    assert losses[0] == losses[1]


def _pseudo_from_masks(bench: Path, folder: Path) -> Path:
    """Pseudo-labels: the ground truth with its borders marked uncertain, plus a segment.json."""
    folder.mkdir()
    train = VOCDataset(bench, "train")
    for image_id in train.ids:
        labels = train.load_mask(image_id).copy()
        labels[:4] = 255
        write_label_png(folder / f"{image_id}.png", labels)
    (folder / "segment.json").write_text(json.dumps({"method": "dcsm-crf", "run": "RUN", "ignore_uncertain": True,
                                                     "threshold": 0.65, "labels": "gt"}))
    return folder


def test_pseudo_label_run_records_its_source_and_segments_a_split(tiny_bench: Path, tmp_path: Path, capsys) -> None:
    pseudo = _pseudo_from_masks(tiny_bench, tmp_path / "pseudo")
    run = tmp_path / "seg"
    assert main(["train-seg", "--quiet", "--data", str(tiny_bench), "--pseudo", str(pseudo), "--out", str(run),
                 "--epochs", "1", "--crop-size", "64", "--batch-size", "4", "--device", "cpu"]) == 0
    labels = json.loads((run / "config.json").read_text())["labels"]
    assert labels["source"] == "pseudo" and labels["method"] == "dcsm-crf" and labels["ignore_uncertain"] is True
    assert labels["folder"] == str(pseudo.resolve())

    out = tmp_path / "pred"
    assert main(["segment", "--quiet", "--run", str(run), "--data", str(tiny_bench), "--method", "seg",
                 "--out", str(out), "--device", "cpu"]) == 0
    record = json.loads((out / "segment.json").read_text())
    assert record["method"] == "seg" and record["trained_on"]["method"] == "dcsm-crf"
    val = VOCDataset(tiny_bench, "val")
    for image_id in val.ids:  # one PNG per val image, at its size, with valid labels
        assert read_label_png(out / f"{image_id}.png", val.num_classes).shape == val.load_mask(image_id).shape
    assert main(["evaluate", "--pred", str(out), "--data", str(tiny_bench)]) == 0

    # options that do not apply to the network are refused, not ignored
    capsys.readouterr()
    assert main(["segment", "--run", str(run), "--data", str(tiny_bench), "--method", "seg", "--threshold", "0.3",
                 "--out", str(tmp_path / "other")]) == 2
    assert "--threshold" in capsys.readouterr().err
    assert main(["segment", "--run", str(run), "--data", str(tiny_bench), "--method", "dcsm", "--tta",
                 "--out", str(tmp_path / "other")]) == 2
    assert "--tta" in capsys.readouterr().err
    # a folder that is no segmentation network's run is refused, and a network's run for a map method
    assert main(["segment", "--run", str(tmp_path / "pred"), "--data", str(tiny_bench), "--method", "seg",
                 "--out", str(tmp_path / "other")]) == 2
    assert "train-seg" in capsys.readouterr().err
    assert main(["segment", "--run", str(run), "--data", str(tiny_bench), "--method", "cam",
                 "--out", str(tmp_path / "other")]) == 2
    assert "use it with --method seg" in capsys.readouterr().err


def test_tta_changes_the_segmentation_and_is_recorded(tiny_bench: Path, tmp_path: Path) -> None:
    run = tmp_path / "seg"
    train_segmentation(SegTrainOptions(data=str(tiny_bench), out=str(run), ground_truth=True, epochs=1,
                                       val_split=None, **FAST))
    plain, tta = tmp_path / "plain", tmp_path / "tta"
    for out, extra in ((plain, []), (tta, ["--tta"])):
        assert main(["segment", "--quiet", "--run", str(run), "--data", str(tiny_bench), "--method", "seg",
                     "--out", str(out), "--device", "cpu", *extra]) == 0
    assert json.loads((tta / "segment.json").read_text())["tta"] is True
    ids = VOCDataset(tiny_bench, "val").ids
    assert any(not np.array_equal(read_label_png(plain / f"{i}.png", 6), read_label_png(tta / f"{i}.png", 6))
               for i in ids)


@pytest.mark.parametrize("damage, expected", [
    ("wrong-size", "is 10x10 but its image is 64x64"),
    ("out-of-range", "values [9] outside 0..6"),
    ("missing", "pseudo-label is missing"),
])
def test_bad_pseudo_label_png_exits_2_naming_the_file(tiny_bench: Path, tmp_path: Path, capsys, damage: str,
                                                      expected: str) -> None:
    pseudo = _pseudo_from_masks(tiny_bench, tmp_path / "pseudo")
    victim = pseudo / f"{VOCDataset(tiny_bench, 'train').ids[1]}.png"
    if damage == "wrong-size":
        write_label_png(victim, np.zeros((10, 10), np.uint8))
    elif damage == "out-of-range":
        labels = read_label_png(victim, 6).copy()
        labels[5, 5] = 9
        write_label_png(victim, labels)
    else:
        victim.unlink()
    code = main(["train-seg", "--quiet", "--data", str(tiny_bench), "--pseudo", str(pseudo),
                 "--out", str(tmp_path / "seg"), "--epochs", "1", "--crop-size", "64", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert str(victim) in err and expected in err
    assert "Traceback" not in err


def test_auto_start_is_the_classifier_that_made_the_pseudo_labels_while_its_weights_are_unchanged(
        tiny_bench: Path, tiny_run: Path, tmp_path: Path, capsys) -> None:
    pseudo = _pseudo_from_masks(tiny_bench, tmp_path / "pseudo")
    record = json.loads((pseudo / "segment.json").read_text())
    (pseudo / "segment.json").write_text(json.dumps({**record, "run": str(tiny_run),
                                                     "model_sha256": file_sha256(tiny_run / "model.pt")}))
    run = tmp_path / "seg"
    assert main(["train-seg", "--data", str(tiny_bench), "--pseudo", str(pseudo), "--out", str(run), "--epochs", "1",
                 "--crop-size", "64", "--batch-size", "4", "--device", "cpu", "--val-split", "none"]) == 0
    assert f"backbone from the classifier {tiny_run}" in capsys.readouterr().out
    init = json.loads((run / "config.json").read_text())["init"]
    assert init == {"source": "classifier", "run": str(tiny_run.resolve()),
                    "model_sha256": file_sha256(tiny_run / "model.pt")}

    # other pseudo-labels' classifier (another digest), and the ground truth, start from ImageNet
    (pseudo / "segment.json").write_text(json.dumps({**record, "run": str(tiny_run), "model_sha256": "0" * 64}))
    labels = label_source(SegTrainOptions(data=str(tiny_bench), out="", pseudo=str(pseudo)),
                          VOCDataset(tiny_bench, "train"))[1]
    start, why = backbone_start(SegTrainOptions(data="", out="", pseudo=str(pseudo)), labels)
    assert start is None and "changed since it made the pseudo-labels" in why
    assert backbone_start(SegTrainOptions(data="", out="", ground_truth=True), {"source": "ground-truth"})[0] is None
    explicit = SegTrainOptions(data="", out="", ground_truth=True, init_from=str(tiny_run))
    assert backbone_start(explicit, {"source": "ground-truth"})[0] == tiny_run


def test_an_init_from_folder_that_is_no_classifier_run_exits_2_naming_it(tiny_bench: Path, tmp_path: Path,
                                                                          capsys) -> None:
    not_a_run = tmp_path / "not-a-run"
    not_a_run.mkdir()
    code = main(["train-seg", "--quiet", "--data", str(tiny_bench), "--ground-truth", "--out", str(tmp_path / "seg"),
                 "--init-from", str(not_a_run), "--epochs", "1", "--crop-size", "64", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and str(not_a_run) in err and "Traceback" not in err
    assert not (tmp_path / "seg").exists()  # a refused run leaves no folder behind


@pytest.mark.filterwarnings("ignore:vgg16 is randomly initialised")
def test_a_classifier_start_copies_every_backbone_weight_and_refuses_another_backbone(tiny_run: Path) -> None:
    classifier = load_run(tiny_run)[0]
    net = build_segmentation_net(3, pretrained=False)
    init_backbone_from_classifier(net, "efficientnet-lite0", tiny_run)
    theirs = classifier.backbone.state_dict()
    assert all(torch.equal(value, theirs[key]) for key, value in net.backbone.state_dict().items())
    with pytest.raises(WssegError, match="backbone is efficientnet-lite0"):
        init_backbone_from_classifier(build_segmentation_net(3, backbone="vgg16", pretrained=False), "vgg16", tiny_run)


def test_pseudo_and_ground_truth_are_exclusive_and_one_is_required(tiny_bench: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:  # argparse: one of the two is required
        main(["train-seg", "--data", str(tiny_bench), "--out", str(tmp_path / "seg")])
    assert exited.value.code == 2 and "--pseudo" in capsys.readouterr().err
    with pytest.raises(WssegError, match="--pseudo FOLDER"):
        train_segmentation(SegTrainOptions(data=str(tiny_bench), out=str(tmp_path / "seg"), **FAST))


def _torchrun(args: list[str], port: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), "-m", "wsseg", *args, "--quiet"], capture_output=True, text=True, timeout=300,
                          env=env)


def test_two_process_training_and_sharded_segmentation(tiny_bench: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    result = _torchrun(["train-seg", "--data", str(tiny_bench), "--ground-truth", "--out", str(run), "--epochs", "1",
                        "--crop-size", "64", "--batch-size", "2"], 29561)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(json.loads((run / "history.json").read_text())) == 1
    common = ["--data", str(tiny_bench), "--split", "train", "--method", "seg", "--batch-size", "3"]
    assert main(["segment", "--quiet", "--run", str(run), *common, "--out", str(tmp_path / "one")]) == 0
    result = _torchrun(["segment", "--run-dir", str(run), *common, "--out", str(tmp_path / "two")], 29562)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0/2" in result.stdout and "rank 1/2" in result.stdout
    pngs = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert len(pngs) == 8 and pngs == sorted(p.name for p in (tmp_path / "two").glob("*.png"))
    for name in pngs:  # labels agree (thread counts differ between the runs, so no byte identity is asked)
        one, two = (read_label_png(tmp_path / folder / name, 6) for folder in ("one", "two"))
        assert (one == two).mean() > 0.99


def test_the_network_sees_a_large_photo_at_the_side_it_was_trained_at(tiny_bench: Path, tmp_path: Path) -> None:
    """train-seg scales every image to its crop size, so a photo larger than the crop is shrunk to
    it before the network and its labels grown back: a 4x larger copy of an image gets nearly the
    4x larger segmentation of the image (the rest is the up-sampling's edges), far more so than
    at its own size."""
    run = tmp_path / "seg"
    train_segmentation(SegTrainOptions(data=str(tiny_bench), out=str(run), ground_truth=True, epochs=4,
                                       val_split=None, scale_range=(0.9, 1.1), jitter=0.0, **FAST))
    model, config = load_segmentation_run(run)
    assert model.input_size == config.crop_size == 64
    seen = []
    handle = model.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].shape[-2:]))
    try:
        image = VOCDataset(tiny_bench, "val").load_image(VOCDataset(tiny_bench, "val").ids[0])
        large = np.kron(image, np.ones((4, 4, 1), np.uint8))  # 256 x 256, every pixel four times
        expected = np.kron(NetworkSegmenter(model, max_side=64)([image])[0], np.ones((4, 4), np.uint8))
        at_side = NetworkSegmenter(model, max_side=64)([large])[0]
        own_size = NetworkSegmenter(model, max_side=None)([large])[0]
    finally:
        handle.remove()
    assert [tuple(s) for s in seen] == [(64, 64), (64, 64), (256, 256)]
    assert at_side.shape == own_size.shape == (256, 256)
    agreement, agreement_at_own_size = (at_side == expected).mean(), (own_size == expected).mean()
    assert agreement > 0.85 and agreement > agreement_at_own_size + 0.1, (agreement, agreement_at_own_size)


def test_restricted_to_an_images_classes_the_network_paints_no_other(tiny_bench: Path, tmp_path: Path) -> None:
    probabilities = np.random.default_rng(0).dirichlet(np.ones(4), size=(8, 8)).transpose(2, 0, 1)
    kept = keep_classes(probabilities, [2])
    assert set(np.unique(kept.argmax(0))) <= {0, 3}
    assert np.allclose(kept.sum(0), 1) and np.all(kept[[1, 2]] == 0)
    run = tmp_path / "seg"
    train_segmentation(SegTrainOptions(data=str(tiny_bench), out=str(run), ground_truth=True, epochs=1,
                                       val_split=None, **FAST))
    model, _ = load_segmentation_run(run)
    images = [VOCDataset(tiny_bench, "val").load_image(i) for i in VOCDataset(tiny_bench, "val").ids[:2]]
    free = NetworkSegmenter(model)(images)
    restricted = NetworkSegmenter(model, restrict=True).segment_batch(model, images, [[0], [4]], {})
    assert set(np.unique(restricted[0])) <= {0, 1} and set(np.unique(restricted[1])) <= {0, 5}
    # where the free network already chose an allowed label, the restriction keeps it
    for image_free, image_restricted, allowed in zip(free, restricted, ({0, 1}, {0, 5})):
        same = np.isin(image_free, list(allowed))
        assert np.array_equal(image_free[same], image_restricted[same])


def test_labels_predicted_restricts_the_network_to_its_classifiers_classes(tiny_bench: Path, tiny_run: Path,
                                                                           tmp_path: Path, capsys) -> None:
    run = tmp_path / "seg"
    train_segmentation(SegTrainOptions(data=str(tiny_bench), out=str(run), ground_truth=True, epochs=1,
                                       val_split=None, init_from=str(tiny_run), **FAST))
    out = tmp_path / "pred"
    assert main(["segment", "--quiet", "--run", str(run), "--data", str(tiny_bench), "--method", "seg",
                 "--labels", "predicted", "--out", str(out), "--device", "cpu"]) == 0
    record = json.loads((out / "segment.json").read_text())
    assert record["labels"] == "predicted" and record["classifier"] == str(tiny_run.resolve())
    assert record["classifier_sha256"] == file_sha256(tiny_run / "model.pt") and record["network_side"] == 64
    classifier, _ = load_run(tiny_run)
    val = VOCDataset(tiny_bench, "val")
    for image_id in val.ids:
        image = torch.from_numpy(val.load_image(image_id).transpose(2, 0, 1)).float()[None] / 255
        allowed = {0, *(c + 1 for c in predict_labels(classifier, image)[0])}
        assert set(np.unique(read_label_png(out / f"{image_id}.png", 6))) <= allowed

    # a threshold of 0 lets every class through: the unrestricted network's labels
    every, free = tmp_path / "every", tmp_path / "free"
    assert main(["segment", "--quiet", "--run", str(run), "--data", str(tiny_bench), "--method", "seg", "--labels",
                 "predicted", "--label-threshold", "0", "--out", str(every), "--device", "cpu"]) == 0
    assert main(["segment", "--quiet", "--run", str(run), "--data", str(tiny_bench), "--method", "seg",
                 "--out", str(free), "--device", "cpu"]) == 0
    assert all(np.array_equal(read_label_png(every / f"{i}.png", 6), read_label_png(free / f"{i}.png", 6))
               for i in val.ids)

    # the same folder with the true labels instead is another segmentation: refused without --overwrite
    capsys.readouterr()
    assert main(["segment", "--quiet", "--run", str(run), "--data", str(tiny_bench), "--method", "seg",
                 "--labels", "gt", "--out", str(out), "--device", "cpu"]) == 2
    assert "labels" in capsys.readouterr().err
    # a network that names no classifier, and a --classifier without --labels predicted, are refused
    bare = tmp_path / "bare"
    train_segmentation(SegTrainOptions(data=str(tiny_bench), out=str(bare), ground_truth=True, epochs=1,
                                       val_split=None, **FAST))
    assert main(["segment", "--run", str(bare), "--data", str(tiny_bench), "--method", "seg", "--labels",
                 "predicted", "--out", str(tmp_path / "other")]) == 2
    assert "--classifier RUN" in capsys.readouterr().err
    assert main(["segment", "--run", str(bare), "--data", str(tiny_bench), "--method", "seg", "--classifier",
                 str(tiny_run), "--out", str(tmp_path / "other")]) == 2
    assert "--labels predicted" in capsys.readouterr().err
    # nor is a classifier retrained since the network started from it taken for the one it names
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "init": {**config["init"], "model_sha256": "0" * 64}}))
    assert main(["segment", "--run", str(run), "--data", str(tiny_bench), "--method", "seg", "--labels",
                 "predicted", "--out", str(tmp_path / "other")]) == 2
    assert "still there unchanged" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
