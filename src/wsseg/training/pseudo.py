"""Where pseudo-labels came from: ``PSEUDO/segment.json`` (what ``wsseg segment`` leaves beside its
PNGs), read and checked by the trainers that learn from pseudo-labels (stage 2, affinity) and by
``wsseg segment`` itself, which writes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wsseg.data.voc import VOCDataset
from wsseg.errors import WssegError
from wsseg.io import NUMBER, check_fields, read_json
from wsseg.training.steps import same_setting

PSEUDO_RECORD = "segment.json"  # what `wsseg segment` leaves beside its PNGs
# the kinds of segment.json's fields that readers use (null allowed): a field of another kind is damage
SEGMENT_RECORD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "method": str, "labels": str, "label_threshold": NUMBER, "threshold": NUMBER, "ignore_uncertain": bool,
    "tuned_on_ground_truth": bool, "run": str, "model_sha256": str, "data": str, "split": str, "classes": list,
    "maps": list, "stored_maps": dict, "scales": list}
# what a trainer records of it: where the pseudo-labels it learnt from came from
_PSEUDO_KEYS = ("method", "labels", "ignore_uncertain", "threshold", "threshold_source", "tuned_on_ground_truth",
                "run", "split", "data", "model_sha256", "scales")


def read_pseudo_record(pseudo: str | Path, required: bool) -> dict[str, Any] | None:
    """PSEUDO/segment.json, what made the pseudo-labels; when not ``required`` (pseudo-labels another
    tool made are welcome), None where it is missing. One that is there but damaged is refused
    either way: it is never taken for 'no record'."""
    path = Path(pseudo) / PSEUDO_RECORD
    if not path.is_file():
        if not required:
            return None
        raise WssegError(f"{path}: missing; --pseudo must be a folder written by `wsseg segment` (e.g. "
                         "wsseg segment --split train --labels gt --method dcsm-crf --ignore-uncertain --out PSEUDO)")
    try:
        record = read_json(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise WssegError(f"{path}: damaged or unreadable ({exc.__class__.__name__}: {str(exc)[:80]}); make the "
                         "pseudo-labels again with `wsseg segment`") from None
    if not isinstance(record, dict) or not isinstance(record.get("method"), str):
        raise WssegError(f"{path}: damaged: not a wsseg segment record (no method)")
    return check_fields(record, SEGMENT_RECORD_FIELDS, path)


def check_pseudo_record(record: dict[str, Any] | None, pseudo: str | Path, dataset: VOCDataset) -> None:
    """Refuse pseudo-labels whose segment.json says they were made on another dataset (resolved path),
    split or class list than the one given, saying which; a record that names none of them (another
    tool's, or an older wsseg's) is not compared on what it does not name."""
    if record is None:
        return
    given_root = dataset.root.resolve()
    differ = []
    if isinstance(record.get("data"), str) and not same_setting("data", record["data"], str(given_root)):
        differ.append(f"dataset {record['data']} (given {given_root})")
    if isinstance(record.get("split"), str) and record["split"] != dataset.split:
        differ.append(f"split {record['split']!r} (given {dataset.split!r})")
    if isinstance(record.get("classes"), list) and record["classes"] != list(dataset.classes.foreground):
        differ.append(f"class list of {len(record['classes'])} classes (given {len(dataset.classes.foreground)})")
    if differ:
        raise WssegError(f"{Path(pseudo) / PSEUDO_RECORD}: these pseudo-labels were made on another "
                         f"{'; another '.join(differ)}; make them for this one with `wsseg segment`")


def pseudo_label_source(record: dict[str, Any] | None, pseudo: str | Path) -> dict[str, Any]:
    """The part of a segment record that says where pseudo-labels came from (None for each key
    when there is no record)."""
    record = record or {}
    return {"folder": str(Path(pseudo).resolve()), **{key: record.get(key) for key in _PSEUDO_KEYS}}
