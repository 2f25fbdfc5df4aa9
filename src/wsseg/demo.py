"""``wsseg demo``: the whole chain on the synthetic benchmark, as far as it is built.

Steps, each skipped when its output already exists so a rerun resumes:
synthesise the benchmark -> train the classifier -> train pipeline A's mi-SVM -> confident
dcsm-crf pseudo-labels of the first train images -> train the affinity network on them -> segment
val with each method -> evaluate -> HTML report (``OUT/report/index.html``) -> results table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from wsseg.data.images import write_label_png
from wsseg.data.synth import SynthConfig, write_synthetic_dataset
from wsseg.data.voc import VOCDataset
from wsseg.evaluate import load_result
from wsseg.fusion.misvm import MISVM_FILE
from wsseg.io import write_text_atomic
from wsseg.registry import SEGMENT_METHODS
from wsseg.report import build_report
from wsseg.runner import SplitSource
from wsseg.segment import SegmentOptions, score_segmentations, segment_dataset
from wsseg.train import TrainOptions, best_record, train
from wsseg.train_affinity import AffinityOptions, train_affinity
from wsseg.train_misvm import train_misvm_from_run

QUICK = SynthConfig(train=60, val=20, size=96)
FULL = SynthConfig().resolved()
QUICK_EPOCHS = 3
# The default recipe's 30 epochs (with early stopping) would take the full demo past its
# 8-minute budget on 2 CPU cores; on the shapes benchmark 12 reach val mAP ~0.9 (docs/method.md 1.1).
DEMO_EPOCHS = 12
# The affinity network of cam-rw / dcsm-rw: trained on confident dcsm-crf pseudo-labels (one scale)
# of the first train images, within about 45 s of the full demo (10 s quick) on 2 CPU cores.
AFFINITY_IMAGES, QUICK_AFFINITY_IMAGES = 100, 16
AFFINITY_EPOCHS, QUICK_AFFINITY_EPOCHS = 6, 2
AFFINITY_SPLIT = "affinity"  # the demo's split file of those images


def _train_affinity(data_root: Path, run: Path, out: Path, quick: bool, progress: bool) -> None:
    """Confident pseudo-labels of the first train images, then the affinity network on them
    (each step resumes, and does nothing when finished)."""
    count = QUICK_AFFINITY_IMAGES if quick else AFFINITY_IMAGES
    split_file = data_root / "ImageSets" / "Segmentation" / f"{AFFINITY_SPLIT}.txt"
    if not split_file.exists():  # the demo's own benchmark: adding a split file to it is ours to do
        ids = VOCDataset(data_root, "train").ids[:count]
        write_text_atomic(split_file, "".join(f"{image_id}\n" for image_id in ids))
    pseudo = out / "pseudo-labels"
    segment_dataset(SplitSource(run, data_root, AFFINITY_SPLIT), pseudo,
                    SegmentOptions("dcsm-crf", labels="gt", scales=(1.0,), ignore_uncertain=True), progress=progress)
    train_affinity(AffinityOptions(run=str(run), data=str(data_root), pseudo=str(pseudo), split=AFFINITY_SPLIT,
                                   epochs=QUICK_AFFINITY_EPOCHS if quick else AFFINITY_EPOCHS, resume=True,
                                   progress=progress))


def _background_baseline(dataset: VOCDataset, out: Path) -> None:
    """Every pixel background: the floor any method must beat."""
    for image_id in dataset.ids:
        height, width = dataset.load_image(image_id).shape[:2]
        write_label_png(out / f"{image_id}.png", np.zeros((height, width), np.uint8))


def run_demo(out: str | Path = "demo", quick: bool = False, progress: bool = True) -> dict[str, dict]:
    out = Path(out)
    config = QUICK if quick else FULL
    data_root = out / "data"
    if not (data_root / "synth.json").exists():
        print(f"[demo] 1/5 synthesising the benchmark ({config.train} train / {config.val} val, {config.size} px)")
        write_synthetic_dataset(data_root, config, progress=progress, force=True)  # ours: redo a cut-short one
    run = out / "run"
    options = TrainOptions(data=str(data_root), out=str(run), resume=True, progress=progress,
                           epochs=QUICK_EPOCHS if quick else DEMO_EPOCHS)
    print(f"[demo] 2/5 training the classifier ({options.epochs} epochs, {options.pooling} pooling) into {run}")
    history = train(options)
    val = VOCDataset(data_root, "val")
    if not (run / MISVM_FILE).exists():
        print("[demo] 3/5 training pipeline A's mi-SVM on zoom-out superpixel features (train split)")
        train_misvm_from_run(SplitSource(run, data_root, "train"), progress=progress)
    started = time.perf_counter()
    print("[demo] 3/5 training the affinity network of the random-walk methods on confident dcsm-crf pseudo-labels")
    _train_affinity(data_root, run, out, quick, progress)
    affinity_seconds = time.perf_counter() - started
    results: dict[str, dict] = {}
    methods = ["background-only", *SEGMENT_METHODS]
    for step, name in enumerate(methods, start=1):
        pred_dir, score_path = out / "predictions" / name, out / "scores" / f"{name}.json"
        if score_path.exists():  # finished on an earlier run: keep its scores and its timing
            stored = load_result(score_path)
            results[name] = {"miou": stored["miou"], "seconds_per_image": stored.get("seconds_per_image")}
            print(f"[demo] 4/5 {name}: already segmented and scored ({step}/{len(methods)})")
            continue
        print(f"[demo] 4/5 segmenting val with {name} ({step}/{len(methods)}, predicted labels)")
        started = time.perf_counter()
        if name == "background-only":
            _background_baseline(val, pred_dir)
            written = len(val)
        else:  # what `wsseg segment --labels predicted` does, segment.json included
            options = SegmentOptions(name, labels="predicted", scales=(1.0,) if quick else None)
            written = segment_dataset(SplitSource(run, data_root, "val"), pred_dir, options,
                                      progress=progress).written
        # Time per image actually segmented now, so a resumed method is not credited with skipped images.
        seconds = (time.perf_counter() - started) / written if written else None
        scores = score_segmentations(pred_dir, data_root, "val", progress=False, json_path=score_path,
                                     extra={"seconds_per_image": seconds})
        if scores is not None:  # None only on a second rank, which the demo never has
            results[name] = {"miou": scores.result.confusion.miou(), "seconds_per_image": seconds}
    print("[demo] 5/5 writing the HTML report (results, training curve, example grid with DCSM maps)")
    report = build_report(out, examples=4 if quick else 8, title="wsseg demo: synthetic benchmark")
    history = history or json.loads((run / "history.json").read_text())
    best, last = best_record(history), history[-1]
    print()
    print(f"classifier: val mAP {best.get('val_map', float('nan')):.3f}, F1 {best.get('val_f1', float('nan')):.3f} "
          f"at epoch {best['epoch']} of {last['epoch']} ({last['elapsed']:.0f} s)")
    print(f"{'method':<20} {'val mIoU':>9} {'s/img':>8}   (val, labels predicted by the classifier)")
    for name, row in results.items():
        seconds = "-" if row["seconds_per_image"] is None else f"{row['seconds_per_image']:.4f}"
        print(f"{name:<20} {100 * row['miou']:8.2f}% {seconds:>8}")
    print(f"affinity network: pseudo-labels and training {affinity_seconds:.0f} s")
    print(f"\n[demo] outputs in {out.resolve()}")
    print(f"[demo] report: {report.resolve()}")
    return results
