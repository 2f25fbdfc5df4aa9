"""Stage 2's goals (issue 13), on both synthetic benchmarks, with this script's own training budget.

    python benchmarks/stage2_goals.py train --data-shapes D --data-glyphs D --pseudo-root P --work W \
        [--device cuda] [--epochs 20] [--json benchmarks/stage2_goals.json]
    python benchmarks/stage2_goals.py speed --run RUN --seg-run SEGRUN [--json ...]   (2 CPU cores, 224 px)
    python benchmarks/stage2_goals.py test-time --data-shapes D --data-glyphs D --work W [--json ...]
    python benchmarks/stage2_goals.py table [--json ...]

``train`` does two things, in order:

1. the head choice, on the TRAIN split only (val is never looked at): each head is trained on
   the first 300 train images (``train300``) with dcsm-crf's confident pseudo-labels and
   scored on the rest of train (``trainrest``) against its ground truth;
2. the goals: the default network trained on all of train, once from dcsm-crf's confident
   pseudo-labels and once from the ground-truth masks (same network and budget), scored on val
   (the last epoch, as ``wsseg train-seg`` keeps it); with training images/s and peak memory.

Pseudo-labels are made beforehand (they need the dense CRF) with
``wsseg segment --run RUN --data D --split train --labels gt --method dcsm-crf --ignore-uncertain
--out P/pseudo-<benchmark>-dcsm-crf-confident``. The pseudo-label method's own val mIoU (labels
predicted by the classifier, as stage 2 has none) comes from segment_quality.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from wsseg.data.voc import VOCDataset, read_split_file
from wsseg.train_options import SegTrainOptions
from wsseg.train_seg import score_network, train_segmentation

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "stage2_goals.json"
BENCHMARKS = ("shapes", "glyphs")
HEADS = ("deeplabv3plus", "lraspp")


def _holdout_split(data: Path) -> None:
    """``trainrest``: the train images not in ``train300`` (the synthetic benchmarks write both)."""
    splits = data / "ImageSets" / "Segmentation"
    chosen = set(read_split_file(splits / "train300.txt"))
    rest = [i for i in read_split_file(splits / "train.txt") if i not in chosen]
    target = splits / "trainrest.txt"
    if not target.exists():
        target.write_text("".join(f"{i}\n" for i in rest))


def _train(data: Path, out: Path, device: str, epochs: int, **options) -> tuple[list[dict], float]:
    started = time.perf_counter()
    history = train_segmentation(SegTrainOptions(data=str(data), out=str(out), device=device, epochs=epochs,
                                                 progress=False, resume=True, **options))
    return history, time.perf_counter() - started


def _load(out: Path, device: str):
    from wsseg.models.segnet import load_segmentation_run

    return load_segmentation_run(out, map_location=device)[0]


def run_training(args: argparse.Namespace) -> dict:
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    results: dict = {"head_choice": {}, "goals": {}, **_read(args.json)}
    run = {"device": args.device, "epochs": args.epochs, "machine": _machine(args.device)}
    results.update({"head_choice_run": run} if args.heads_only else run)
    # the goals first, then the head choice, then the reported-only run: a run cut short by a time
    # limit keeps what matters most
    for bench in args.benchmarks:
        pseudo = Path(args.pseudo_root) / f"pseudo-{bench}-dcsm-crf-confident"
        # the bound starts where the pseudo-label network does (--init-from auto: the classifier that
        # made the pseudo-labels), so the two differ by their labels alone
        classifier = json.loads((pseudo / "segment.json").read_text())["run"]
        for source, labels in (("pseudo", {"pseudo": str(pseudo)}),
                               ("ground-truth", {"ground_truth": True, "init_from": classifier})):
            if not args.heads_only and (args.goals is None or source in args.goals):
                _goal(args, results, bench, source, labels)
    if args.goals is not None:  # only the goals asked for
        return results
    for bench in args.benchmarks:
        data = Path(getattr(args, f"data_{bench}"))
        pseudo = Path(args.pseudo_root) / f"pseudo-{bench}-dcsm-crf-confident"
        _holdout_split(data)
        rest = VOCDataset(data, "trainrest")
        for head in HEADS:
            out = Path(args.work) / f"{bench}-train300-{head}"
            history, seconds = _train(data, out, args.device, args.epochs, pseudo=str(pseudo), split="train300",
                                      val_split=None, head=head)
            model = _load(out, args.device)
            miou = score_network(model, rest, args.device, max_side=model.input_size)[0].miou()
            results["head_choice"].setdefault(bench, {})[head] = {
                "trainrest_miou": 100 * miou, "seconds": seconds, **_speed(history)}
            print(f"[head] {bench} {head}: train-rest mIoU {100 * miou:.2f} ({seconds:.0f} s)", flush=True)
            _save(args.json, results)
    for bench in args.benchmarks:
        plain = Path(args.pseudo_root) / f"pseudo-{bench}-dcsm-crf"
        if args.with_plain and plain.is_dir():  # reported only: what leaving out uncertain pixels buys
            _goal(args, results, bench, "pseudo-plain", {"pseudo": str(plain)})
    return results


def _goal(args: argparse.Namespace, results: dict, bench: str, source: str, labels: dict) -> None:
    """Train the default network on all of train from ``labels``; its last epoch's val mIoU."""
    data = Path(getattr(args, f"data_{bench}"))
    history, seconds = _train(data, Path(args.work) / f"{bench}-full-{source}", args.device, args.epochs, **labels)
    results["goals"].setdefault(bench, {})[source] = {
        "val_miou": 100 * history[-1]["val_miou"], "seconds": seconds,
        "val_miou_per_epoch": [round(100 * r["val_miou"], 2) for r in history], **_speed(history)}
    print(f"[goals] {bench} from {source}: val mIoU {100 * history[-1]['val_miou']:.2f} ({seconds:.0f} s)", flush=True)
    _save(args.json, results)


def _speed(history: list[dict]) -> dict:
    steady = history[1:] or history  # the first epoch carries start-up
    return {"images_per_second": float(np.median([r["images_per_second"] for r in steady])),
            "peak_memory_mb": max(r["peak_memory_mb"] for r in history)}


def _machine(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def run_speed(args: argparse.Namespace) -> dict:
    """Per-image seconds at 224 px on this machine: stage 2 (no TTA, no CRF) against dcsm-crf at
    its default scales with the image's labels known (the cheapest dcsm-crf can be)."""
    from wsseg.models.run import load_run
    from wsseg.pipelines import NetworkSegmenter, build_segmenter, segment_images

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (224, 224, 3), dtype=np.uint8) for _ in range(args.images)]
    classifier, _ = load_run(args.run)
    model = _load(Path(args.seg_run), "cpu")
    network = NetworkSegmenter(model, max_side=model.input_size)  # as `wsseg segment --method seg` runs it
    dcsm_crf = build_segmenter("dcsm-crf")
    timings = {}
    network([images[0]])  # warm-up
    segment_images(classifier, [images[0]], [[0, 1]], dcsm_crf)
    started = time.perf_counter()
    for image in images:
        network([image])
    seg = (time.perf_counter() - started) / len(images)
    started = time.perf_counter()
    for image in images:
        segment_images(classifier, [image], [[0, 1]], dcsm_crf, timings)
    dcsm = (time.perf_counter() - started) / len(images)
    result = {"machine": _machine("cpu"), "image_side": 224, "images": len(images), "seg_seconds": seg,
              "dcsm_crf_seconds": dcsm, "speedup": dcsm / seg,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(f"[speed] seg {seg:.3f} s/img, dcsm-crf {dcsm:.3f} s/img: {dcsm / seg:.1f}x", flush=True)
    stored = _read(args.json)
    stored["speed_cpu"] = result
    _save(args.json, stored)
    return result


TEST_TIMES = {"plain": {}, "tta": {"tta": True}, "tta-crf": {"tta": True, "crf": True}}


def run_test_time(args: argparse.Namespace) -> dict:
    """The goal networks (in --work) segment val plain, with --tta, and with --tta --crf (DeepLab's
    test-time recipe; dcsm-crf also averages three scales and runs a CRF); val mIoU of each."""
    from wsseg.runner import SplitSource
    from wsseg.segment import SegmentOptions, score_segmentations, segment_dataset

    results = _read(args.json)
    for bench in args.benchmarks:
        data = Path(getattr(args, f"data_{bench}"))
        for source in ("pseudo", "ground-truth"):
            run = Path(args.work) / f"{bench}-full-{source}"
            for name, flags in TEST_TIMES.items():
                out = Path(args.work) / "test-time" / f"{bench}-{source}-{name}"
                segment_dataset(SplitSource(run, data, "val"), out, SegmentOptions("seg", **flags),
                                progress=False)
                miou = score_segmentations(out, data, "val", progress=False).result.confusion.miou()
                results.setdefault("test_time", {}).setdefault(bench, {}).setdefault(source, {})[name] = 100 * miou
                print(f"[test-time] {bench} from {source}, {name}: val mIoU {100 * miou:.2f}", flush=True)
                _save(args.json, results)
    return results


def _read(path: Path) -> dict:
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}


def _save(path: Path, results: dict) -> None:
    stored = _read(path)
    stored.update(results)
    Path(path).write_text(json.dumps(stored, indent=2) + "\n")


def print_table(path: Path) -> None:
    results = _read(path)
    quality = json.loads((HERE / "segment_quality.json").read_text())["val"]
    if results.get("head_choice"):
        run = results.get("head_choice_run", results)
        print(f"head choice ({run['epochs']} epochs on train300, dcsm-crf's confident pseudo-labels, "
              f"scored on the rest of train; {run['machine']})")
        print("| benchmark | head | train-rest mIoU | train images/s | peak memory MB |\n|---|---|---:|---:|---:|")
        for bench, heads in results["head_choice"].items():
            for head, row in heads.items():
                print(f"| {bench} | {head} | {row['trainrest_miou']:.1f} | {row['images_per_second']:.0f} "
                      f"| {row['peak_memory_mb']:.0f} |")
    if results.get("goals"):
        print(f"\ngoals ({results['epochs']} epochs on all of train, val mIoU of the last epoch; {results['machine']})")
        print("| benchmark | dcsm-crf val (predicted labels) | seg from dcsm-crf | gain | seg from ground truth "
              "| weak/full | train images/s | peak memory MB |\n|---|---:|---:|---:|---:|---:|---:|---:|")
        for bench, rows in results["goals"].items():
            pseudo, full = rows.get("pseudo"), rows.get("ground-truth")
            base = quality[bench]["dcsm-crf"]
            if pseudo is None or full is None:
                continue
            print(f"| {bench} | {base:.1f} | {pseudo['val_miou']:.1f} | {pseudo['val_miou'] - base:+.1f} "
                  f"| {full['val_miou']:.1f} | {pseudo['val_miou'] / full['val_miou']:.2f} "
                  f"| {pseudo['images_per_second']:.0f} | {max(pseudo['peak_memory_mb'], full['peak_memory_mb']):.0f} |")
        for bench, rows in results["goals"].items():
            if "pseudo-plain" in rows:
                print(f"{bench}: from dcsm-crf's plain pseudo-labels (no pixel left out) val mIoU "
                      f"{rows['pseudo-plain']['val_miou']:.1f}, against {rows['pseudo']['val_miou']:.1f} from the "
                      "confident ones (reported only, not used to choose)")
    if results.get("test_time"):
        print("\ntest time (val mIoU of the goal networks; weak/full at the same test time)")
        print("| benchmark | test time | dcsm-crf val | seg from dcsm-crf | gain | seg from ground truth | weak/full |\n"
              "|---|---|---:|---:|---:|---:|---:|")
        for bench, rows in results["test_time"].items():
            base = quality[bench]["dcsm-crf"]
            for name in TEST_TIMES:
                pseudo, full = rows.get("pseudo", {}).get(name), rows.get("ground-truth", {}).get(name)
                if pseudo is not None and full is not None:
                    print(f"| {bench} | {name} | {base:.1f} | {pseudo:.1f} | {pseudo - base:+.1f} | {full:.1f} "
                          f"| {pseudo / full:.2f} |")
    if results.get("speed_cpu"):
        speed = results["speed_cpu"]
        print(f"\ninference at 224 px ({speed['machine']}): seg {speed['seg_seconds']:.3f} s/img, dcsm-crf "
              f"{speed['dcsm_crf_seconds']:.3f} s/img: {speed['speedup']:.1f}x faster")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train")
    for bench in BENCHMARKS:
        train.add_argument(f"--data-{bench}")
    train.add_argument("--benchmarks", type=lambda text: text.split(","), default=list(BENCHMARKS))
    train.add_argument("--pseudo-root", required=True)
    train.add_argument("--work", required=True)
    train.add_argument("--device", default="auto")
    train.add_argument("--epochs", type=int, default=SegTrainOptions(data="", out="").epochs)
    train.add_argument("--goals", type=lambda text: text.split(","), default=None, metavar="SOURCES",
                       help="only these goal runs (pseudo, ground-truth), e.g. to run them side by side on one GPU")
    train.add_argument("--heads-only", action="store_true", help="only the head choice (train300 -> rest of train)")
    train.add_argument("--with-plain", action="store_true",
                       help="also train on dcsm-crf's plain pseudo-labels (P/pseudo-<benchmark>-dcsm-crf), reported only")
    speed = commands.add_parser("speed")
    speed.add_argument("--run", required=True, help="a classifier run (for dcsm-crf)")
    speed.add_argument("--seg-run", required=True, help="a train-seg run")
    speed.add_argument("--images", type=int, default=20)
    test_time = commands.add_parser("test-time", help="the goal networks on val: plain, --tta, --tta --crf")
    for bench in BENCHMARKS:
        test_time.add_argument(f"--data-{bench}")
    test_time.add_argument("--benchmarks", type=lambda text: text.split(","), default=list(BENCHMARKS))
    test_time.add_argument("--work", required=True)
    commands.add_parser("table")
    for sub in (train, speed, test_time, commands.choices["table"]):
        sub.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    if args.command == "train":
        run_training(args)
    elif args.command == "speed":
        run_speed(args)
    elif args.command == "test-time":
        run_test_time(args)
    print_table(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
