"""How fast one loader worker decodes and augments PASCAL VOC-sized JPEGs: how many a GPU needs.

Writes VOC-shaped JPEGs (wsseg.data.voc_shaped, as benchmarks/voc_scale.py does: longer side
500, mostly 500x375 and 500x333), then measures, on this machine:
  decode            reading the JPEG into an RGB array (what every image costs)
  decode + augment  `wsseg train`'s training item: decode, random rescale around --image-size,
                    crop, flip, colour jitter, to a tensor
  loader, N workers the training DataLoader (batches of --batch-size, the EpochShards sampler,
                    pinned memory off: no GPU here) with 0, 1, 2, ... worker processes
Each row is the best of --repeats passes over the images. A GPU that trains at R images/s
needs about R / (decode + augment images/s) workers, each on a core of its own. Usage:
    .venv/bin/python benchmarks/loader_speed.py [--images 96] [--workers 0,1,2] [--image-size 512]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from wsseg.data.loading import EpochShards, LabelledImages, loader_settings
from wsseg.data.voc import VOCDataset
from wsseg.data.voc_shaped import write_voc_shaped
from wsseg.train_options import TrainOptions


def best_rate(images: int, repeats: int, work) -> float:
    """Images per second of the fastest of ``repeats`` runs of ``work()``."""
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return images / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--workers", default="0,1,2", help="worker counts to measure (comma-separated)")
    parser.add_argument("--image-size", type=int, default=512, help="training crop (512: auto's choice for VOC)")
    parser.add_argument("--batch-size", type=int, default=TrainOptions.batch_size)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "VOC2012"
        write_voc_shaped(root, args.images, 1, progress=False)
        dataset = VOCDataset(root, "train_aug", masks="SegmentationClassAug")
        items = LabelledImages(dataset, args.image_size, augment=True, scale_range=TrainOptions.scale_range,
                               jitter=TrainOptions.jitter)
        n = len(dataset)
        rows = [("decode", 1, best_rate(n, args.repeats, lambda: [dataset.load_image(i) for i in dataset.ids])),
                ("decode + augment", 1, best_rate(n, args.repeats, lambda: [items[(0, i)] for i in range(n)]))]
        for workers in (int(w) for w in args.workers.split(",")):
            sampler = EpochShards(n)
            loader = DataLoader(items, batch_size=args.batch_size, sampler=sampler,
                                **loader_settings(torch.device("cpu"), workers))
            epoch = iter(range(1_000))

            def one_epoch() -> None:
                sampler.set_epoch(next(epoch))
                for _batch in loader:
                    pass

            one_epoch()  # start the persistent workers: the first epoch's cost, not every epoch's
            rows.append((f"loader, {workers} worker{'s' if workers != 1 else ''}", max(workers, 1),
                         best_rate(n, args.repeats, one_epoch)))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"torch threads {torch.get_num_threads()}; {n} VOC-sized JPEGs, {args.image_size} px crops, "
          f"batches of {args.batch_size}, best of {args.repeats}; load average {os.getloadavg()[0]:.1f}")
    print("| what | processes | images/s | images/s per process |")
    print("|---|---:|---:|---:|")
    for name, processes, rate in rows:
        print(f"| {name} | {processes} | {rate:.1f} | {rate / processes:.1f} |")
    per_worker = rows[1][2]
    print(f"\nOne worker decodes and augments {per_worker:.0f} images/s here: a GPU training at R images/s needs "
          f"about R / {per_worker:.0f} workers (rounded up), each on a core of its own.")


if __name__ == "__main__":
    main()
