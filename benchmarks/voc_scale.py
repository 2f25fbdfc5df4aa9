"""A PASCAL VOC 2012-shaped rehearsal: what a full VOC run costs on this machine, per stage.

Writes a dataset with VOC + SBD's exact shape (the 20 VOC class names and no classes.txt; ids
such as 2008_000123; JPEGs with a longer side of 500 and a shorter one of 281-500, mostly 375
or 333, in either orientation; XML annotations with VOC's fields; SegmentationClass for train
and val, SegmentationClassAug for train_aug and val; ImageSets/Segmentation/{train_aug, train,
val}.txt, train a subset of train_aug as VOC's 1,464 are of SBD's 10,582). The content is the
glyphs benchmark (`wsseg synth --kind glyphs --size 500`), renamed and resized to VOC's shapes:
any content will do for timing. Then, each command in its own process as a user runs it:

    train     2 epochs of train_aug (the first one is the warm-up; the second is timed), val each epoch
    maps      dcsm on train (ground-truth labels)
    segment   cam and dcsm-crf on train (ground-truth labels: pseudo-labels), dcsm-crf on val (predicted)
    evaluate  each segmentation

and prints per stage images/s, the process's peak RSS and the time the stage would take on
full VOC (10,582 train_aug, 1,464 train, 1,449 val) on this machine: extrapolated from the
measured rate, not measured. mIoU here is no quality number (two epochs on glyphs). Usage:
    .venv/bin/python benchmarks/voc_scale.py [--train-aug 320] [--val 80] [--keep DIR] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from wsseg.data.classes import VOC_CLASS_LIST, VOID
from wsseg.data.images import read_label_png, write_image, write_label_png
from wsseg.data.scene import annotation_xml
from wsseg.data.synth import SynthConfig, write_synthetic_dataset
from wsseg.io import write_text_atomic
from wsseg.train_options import TrainOptions

# PASCAL VOC 2012 + SBD (IRN's split files): the sizes a full run works through
FULL_VOC = {"train_aug": 10582, "train": 1464, "val": 1449}
VOC_YEARS = (2007, 2008, 2009, 2010, 2011)


def voc_shape(rng: np.random.Generator) -> tuple[int, int]:
    """(height, width) as VOC's photos: longer side 500; shorter 375 or 333 most often, else 281-500;
    about a quarter of them portrait."""
    draw = rng.random()
    shorter = 375 if draw < 0.55 else 333 if draw < 0.8 else int(rng.integers(281, 501))
    return (500, shorter) if rng.random() < 0.25 else (shorter, 500)


def voc_ids(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct VOC-style ids (year_number), sorted as VOC's split files are."""
    ids: set[str] = set()
    while len(ids) < count:
        ids.add(f"{VOC_YEARS[int(rng.integers(len(VOC_YEARS)))]}_{int(rng.integers(1, 8000)):06d}")
    return sorted(ids)


def object_boxes(labels: np.ndarray) -> list[tuple[int, tuple[int, int, int, int]]]:
    """(class, VOC box) per class present in a label map: its pixels' extent, 1-based inclusive."""
    boxes = []
    for label in sorted(int(v) for v in np.unique(labels) if v not in (0, VOID)):
        rows, cols = np.nonzero(labels == label)
        boxes.append((label, (int(cols.min()) + 1, int(rows.min()) + 1, int(cols.max()) + 1, int(rows.max()) + 1)))
    return boxes


def write_voc_shaped(root: Path, train_aug: int, val: int, seed: int = 0, progress: bool = True) -> dict[str, list[str]]:
    """Write the VOC-shaped dataset under ``root``; returns split name -> ids."""
    source = write_synthetic_dataset(root.with_name(root.name + "-glyphs"),
                                     SynthConfig(kind="glyphs", train=train_aug, val=val, size=500, seed=seed),
                                     progress=progress)
    rng = np.random.default_rng([seed, 2012])
    new_ids = voc_ids(rng, train_aug + val)
    order = rng.permutation(len(new_ids))  # VOC's val ids are interleaved with train_aug's
    aug_ids = sorted(new_ids[i] for i in order[:train_aug])
    splits = {"train_aug": aug_ids,
              "train": sorted(rng.choice(aug_ids, max(1, round(train_aug * FULL_VOC["train"] / FULL_VOC["train_aug"])),
                                         replace=False).tolist()),
              "val": sorted(new_ids[i] for i in order[train_aug:])}
    old_ids = [f"train_{i:06d}" for i in range(train_aug)] + [f"val_{i:06d}" for i in range(val)]
    with_plain_masks = set(splits["train"]) | set(splits["val"])
    for old, new in tqdm(list(zip(old_ids, splits["train_aug"] + splits["val"])), desc="VOC shapes", unit="img",
                         disable=not progress):
        height, width = voc_shape(rng)
        with Image.open(source / "JPEGImages" / f"{old}.jpg") as image:
            rgb = np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR))
        labels = read_label_png(source / "SegmentationClass" / f"{old}.png", VOC_CLASS_LIST.num_classes)
        labels = np.asarray(Image.fromarray(labels).resize((width, height), Image.Resampling.NEAREST))
        write_image(root / "JPEGImages" / f"{new}.jpg", rgb)
        write_label_png(root / "SegmentationClassAug" / f"{new}.png", labels)
        if new in with_plain_masks:
            write_label_png(root / "SegmentationClass" / f"{new}.png", labels)
        write_text_atomic(root / "Annotations" / f"{new}.xml",
                          annotation_xml(new, height, width, object_boxes(labels), VOC_CLASS_LIST, folder="VOC2012"))
    for name, ids in splits.items():
        write_text_atomic(root / "ImageSets" / "Segmentation" / f"{name}.txt", "".join(f"{i}\n" for i in ids))
    shutil.rmtree(source)
    return splits


@dataclass
class Stage:
    name: str
    split: str
    images: int
    seconds: float
    peak_mib: float
    note: str = ""
    per_image: float | None = None  # seconds per image net of start-up, when measured apart from it
    startup: float = 0.0

    def rate(self) -> float:
        return 1.0 / self.per_image if self.per_image else self.images / self.seconds

    def full_seconds(self, images: int) -> float:
        return self.startup + images * (self.per_image if self.per_image else self.seconds / self.images)


def run_child(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak resident memory (MiB, the child's own: ``os.wait4``) and stdout of a command."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        _pid, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"failed: {' '.join(command)}\n{err.read()[-2000:]}")
        return seconds, usage.ru_maxrss / 1024, out.read()  # Linux reports KiB


def wsseg(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "wsseg", *arguments, "--quiet"]


def timed_inference(name: str, split: str, images: int, command: list[str]) -> tuple[Stage, str]:
    """Run a resumable inference command twice: the first run does the work, the second finds every
    output done, so its wall time is the fixed start-up (imports, model) to take off the per-image rate."""
    seconds, peak, stdout = run_child(command)
    startup, _peak, _stdout = run_child(command)
    if seconds <= startup:  # noise for a handful of images: then the whole wall time counts
        return Stage(name, split, images, seconds, peak), stdout
    return Stage(name, split, images, seconds, peak, per_image=(seconds - startup) / images, startup=startup), stdout


def segment_split_note(stdout: str) -> str:
    """The per-stage seconds `wsseg segment` reports, as shares of its total (e.g. CRF on the CPU)."""
    lines = [line for line in stdout.splitlines() if line.startswith("[segment]")]
    match = re.search(r" -> \S+ \((.*)\)\s*$", lines[-1]) if lines else None
    if not match:
        return ""
    parts = [part.rsplit(" ", 2) for part in match.group(1).split(", ")]
    times = {stage: float(value) for stage, value, _unit in parts}
    total = sum(times.values()) or 1.0
    return ", ".join(f"{stage} {100 * value / total:.0f}%" for stage, value in times.items())


def miou_of(path: Path) -> float:
    return 100 * json.loads(path.read_text())["miou"]


def rehearse(root: Path, work: Path, splits: dict[str, list[str]], device: str, batch_size: int) -> list[Stage]:
    """Run every stage on the VOC-shaped dataset; returns the measurements."""
    run = work / "run"
    counts = {name: len(ids) for name, ids in splits.items()}
    seconds, peak, _ = run_child(wsseg("train", "--data", str(root), "--split", "train_aug", "--masks",
                                       "SegmentationClassAug", "--out", str(run), "--epochs", "1",
                                       "--batch-size", str(batch_size), "--device", device))
    (epoch,) = json.loads((run / "history.json").read_text())
    config = json.loads((run / "config.json").read_text())
    warm_images = min(batch_size, counts["train_aug"])  # the first step is the warm-up
    timed_images = counts["train_aug"] - warm_images
    timed_seconds = epoch["seconds"] - epoch["first_step_seconds"]
    stages = [
        Stage("train (after a 1-step warm-up)", "train_aug", timed_images, timed_seconds, peak,
              note=f"{-(-timed_images // batch_size)} timed steps of {batch_size}, {config['image_size']} px crops, "
                   f"{epoch['precision']}, waited {epoch['loader_wait_seconds']:.1f} s for data"),
        Stage("validation (per epoch, in train)", "val", counts["val"], epoch["val_seconds"], peak,
              note=f"{config['image_size']} px longer side"),
    ]
    for split in ("train", "val"):  # evaluate on one image: its fixed cost (start-up, imports)
        write_text_atomic(root / "ImageSets" / "Segmentation" / f"first-of-{split}.txt", f"{splits[split][0]}\n")
    common = ("--run", str(run), "--data", str(root), "--device", device)
    stage, _ = timed_inference("maps dcsm (3 scales)", "train", counts["train"],
                               wsseg("maps", *common, "--split", "train", "--method", "dcsm", "--out",
                                     str(work / "maps")))
    stages.append(stage)
    jobs = [("cam", "train", "gt"), ("dcsm-crf", "train", "gt"), ("dcsm-crf", "val", "predicted")]
    for method, split, labels in jobs:
        out = work / f"{method}-{split}"
        stage, stdout = timed_inference(f"segment {method} ({labels} labels)", split, counts[split],
                                        wsseg("segment", *common, "--split", split, "--method", method,
                                              "--labels", labels, "--out", str(out)))
        seconds, peak, _ = run_child(wsseg("evaluate", "--pred", str(out), "--data", str(root), "--split", split,
                                           "--json", str(work / f"{method}-{split}.json")))
        one_image, _peak, _ = run_child(wsseg("evaluate", "--pred", str(out), "--data", str(root), "--split",
                                              f"first-of-{split}"))
        # the difference is noise for a handful of images: then the whole wall time counts
        per_image = (seconds - one_image) / (counts[split] - 1) if seconds > one_image and counts[split] > 1 else None
        stage.note = f"mIoU {miou_of(work / f'{method}-{split}.json'):.1f} (not a quality number)"
        split_note = segment_split_note(stdout)
        stage.note += f"; {split_note}" if split_note else ""
        stages += [stage, Stage(f"evaluate {method}", split, counts[split], seconds, peak, per_image=per_image,
                                startup=one_image - per_image if per_image else 0.0)]
    return stages


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def print_table(stages: list[Stage], epochs: int) -> None:
    print("| stage | split (images here) | wall s | images/s | peak RSS MiB | full VOC images | "
          "full VOC time (extrapolated) | notes |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for stage in stages:
        full = FULL_VOC[stage.split]
        print(f"| {stage.name} | {stage.split} ({stage.images}) | {stage.seconds:.1f} | {stage.rate():.2f} | "
              f"{stage.peak_mib:.0f} | {full:,} | {duration(stage.full_seconds(full))} | {stage.note} |")
    train, val = stages[0], stages[1]
    epoch = train.full_seconds(FULL_VOC["train_aug"]) + val.full_seconds(FULL_VOC["val"])
    print(f"\nFull VOC training, extrapolated: {duration(epoch)} per epoch (10,582 train_aug + validation on "
          f"1,449 val), {duration(epochs * epoch)} for the default {epochs} epochs (early stopping may end sooner).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-aug", type=int, default=320, help="train_aug images (default 320)")
    parser.add_argument("--val", type=int, default=80, help="val images (default 80)")
    parser.add_argument("--batch-size", type=int, default=TrainOptions.batch_size)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="write everything here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        work = args.keep or Path(scratch)
        root = work / "VOC2012"
        started = time.perf_counter()
        splits = write_voc_shaped(root, args.train_aug, args.val, args.seed, progress=False)
        generated = time.perf_counter() - started
        stages = rehearse(root, work, splits, args.device, args.batch_size)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; device {args.device}; load average "
          f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (other processes share the cores)")
    print(f"VOC-shaped data: {args.train_aug} train_aug ({len(splits['train'])} of them train) + {args.val} val, "
          f"written in {generated:.0f} s")
    print_table(stages, TrainOptions.epochs)


if __name__ == "__main__":
    main()
