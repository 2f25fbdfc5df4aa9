"""The README's results tables are copies of the benchmarks' JSON records; this keeps them from
drifting: every number in them must be the record's, rounded as printed."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# row names of the real-photo table that are not method names
STAGE2_ROWS = {"stage 2 from dcsm-crf's confident pseudo-labels": "seg-from-dcsm-crf",
               "stage 2 from the true masks (the bound)": "seg-ground-truth"}


def _table(section: str, header_start: str) -> dict[str, list[str]]:
    """The rows of the first table under README section ``section`` whose header starts with
    ``header_start``: method name -> its cells (bold marks and backticks removed)."""
    text = (ROOT / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    lines = body.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip().replace("**", "").strip("`") for cell in line.strip("|").split("|")]
        name = cells[0].replace("all background", "all-background")
        rows[STAGE2_ROWS.get(name, name)] = cells[1:]
    return rows


def _check(cell: str, recorded: float | None, where: str) -> None:
    if cell == "-":
        assert recorded is None, f"{where}: the README says '-' but the record has {recorded:.1f}"
    else:
        assert recorded is not None, f"{where}: the README has {cell} but the record has no value"
        assert cell == f"{recorded:.1f}", f"{where}: the README has {cell}, the record {recorded:.1f}"


def test_the_synthetic_and_real_columns_are_the_records() -> None:
    quality = json.loads((ROOT / "benchmarks" / "segment_quality.json").read_text())
    real = json.loads((ROOT / "benchmarks" / "real_photos.json").read_text())["miou"]
    rows = _table("Results on the synthetic benchmarks", "| method | shapes train")
    assert {"all-background", "cam", "dcsm-crf", "pipeline-a"} <= set(rows)
    for method, cells in rows.items():
        shapes_train, shapes_val, glyphs_train, glyphs_val, real_train, real_val = cells
        for cell, kind, split in ((shapes_train, "shapes", "train"), (shapes_val, "shapes", "val"),
                                  (glyphs_train, "glyphs", "train"), (glyphs_val, "glyphs", "val")):
            _check(cell, quality[split][kind].get(method), f"{method}, {kind} {split}")
        _check(real_train, real.get(f"train/{method}"), f"{method}, real train")
        _check(real_val, real.get(f"val/{method}"), f"{method}, real val")


def test_the_real_photo_table_is_the_record() -> None:
    record = json.loads((ROOT / "benchmarks" / "real_photos.json").read_text())
    rows = _table("Results on real photographs", "| method | train, true labels")
    assert set(STAGE2_ROWS.values()) <= set(rows)
    for method, cells in rows.items():
        _check(cells[0], record["miou"].get(f"train/{method}"), f"{method}, train")
        _check(cells[1], record["miou"].get(f"val/{method}"), f"{method}, val")
    text = (ROOT / "README.md").read_text()
    mentioned = re.search(r"val mAP\s+(0\.\d+)\)", text.split("## Results on real photographs", 1)[1])
    assert mentioned and mentioned.group(1) == f"{record['classifier']['val_map']:.3f}"
