"""The command line: readable output, one-line errors with exit code 2, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsseg.cli import main
from wsseg.data import write_label_png


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wsseg", *args], capture_output=True, text=True, timeout=120)


def test_synth_then_evaluate_round_trip(tmp_path: Path, capsys) -> None:
    root = tmp_path / "bench"
    assert main(["synth", str(root), "--train", "4", "--val", "3", "--size", "48", "--quiet"]) == 0
    pred = tmp_path / "pred"
    for image_id in (root / "ImageSets/Segmentation/val.txt").read_text().split():
        mask = np.asarray(Image.open(root / "SegmentationClass" / f"{image_id}.png"))
        write_label_png(pred / f"{image_id}.png", np.where(mask == 255, 0, mask))
    out_json = tmp_path / "scores.json"
    assert main(["evaluate", "--pred", str(pred), "--data", str(root), "--split", "val",
                 "--json", str(out_json), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "100.00%" in printed
    scores = json.loads(out_json.read_text())
    assert scores["miou"] == 1.0 and scores["n_images"] == 3 and len(scores["confusion"]) == 7


def test_bad_prediction_is_one_line_exit_2_and_skip_bad_counts(tiny_voc: Path, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    write_label_png(pred / "2007_000032.png", np.zeros((6, 8), np.uint8))
    (pred / "000123.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = _run("evaluate", "--pred", str(pred), "--data", str(tiny_voc), "--split", "train", "--quiet")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "000123.png: cannot decode prediction" in lines[0]
    result = _run("evaluate", "--pred", str(pred), "--data", str(tiny_voc), "--split", "train",
                  "--quiet", "--skip-bad")
    assert result.returncode == 0, result.stderr
    assert "1 images scored, 1 skipped" in result.stdout


@pytest.mark.parametrize("args,message", [
    (["evaluate", "--pred", "{tmp}", "--data", "{tmp}/none", "--split", "val"], "dataset root is not a directory"),
    (["evaluate", "--pred", "{tmp}", "--data", "{voc}", "--split", "../x"], "not allowed"),
    (["synth", "{tmp}/s", "--size", "8"], "at least 32"),
])
def test_argument_errors_are_one_line(tiny_voc: Path, tmp_path: Path, capsys, args, message) -> None:
    args = [a.format(tmp=tmp_path, voc=tiny_voc) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_console_script_help_does_not_import_torch() -> None:
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "wsseg", "segment", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "pipeline-a" in result.stdout and "mi-SVM" in result.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line]
    assert "wsseg.registry" in imported and not any(name.split(".")[0] == "torch" for name in imported)
    result = _run("--help")
    assert result.returncode == 0 and "synth" in result.stdout and "evaluate" in result.stdout
