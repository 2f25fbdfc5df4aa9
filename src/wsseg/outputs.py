"""The rules for a folder a command writes into, the same for every command.

* Never a dataset's own folders: an ``--out`` that is, or lies inside, the dataset's images,
  masks, annotations or split lists is refused (resolved paths, so symlinks do not hide it).
* Never among files we did not write: a non-empty folder without the record an earlier wsseg
  run of that command leaves (``segment.json``, ``maps.json``, ``config.json``) is refused.
* One run at a time: :class:`OutputLock` holds ``.wsseg.lock`` (host and pid) while a run
  writes; a second run refuses, naming them. A lock whose process is gone (same host, dead pid)
  is taken over. Only the holder removes the temporaries a killed run left, and only those
  named by :func:`wsseg.io.atomic_write`'s own pattern.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

from wsseg.errors import WssegError
from wsseg.io import remove_stale_temporaries, resolves_inside

LOCK_FILE = ".wsseg.lock"
# the parts of a VOC-layout dataset that outputs must never replace (besides its mask folder)
DATASET_FOLDERS = ("JPEGImages", "Annotations", "ImageSets", "SegmentationClass", "SegmentationClassAug",
                   "SegmentationObject")


def check_outside_dataset(out: str | Path, root: str | Path, masks: str | None = None) -> None:
    """Refuse an output folder that is, or lies inside, one of the dataset's own folders."""
    for name in dict.fromkeys([*DATASET_FOLDERS, *([masks] if masks else [])]):
        folder = Path(root) / name
        if folder.exists() and resolves_inside(out, folder):
            raise WssegError(f"{out}: lies inside the dataset's {name} folder ({folder}); writing there would "
                             "replace the dataset's own files. Choose another --out")


def check_ours(out: str | Path, records: Iterable[str]) -> None:
    """Refuse a non-empty folder that holds none of ``records`` (no earlier wsseg run wrote it)."""
    out = Path(out)
    if not out.is_dir():
        return
    names = list(records)
    if any(out.iterdir()) and not any((out / name).exists() for name in names):
        raise WssegError(f"{out}: the folder holds files but no {' or '.join(names)} of an earlier wsseg run; "
                         "refusing to write among files that are not ours. Choose an empty or new --out")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # it exists, run by someone else
    return True


class OutputLock:
    """``with OutputLock(out):`` -- hold ``out/.wsseg.lock`` for the length of a run.

    ``enabled=False`` (every torchrun rank but 0: they share rank 0's lock) makes it a no-op.
    """

    def __init__(self, out: str | Path, enabled: bool = True) -> None:
        self.path = Path(out) / LOCK_FILE
        self.enabled = enabled
        self.held = False
        self.created = False  # we made the folder: a run refused before writing anything leaves none
        self.removed_temporaries = 0

    def __enter__(self) -> OutputLock:
        if not self.enabled:
            return self
        self.created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid()}
        for _attempt in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale(me["host"])
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
            self.held = True
            # no other run writes here now: what temporaries there are, a killed run left
            self.removed_temporaries = remove_stale_temporaries(self.path.parent)
            return self
        raise WssegError(f"{self.path}: could not take the output folder's lock")

    def _take_over_if_stale(self, host: str) -> None:
        try:
            holder = json.loads(self.path.read_text())
            pid, holder_host = int(holder["pid"]), str(holder["host"])
        except FileNotFoundError:
            return  # released meanwhile: try again
        except (ValueError, KeyError, TypeError, OSError):
            raise WssegError(f"{self.path}: an unreadable lock holds this output folder; if no wsseg run is "
                             "writing here, remove it") from None
        if holder_host == host and not _pid_alive(pid):
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # its process is gone
            return
        raise WssegError(f"{self.path.parent}: another wsseg run (pid {pid} on {holder_host}) is writing here; "
                         f"wait for it to finish, or remove {self.path} if that run is gone")

    def __exit__(self, *exc_info: object) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.held = False
            if self.created:
                with contextlib.suppress(OSError):  # not empty: the run wrote something, keep it
                    self.path.parent.rmdir()


@contextlib.contextmanager
def claimed_output(out: str | Path, records: Iterable[str], dataset_root: str | Path | None = None,
                   masks: str | None = None, is_main: bool = True) -> Iterator[OutputLock]:
    """All three rules at once, for a command about to write into ``out``."""
    if dataset_root is not None:
        check_outside_dataset(out, dataset_root, masks)
    check_ours(out, [*records, LOCK_FILE])
    with OutputLock(out, enabled=is_main) as lock:
        yield lock
