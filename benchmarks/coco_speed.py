"""COCO-format reading: rendering a mask against decoding its JPEG, and the index at train2014's size.

Two measurements, on generated COCO-like data (no download):

  speed   500 images of 640x480 (COCO's most common size) written as JPEG (quality 90, smooth
          content with shapes and noise, ~160 KiB as COCO's photos average), each with COCO's mean of
          ~7 objects (polygons of 8-69 vertices, one object in 10 of two polygons, 1 image in 20 with a
          crowd region in RLE). Per image: the JPEG decode (wsseg's read_image, what every command pays)
          and the mask render (COCODataset.load_mask: JSON slice -> pycocotools -> painted mask), best
          of --repeats passes; prints a Markdown table.
  scale   an instances JSON of train2014's size (82,783 images, ~604k objects; polygons of 8-69
          vertices, ~450 MB) written to --tmp (deleted after), then, in a fresh process, the index
          built from it: wall time and peak RSS (getrusage), the index's own size, and the memory of
          2 workers forked after it (as the DataLoader's are) that each render 500 masks: private
          (their own) and shared with the parent (the index, not copied).

Usage:
    .venv/bin/python benchmarks/coco_speed.py speed [--images 500] [--repeats 3]
    .venv/bin/python benchmarks/coco_speed.py scale [--images 82783] [--objects 604000] [--tmp /tmp]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from wsseg.data.images import read_image

WIDTH, HEIGHT = 640, 480
# pixel noise that gives JPEGs of ~160 KiB, COCO train2014's mean (13 GB / 82,783 images)
NOISE = 34


def polygon(rng: np.random.Generator, width: int, height: int, points: int) -> list[float]:
    """A star-shaped polygon (as COCO's outlines are) inside the image, coordinates to 2 decimals."""
    cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
    radius = rng.uniform(0.03, 0.35) * min(width, height)
    angles = np.sort(rng.uniform(0, 2 * np.pi, points))
    radii = radius * rng.uniform(0.5, 1.0, points)
    xs = np.clip(cx + radii * np.cos(angles), 0, width - 1)
    ys = np.clip(cy + radii * np.sin(angles), 0, height - 1)
    return np.round(np.stack([xs, ys], 1).ravel(), 2).tolist()


def crowd_rle(rng: np.random.Generator, width: int, height: int) -> dict:
    """An uncompressed RLE (as COCO stores crowds) of a box, in column-major runs."""
    x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
    x1, y1 = x0 + int(rng.integers(20, width // 2)), y0 + int(rng.integers(20, height // 2))
    mask = np.zeros((height, width), np.uint8)
    mask[y0:y1, x0:x1] = 1
    flat = mask.flatten(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    return {"size": [height, width], "counts": np.diff(bounds).tolist()}


def annotation(rng, number: int, image_id: int, width: int, height: int, crowd: bool) -> dict:
    if crowd:
        segmentation = crowd_rle(rng, width, height)
    else:
        segmentation = [polygon(rng, width, height, int(rng.integers(*POINTS)))
                        for _ in range(2 if rng.random() < 0.1 else 1)]
    return {"id": number, "image_id": image_id, "category_id": int(CATEGORY_IDS[rng.integers(0, 80)]),
            "iscrowd": int(crowd), "segmentation": segmentation, "area": 1.0, "bbox": [0, 0, 1, 1]}


# polygon vertices: 8..69, which makes a train2014-sized file ~450 MB as the real one is
POINTS = (8, 70)
# COCO's 80 ids: 1..90 with 10 gaps
CATEGORY_IDS = np.array([i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)])
CATEGORIES = [{"id": int(i), "name": f"class{i}", "supercategory": "thing"} for i in CATEGORY_IDS]


def write_photo(path: Path, rng: np.random.Generator) -> None:
    """A JPEG with photo-like statistics: a smooth gradient, a few shapes, mild noise."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([(x * rng.uniform(0.1, 0.4) + y * rng.uniform(0.1, 0.4) + rng.uniform(0, 100)) % 256
                     for _ in range(3)], -1).astype(np.uint8)
    image = Image.fromarray(base)
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        draw.polygon([tuple(p) for p in np.array(polygon(rng, WIDTH, HEIGHT, 12)).reshape(-1, 2)],
                     fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    pixels = np.asarray(image).astype(np.int16) + rng.integers(-NOISE, NOISE + 1, (HEIGHT, WIDTH, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)


def speed(args: argparse.Namespace) -> None:
    from wsseg.data.layout import open_dataset

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "annotations").mkdir()
        (root / "val2014").mkdir()
        images, annotations = [], []
        for index in range(args.images):
            name = f"COCO_val2014_{index:012d}.jpg"
            write_photo(root / "val2014" / name, rng)
            images.append({"id": index, "file_name": name, "height": HEIGHT, "width": WIDTH})
            for _ in range(int(rng.poisson(7.3))):
                annotations.append(annotation(rng, len(annotations), index, WIDTH, HEIGHT, False))
            if index % 20 == 0:
                annotations.append(annotation(rng, len(annotations), index, WIDTH, HEIGHT, True))
        (root / "annotations" / "instances_val2014.json").write_text(json.dumps(
            {"images": images, "annotations": annotations, "categories": CATEGORIES}))
        dataset = open_dataset(root, "val2014")
        kib = np.mean([(root / "val2014" / i["file_name"]).stat().st_size for i in images]) / 1024
        times = {"decode": [], "render": []}
        for _ in range(args.repeats):
            for name, work in (("decode", lambda i: read_image(dataset.image_path(i))),
                               ("render", dataset.load_mask)):
                per_image = []
                for image_id in dataset.ids:
                    started = time.perf_counter()
                    work(image_id)
                    per_image.append(time.perf_counter() - started)
                times[name].append(per_image)
        best = {name: np.min(np.array(runs), axis=0) * 1000 for name, runs in times.items()}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.images} images {WIDTH}x{HEIGHT}, JPEG mean {kib:.0f} KiB, {len(annotations)} objects "
          f"({len(annotations) / args.images:.1f} per image); best of {args.repeats} passes per image")
    print("| per image | mean ms | median ms | p95 ms | images/s |")
    print("|---|---:|---:|---:|---:|")
    for name, label in (("decode", "JPEG decode (read_image)"), ("render", "mask render (load_mask)")):
        values = best[name]
        print(f"| {label} | {values.mean():.2f} | {np.median(values):.2f} | {np.percentile(values, 95):.2f} | "
              f"{1000 / values.mean():.0f} |")
    print(f"render / decode: {best['render'].mean() / best['decode'].mean():.2f}")


def write_big_json(path: Path, images: int, objects: int) -> None:
    """train2014's shape, streamed to disk (never held whole): ``objects`` spread over ``images``."""
    rng = np.random.default_rng(1)
    per_image = rng.multinomial(objects, np.full(images, 1 / images))
    with open(path, "w") as handle:
        handle.write('{"info": {}, "licenses": [], "images": [')
        for index in range(images):
            handle.write(("," if index else "") + json.dumps(
                {"id": index + 1, "file_name": f"COCO_train2014_{index + 1:012d}.jpg", "height": HEIGHT,
                 "width": WIDTH}))
        handle.write('], "annotations": [')
        number = 0
        for index, count in enumerate(per_image):
            for _ in range(count):
                crowd = rng.random() < 0.01
                handle.write(("," if number else "") + json.dumps(
                    annotation(rng, number + 1, index + 1, WIDTH, HEIGHT, crowd), separators=(",", ":")))
                number += 1
        handle.write('], "categories": ' + json.dumps(CATEGORIES) + "}")


def memory_mb() -> tuple[float, float]:
    """This process's (private, shared) resident memory, MiB: a forked worker's own, and its parent's pages."""
    text = Path("/proc/self/smaps_rollup").read_text()
    fields = {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines()[1:]}
    private = fields.get("Private_Dirty", 0) + fields.get("Private_Clean", 0)
    shared = fields.get("Shared_Dirty", 0) + fields.get("Shared_Clean", 0)
    return private / 1024, shared / 1024


def _worker(dataset, ids, queue) -> None:
    before = memory_mb()
    for image_id in ids:
        dataset.load_mask(image_id)
    queue.put((before, memory_mb()))


def index_only(path: Path) -> None:
    """In a fresh process: build the index, report time, memory, and 2 forked workers' copies."""
    from wsseg.data.coco import COCODataset

    started = time.perf_counter()
    dataset = COCODataset(path.parent.parent, "train2014")
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    index = dataset.index
    own = sum(getattr(index, name).nbytes for name in ("name_offsets", "heights", "widths", "labels", "objects",
                                                        "offsets", "category_ids"))
    own += len(index.annotations) + len(index.names)
    for image_id in dataset.ids[:50]:  # the parent's own warm-up (pycocotools, the allocator), as training's
        dataset.load_mask(image_id)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_worker, args=(dataset, dataset.ids[k::2][:500], queue)) for k in range(2)]
    for worker in workers:
        worker.start()
    copies = [queue.get() for _ in workers]
    for worker in workers:
        worker.join()
    print(json.dumps({"index_seconds": round(seconds, 1), "peak_rss_mb": round(peak),
                      "rss_after_mb": round(int(status["VmRSS"].split()[0]) / 1024),
                      "index_mb": round(own / 2 ** 20), "images": len(dataset),
                      "objects": int(index.objects.sum()),
                      "workers_mb": [[round(v) for pair in copy for v in pair] for copy in copies]}))


def scale(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(dir=args.tmp, prefix="coco-scale-"))
    try:
        path = folder / "annotations" / "instances_train2014.json"
        path.parent.mkdir()
        (folder / "train2014").mkdir()
        started = time.perf_counter()
        write_big_json(path, args.images, args.objects)
        print(f"wrote {path.stat().st_size / 2 ** 20:.0f} MiB in {time.perf_counter() - started:.0f} s", flush=True)
        done = subprocess.run([sys.executable, __file__, "index-only", str(path)], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        facts = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"JSON {path.stat().st_size / 2 ** 20:.0f} MiB, {facts['images']} images, {facts['objects']} objects")
        print("| measure | value |")
        print("|---|---:|")
        print(f"| index build (parse + validate + pack), s | {facts['index_seconds']} |")
        print(f"| peak RSS while building, MiB | {facts['peak_rss_mb']} |")
        print(f"| RSS after (parsed dicts freed), MiB | {facts['rss_after_mb']} |")
        print(f"| the index itself, MiB | {facts['index_mb']} |")
        for k, (private0, shared0, private1, shared1) in enumerate(facts["workers_mb"]):
            print(f"| forked worker {k + 1}: private / shared with the parent, MiB, at start | {private0} / {shared0} |")
            print(f"| forked worker {k + 1}: private / shared with the parent, MiB, after 500 renders | {private1} / "
                  f"{shared1} |")
    finally:
        shutil.rmtree(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("speed")
    one.add_argument("--images", type=int, default=500)
    one.add_argument("--repeats", type=int, default=3)
    two = commands.add_parser("scale")
    two.add_argument("--images", type=int, default=82_783)
    two.add_argument("--objects", type=int, default=604_000)
    two.add_argument("--tmp", default="/tmp")
    three = commands.add_parser("index-only")
    three.add_argument("path", type=Path)
    args = parser.parse_args()
    if args.command == "speed":
        speed(args)
    elif args.command == "scale":
        scale(args)
    else:
        index_only(args.path)


if __name__ == "__main__":
    main()
