"""Where pseudo-labels came from: ``PSEUDO/segment.json`` (what ``wsseg segment`` leaves beside its
PNGs; its file name, reader and keys are :mod:`wsseg.outputs`), read and checked by the trainers
that learn from pseudo-labels (stage 2, affinity)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wsseg.data.voc import VOCDataset
from wsseg.errors import WssegError
from wsseg.outputs import SEGMENT_RECORD, SEGMENT_SOURCE_KEYS, read_segment_record
from wsseg.training.steps import same_setting


def read_pseudo_record(pseudo: str | Path, required: bool) -> dict[str, Any] | None:
    """PSEUDO/segment.json, what made the pseudo-labels; when not ``required`` (pseudo-labels another
    tool made are welcome), None where it is missing. One that is there but damaged is refused
    either way: it is never taken for 'no record'."""
    record = read_segment_record(
        pseudo, "--pseudo must be a folder written by `wsseg segment` (e.g. wsseg segment --split train --labels gt "
        "--method dcsm-crf --ignore-uncertain --out PSEUDO)" if required else None,
        "; make the pseudo-labels again with `wsseg segment`")
    if record is not None and not isinstance(record.get("method"), str):
        raise WssegError(f"{Path(pseudo) / SEGMENT_RECORD}: damaged: not a wsseg segment record (no method)")
    return record


def check_pseudo_record(record: dict[str, Any] | None, pseudo: str | Path, dataset: VOCDataset) -> None:
    """Refuse pseudo-labels whose segment.json says they were made on another dataset (resolved path),
    split or class list than the one given, saying which; a record that names none of them (another
    tool's, or an older wsseg's) is not compared on what it does not name."""
    if record is None:
        return
    given_root = dataset.data_argument.resolve()
    differ = []
    if isinstance(record.get("data"), str) and not same_setting("data", record["data"], str(given_root)):
        differ.append(f"dataset {record['data']} (given {given_root})")
    if isinstance(record.get("split"), str) and record["split"] != dataset.split:
        differ.append(f"split {record['split']!r} (given {dataset.split!r})")
    if isinstance(record.get("classes"), list) and record["classes"] != list(dataset.classes.foreground):
        differ.append(f"class list of {len(record['classes'])} classes (given {len(dataset.classes.foreground)})")
    if differ:
        raise WssegError(f"{Path(pseudo) / SEGMENT_RECORD}: these pseudo-labels were made on another "
                         f"{'; another '.join(differ)}; make them for this one with `wsseg segment`")


def pseudo_label_source(record: dict[str, Any] | None, pseudo: str | Path) -> dict[str, Any]:
    """The part of a segment record that says where pseudo-labels came from (None for each key
    when there is no record)."""
    record = record or {}
    return {"folder": str(Path(pseudo).resolve()), **{key: record.get(key) for key in SEGMENT_SOURCE_KEYS}}
