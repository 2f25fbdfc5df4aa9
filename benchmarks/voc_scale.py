"""A PASCAL VOC 2012-shaped rehearsal: what a full VOC run costs on this machine, per stage.

Writes a dataset with VOC + SBD's exact shape (wsseg.data.voc_shaped: the 20 VOC class names
and no classes.txt; ids such as 2008_000123; JPEGs with a longer side of 500 and a shorter one
of 281-500, mostly 375 or 333, in either orientation; XML annotations with VOC's fields;
SegmentationClass for train and val, SegmentationClassAug for train_aug and val;
ImageSets/Segmentation/{train_aug, train, val}.txt). The content is the glyphs benchmark
(`wsseg synth --kind glyphs --size 500`), renamed and resized to VOC's shapes: any content will
do for timing. Then, each command in its own process as a user runs it:

    train     1 epoch of train_aug, timed after its first step (the warm-up), then validation on val
    maps      dcsm on train (ground-truth labels)
    segment   cam and dcsm-crf on train (ground-truth labels: pseudo-labels), dcsm-crf on val (predicted)
    evaluate  each segmentation

and prints per stage images/s, the process's peak RSS and the time the stage would take on
full VOC (10,582 train_aug, 1,464 train, 1,449 val) on this machine: extrapolated from the
measured rate, not measured. mIoU here is no quality number (one epoch on glyphs). Usage:
    .venv/bin/python benchmarks/voc_scale.py [--train-aug 240] [--val 40] [--keep DIR] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from wsseg.data.voc_shaped import FULL_VOC, write_voc_shaped
from wsseg.io import write_text_atomic
from wsseg.train_options import TrainOptions

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
    parser.add_argument("--train-aug", type=int, default=240, help="train_aug images (default 240)")
    parser.add_argument("--val", type=int, default=40, help="val images (default 40)")
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
