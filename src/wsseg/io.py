"""Atomic file output: a crash or a kill never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from wsseg.errors import DataError, WssegError


# the temporaries of atomic_write are named .<name>.<random>.wsseg.tmp: the cleanup of a killed
# run removes those and nothing else
TEMPORARY_SUFFIX = ".wsseg.tmp"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; rename it onto ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMPORARY_SUFFIX, dir=target.parent)
    except OSError as exc:
        raise _about(exc, target) from None
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; give what open() would
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError) and exc.filename in (None, tmp_name):
            raise _about(exc, target) from None  # a full disk, or a folder where the file should go
        raise


def _about(error: OSError, target: Path) -> OSError:
    """The error as the user should see it: about the file they asked for, not our temporary one."""
    return OSError(error.errno, error.strerror or str(error), str(target))


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> int:
    """Delete the temporary files of :func:`atomic_write` that a killed process left in ``folder``.

    Only safe while nothing is writing there (a run calls it before it starts its own writes).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.glob(f".*{TEMPORARY_SUFFIX}"):  # ours only: a user's .x.tmp is left alone
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


def resolves_inside(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """Whether ``path``'s real location (after symlinks) is ``folder`` or lies inside it."""
    real_folder = os.path.realpath(folder)
    return os.path.commonpath([os.path.realpath(path), real_folder]) == real_folder


def require_inside_root(path: Path, root: str | os.PathLike[str]) -> Path:
    """``path``, unless it leads out of the dataset ``root`` (a symlink): then a DataError."""
    if not resolves_inside(path, root):
        raise DataError(path, "leads outside the dataset root (symlink?); refused")
    return path


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in chunks (a retrained model has another, a moved one not)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def remove_outputs(folder: str | os.PathLike[str], patterns: tuple[str, ...]) -> int:
    """Delete ``folder``'s files matching ``patterns`` (an earlier run's outputs, for --overwrite)."""
    removed = 0
    for pattern in patterns:
        for path in Path(folder).glob(pattern):
            if path.is_file():
                path.unlink()
                removed += 1
    return removed


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_write(path, "w") as handle:
        handle.write(text)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """A JSON file's content. Text nested too deeply for the parser is a ValueError, like any other text
    that is not JSON (never a RecursionError): callers refuse both as a damaged file, in one line."""
    try:
        return json.loads(Path(path).read_text())
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None


def read_json_or_refuse(path: str | os.PathLike[str], what: str) -> Any:
    """A JSON record's content; a file that is not JSON (or cannot be read) is refused in one line naming
    the file and ``what`` it should have been, so that no record reader repeats the refusal."""
    try:
        return read_json(path)
    except (ValueError, OSError) as exc:
        raise WssegError(f"{path}: unreadable {what} ({exc.__class__.__name__}: {str(exc)[:80]})") from None


NUMBER = (int, float)


def check_fields(record: dict[str, Any], kinds: dict[str, type | tuple[type, ...]], path: str | os.PathLike[str]
                 ) -> dict[str, Any]:
    """``record``, refused (naming the file and the field) where a field holds another kind of value than
    ``kinds`` gives for it (null and a missing field pass; a boolean is no number)."""
    for key, kind in kinds.items():
        value = record.get(key)
        wanted = kind if isinstance(kind, tuple) else (kind,)
        if value is None or (isinstance(value, wanted) and not (isinstance(value, bool) and bool not in wanted)):
            continue
        names = " or ".join("number" if t in NUMBER else t.__name__ for t in dict.fromkeys(wanted))
        raise WssegError(f"{path}: field {key!r} is damaged (a {type(value).__name__} where a {names} belongs)")
    return record


def load_weights_only(path: str | os.PathLike[str], what: str) -> Any:
    """torch.load with weights_only=True: a file that carries code is refused, never run.

    Every failure becomes a WssegError naming the file.
    """
    import torch  # local: io sits under the CLI, and `wsseg --help` must not wait for torch

    path = Path(path)
    if not path.is_file():
        raise WssegError(f"{path}: {what} file is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = (str(exc).strip().splitlines() or ["unsafe content"])[0]
        raise WssegError(f"{path}: {what} file carries code or objects other than tensors; refused "
                         f"(weights_only load: {first[:160]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise WssegError(f"{path}: cannot read {what} file ({exc.__class__.__name__}: {str(exc)[:160]})") from None
