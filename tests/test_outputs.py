"""Output files get the permissions a plain open() would give: the user's umask decides."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from wsseg.cli import main
from wsseg.io import atomic_write, current_umask


@pytest.fixture
def umask():
    """Set a umask for one test and restore the caller's."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_outputs_follow_the_umask(tmp_path: Path, umask, mask: int) -> None:
    umask(mask)
    assert current_umask() == mask
    with atomic_write(tmp_path / "direct.bin") as handle:
        handle.write(b"x")
    assert main(["synth", str(tmp_path / "data"), "--train", "2", "--val", "1", "--size", "32", "--quiet"]) == 0
    files = [tmp_path / "direct.bin", *(p for p in (tmp_path / "data").rglob("*") if p.is_file())]
    assert len(files) > 8
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path


def test_write_errors_name_the_real_file_not_a_temporary(tmp_path: Path, tiny_bench: Path, capsys,
                                                         monkeypatch) -> None:
    """A --json that is a folder, or a full disk, is reported for the path the user gave (item 10
    of the hostile-user issue: the message named '.x.json.abc.tmp', or no path at all)."""
    folder = tmp_path / "a-folder"
    folder.mkdir()
    pred = tmp_path / "pred"
    pred.mkdir()
    for image_id in (tiny_bench / "ImageSets" / "Segmentation" / "val.txt").read_text().split():
        (pred / f"{image_id}.png").write_bytes((tiny_bench / "SegmentationClass" / f"{image_id}.png").read_bytes())
    args = ["evaluate", "--pred", str(pred), "--data", str(tiny_bench), "--split", "val", "--quiet"]
    assert main([*args, "--json", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"{folder}: " in err and ".tmp" not in err and len(err.strip().splitlines()) == 1

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    target = tmp_path / "scores.json"
    assert main([*args, "--json", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"{target}: No space left on device" in err and ".tmp" not in err
    assert not target.exists() and not list(tmp_path.glob(".*.tmp"))
