"""Peak memory of `wsseg segment` on 100 and on 1,000 images: it must not grow with the split.

Synthesises 1,000 images (128 px, the default benchmark's size), stores an ImageNet-initialised
classifier as a run (memory does not depend on training), then runs `wsseg segment` in a fresh
process on the first 100 ids and on all 1,000, and reads each process's own peak RSS
(``os.wait4``). Usage:
    .venv/bin/python benchmarks/segment_memory.py [--method dcsm-crf] [--images 100,1000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from wsseg.data.synth import SHAPES, SynthConfig, write_synthetic_dataset
from wsseg.models import build_classifier
from wsseg.models.run import RunConfig, save_checkpoint


def peak_rss_of(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MiB) of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{process.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="dcsm-crf")
    parser.add_argument("--images", default="100,1000", help="split sizes to compare (comma-separated)")
    args = parser.parse_args()
    sizes = [int(n) for n in args.images.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        root = write_synthetic_dataset(Path(scratch) / "data", SynthConfig(train=max(sizes), val=1), progress=False)
        ids = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
        for n in sizes:
            (root / "ImageSets" / "Segmentation" / f"first{n}.txt").write_text("\n".join(ids[:n]) + "\n")
        run = Path(scratch) / "run"
        torch.manual_seed(0)
        save_checkpoint(run / "model.pt", build_classifier(len(SHAPES), pooling="gap"), epoch=0)
        RunConfig(classes=list(SHAPES), pooling="gap").save(run)
        rows = []
        for n in sizes:
            command = [sys.executable, "-m", "wsseg", "segment", "--run", str(run), "--data", str(root),
                       "--split", f"first{n}", "--method", args.method, "--scales", "1",
                       "--out", str(Path(scratch) / f"out{n}"), "--quiet"]
            seconds, peak = peak_rss_of(command)
            rows.append((n, peak, seconds))
            print(f"  measured {n} images: {peak:.0f} MiB, {seconds:.0f} s", flush=True)
    print(f"`wsseg segment --method {args.method} --scales 1`, 128 px images, ground-truth labels, "
          "one process each")
    print("| images | peak RSS (MiB) | wall (s) | s/img |")
    print("|---:|---:|---:|---:|")
    for n, peak, seconds in rows:
        print(f"| {n} | {peak:.0f} | {seconds:.1f} | {seconds / n:.3f} |")
    growth = rows[-1][1] / rows[0][1]
    print(f"\npeak RSS at {rows[-1][0]} images = {growth:.2f}x the peak at {rows[0][0]}")


if __name__ == "__main__":
    main()
