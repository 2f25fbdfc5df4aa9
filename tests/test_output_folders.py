"""The output-folder rules (wsseg.outputs), every command's: not the dataset's folders, not
among files we did not write, one run at a time, only our own temporaries cleaned."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from wsseg.errors import WssegError
from wsseg.io import atomic_write
from wsseg.outputs import LOCK_FILE, OutputLock, check_ours, check_outside_dataset, claimed_output


def _dataset(root: Path) -> Path:
    for name in ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Segmentation", "Masks"):
        (root / name).mkdir(parents=True)
    return root


def test_outputs_inside_the_dataset_folders_are_refused(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "data")
    for inside in ("SegmentationClass", "JPEGImages/sub", "ImageSets", "Masks"):
        with pytest.raises(WssegError, match="inside the dataset's"):
            check_outside_dataset(root / inside, root, masks="Masks")
    link = tmp_path / "innocent-looking"
    link.symlink_to(root / "SegmentationClass")
    with pytest.raises(WssegError, match="SegmentationClass"):
        check_outside_dataset(link, root)
    check_outside_dataset(root / "predictions", root)  # beside them is fine (as the demo writes)
    check_outside_dataset(tmp_path / "elsewhere", root)


def test_folders_of_other_files_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.png").write_bytes(b"not ours")
    with pytest.raises(WssegError, match="no segment.json"):
        check_ours(folder, ["segment.json"])
    (folder / "segment.json").write_text("{}")
    check_ours(folder, ["segment.json"])  # an earlier run's folder: resuming into it is the runner's call
    check_ours(tmp_path / "new", ["segment.json"])
    empty = tmp_path / "empty"
    empty.mkdir()
    check_ours(empty, ["segment.json"])


def test_a_second_run_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with OutputLock(out):
        holder = json.loads((out / LOCK_FILE).read_text())
        assert holder == {"host": socket.gethostname(), "pid": os.getpid()}
        with pytest.raises(WssegError, match=f"pid {os.getpid()} on {socket.gethostname()}"):
            with OutputLock(out):
                pass
        with OutputLock(out, enabled=False):  # a torchrun rank other than 0 shares rank 0's lock
            pass
    assert not (out / LOCK_FILE).exists()


def test_a_dead_runs_lock_is_taken_over_and_only_our_temporaries_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}))
    users = out / ".notes.tmp"
    users.write_text("the user's own file")
    try:
        with atomic_write(out / "a.png") as handle:  # a write cut short leaves its temporary...
            handle.write(b"half")
            left = [p for p in out.iterdir() if p.name.startswith(".a.png.")]
            os.link(left[0], out / left[0].name.replace(".a.png.", ".b.png."))  # ...keep a copy as a kill would
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    with OutputLock(out) as lock:
        assert lock.removed_temporaries == 1
    assert users.read_text() == "the user's own file"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / LOCK_FILE).write_text(json.dumps({"host": "another-machine", "pid": 1}))
    with pytest.raises(WssegError, match="another-machine"):  # another host's pid cannot be checked
        with OutputLock(elsewhere):
            pass


def test_claimed_output_applies_every_rule(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "data")
    with pytest.raises(WssegError, match="inside the dataset's"):
        with claimed_output(root / "SegmentationClass", ["segment.json"], root):
            pass
    out = tmp_path / "out"
    with claimed_output(out, ["segment.json"], root) as lock:
        assert lock.held and (out / LOCK_FILE).exists()
        (out / "segment.json").write_text("{}")
    with claimed_output(out, ["segment.json"], root):  # our folder again: fine
        pass


def test_another_ranks_lock_temporary_does_not_make_a_folder_foreign(tmp_path: Path) -> None:
    """Under torchrun rank 0 creates the lock through a temporary (.wsseg.lock.*.new) while rank 1
    checks the folder: that file alone must not read as 'files that are not ours' (the race that
    failed test_two_process_training_with_torchrun); any other file still does."""
    out = tmp_path / "run"
    out.mkdir()
    (out / f"{LOCK_FILE}.k2j1.new").write_text("{}")
    check_ours(out, ["config.json"])
    (out / "notes.txt").write_text("mine")
    with pytest.raises(WssegError, match="not ours"):
        check_ours(out, ["config.json"])
