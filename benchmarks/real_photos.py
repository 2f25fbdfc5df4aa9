"""The whole chain on real photographs, with the defaults a user gets: classifier, pseudo-labels,
final segmentations, the random walk and stage 2, each step timed.

Reads ../shared/data/coco97-voc (97 MS COCO photos with the 20 VOC classes; or --data), and
skips with a message when it is absent; the photos are never copied, every output goes under
--work. Steps (each kept when its output exists, so a rerun resumes):
  1. ``wsseg train`` with the defaults (``--image-size`` / ``--epochs`` override them);
  2. pipeline A's mi-SVM (``wsseg train-misvm``);
  3. every map method on train with the images' true labels (pseudo-label quality, the field's
     "seed" measure) and on val with the labels the classifier predicts, beside all-background;
  4. dcsm-crf's confident pseudo-labels of train -> the affinity network -> the random-walk methods;
  5. stage 2 on those pseudo-labels, and the same network on the true masks (the bound), on val,
     each as it is and restricted to the classes its classifier predicts (``--labels predicted``).
Then the JSON (--json) and the table.

    python benchmarks/real_photos.py --work /tmp/real [--json benchmarks/real_photos.json]
    python benchmarks/real_photos.py --table benchmarks/real_photos.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from wsseg.data.images import write_label_png
from wsseg.data.voc import VOCDataset
from wsseg.evaluate import load_result
from wsseg.fusion.misvm import MISVM_FILE
from wsseg.io import write_json_atomic
from wsseg.registry import STAGE2_BOUND_ROW, stage2_row
from wsseg.runner import SplitSource
from wsseg.segment import SegmentOptions, score_segmentations, segment_dataset
from wsseg.train import TrainOptions, best_record, train
from wsseg.train_affinity import AffinityOptions, train_affinity
from wsseg.train_misvm import train_misvm_from_run
from wsseg.train_options import SegTrainOptions
from wsseg.train_seg import train_segmentation

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "coco97-voc"
MAP_METHODS = ("cam", "cam-crf", "dcsm", "dcsm-crf", "pipeline-a", "pipeline-b")
WALK_METHODS = ("cam-rw", "dcsm-rw", "dcsm-rw-crf")
PSEUDO_METHOD = "dcsm-crf"
RESTRICTED = ", predicted classes"  # stage 2's row with `wsseg segment --method seg --labels predicted`


def timed_step(result: dict, name: str, action) -> object:
    started = time.perf_counter()
    value = action()
    result["seconds"][name] = result["seconds"].get(name, 0.0) + time.perf_counter() - started
    return value


def all_background(dataset: VOCDataset, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for image_id in dataset.ids:
        height, width = dataset.load_image(image_id).shape[:2]
        write_label_png(out / f"{image_id}.png", np.zeros((height, width), np.uint8))
    return len(dataset.ids)


def score_method(work: Path, data: Path, run: Path, split: str, row: str, options: SegmentOptions | None,
                 result: dict) -> None:
    """Segment ``split`` with ``options`` (None: all background) into pred/<split>/<row>, score it,
    keep its mIoU and seconds per image under "<split>/<row>"; a row scored before is kept."""
    key = f"{split}/{row}"
    pred, score_path = work / "pred" / split / row, work / "scores" / split / f"{row}.json"
    if not score_path.exists():
        started = time.perf_counter()
        if options is None:
            written = all_background(VOCDataset(data, split), pred)
        else:
            written = segment_dataset(SplitSource(run, data, split), pred, options, progress=False).written
        seconds = (time.perf_counter() - started) / max(written, 1)
        score_path.parent.mkdir(parents=True, exist_ok=True)
        score_segmentations(pred, data, split, progress=False, json_path=score_path,
                            extra={"seconds_per_image": seconds})
    stored = load_result(score_path)
    result["miou"][key] = 100.0 * stored["miou"]
    result["seconds_per_image"][key] = stored.get("seconds_per_image")
    print(f"  {key}: {result['miou'][key]:.1f} % mIoU", flush=True)


def score_map_methods(work: Path, data: Path, run: Path, methods: tuple[str, ...], result: dict) -> None:
    """Each method on train with the true labels and on val with the classifier's."""
    for split, labels in (("train", "gt"), ("val", "predicted")):
        for method in methods:
            options = None if method == "all-background" else SegmentOptions(method, label_source=labels)
            score_method(work, data, run, split, method, options, result)


def run_chain(args: argparse.Namespace) -> dict:
    work, data = Path(args.work), Path(args.data)
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"data": str(data), "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                    f"torch {torch.__version__}, {torch.get_num_threads()} threads",
                    "seconds": {}, "miou": {}, "seconds_per_image": {}}
    run = work / "run"
    overrides = {k: v for k, v in (("image_size", args.image_size), ("epochs", args.epochs)) if v is not None}
    print("1. classifier")
    history = timed_step(result, "train", lambda: train(TrainOptions(data=str(data), out=str(run), resume=True,
                                                                     progress=False, **overrides)))
    best = best_record(history or json.loads((run / "history.json").read_text()))
    config = json.loads((run / "config.json").read_text())
    history = history or json.loads((run / "history.json").read_text())
    result["classifier"] = {"val_map": best.get("val_map"), "epoch": best["epoch"], "image_size": config["image_size"],
                            "epochs_run": len(history), "training_seconds": history[-1].get("elapsed"),
                            "images_per_second": float(np.mean([r["images_per_second"] for r in history]))}
    print(f"   val mAP {best.get('val_map'):.3f} at epoch {best['epoch']}")
    methods = MAP_METHODS
    if args.no_pipeline_a:
        methods = tuple(m for m in MAP_METHODS if m != "pipeline-a")
        result["skipped"] = ["pipeline-a (--no-pipeline-a)"]
    elif not (run / MISVM_FILE).exists():
        print("2. mi-SVM")
        timed_step(result, "train-misvm", lambda: train_misvm_from_run(SplitSource(run, data, "train"), progress=False))
    print("3. map methods (train: true labels; val: predicted)")
    score_map_methods(work, data, run, ("all-background", *methods), result)
    print("4. confident pseudo-labels, affinity, random walk")
    pseudo = work / "pseudo" / PSEUDO_METHOD
    if not (pseudo / "segment.json").exists() or len(list(pseudo.glob("*.png"))) < len(VOCDataset(data, "train")):
        timed_step(result, "confident pseudo-labels", lambda: segment_dataset(
            SplitSource(run, data, "train"), pseudo, SegmentOptions(PSEUDO_METHOD, label_source="gt", ignore_uncertain=True),
            progress=False))
    timed_step(result, "train-affinity", lambda: train_affinity(AffinityOptions(
        run=str(run), data=str(data), pseudo=str(pseudo), resume=True, progress=False)))
    score_map_methods(work, data, run, WALK_METHODS, result)
    print("5. stage 2")
    seg_overrides = {k: v for k, v in (("crop_size", args.seg_crop), ("epochs", args.seg_epochs)) if v is not None}
    for row, labels in ((stage2_row(PSEUDO_METHOD), {"pseudo": str(pseudo)}),
                        (STAGE2_BOUND_ROW, {"ground_truth": True, "init_from": str(run)})):
        seg_run = work / "stage2" / row
        timed_step(result, f"train-seg ({row})", lambda: train_segmentation(SegTrainOptions(
            data=str(data), out=str(seg_run), resume=True, val_split=None, progress=False, **labels, **seg_overrides)))
        score_method(work, data, seg_run, "val", row, SegmentOptions("seg"), result)
        # each network restricted to the classes its classifier (the one it started from) predicts
        score_method(work, data, seg_run, "val", row + RESTRICTED,
                     SegmentOptions("seg", label_source="predicted"), result)
    for key, suffix in (("weak_full_ratio", ""), ("weak_full_ratio_restricted", RESTRICTED)):
        weak = result["miou"][f"val/{stage2_row(PSEUDO_METHOD)}{suffix}"]
        full = result["miou"][f"val/{STAGE2_BOUND_ROW}{suffix}"]
        result[key] = weak / full if full else None
    result["settings"] = {"classifier": overrides, "stage2": seg_overrides}
    return result


def print_table(result: dict) -> None:
    classifier = result["classifier"]
    print(f"\nreal photographs ({result['data']}); {result['machine']}")
    print(f"classifier: val mAP {classifier['val_map']:.3f} (epoch {classifier['epoch']} of {classifier['epochs_run']}, "
          f"{classifier['image_size']} px, {classifier.get('training_seconds') or 0:.0f} s of training)")
    print("| method | train, true labels (mIoU %) | val, predicted labels (mIoU %) | s/img (val) |")
    print("|---|---:|---:|---:|")
    names = dict.fromkeys(key.split("/", 1)[1] for key in result["miou"])
    for name in names:
        train_value, val_value = result["miou"].get(f"train/{name}"), result["miou"].get(f"val/{name}")
        speed = result["seconds_per_image"].get(f"val/{name}")
        cells = ["-" if v is None else f"{v:.1f}" for v in (train_value, val_value)]
        print(f"| {name} | {cells[0]} | {cells[1]} | {'-' if speed is None else f'{speed:.2f}'} |")
    for key, how in (("weak_full_ratio", ""),
                     ("weak_full_ratio_restricted", ", both restricted to predicted classes")):
        if result.get(key) is not None:
            print(f"weak/full ratio (stage 2 from pseudo-labels / from true masks{how}): {result[key]:.2f}")
    print("| step | seconds |\n|---|---:|")
    for step, seconds in result["seconds"].items():
        print(f"| {step} | {seconds:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/wsseg-real")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seg-crop", type=int, default=None, help="stage 2's crop size (default: train-seg's)")
    parser.add_argument("--seg-epochs", type=int, default=None, help="stage 2's epochs (default: train-seg's)")
    parser.add_argument("--no-pipeline-a", action="store_true",
                        help="leave out pipeline A (its mi-SVM on zoom-out features of full-size photos is slow on a CPU)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--table", help="print the table of an earlier --json and stop")
    args = parser.parse_args()
    if args.table:
        print_table(json.loads(Path(args.table).read_text()))
        return
    if not (Path(args.data) / "JPEGImages").is_dir():
        print(f"skipped: no real-photo dataset at {args.data} (the coco97-voc set lives in ../shared/data)")
        return
    result = run_chain(args)
    if args.json:
        write_json_atomic(Path(args.json), result)
    print_table(result)


if __name__ == "__main__":
    main()
