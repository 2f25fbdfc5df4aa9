from __future__ import annotations

import json
from pathlib import Path

from wsseg.cli import main


def test_quick_demo_runs_end_to_end_and_resumes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "background-only" in printed and "val mAP" in printed
    scores = json.loads((out / "scores" / "background-only.json").read_text())
    assert 0 < scores["miou"] < 0.5 and scores["n_images"] == 20
    model_bytes = (out / "run" / "model.pt").read_bytes()
    assert main(["demo", "--quick", "--out", str(out), "--quiet"]) == 0  # rerun: nothing retrained
    assert (out / "run" / "model.pt").read_bytes() == model_bytes
