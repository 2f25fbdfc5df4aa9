"""Peak resident memory and speed of ``wsseg train`` at the default size for photographs (512 px),
with and without its memory savings: what a laptop with 8 or 16 GB can run.

Each setting trains one epoch of batch 16 on 16 photos in a fresh process (so each peak is its
own) and prints its peak RSS, images/s and loss. The settings:

    default       the defaults (activation checkpointing: auto, on at 512 px on a CPU)
    plain         --checkpoint-activations off: every activation kept, as before
    freeze-bn     --freeze-bn (micro-batches: auto, 4 crops of 512 px on a CPU)
    freeze-bn-16  --freeze-bn --micro-batch 16 --checkpoint-activations off
    probe         a linear probe alone (--probe-epochs equal to --epochs): no backward pass through the backbone

The photos are the first 16 of the real set's train
split (../shared/data/coco97-voc, copied into a temporary folder outside the repository) when
present, else crops of scikit-image's bundled photographs at 640x480; memory does not depend on
what the photos show.

    python benchmarks/train_memory.py [--size 512] [--settings default,plain,freeze-bn,freeze-bn-16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REAL = HERE.parent.parent / "shared" / "data" / "coco97-voc"
IMAGES = 16
SETTINGS = {
    "default": {},
    "plain": {"checkpoint_activations": "off"},
    "freeze-bn": {"freeze_bn": True},
    "freeze-bn-16": {"freeze_bn": True, "micro_batch": 16, "checkpoint_activations": "off"},
    "probe": {"probe_epochs": 1},  # a linear probe alone (--probe-epochs = --epochs = 1 here)
}

CHILD = """
import json, resource, sys, time
from wsseg.train import TrainOptions, train
options = json.loads(sys.argv[1])
started = time.perf_counter()
history = train(TrainOptions(**options))
print(json.dumps({"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
                  "micro_batch": json.load(open(options["out"] + "/config.json"))["micro_batch"],
                  "images_per_second": history[-1]["images_per_second"],
                  "loss": history[-1]["loss"]}))
"""


def make_dataset(root: Path) -> str:
    """16 photos in VOC layout under ``root``; returns where they came from."""
    from PIL import Image

    from wsseg.data.images import write_label_png

    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    if (REAL / "ImageSets" / "Segmentation" / "train.txt").is_file():
        ids = (REAL / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[:IMAGES]
        for image_id in ids:
            shutil.copy(REAL / "JPEGImages" / f"{image_id}.jpg", root / "JPEGImages")
            shutil.copy(REAL / "SegmentationClass" / f"{image_id}.png", root / "SegmentationClass")
        source = f"the first {IMAGES} train photos of {REAL}"
    else:
        from wsseg.data.synth import load_backgrounds
        from wsseg.data.transforms import resize

        photos = load_backgrounds()
        ids = [f"photo{i:02d}" for i in range(IMAGES)]
        for i, image_id in enumerate(ids):
            Image.fromarray(resize(photos[i % len(photos)], 480, 640)).save(root / "JPEGImages" / f"{image_id}.jpg")
            mask = np.zeros((480, 640), np.uint8)
            mask[100:300, 200:400] = 1 + i % 20
            write_label_png(root / "SegmentationClass" / f"{image_id}.png", mask)
        source = f"{IMAGES} crops of scikit-image's bundled photographs"
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(f"{i}\n" for i in ids))
    return source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help=f"settings to measure, comma-separated, from {', '.join(SETTINGS)}")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wsseg-memory-"))
    try:
        source = make_dataset(work / "data")
        rows = []
        for name in args.settings.split(","):
            options = {"data": str(work / "data"), "out": str(work / name), "val_split": None, "epochs": 1,
                       "batch_size": 16, "image_size": args.size, "progress": False, **SETTINGS[name]}
            done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(options)], capture_output=True, text=True,
                                  check=True)
            rows.append((name, json.loads(done.stdout.strip().splitlines()[-1])))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wsseg train, one epoch of batch 16 at {args.size} px on {source}; {os.cpu_count()} cores")
    print("| setting | images per pass | peak RSS (GB) | images/s | loss |")
    print("|---|---:|---:|---:|---:|")
    for name, row in rows:
        print(f"| {name} | {row['micro_batch'] or 16} | {row['peak_rss_gb']:.2f} | {row['images_per_second']:.2f} "
              f"| {row['loss']:.5f} |")


if __name__ == "__main__":
    main()
