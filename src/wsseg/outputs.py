"""The rules for a folder a command writes into, the same for every command.

* Never a dataset's own folders: an ``--out`` that is, or lies inside, the dataset's images,
  masks, annotations or split lists is refused (resolved paths, so symlinks do not hide it).
* Never among files we did not write: a non-empty folder without the record an earlier wsseg
  run of that command leaves (``segment.json``, ``maps.json``, ``config.json``) is refused.
* Never over an input: a single-file output (``evaluate --json``, ``segment --image --out``)
  that is, or lies inside, one of the command's inputs, or is an existing file of the dataset,
  is refused; so is any output under a folder named as a dataset's own (``JPEGImages``, ...).
  :func:`check_may_write` is the one place that decides, for folders and single files alike.
* Never over a run without being told: a trainer's folder that already holds a run is refused
  unless ``--resume`` (the trainer then compares its settings with the record) or ``--overwrite``
  (the old run's files go first, checkpoints before records) -- :func:`claim_run_files`.
* One run at a time: :class:`OutputLock` holds ``.wsseg.lock`` (host and pid) while a run
  writes; a second run refuses, naming them. A lock whose process is gone (same host, dead pid)
  is taken over, by one process only (the takeover is serialised by ``flock`` on a gate file).
  Only the holder removes the temporaries a killed run left, and only those named by
  :func:`wsseg.io.atomic_write`'s own pattern.
* A folder of outputs with a record (``segment.json`` beside segmentations, ``maps.json`` beside
  maps) follows one protocol, :meth:`RecordedFolder.start`: every rank compares the folder's
  record with what it is about to write (refused when they differ, unless ``--overwrite``; a
  damaged record is never taken for "no record") -> barrier -> rank 0 removes the old outputs
  when replacing them and writes the new record -> barrier; only then is an output written.
  ``segment.json``'s file name, reader and keys are here, read by ``wsseg evaluate``, the report
  and the trainers that learn from pseudo-labels alike.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsseg.errors import WssegError
from wsseg.io import (NUMBER, check_fields, current_umask, read_json, remove_outputs, remove_stale_temporaries,
                      resolves_inside, write_json_atomic)
from wsseg.registry import ARTEFACTS

if TYPE_CHECKING:  # only a type here: importing it would import torch into `wsseg --help`
    from wsseg.distributed import ProcessGroup

LOCK_FILE = ".wsseg.lock"
# the parts of a VOC-layout dataset that outputs must never replace (besides its mask folder)
DATASET_FOLDERS = ("JPEGImages", "Annotations", "ImageSets", "SegmentationClass", "SegmentationClassAug",
                   "SegmentationObject")


# the folder of a COCO dataset that holds its instances_<split>.json files
COCO_ANNOTATIONS = "annotations"


def dataset_root_of(data: str | Path) -> Path:
    """The root of the dataset ``data`` names: itself, or for a COCO annotations file (``--data`` may
    name the JSON) the folder holding its ``annotations/`` folder, else the JSON's own folder. Every
    output check and :func:`wsseg.data.coco.find_coco` use it, so both see the same root."""
    data = Path(data)
    if not (data.is_file() and data.suffix.lower() == ".json"):
        return data
    folder = data.parent
    return folder.parent if folder.name == COCO_ANNOTATIONS else folder


def _coco_folders(data: Path) -> list[str]:
    """A COCO dataset's own folders under its root: ``annotations``, ``images`` and one per split
    that has an ``instances_<split>.json`` -- ``images`` too where ``data`` names a JSON outside an
    ``annotations`` folder (Label Studio's result.json, CVAT's and Roboflow's exports)."""
    root = dataset_root_of(data)
    annotations = root / COCO_ANNOTATIONS
    if annotations.is_dir():
        splits = [path.stem[len("instances_"):] for path in annotations.glob("instances_*.json")]
        return [COCO_ANNOTATIONS, "images", *splits]
    return ["images"] if root != Path(data) else []


def check_outside_dataset(out: str | Path, root: str | Path, masks: str | None = None) -> None:
    """Refuse an output folder that is, or lies inside, one of the dataset's own folders (VOC's, or
    a COCO dataset's annotations and image folders)."""
    coco = _coco_folders(Path(root))
    root = dataset_root_of(root)
    for name in dict.fromkeys([*DATASET_FOLDERS, *coco, *([masks] if masks else [])]):
        folder = Path(root) / name
        if folder.exists() and resolves_inside(out, folder):
            raise WssegError(f"{out}: lies inside the dataset's {name} folder ({folder}); writing there would "
                             "replace the dataset's own files. Choose another --out")


def _inside_a_dataset_folder(path: str | Path) -> str | None:
    """The dataset folder (by its VOC name) that ``path`` resolves into, if any: a guard that needs no --data."""
    real = Path(os.path.realpath(path))
    return next((str(folder) for folder in (real, *real.parents) if folder.name in DATASET_FOLDERS), None)


def check_may_write(out: str | Path, *, inputs: Iterable[str | Path] = (), dataset_root: str | Path | None = None,
                    masks: str | None = None, records: Iterable[str] | None = None) -> None:
    """The one rule of where a command may write ``out`` (a folder, or a single file): never inside the
    dataset's own folders (``dataset_root`` given, or any folder named as one), never an existing file of
    the dataset, never one of ``inputs`` or inside one, and -- for folders, with ``records`` -- never
    among files no earlier wsseg run wrote. Refusals name the path and what it would replace."""
    if dataset_root is not None:  # a COCO JSON named as --data: its dataset's root, not the JSON alone
        check_outside_dataset(out, dataset_root, masks)
        dataset_root = dataset_root_of(dataset_root)
        if Path(out).is_file() and resolves_inside(out, dataset_root):
            raise WssegError(f"{out}: is a file of the dataset {dataset_root}; writing there would replace it. "
                             "Choose another path")
    folder = _inside_a_dataset_folder(out)
    if folder is not None:
        raise WssegError(f"{out}: lies inside a dataset's {Path(folder).name} folder ({folder}); writing there "
                         "would replace the dataset's own files. Choose another path")
    for given in inputs:
        if Path(given).exists() and resolves_inside(out, given):
            raise WssegError(f"{out}: is, or lies inside, the input {given}; writing there would replace it. "
                             "Choose another path")
    if records is not None:
        check_ours(out, records)


def claim_run_files(out: str | Path, files: Sequence[str], resume: bool, overwrite: bool, what: str) -> list[str]:
    """A trainer's rule for a folder that already holds a run (any of ``files``): refused unless
    ``resume`` (the caller then compares its settings with the run's record) or ``overwrite``, which
    removes those files first, in the order given (checkpoints before the records describing them, so
    that a kill part-way never leaves a record over weights it does not describe). Returns the files
    the folder held."""
    if resume and overwrite:
        raise WssegError("--resume and --overwrite: give one (--resume continues the run in the folder with "
                         "the same settings, --overwrite replaces it)")
    out = Path(out)
    held = [name for name in files if (out / name).exists()]
    if held and overwrite:
        for name in held:
            with contextlib.suppress(FileNotFoundError):
                (out / name).unlink()
    elif held and not resume:
        raise WssegError(f"{out}: already holds {what} ({', '.join(held)}); give --resume to continue it with the "
                         "same settings, or --overwrite to replace it (its files are deleted first)")
    return held


def check_ours(out: str | Path, records: Iterable[str]) -> None:
    """Refuse a non-empty folder that holds none of ``records`` (no earlier wsseg run wrote it)."""
    out = Path(out)
    if not out.is_dir():
        return
    names = list(records)
    # the lock and its temporary (.wsseg.lock.*.new, linked into place by another rank's OutputLock
    # while this one looks) are ours
    if any(not entry.name.startswith(LOCK_FILE) for entry in out.iterdir()) and \
            not any((out / name).exists() for name in names):
        raise WssegError(f"{out}: the folder holds files but no {' or '.join(names)} of an earlier wsseg run; "
                         "refusing to write among files that are not ours. Choose an empty or new --out")


def _valid_pid(value: object) -> bool:
    """A lock's pid must be a process id this system could have (a whole number from 1 to 2**31 - 1)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2 ** 31


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
            if not self._create(me):
                self._take_over_if_stale(me["host"])
                continue
            self.held = True
            # no other run writes here now: what temporaries there are, a killed run left
            self.removed_temporaries = remove_stale_temporaries(self.path.parent)
            return self
        raise WssegError(f"{self.path}: could not take the output folder's lock")

    def _create(self, me: dict[str, object]) -> bool:
        """Create the lock with its content in one step (a hard link of a written temporary, which fails
        where a lock exists): a racer never reads a lock half-written. False when one exists."""
        # not atomic_write's pattern: the holder's cleanup must not remove a racer's lock in the making
        fd, temporary = tempfile.mkstemp(prefix=f"{LOCK_FILE}.", suffix=".new", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
            os.chmod(temporary, 0o666 & ~current_umask())
            os.link(temporary, self.path)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            return self._create_in_place(me)  # a file system without hard links
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)

    def _create_in_place(self, me: dict[str, object]) -> bool:
        """O_EXCL create, then write: where hard links are not supported (a racer reading the lock in
        between refuses it as damaged: a refusal, never two holders)."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        return True

    def _holder(self) -> tuple[int, str] | None:
        """(pid, host) of the lock's holder; None when the lock is gone; a damaged lock is refused."""
        try:
            holder = read_json(self.path)
            pid, holder_host = holder["pid"], holder["host"]
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, OSError, UnicodeDecodeError):
            pid, holder_host = None, None
        if not (_valid_pid(pid) and isinstance(holder_host, str)):
            raise WssegError(f"{self.path}: a damaged lock (no valid pid and host) holds this output folder; if no "
                             "wsseg run is writing here, remove it")
        return pid, holder_host

    def _take_over_if_stale(self, host: str) -> None:
        holder = self._holder()
        if holder is None:
            return  # released meanwhile: try again
        pid, holder_host = holder
        if holder_host == host and not _pid_alive(pid):
            with self._takeover_gate():
                # under the gate, only a lock still naming the dead process is removed: a racer that
                # took it over meanwhile holds a lock of its own, which we must leave alone
                if self._holder() == holder:
                    self.path.unlink()
            return
        raise WssegError(f"{self.path.parent}: another wsseg run (pid {pid} on {holder_host}) is writing here; "
                         f"wait for it to finish, or remove {self.path} if that run is gone")

    @contextlib.contextmanager
    def _takeover_gate(self) -> Iterator[None]:
        """An exclusive flock on ``.wsseg.lock.takeover`` for the check-and-remove of a stale lock
        (the kernel releases it when its holder dies: it never goes stale itself). The gate file is
        removed after; one that was replaced while we waited for it is taken again."""
        gate = self.path.with_name(self.path.name + ".takeover")
        while True:
            fd = os.open(gate, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    current = os.stat(gate)
                except FileNotFoundError:
                    continue  # removed by the holder before us: take the new one
                if current.st_ino != os.fstat(fd).st_ino:
                    continue
                try:
                    yield
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        gate.unlink()
                return
            finally:
                os.close(fd)

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
    check_may_write(out, dataset_root=dataset_root, masks=masks, records=[*records, LOCK_FILE])
    with OutputLock(out, enabled=is_main) as lock:
        yield lock


@dataclass(frozen=True)
class RecordedFolder:
    """A kind of output folder whose files one JSON record describes: the record's file name, the
    patterns of the files it describes (removed when they are replaced) and what they are called."""

    record: str
    outputs: tuple[str, ...]
    what: str

    def must_replace(self, out: str | Path, difference: Callable[[], str | None], overwrite: bool) -> bool:
        """Compare: ``difference()`` reads the folder's record and says what the folder holds, when that
        differs from what is about to be written ("other maps (...)"; None: the same, or no record; a
        damaged record raises WssegError). Refused unless ``overwrite``; True when the outputs must go."""
        try:
            differs = difference()
        except WssegError as exc:  # damaged: what made the folder's outputs is unknown, never 'no record'
            if overwrite:
                return True
            raise WssegError(f"{exc}; use --overwrite to replace this folder's {self.what}, or write to another "
                             "--out") from None
        if differs is None:
            return False
        if overwrite:
            return True
        raise WssegError(f"{Path(out) / self.record}: this folder holds {differs}; use --overwrite to replace them, "
                         "or write to another --out")

    def start(self, group: ProcessGroup, out: str | Path, record: dict[str, Any],
              difference: Callable[[], str | None], overwrite: bool) -> None:
        """The protocol: every rank compares (so that all stop together) -> barrier -> rank 0 removes
        the old outputs when replacing them and writes ``record`` -> barrier (no output is written
        before the old ones are gone)."""
        replace = self.must_replace(out, difference, overwrite)
        group.barrier()  # every rank has read the old record before rank 0 replaces it
        if group.is_main:
            if replace:
                remove_outputs(out, self.outputs)
            write_json_atomic(Path(out) / self.record, record)
        group.barrier()


# What `wsseg segment` leaves beside its PNGs: read by `wsseg segment` (resuming), `wsseg evaluate`
# (the oracle flag), the report (the maps it names) and the trainers that learn from pseudo-labels.
SEGMENT_RECORD = "segment.json"
SEGMENTATIONS = RecordedFolder(SEGMENT_RECORD, ("*.png",), "segmentations")
# the kinds of its fields that readers use (null allowed): a field of another kind is damage
SEGMENT_RECORD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "method": str, "labels": str, "label_threshold": NUMBER, "threshold": NUMBER, "ignore_uncertain": bool,
    "tuned_on_ground_truth": bool, "run": str, "model_sha256": str, "data": str, "split": str, "classes": list,
    "maps": list, "stored_maps": dict, "scales": list}
# the keys that decide what the PNGs are: resuming into a folder made otherwise is refused (the
# digests of the run's weights and of every trained file a method's registry row may read)
SEGMENT_SHAPING_KEYS = ("method", "labels", "label_threshold", "ignore_uncertain", "maps", "threshold",
                        "threshold_source", "tuned_on_ground_truth", "tta", "crf", "network_side", "classifier_sha256",
                        "split", "data", "model_sha256", *(artefact.record_key for artefact in ARTEFACTS))
# what a trainer records of where the pseudo-labels it learnt from came from
SEGMENT_SOURCE_KEYS = ("method", "labels", "ignore_uncertain", "threshold", "threshold_source",
                       "tuned_on_ground_truth", "run", "split", "data", "model_sha256", "scales")


def read_segment_record(folder: str | Path, missing: str | None = None, again: str = "") -> dict[str, Any] | None:
    """``folder/segment.json``; where there is none, None, or (``missing`` given: the record is required)
    a refusal ending in ``missing``. A damaged one (unreadable, or a field of the wrong kind) is refused
    naming the file and the field, ``again`` added: it is never taken for 'no record'."""
    path = Path(folder) / SEGMENT_RECORD
    if not path.is_file():
        if missing is None:
            return None
        raise WssegError(f"{path}: missing; {missing}")
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        raise WssegError(f"{path}: damaged or unreadable ({exc.__class__.__name__}: {str(exc)[:80]}){again}") from None
    if not isinstance(data, dict):
        raise WssegError(f"{path}: damaged or unreadable (not a JSON object)")
    return check_fields(data, SEGMENT_RECORD_FIELDS, path)


def segment_record_differs(out: str | Path, record: dict[str, Any]) -> str | None:
    """What ``out``'s segment.json says the folder holds, when made otherwise than ``record`` says."""
    earlier = read_segment_record(out)
    changed = [key for key in SEGMENT_SHAPING_KEYS if earlier is not None and earlier.get(key) != record.get(key)]
    return f"segmentations made with another {', '.join(changed)}" if changed else None
