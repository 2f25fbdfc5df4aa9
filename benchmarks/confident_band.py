"""Confident pseudo-labels (`wsseg segment --ignore-uncertain`) with other bands, on a split with
masks: how many pixels each band keeps as objects, how many it leaves 255, how right the kept
pixels are, and how many object pixels get their true class.

Why: the shipped band (background below t / 2, a class above (1 + t) / 2, t the method's
threshold) was chosen on the synthetic benchmarks, whose maps are flat inside objects; photo
maps are peaky, and on the real photos it keeps almost no object (docs/method.md 6.3). Uses the
split's true image labels, as pseudo-labels are made; the masks only score the bands.

    python benchmarks/confident_band.py --run RUN --method cam-crf --threshold 0.25 \\
        [--data ../shared/data/coco97-voc] [--split train] [--json benchmarks/confident_band.json]
    python benchmarks/confident_band.py --table benchmarks/confident_band.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from wsseg.data.classes import VOID
from wsseg.data.voc import VOCDataset
from wsseg.evaluate import evaluate_arrays
from wsseg.io import write_json_atomic
from wsseg.models.run import load_run
from wsseg.pipelines import Confident, build_segmenter
from wsseg.segmentation.base import segment_inputs

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "coco97-voc"
# name -> (background below, class above) as functions of the method's threshold t
BANDS = {
    "t / 2, (1 + t) / 2 (the shipped rule)": lambda t: (t / 2, (1 + t) / 2),
    "t / 3, min(2t, (1 + t) / 2) (IRN's ratios)": lambda t: (t / 3, min(2 * t, (1 + t) / 2)),
    "t / 2, (1 + 3t) / 4": lambda t: (t / 2, (1 + 3 * t) / 4),
    "t / 2, t (only the background rim left out)": lambda t: (t / 2, t),
    "t, t (no band: plain pseudo-labels)": lambda t: (t, t),
}


def band_scores(labels: list[np.ndarray], masks: list[np.ndarray], dataset: VOCDataset) -> dict:
    def is_object(values: np.ndarray) -> np.ndarray:
        return (values > 0) & (values != VOID)

    kept_as_background = [np.where(x == VOID, 0, x).astype(np.uint8) for x in labels]
    truth_where_kept = [np.where(x == VOID, VOID, m).astype(np.uint8) for x, m in zip(labels, masks)]
    right_objects = sum(int(((x == m) & is_object(m)).sum()) for x, m in zip(labels, masks))
    return {"object_fraction": float(np.mean([is_object(x).mean() for x in labels])),
            "ignored_fraction": float(np.mean([(x == VOID).mean() for x in labels])),
            "kept_miou": 100 * evaluate_arrays(kept_as_background, truth_where_kept, dataset.classes).confusion.miou(),
            "object_recall": right_objects / max(1, sum(int(is_object(m).sum()) for m in masks)),
            "true_object_fraction": float(np.mean([is_object(m).mean() for m in masks]))}


def run(args: argparse.Namespace) -> dict:
    model, _ = load_run(args.run)
    base = build_segmenter(args.method, args.run, args.threshold)
    dataset = VOCDataset(args.data, args.split)
    bands = {name: Confident(base, *rule(args.threshold), threshold=args.threshold)
             for name, rule in BANDS.items()}
    labels: dict[str, list[np.ndarray]] = {name: [] for name in bands}
    masks = []
    for sample in tqdm(dataset, desc="bands", disable=args.quiet):
        (inputs,) = segment_inputs(model, [sample.image], [[value - 1 for value in sample.labels]], base, {})
        prepared = base.prepare(inputs, {})
        for name, segmenter in bands.items():
            labels[name].append(segmenter.fuse(inputs, prepared, {}) if inputs.labels
                                else np.zeros(sample.image.shape[:2], np.uint8))
        masks.append(sample.mask)
    return {"run": str(args.run), "method": args.method, "threshold": args.threshold, "data": str(args.data),
            "split": args.split, "images": len(dataset),
            "bands": {name: {"low": bands[name].band[0], "high": bands[name].band[1],
                             **band_scores(labels[name], masks, dataset)} for name in bands}}


def print_table(result: dict) -> None:
    print(f"{result['method']} at t = {result['threshold']} on {result['images']} {result['split']} images of "
          f"{result['data']} (masks hold {100 * next(iter(result['bands'].values()))['true_object_fraction']:.1f} % "
          "object pixels)")
    print("| band (background below, class above) | low, high | pixels kept as objects | left 255 | "
          "mIoU on the pixels kept | object pixels with their true class |")
    print("|---|---|---:|---:|---:|---:|")
    for name, row in result["bands"].items():
        print(f"| {name} | {row['low']:.3f}, {row['high']:.3f} | {100 * row['object_fraction']:.1f} % | "
              f"{100 * row['ignored_fraction']:.1f} % | {row['kept_miou']:.1f} | {100 * row['object_recall']:.1f} % |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="classifier run folder")
    parser.add_argument("--method", default="dcsm-crf")
    parser.add_argument("--threshold", type=float, default=None, help="the method's threshold t (default: its own)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", default="train")
    parser.add_argument("--json", type=Path, help="add the result here (a list of results, one per run/method/t)")
    parser.add_argument("--table", type=Path, help="print the tables of an earlier --json and stop")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if args.table:
        for result in json.loads(args.table.read_text()):
            print_table(result)
        return
    if args.run is None:
        parser.error("--run is required (or --table)")
    if not (args.data / "JPEGImages").is_dir():
        print(f"skipped: no dataset at {args.data} (the coco97-voc set lives in ../shared/data)")
        return
    if args.threshold is None:
        args.threshold = build_segmenter(args.method).threshold
    result = run(args)
    if args.json:
        stored = json.loads(args.json.read_text()) if args.json.exists() else []
        write_json_atomic(args.json, [*stored, result])
    print_table(result)


if __name__ == "__main__":
    main()
