from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wsseg.cli import main
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
    assert result.returncode == 0, result.stderr[-2000:]
    model, _ = load_run(run)
    with torch.no_grad():
        scores = torch.sigmoid(model(torch.rand(1, 3, 64, 64)))
    assert scores.shape == (1, 6) and torch.isfinite(scores).all()
    assert len(json.loads((run / "history.json").read_text())) == 1
