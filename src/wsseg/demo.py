"""``wsseg demo``: the whole chain on the synthetic benchmark, as far as it is built.

Steps, each skipped when its output already exists so a rerun resumes:
synthesise the benchmark -> train the classifier -> train pipeline A's mi-SVM -> confident
pseudo-labels of the first train images by one method -> train the affinity network of the
random-walk methods on them -> segment val with each method -> evaluate -> stage 2: a
segmentation network trained on the same pseudo-labels and the same network trained on the
ground-truth masks, each segmenting val -> HTML report (``OUT/report/index.html``) -> results table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from wsseg.data.images import write_label_png
from wsseg.data.synth import SynthConfig, write_synthetic_dataset
from wsseg.data.layout import open_dataset
from wsseg.data.voc import VOCDataset
from wsseg.evaluate import load_result, score_segmentations
from wsseg.fusion.misvm import MISVM_FILE
from wsseg.io import write_json_atomic, write_text_atomic
from wsseg.outputs import check_may_write
from wsseg.registry import SEGMENT_METHODS, STAGE2_BOUND_ROW, method_info, row_title, stage2_row
from wsseg.report import build_report
from wsseg.report.html import weak_full_ratio
from wsseg.segmentation.runner import SplitSource
from wsseg.segmentation.segment import SegmentOptions, segment_dataset
from wsseg.training.affinity import train_affinity
from wsseg.training.classifier import train
from wsseg.training.loop import best_record
from wsseg.training.options import AffinityOptions, SegTrainOptions, TrainOptions
from wsseg.training.segnet import train_segmentation
from wsseg.segmentation.train_misvm import train_misvm_from_run

QUICK = SynthConfig(train=60, val=20, size=96)
FULL = SynthConfig().resolved()
QUICK_EPOCHS = 3
# The default recipe's 30 epochs (with early stopping) would take the full demo past its
# 8-minute budget on 2 CPU cores; on the shapes benchmark 12 reach val mAP ~0.9 (docs/method.md 1.1).
DEMO_EPOCHS = 12
# Stage 2 and the random-walk methods in the demo: a budget that fits the 8 minutes (their
# benchmarks have their own, larger ones): confident pseudo-labels (DCSM at one scale) of the first
# `images` of train; on them the affinity network and the segmentation networks train for a few
# epochs. Its numbers show the steps work, not what stage 2 and the walk reach.
BUDGET = {"quick": dict(images=60, affinity_epochs=2, seg_epochs=2, crop_size=64),
          "full": dict(images=160, affinity_epochs=4, seg_epochs=4, crop_size=96)}
PSEUDO_SPLIT = "train-pseudo"  # the demo's split file of those images (its own benchmark: ours to add)


def _background_baseline(dataset: VOCDataset, out: Path) -> int:
    """Every pixel background: the floor any method must beat."""
    for image_id in dataset.ids:
        height, width = dataset.load_image(image_id).shape[:2]
        write_label_png(out / f"{image_id}.png", np.zeros((height, width), np.uint8))
    return len(dataset.ids)


def _segmenting(source: SplitSource, options: SegmentOptions, progress: bool) -> Callable[[Path], int]:
    """What `wsseg segment` does for ``options`` (segment.json included), as a demo step: a
    function of the output folder returning the number of images written."""
    return lambda pred_dir: segment_dataset(source, pred_dir, options, progress=progress).written


def _score(name: str, out: Path, data_root: Path, segment: Callable[[Path], int], results: dict[str, dict],
           step: str) -> None:
    """Segment val into predictions/<name> with ``segment()`` (returns images written), score it
    into scores/<name>.json, and add its row to ``results``; a row scored before is kept."""
    pred_dir, score_path = out / "predictions" / name, out / "scores" / f"{name}.json"
    if score_path.exists():  # finished on an earlier run: keep its scores and its timing
        stored = load_result(score_path)
        results[name] = {"miou": stored["miou"], "seconds_per_image": stored.get("seconds_per_image")}
        print(f"[demo] {step} {row_title(name)}: already segmented and scored")
        return
    print(f"[demo] {step} segmenting val with {row_title(name)}")
    started = time.perf_counter()
    written = segment(pred_dir)
    # Time per image actually segmented now, so a resumed method is not credited with skipped images.
    seconds = (time.perf_counter() - started) / written if written else None
    scores = score_segmentations(pred_dir, data_root, "val", progress=False, json_path=score_path,
                                 extra={"seconds_per_image": seconds})
    if scores is not None:  # None only on a second rank, which the demo never has
        results[name] = {"miou": scores.result.confusion.miou(), "seconds_per_image": seconds}


def _pseudo_labels(out: Path, data_root: Path, run: Path, pseudo_method: str, budget: dict,
                   progress: bool) -> Path:
    """``pseudo_method``'s confident pseudo-labels (``--ignore-uncertain``, image labels known, as
    pseudo-labels are made) of the first train images: what the affinity network and stage 2 learn from."""
    ids = open_dataset(data_root, "train").ids[:budget["images"]]
    write_text_atomic(data_root / "ImageSets" / "Segmentation" / f"{PSEUDO_SPLIT}.txt", "".join(f"{i}\n" for i in ids))
    pseudo = out / "pseudo" / pseudo_method
    print(f"[demo] 4/8 {pseudo_method}'s confident pseudo-labels of the first {len(ids)} train images -> {pseudo}")
    segment_dataset(SplitSource(run, data_root, PSEUDO_SPLIT), pseudo,
                    SegmentOptions(pseudo_method, label_source="gt", scales=(1.0,), ignore_uncertain=True), progress=progress)
    return pseudo


def _stage2(out: Path, data_root: Path, run: Path, pseudo: Path, pseudo_method: str, budget: dict, progress: bool,
            results: dict[str, dict]) -> None:
    """Stage 2: a network trained on the pseudo-labels and one on the ground truth, both on val."""
    # both start from the classifier's backbone (the pseudo-label network by --init-from auto): the
    # bound then differs from it by the labels alone
    for row, labels in ((stage2_row(pseudo_method), {"pseudo": str(pseudo)}),
                        (STAGE2_BOUND_ROW, {"ground_truth": True, "init_from": str(run)})):
        seg_run = out / "stage2" / row
        print(f"[demo] 7/8 training {row_title(row)} ({budget['images']} images, {budget['seg_epochs']} epochs, "
              f"{budget['crop_size']} px crops) into {seg_run}")
        # val is scored once, below, not after every epoch: the demo's 8 minutes are tight
        train_segmentation(SegTrainOptions(data=str(data_root), out=str(seg_run), split=PSEUDO_SPLIT, resume=True,
                                           val_split=None, progress=progress, epochs=budget["seg_epochs"],
                                           crop_size=budget["crop_size"], **labels))
        _score(row, out, data_root, _segmenting(SplitSource(seg_run, data_root, "val"), SegmentOptions("seg"), progress),
               results, "7/8")


DEMO_RECORD = "demo.json"  # what marks a folder as the demo's (earlier versions: data/synth.json)


def claim_demo_folder(out: Path) -> None:
    """Refuse a demo folder (or its data/) that holds files the demo did not write, before writing
    anything; then mark the folder as the demo's."""
    check_may_write(out / "data", records=["synth.json"])
    check_may_write(out, records=[DEMO_RECORD, "data/synth.json"])
    if not (out / DEMO_RECORD).exists():
        write_json_atomic(out / DEMO_RECORD, {"written_by": "wsseg demo"})


def run_demo(out: str | Path = "demo", quick: bool = False, progress: bool = True,
             pseudo_method: str = "dcsm-crf") -> dict[str, dict]:
    out = Path(out)
    method_info(pseudo_method)  # an unknown method fails now, not after the classifier's training
    config = QUICK if quick else FULL
    data_root = out / "data"
    claim_demo_folder(out)
    if not (data_root / "synth.json").exists():
        print(f"[demo] 1/8 synthesising the benchmark ({config.train} train / {config.val} val, {config.size} px)")
        write_synthetic_dataset(data_root, config, progress=progress, force=True)  # ours: redo a cut-short one
    run = out / "run"
    options = TrainOptions(data=str(data_root), out=str(run), resume=True, progress=progress,
                           epochs=QUICK_EPOCHS if quick else DEMO_EPOCHS)
    print(f"[demo] 2/8 training the classifier ({options.epochs} epochs, {options.pooling} pooling) into {run}")
    history = train(options)
    val = open_dataset(data_root, "val")
    if not (run / MISVM_FILE).exists():
        print("[demo] 3/8 training pipeline A's mi-SVM on zoom-out superpixel features (train split)")
        train_misvm_from_run(SplitSource(run, data_root, "train"), progress=progress)
    budget = BUDGET["quick" if quick else "full"]
    pseudo = _pseudo_labels(out, data_root, run, pseudo_method, budget, progress)
    print(f"[demo] 5/8 training the affinity network of the random-walk methods on them ({budget['affinity_epochs']} "
          "epochs)")
    train_affinity(AffinityOptions(run=str(run), data=str(data_root), pseudo=str(pseudo), split=PSEUDO_SPLIT,
                                   epochs=budget["affinity_epochs"], resume=True, progress=progress))
    results: dict[str, dict] = {}
    methods = ["background-only", *SEGMENT_METHODS]
    for step, name in enumerate(methods, start=1):
        if name == "background-only":
            segment = partial(_background_baseline, val)
        else:  # labels predicted by the classifier
            options = SegmentOptions(name, label_source="predicted", scales=(1.0,) if quick else None)
            segment = _segmenting(SplitSource(run, data_root, "val"), options, progress)
        _score(name, out, data_root, segment, results, f"6/8 ({step}/{len(methods)})")
    _stage2(out, data_root, run, pseudo, pseudo_method, budget, progress, results)
    print("[demo] 8/8 writing the HTML report (results, training curve, example grid with DCSM maps)")
    report = build_report(out, examples=4 if quick else 8, title="wsseg demo: synthetic benchmark")
    history = history or json.loads((run / "history.json").read_text())
    best, last = best_record(history), history[-1]
    print()
    print(f"classifier: val mAP {best.get('val_map', float('nan')):.3f}, F1 {best.get('val_f1', float('nan')):.3f} "
          f"at epoch {best['epoch']} of {last['epoch']} ({last['elapsed']:.0f} s)")
    print(f"{'method':<38} {'val mIoU':>9} {'s/img':>8}   (val, labels predicted by the classifier; "
          "stage 2 needs none)")
    for name, row in results.items():
        seconds = "-" if row["seconds_per_image"] is None else f"{row['seconds_per_image']:.4f}"
        print(f"{row_title(name):<38} {100 * row['miou']:8.2f}% {seconds:>8}")
    ratio = weak_full_ratio(results)
    if ratio is not None:
        print(f"weak/full ratio: {row_title(ratio[0])} reaches {ratio[1]:.2f} of the network trained on ground truth")
        print(f"(stage 2 here: {budget['seg_epochs']} epochs on {budget['images']} images, to show the steps work; "
              "what it reaches with a real budget: benchmarks/stage2_goals.py and benchmarks/RESULTS.md)")
    print(f"\n[demo] outputs in {out.resolve()}")
    print(f"[demo] report: {report.resolve()}")
    return results
