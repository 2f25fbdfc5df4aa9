"""Crash safety: a run killed with SIGKILL part-way and started again ends with the outputs of an
uninterrupted run, and never leaves a half-written file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from wsseg.data.images import read_label_png
from wsseg.models.run import read_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "2"}


def _wsseg(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wsseg", *args, "--quiet"], capture_output=True, text=True,
                          timeout=300, env=ENV)


def _kill_when(args: list[str], ready, timeout: float = 120.0) -> None:
    """Start wsseg, SIGKILL it as soon as ``ready()`` holds; fail if it finished first."""
    process = subprocess.Popen([sys.executable, "-m", "wsseg", *args, "--quiet"], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if process.poll() is not None:
                pytest.fail("the run finished before it could be killed part-way")
            if time.monotonic() > deadline:
                pytest.fail("the run made no progress")
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def bench40(tmp_path_factory) -> Path:
    from wsseg.data import SynthConfig, write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("bench40"), SynthConfig(train=40, val=4, size=64),
                                   progress=False)


def test_segment_killed_part_way_resumes_to_the_same_outputs(bench40: Path, tiny_run: Path, tmp_path: Path) -> None:
    common = ["segment", "--run", str(tiny_run), "--data", str(bench40), "--split", "train", "--method", "dcsm-crf",
              "--batch-size", "3"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert _wsseg([*common, "--out", str(straight)]).returncode == 0
    _kill_when([*common, "--out", str(killed)], lambda: len(list(killed.glob("*.png"))) >= 7)

    written = sorted(killed.glob("*.png"))
    assert 7 <= len(written) < 40  # killed part-way
    for path in written:  # whatever exists is complete: atomic writes
        assert read_label_png(path, 6).shape == (64, 64)

    result = _wsseg([*common, "--out", str(killed)])
    assert result.returncode == 0, result.stderr
    assert f"{len(written)} already done" in result.stdout
    expected = {p.name: p.read_bytes() for p in straight.glob("*.png")}
    assert len(expected) == 40
    assert {p.name: p.read_bytes() for p in killed.glob("*.png")} == expected
    assert not list(killed.glob(".*.tmp"))  # what the kill left half-written was cleared away


def test_training_killed_mid_epoch_resumes_to_the_same_checkpoint(tiny_bench: Path, tmp_path: Path) -> None:
    common = ["train", "--data", str(tiny_bench), "--epochs", "3", "--image-size", "64", "--batch-size", "2",
              "--val-split", "none"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert _wsseg([*common, "--out", str(straight)]).returncode == 0

    def first_epoch_saved() -> bool:
        try:
            return len(json.loads((killed / "history.json").read_text())) >= 1
        except (OSError, ValueError):
            return False

    _kill_when([*common, "--out", str(killed)], first_epoch_saved)
    assert read_checkpoint(killed / "model.pt")["epoch"] in (0, 1)  # a whole checkpoint, never a torn one
    result = _wsseg([*common, "--out", str(killed), "--resume"])
    assert result.returncode == 0, result.stderr
    a, b = (read_checkpoint(run / "model.pt")["model"] for run in (straight, killed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert np.allclose([r["loss"] for r in json.loads((straight / "history.json").read_text())],
                       [r["loss"] for r in json.loads((killed / "history.json").read_text())])
