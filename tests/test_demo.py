from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from wsseg.cli import main
from wsseg.registry import SEGMENT_METHODS, STAGE2_BOUND_ROW, stage2_row

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--quiet"]) == 0
    return out


def test_quick_demo_runs_end_to_end_and_resumes(quick_demo, capsys) -> None:
    out = quick_demo
    scores = json.loads((out / "scores" / "background-only.json").read_text())
    assert 0 < scores["miou"] < 0.5 and scores["n_images"] == 20
    stage2 = {stage2_row("dcsm-crf"), STAGE2_BOUND_ROW}
    assert {p.stem for p in (out / "scores").glob("*.json")} == {"background-only", *SEGMENT_METHODS, *stage2}
    # stage 2 learnt from dcsm-crf's confident pseudo-labels, as its run records
    labels = json.loads((out / "stage2" / stage2_row("dcsm-crf") / "config.json").read_text())["labels"]
    assert labels["source"] == "pseudo" and labels["method"] == "dcsm-crf" and labels["ignore_uncertain"] is True
    model_bytes = (out / "run" / "model.pt").read_bytes()
    seg_bytes = (out / "stage2" / STAGE2_BOUND_ROW / "model.pt").read_bytes()
    assert main(["demo", "--quick", "--out", str(out), "--quiet"]) == 0  # rerun: nothing retrained
    printed = capsys.readouterr().out
    assert "background-only" in printed and "val mAP" in printed
    assert f"report: {(out / 'report' / 'index.html').resolve()}" in printed
    assert (out / "run" / "model.pt").read_bytes() == model_bytes
    assert (out / "stage2" / STAGE2_BOUND_ROW / "model.pt").read_bytes() == seg_bytes
    assert "seg (ground-truth masks: upper bound)" in printed and "weak/full ratio" in printed
    page = (out / "report" / "index.html").read_text()
    assert "seg (from dcsm-crf)" in page and 'id="weak-full"' in page
    # the rerun keeps the first run's timings instead of timing skipped work as ~0 s per image
    assert json.loads((out / "scores" / "dcsm.json").read_text())["seconds_per_image"] > 0.001


def test_report_is_self_contained(quick_demo) -> None:
    out = quick_demo
    report = out / "report"
    page = (report / "index.html").read_text()
    assert "http://" not in page and "https://" not in page  # works offline: nothing fetched
    moved = out.parent / "moved-report"
    shutil.copytree(report, moved)  # the folder alone is the report: every picture travels with it
    sources = [part.split('"', 1)[0] for part in page.split('src="')[1:]]
    assert sources and all((moved / source).is_file() for source in sources)
    assert "training_curve.png" in sources
    assert sum("_dcsm_" in source for source in sources) >= 4  # at least one DCSM map per example


def test_report_command_rebuilds_and_names_missing_scores(quick_demo, tmp_path: Path, capsys) -> None:
    out = quick_demo
    assert main(["report", str(out), "--examples", "2", "--quiet"]) == 0
    assert "index.html" in capsys.readouterr().out
    assert main(["report", str(tmp_path), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("wsseg report: error:") and "scores" in error and len(error.splitlines()) == 1


def _chromium_driver():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if os.environ.get("CI"):
            pytest.fail("CI must provide Debian's chromium and chromium-driver (.ci/run installs them)")
        pytest.skip("headless Chromium not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-extensions", "--no-first-run",
                 "--window-size=1600,2200"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))


def test_report_renders_in_headless_chromium(quick_demo) -> None:
    out = quick_demo
    driver = _chromium_driver()
    try:
        driver.get((out / "report" / "index.html").resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);")
        rows = driver.execute_script(
            "return Array.from(document.querySelectorAll('#results tbody tr')).map(r => r.dataset.method);")
        legend = driver.find_element("id", "legend").text
        screenshot = REPO / "build" / "report-screenshot.png"
        screenshot.parent.mkdir(exist_ok=True)
        driver.save_screenshot(str(screenshot))
        print(f"report screenshot: {screenshot}")
    finally:
        driver.quit()
    assert len(images) > 10
    broken = [src for src, complete, width in images if not complete or width == 0]
    assert not broken, f"images that did not load: {broken}"
    assert rows == ["background-only", *SEGMENT_METHODS, stage2_row("dcsm-crf"), STAGE2_BOUND_ROW]  # in order
    for name in ("background", "circle", "square", "triangle", "star", "cross", "ring", "void"):
        assert name in legend
    assert screenshot.stat().st_size > 10_000


def test_report_draws_the_maps_the_segmentations_used(quick_demo) -> None:
    import numpy as np
    from PIL import Image

    from wsseg.data import VOCDataset
    from wsseg.data.transforms import batch_tensor
    from wsseg.maps import DCSM
    from wsseg.maps.export import heat_overlay
    from wsseg.models.run import load_run
    from wsseg.report.html import example_ids
    from wsseg.runner import predict_labels

    record = json.loads((quick_demo / "predictions" / "dcsm-crf" / "segment.json").read_text())
    assert record["labels"] == "predicted" and record["label_threshold"] == 0.5 and record["scales"] == [1.0]
    assert [entry["method"] for entry in record["maps"]] == ["dcsm"]
    assert record["maps"][0]["options"]["scales"] == [1.0] and record["maps"][0]["options"]["variant"] == "matconvnet"
    assert record["threshold"] == SEGMENT_METHODS["dcsm-crf"].threshold and record["threshold_source"] == "default"
    assert record["tuned_on_ground_truth"] is False
    page = (quick_demo / "report" / "index.html").read_text()
    assert "scales [1.0]" in page and "predicted labels" in page
    # the drawn map is DCSM at the demo's one scale on the predicted classes, not a recomputation at defaults
    dataset = VOCDataset(quick_demo / "data", "val")
    model, _ = load_run(quick_demo / "run")
    image_id = example_ids(dataset.ids, 4)[0]
    image = dataset.load_image(image_id)
    (predicted,) = predict_labels(model, batch_tensor([image]))
    drawn = np.asarray(Image.open(quick_demo / "report" / "images" / f"{image_id}_dcsm_{predicted[0] + 1}.png")
                       .convert("RGB")).astype(int)
    differences = []
    for method in (DCSM(scales=(1.0,)), DCSM()):
        maps = method.normalize(method(model, batch_tensor([image]), [predicted]))[0].numpy()
        differences.append(int(np.abs(drawn - heat_overlay(image, maps[0])).max()))
    assert differences[0] <= 1 < differences[1], differences
