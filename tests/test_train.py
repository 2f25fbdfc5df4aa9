from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wsseg.cli import main
from wsseg.errors import WssegError
from wsseg.models.run import load_run, read_checkpoint
from wsseg.train import TrainOptions, classification_metrics, train

import numpy as np

TINY = dict(image_size=64, batch_size=4, progress=False)


@pytest.fixture
def bench(tiny_bench: Path) -> Path:
    return tiny_bench


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run / "model.pt")["model"]


def test_training_writes_a_loadable_run_and_is_deterministic(bench: Path, tmp_path: Path) -> None:
    first = train(TrainOptions(data=str(bench), out=str(tmp_path / "a"), epochs=1, **TINY))
    train(TrainOptions(data=str(bench), out=str(tmp_path / "b"), epochs=1, **TINY))
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert {"loss", "val_map", "val_f1", "images_per_second"} <= set(first[0])
    history = json.loads((tmp_path / "a" / "history.json").read_text())
    assert history == json.loads(json.dumps(first))
    model, config = load_run(tmp_path / "a")
    assert config.classes == ["circle", "square", "triangle", "star", "cross", "ring"]
    assert config.image_size == 64 and config.pooling == "gap" and config.output_stride == 16
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 6)


def test_resume_reaches_the_same_checkpoint(bench: Path, tmp_path: Path) -> None:
    train(TrainOptions(data=str(bench), out=str(tmp_path / "straight"), epochs=2, val_split=None, **TINY))
    train(TrainOptions(data=str(bench), out=str(tmp_path / "resumed"), epochs=2, stop_after=1, val_split=None,
                       **TINY))
    assert read_checkpoint(tmp_path / "resumed" / "model.pt")["epoch"] == 0
    history = train(TrainOptions(data=str(bench), out=str(tmp_path / "resumed"), epochs=2, val_split=None,
                                 resume=True, **TINY))
    assert [r["epoch"] for r in history] == [1, 2]
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_image_stops_with_its_name_unless_skipped(bench: Path, tmp_path: Path, capsys) -> None:
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(bench, root)
    (root / "JPEGImages" / "train_000003.jpg").write_bytes(b"\xff\xd8 broken")
    args = ["train", "--data", str(root), "--out", str(tmp_path / "run"), "--epochs", "1", "--image-size", "64",
            "--batch-size", "4", "--val-split", "none", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train_000003.jpg: cannot decode image" in err[0]
    assert main(args + ["--skip-bad"]) == 0
    assert json.loads((tmp_path / "run" / "history.json").read_text())[0]["skipped"] == 1


def test_metrics() -> None:
    scores = np.array([[0.9, 0.2], [0.8, 0.7], [0.1, 0.6]])
    targets = np.array([[1, 0], [1, 0], [0, 1]])
    metrics = classification_metrics(scores, targets)
    # class 1 ranks a negative (0.7) above its positive (0.6): AP 1/2
    assert metrics["map"] == pytest.approx((1.0 + 0.5) / 2)
    # class 0: tp 2, predicted 2, true 2 -> 1; class 1: tp 1, predicted 2, true 1 -> 2/3
    assert metrics["f1"] == pytest.approx((1 + 2 / 3) / 2)


def test_two_process_training_with_torchrun(bench: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         "-m", "wsseg", "train", "--data", str(bench), "--out", str(run), "--epochs", "1", "--image-size", "64",
         "--batch-size", "2", "--quiet"],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[:3000] + "\n...\n" + result.stderr[-1000:]  # a rank's own error first
    model, _ = load_run(run)
    with torch.no_grad():
        scores = torch.sigmoid(model(torch.rand(1, 3, 64, 64)))
    assert scores.shape == (1, 6) and torch.isfinite(scores).all()
    assert len(json.loads((run / "history.json").read_text())) == 1


def _scripted_val_maps(monkeypatch, maps: list[float]) -> None:
    """Make validation report these mAPs in turn, so the selection logic is tested exactly."""
    import wsseg.training.classifier as training

    remaining = list(maps)
    monkeypatch.setattr(training, "classification_metrics", lambda scores, targets: {"map": remaining.pop(0), "f1": 0.5})


def _files(run: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run.iterdir())}


def test_best_epoch_is_kept_and_training_stops_early(bench: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    _scripted_val_maps(monkeypatch, [0.5, 0.8, 0.6, 0.7, 0.9, 0.9])
    run = tmp_path / "run"
    args = ["train", "--data", str(bench), "--out", str(run), "--epochs", "6", "--patience", "2",
            "--image-size", "64", "--batch-size", "4", "--quiet"]
    assert main(args) == 0
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]  # epochs 3 and 4 did not beat epoch 2: stop
    assert [r["best"] for r in history] == [False, True, False, False]
    assert read_checkpoint(run / "model.pt")["epoch"] == 1 and read_checkpoint(run / "last.pt")["epoch"] == 3
    best, last = _weights(run), read_checkpoint(run / "last.pt")["model"]
    assert any(not torch.equal(best[k], last[k]) for k in best)  # model.pt is the earlier epoch's
    assert "best val mAP 0.800 at epoch 2" in capsys.readouterr().out

    before = _files(run)
    assert main(args + ["--resume"]) == 0  # nothing left to do: exits 0, says where it stopped
    out = capsys.readouterr().out
    assert "stopped early" in out and "after epoch 4" in out
    assert _files(run) == before  # not one file rewritten


def test_without_val_split_the_last_epoch_is_kept_and_never_stops_early(bench: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    history = train(TrainOptions(data=str(bench), out=str(run), epochs=3, patience=1, val_split=None, **TINY))
    assert len(history) == 3 and history[-1]["best"]
    assert read_checkpoint(run / "model.pt")["epoch"] == 2
    a, b = _weights(run), read_checkpoint(run / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_automatic_image_size_follows_the_split_not_its_first_image(tmp_path: Path) -> None:
    from conftest import write_voc
    from wsseg.data import VOCDataset
    from wsseg.train import auto_image_size

    sizes = [(300, 400)] + [(90, 120)] * 6 + [(120, 90)] * 4  # one large first image, then small ones
    root = write_voc(tmp_path / "voc", {f"im{i}": {"mask": np.zeros(size, np.uint8), "objects": ["cat"]}
                                        for i, size in enumerate(sizes)})
    assert auto_image_size(VOCDataset(root, "train")) == 128


def test_validation_scores_do_not_depend_on_batch_neighbours_or_padding(tmp_path: Path) -> None:
    from conftest import write_voc
    from wsseg.data import VOCDataset
    from wsseg.data.transforms import resize_longer_side, to_tensor
    from wsseg.models.classifier import build_classifier
    from wsseg.train import predict_scores

    rng = np.random.default_rng(0)
    sizes = [(40, 64), (64, 64), (64, 40), (64, 64), (48, 64)]
    samples = {f"im{i}": {"mask": np.zeros(size, np.uint8), "objects": ["cat"],
                          "image": rng.integers(0, 255, (*size, 3), dtype=np.uint8)} for i, size in enumerate(sizes)}
    dataset = VOCDataset(write_voc(tmp_path / "voc", samples), "train")
    torch.manual_seed(0)
    model = build_classifier(3, pretrained=False, pooling="gap").eval()
    scores, _, _ = predict_scores(model, dataset, 64, batch_size=4)
    with torch.no_grad():
        alone = [torch.sigmoid(model(to_tensor(resize_longer_side(dataset.load_image(i), 64))[None]))[0].numpy()
                 for i in dataset.ids]
    assert np.allclose(scores, np.stack(alone), atol=1e-5)


def _backbone_state(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in weights.items() if k.startswith("backbone.")}


def test_linear_probe_epochs_leave_the_backbone_as_pretrained(bench: Path, tmp_path: Path) -> None:
    """--probe-epochs: during the probe only the head learns; afterwards the backbone moves too."""
    from wsseg.models import build_classifier

    pretrained = _backbone_state(build_classifier(6).state_dict())
    train(TrainOptions(data=str(bench), out=str(tmp_path / "probe"), epochs=2, stop_after=1, probe_epochs=1,
                       val_split=None, **TINY))
    probed = _weights(tmp_path / "probe")
    assert all(torch.equal(probed[k], pretrained[k]) for k in pretrained)  # weights and BN statistics alike
    assert not torch.equal(probed["classifier.weight"], build_classifier(6).state_dict()["classifier.weight"])
    train(TrainOptions(data=str(bench), out=str(tmp_path / "probe"), epochs=2, probe_epochs=1, val_split=None,
                       resume=True, **TINY))
    tuned = _weights(tmp_path / "probe")
    assert any(not torch.equal(tuned[k], pretrained[k]) for k in pretrained if k.endswith("weight"))


def test_a_probe_alone_never_differentiates_the_backbone(bench: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """--probe-epochs equal to --epochs: a linear probe alone. The backbone (weights and batch-norm
    statistics) ends as pretrained, the head learns, and no gradient is ever computed for the backbone
    (so no backward pass through it, no activations kept, no activation checkpointing)."""
    import wsseg.training.classifier as trainer
    from wsseg.models import build_classifier

    built: list = []
    monkeypatch.setattr(trainer, "build_classifier", lambda *a, **k: built.append(build_classifier(*a, **k)) or built[-1])
    options = TrainOptions(data=str(bench), out=str(tmp_path / "probe"), epochs=2, probe_epochs=2, val_split=None,
                           checkpoint_activations="auto", **TINY)
    assert not trainer.uses_activation_checkpointing(dataclasses.replace(options, image_size=2048),
                                                     torch.device("cpu"), 16)
    train(options)
    probed = _weights(tmp_path / "probe")
    pretrained = _backbone_state(build_classifier(6).state_dict())
    assert all(torch.equal(probed[k], pretrained[k]) for k in pretrained)
    assert not torch.equal(probed["classifier.weight"], build_classifier(6).state_dict()["classifier.weight"])
    assert all(p.grad is None for p in built[0].backbone.parameters())
    assert built[0].classifier.weight.grad is not None
    with pytest.raises(WssegError, match="at most --epochs"):
        TrainOptions(data=str(bench), out=str(tmp_path / "x"), epochs=2, probe_epochs=3).check()
    assert main(["train", "--data", str(bench), "--out", str(tmp_path / "cli"), "--epochs", "1", "--image-size", "64",
                 "--batch-size", "4", "--val-split", "none", "--probe-epochs", "all"]) == 0
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["probe_epochs"] == 1
    assert "a linear probe alone" in capsys.readouterr().out  # the run says what it trains


def test_frozen_batchnorm_makes_micro_batches_the_same_step(bench: Path, tmp_path: Path, monkeypatch) -> None:
    """With --freeze-bn, a step on micro-batches of 2 equals the step on the whole batch of 4 (the
    memory saving changes no result but drop-connect's random draws, switched off here), and the
    batch-norm statistics stay the pretrained ones."""
    import wsseg.training.classifier as trainer
    from wsseg.models import build_classifier

    forwarded: list[int] = []  # the batch sizes the network saw: proof that the step was split

    def without_drop_connect(*args, **kwargs):
        model = build_classifier(*args, **kwargs)
        model.backbone.drop_connect_rate = 0.0
        model.register_forward_pre_hook(lambda module, inputs: forwarded.append(len(inputs[0])) if module.training
                                        else None)
        return model

    monkeypatch.setattr(trainer, "build_classifier", without_drop_connect)

    common = dict(data=str(bench), epochs=1, val_split=None, freeze_bn=True, **TINY)
    train(TrainOptions(out=str(tmp_path / "whole"), micro_batch=4, **common))
    assert set(forwarded) == {4}
    forwarded.clear()
    train(TrainOptions(out=str(tmp_path / "parts"), micro_batch=2, **common))
    assert set(forwarded) == {2}
    assert json.loads((tmp_path / "parts" / "config.json").read_text())["micro_batch"] == 2
    whole, parts = _weights(tmp_path / "whole"), _weights(tmp_path / "parts")
    # float summation order only: Adam's steps are 1e-3, the parts' weights agree to 1e-4
    assert all(torch.allclose(whole[k], parts[k], atol=1e-4) for k in whole)
    pretrained = build_classifier(6).state_dict()
    assert all(torch.equal(whole[k], pretrained[k]) for k in whole if k.endswith(("running_mean", "running_var")))


def test_recipe_options_are_recorded_and_a_changed_one_refuses_resume(bench: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    train(TrainOptions(data=str(bench), out=str(run), epochs=2, stop_after=1, probe_epochs=1, val_split=None, **TINY))
    config = json.loads((run / "config.json").read_text())
    assert config["probe_epochs"] == 1 and config["freeze_bn"] is False
    code = main(["train", "--data", str(bench), "--out", str(run), "--epochs", "2", "--image-size", "64",
                 "--batch-size", "4", "--val-split", "none", "--resume", "--quiet", "--freeze-bn", "--probe-epochs", "1"])
    assert code == 2 and "freeze_bn" in capsys.readouterr().err


def test_cutmix_pastes_a_box_and_mixes_the_labels_by_its_area() -> None:
    from wsseg.train import cutmix

    torch.manual_seed(0)
    inputs = torch.stack([torch.zeros(3, 32, 32), torch.ones(3, 32, 32)])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    same_inputs, same_targets = cutmix(inputs, targets, 0.0)
    assert torch.equal(same_inputs, inputs) and torch.equal(same_targets, targets)
    for _ in range(5):
        mixed, labels = cutmix(inputs, targets, 1.0)
        for index in range(2):
            pasted = float((mixed[index, 0] != inputs[index, 0]).float().mean())  # the other image is 0 <-> 1
            own, other = targets[index], targets[1 - index]
            if pasted:
                assert torch.allclose(labels[index], torch.clamp((1 - pasted) * own + pasted * other, max=1), atol=1e-6)
                assert labels[index, 2] == 1.0  # a class both images hold stays certain
            else:
                assert torch.equal(labels[index], own)
    assert torch.equal(inputs[0], torch.zeros(3, 32, 32))  # the caller's batch is not changed in place


def test_automatic_micro_batches_only_where_they_change_nothing() -> None:
    """The automatic split of a batch (the memory saving at 512 px on a CPU) happens only with
    frozen batch norms; training-mode ones keep the whole batch, and so does a GPU."""
    from wsseg.train import micro_batch_size

    def size(device: str, **options) -> int:
        return micro_batch_size(TrainOptions(data="", out="", batch_size=16, **options), torch.device(device))

    assert size("cpu", image_size=512) == 16
    assert size("cpu", image_size=512, freeze_bn=True) == 4
    assert size("cpu", image_size=256, freeze_bn=True) == 16
    assert size("cuda", image_size=512, freeze_bn=True) == 16
    assert size("cpu", image_size=512, micro_batch=2) == 2


def test_activation_checkpointing_trains_the_same_weights_and_statistics(bench: Path, tmp_path: Path,
                                                                         monkeypatch) -> None:
    """--checkpoint-activations (auto at 512 px on a CPU) saves memory and nothing else: with
    drop-connect and training-mode batch norms, the weights and running statistics after an epoch
    are those of a plain run, though every block did run twice."""
    import wsseg.training.classifier as trainer
    from wsseg.models import build_classifier

    block_calls: list[int] = []

    def counted(*args, **kwargs):
        model = build_classifier(*args, **kwargs)
        model.backbone.blocks[3].register_forward_pre_hook(lambda module, inputs: block_calls.append(1))
        return model

    monkeypatch.setattr(trainer, "build_classifier", counted)
    common = dict(data=str(bench), epochs=1, val_split=None, **TINY)
    train(TrainOptions(out=str(tmp_path / "plain"), checkpoint_activations="off", **common))
    plain_calls, block_calls[:] = len(block_calls), []
    train(TrainOptions(out=str(tmp_path / "recomputed"), checkpoint_activations="on", **common))
    assert len(block_calls) == 2 * plain_calls > 0
    plain, recomputed = _weights(tmp_path / "plain"), _weights(tmp_path / "recomputed")
    assert any(k.endswith("running_mean") for k in plain)
    assert plain.keys() == recomputed.keys() and all(torch.equal(plain[k], recomputed[k]) for k in plain)


def test_activation_checkpointing_is_automatic_only_where_a_pass_is_large() -> None:
    from wsseg.train import TrainOptions
    from wsseg.training.classifier import uses_activation_checkpointing

    def used(device: str, micro: int, **options) -> bool:
        return uses_activation_checkpointing(TrainOptions(data="", out="", batch_size=16, **options), torch.device(device), micro)

    assert used("cpu", 16, image_size=512)  # the default recipe on photos: 8.8 GB without it
    assert not used("cpu", 4, image_size=512, freeze_bn=True)  # micro-batches already keep it small
    assert not used("cpu", 16, image_size=256)
    assert not used("cuda", 16, image_size=512)
    assert used("cuda", 16, image_size=256, checkpoint_activations="on")
    assert not used("cpu", 16, image_size=512, checkpoint_activations="off")
