"""Seconds per image of every segmentation method at 224 px on this machine, split by stage.

Uses the default backbone with 20 classes (as PASCAL VOC), 2 classes per image, batches of 8
natural-looking images (crops of the bundled photographs). ``--size 640x480`` times a photo of
that size (width x height); ``--trained-at N`` times the classifier as a run trained at N px
sees it (the map methods then compute at most at N px, their default, and up-sample). Usage:
    .venv/bin/python benchmarks/segment_speed.py [--size 224] [--images 16] [--scales 1]
    .venv/bin/python benchmarks/segment_speed.py --size 640x480 --trained-at 256 --methods cam,dcsm,dcsm-crf
    .venv/bin/python benchmarks/segment_speed.py --voc-sizes --methods cam,dcsm,dcsm-crf
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from wsseg.data.synth import load_backgrounds
from wsseg.data.transforms import resize
from wsseg.data.classes import VOC_CLASSES
from wsseg.fusion.misvm import MISVM_FILE, MISVM_MAX_SIDE, MiSVM
from wsseg.models.run import RunConfig
from wsseg.models import build_classifier
from wsseg.pipelines import build_segmenter, segment_images
from wsseg.registry import SEGMENT_METHODS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="224", help="side, or WIDTHxHEIGHT (default 224)")
    parser.add_argument("--trained-at", type=int, default=None,
                        help="the classifier's training side (the maps' default resolution cap; default: none)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--scales", default="1", help="DCSM/CAM scales, comma-separated (default 1: one scale)")
    parser.add_argument("--voc-sizes", action="store_true",
                        help="images of PASCAL VOC's shapes (longer side 500, shorter 281-500, either orientation), "
                             "each of its own size, so each is its own batch as in `wsseg segment`")
    parser.add_argument("--methods", help="comma-separated subset of the methods (default: all)")
    parser.add_argument("--profile", action="store_true",
                        help="also split DCSM's time into its parts (forward, backward, up-sampling, distinct sums) "
                             "and time the dense CRF, at the image's size and at the --trained-at cap")
    args = parser.parse_args()
    scales = tuple(float(s) for s in args.scales.split(","))
    torch.manual_seed(0)
    model = build_classifier(20).eval()
    model.input_size = args.trained_at
    photos = load_backgrounds()
    width, _, height = args.size.partition("x")
    shapes = [(int(height or width), int(width))] * args.images
    if args.voc_sizes:
        rng_sizes = np.random.default_rng(1)
        shorter = rng_sizes.choice([375, 333, 281, 300, 353, 400, 500], size=args.images)
        shapes = [(500, int(s)) if i % 3 == 0 else (int(s), 500) for i, s in enumerate(shorter)]
    images = [resize(photos[i % len(photos)], *shape) for i, shape in enumerate(shapes)]
    classes = [[i % 20, (i + 7) % 20] for i in range(args.images)]
    # pipeline A's scorer: random weights of the right shape (this measures time, not quality)
    rng = np.random.default_rng(0)
    dims = 4 * (40 + 112 + 320)  # zoom-out levels x channels of the default layers
    run = Path(tempfile.mkdtemp())
    class_names = tuple(VOC_CLASSES)
    RunConfig(list(class_names)).save(run)
    MiSVM(np.zeros(dims, np.float32), np.ones(dims, np.float32), rng.normal(0, 0.01, (20, dims)).astype(np.float32),
          np.zeros(20, np.float32), np.tile(np.array([1.0, 0.0], np.float32), (20, 1)),
          class_names, MISVM_MAX_SIDE).save(run / MISVM_FILE)
    segment_images(model, images[:1], classes[:1], build_segmenter("dcsm-crf", scales=scales))  # warm-up
    if args.profile:
        profile(model, images, classes, args.trained_at)
    rows = []
    for name in args.methods.split(",") if args.methods else SEGMENT_METHODS:
        segmenter = build_segmenter(name, run, scales=scales)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        for first, last in _equal_shape_batches(shapes, args.batch):
            segment_images(model, images[first:last], classes[first:last], segmenter, timings)
        total = (time.perf_counter() - started) / args.images
        rows.append((name, total, {k: v / args.images for k, v in timings.items()}))
    sizes = "VOC-like sizes (longer side 500), one image per batch" if args.voc_sizes else f"{args.size} px"
    sizes += f", classifier trained at {args.trained_at} px" if args.trained_at else ""
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; {sizes}, "
          f"{args.images} images in blocks of {args.batch}, 2 classes each, scales {scales}")
    stage_names = sorted({stage for _, _, stages in rows for stage in stages})
    print("| method | s/img | " + " | ".join(stage_names) + " |")
    print("|---|---:|" + "---:|" * len(stage_names))
    for name, total, stages in rows:
        cells = [f"{stages[k]:.4f}" if k in stages else "" for k in stage_names]
        print(f"| {name} | {total:.4f} | " + " | ".join(cells) + " |")


def profile(model: torch.nn.Module, images: list[np.ndarray], classes: list[list[int]], cap: int | None) -> None:
    """Seconds per image of DCSM's parts at the default scales, one image at a time, at the image's
    own size and shrunk to ``cap``; then the dense CRF at full size and on the 320 px grid."""
    import dataclasses

    from wsseg.fusion.background import soft_probabilities
    from wsseg.fusion.crf import dense_crf
    from wsseg.maps.distinct import dcsm
    from wsseg.maps.resolution import grow, shrink
    from wsseg.pipelines import DEFAULT_CRF

    sides = [None] + ([cap] if cap else [])
    rows = {}
    for side in sides:
        timings: dict[str, float] = {}
        for image, wanted in zip(images, classes):
            batch = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
            started = time.perf_counter()
            small = shrink(batch, side)
            timings["shrink"] = timings.get("shrink", 0.0) + time.perf_counter() - started
            result = dcsm(model, small, [wanted], timings=timings)
            started = time.perf_counter()
            grow(result.maps, batch.shape[-2:])
            timings["grow to the image"] = timings.get("grow to the image", 0.0) + time.perf_counter() - started
        rows[f"dcsm at {'full size' if side is None else f'{side} px'}"] = {k: v / len(images) for k, v in timings.items()}
    probabilities = soft_probabilities(np.random.default_rng(0).random((2, *images[0].shape[:2])).astype(np.float32), 0.3)
    for label, params in (("dense CRF, full size", dataclasses.replace(DEFAULT_CRF, max_side=None)),
                          ("dense CRF, 320 px grid (the default)", dataclasses.replace(DEFAULT_CRF, max_side=320))):
        started = time.perf_counter()
        for image in images[:4]:
            dense_crf(image, probabilities, params)
        rows[label] = {"crf": (time.perf_counter() - started) / min(4, len(images))}
    parts = list(dict.fromkeys(part for row in rows.values() for part in row))
    print(f"where the time goes (s/img, {images[0].shape[1]}x{images[0].shape[0]}, {torch.get_num_threads()} threads)")
    print("| step | total | " + " | ".join(parts) + " |")
    print("|---|---:|" + "---:|" * len(parts))
    for label, row in rows.items():
        print(f"| {label} | {sum(row.values()):.3f} | " + " | ".join(f"{row[p]:.3f}" if p in row else "" for p in parts)
              + " |")


def _equal_shape_batches(shapes: list[tuple[int, int]], batch: int) -> list[tuple[int, int]]:
    """(first, last) index ranges: runs of equal shape inside fixed blocks, as `wsseg segment` batches."""
    ranges = []
    for start in range(0, len(shapes), batch):
        first = start
        for index in range(start + 1, min(start + batch, len(shapes)) + 1):
            if index == min(start + batch, len(shapes)) or shapes[index] != shapes[first]:
                ranges.append((first, index))
                first = index
    return ranges


if __name__ == "__main__":
    main()
