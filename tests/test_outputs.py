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
