"""What DCSM's choices do on real photographs: each variant's pseudo-labels on a train split.

For every variant of the class maps (resolution, scales, layers tapped, guided or plain
gradients, the distinct subtraction, the normalisation, and how the maps meet CAM, superpixels
and the dense CRF) it scores, on the **train** split with the images' true labels (the field's
"seed" measure; never val), the thresholded maps over the threshold grid and the dense CRF over
a coarser one, and prints each variant's best mIoU with its threshold and its mIoU at the
defaults' thresholds. Maps are computed once per image and variant. The photographs are read
from ../shared/data/coco97-voc (or --data); nothing is copied.

    python benchmarks/photo_choices.py --run RUN [--data ROOT] [--images 40] [--json out.json]
    python benchmarks/photo_choices.py --table benchmarks/photo_choices.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from wsseg.data.transforms import batch_tensor
from wsseg.data.voc import VOCDataset
from wsseg.evaluate import ConfusionMatrix
from wsseg.fusion.background import labels_from_maps, soft_probabilities
from wsseg.fusion.crf import dense_crf
from wsseg.fusion.superpixels import slic_superpixels, superpixel_means
from wsseg.io import write_json_atomic
from wsseg.maps import CAM, DCSM, Layers, MapMethod
from wsseg.maps.resolution import grow, resolve_max_side, shrink
from wsseg.models.run import load_run
from wsseg.pipelines import DEFAULT_CRF, THRESHOLD_GRID
from wsseg.registry import method_info
from wsseg.runner import iter_batches

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "coco97-voc"
CRF_THRESHOLDS = (0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75)  # CRF_GRID's, up to 0.75
# the CRF runs as `wsseg segment` runs it, on a grid of at most 320 px (its spatial widths shrunk alike:
# CRFParams.max_side); with --full-size-crf CRF_FULL_SIZE_VARIANTS also run it at full size
CRF = DEFAULT_CRF
FULL_SIZE_CRF = dataclasses.replace(DEFAULT_CRF, max_side=None)
CRF_FULL_SIZE_VARIANTS = ("cam", "dcsm (defaults)")
Maps = Callable[[torch.nn.Module, torch.Tensor, list[list[int]]], torch.Tensor]


def method_maps(method: MapMethod) -> Maps:
    return lambda model, images, classes: method.normalize(method(model, images, classes))


def capped(method: MapMethod) -> Maps:
    """A method without a resolution option (Layers), computed at the classifier's training side."""
    def compute(model: torch.nn.Module, images: torch.Tensor, classes: list[list[int]]) -> torch.Tensor:
        small = shrink(images, resolve_max_side(model, "auto"))
        return grow(method.normalize(method(model, small, classes)), images.shape[-2:])
    return compute


def variants(model: torch.nn.Module) -> dict[str, Maps]:
    taps = model.saliency_layers
    return {
        "cam": method_maps(CAM()),
        "cam, full resolution": method_maps(CAM(max_side=None)),
        "dcsm (defaults)": method_maps(DCSM()),
        "dcsm, full resolution": method_maps(DCSM(max_side=None)),
        **{f"dcsm, maps at {side} px": method_maps(DCSM(max_side=side)) for side in (320, 384, 448, 512)},
        "dcsm, scale 1 only": method_maps(DCSM(scales=(1.0,))),
        "dcsm, plain gradients": method_maps(DCSM(guided=False)),
        "dcsm, deepest two taps": method_maps(DCSM(layers=tuple(taps[-2:]))),
        "dcsm, shallowest three taps": method_maps(DCSM(layers=tuple(taps[:3]))),
        "dcsm, normalisation linear-max": method_maps(DCSM(normalization="linear-max")),
        "dcsm, normalisation saturated (authors')": method_maps(DCSM(normalization="saturated")),
        "dcsm, caffe variant": method_maps(DCSM(variant="caffe")),
        # the authors pad the classes to subtract to 4 with the best-scoring absent ones
        "dcsm, present classes only (min_candidates 1)": method_maps(DCSM(min_candidates=1)),
        "dcsm, scale 1, present classes only": method_maps(DCSM(scales=(1.0,), min_candidates=1)),
        "no distinct subtraction (guided layers)": capped(Layers()),
    }


def combined(records: list[dict]) -> None:
    """Variants made from others: DCSM meeting CAM, and DCSM averaged over superpixels."""
    for record in records:
        dcsm, cam = record["maps"]["dcsm (defaults)"].astype(np.float32), record["maps"]["cam"].astype(np.float32)
        record["maps"]["dcsm x cam (geometric mean)"] = np.sqrt(dcsm * cam).astype(np.float16)
        record["maps"]["(dcsm + cam) / 2"] = ((dcsm + cam) / 2).astype(np.float16)
        superpixels = record["superpixels"]
        means = superpixel_means(dcsm, superpixels).T  # [K, P]
        record["maps"]["dcsm averaged over superpixels"] = means[:, superpixels].astype(np.float16)
        means = superpixel_means(cam, superpixels).T
        record["maps"]["cam averaged over superpixels"] = means[:, superpixels].astype(np.float16)


def collect(model: torch.nn.Module, dataset: VOCDataset, ids: Sequence[str], chosen: dict[str, Maps]) -> tuple[list[dict], dict]:
    records, seconds = [], {name: 0.0 for name in chosen}
    for batch in tqdm(list(iter_batches(dataset, list(ids), 1, False, True)), desc="maps", unit="img"):
        item = batch[0]
        images = batch_tensor([item.image], "cpu")
        classes = [[label - 1 for label in item.labels]]
        maps = {}
        for name, compute in chosen.items():
            started = time.perf_counter()
            maps[name] = compute(model, images, classes)[0, :len(classes[0])].detach().numpy().astype(np.float16)
            seconds[name] += time.perf_counter() - started
        records.append({"image": item.image, "labels": [c + 1 for c in classes[0]], "truth": dataset.load_mask(item.id),
                        "maps": maps, "superpixels": slic_superpixels(item.image)})
    return records, {name: value / len(records) for name, value in seconds.items()}


def crf_fuse(params) -> Callable[[np.ndarray, np.ndarray, list[int], float], np.ndarray]:
    def fuse(image: np.ndarray, maps: np.ndarray, labels: list[int], threshold: float) -> np.ndarray:
        refined = dense_crf(image, soft_probabilities(maps, threshold), params)
        return np.array([0, *labels], np.uint8)[np.argmax(refined, axis=0)]
    return fuse


def threshold_fuse(image: np.ndarray, maps: np.ndarray, labels: list[int], threshold: float) -> np.ndarray:
    return labels_from_maps(maps, labels, threshold)


def curve(records: list[dict], name: str, grid: Sequence[float], fuse: Callable, num_labels: int) -> list[float]:
    matrices = [ConfusionMatrix(num_labels) for _ in grid]
    for record in records:
        maps = record["maps"][name].astype(np.float32)
        for matrix, threshold in zip(matrices, grid):
            matrix.update(fuse(record["image"], maps, record["labels"], threshold), record["truth"])
    return [100.0 * m.miou() for m in matrices]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--split", default="train")
    parser.add_argument("--images", type=int, default=None, help="the first N images of the split (default all)")
    parser.add_argument("--only", help="variant names separated by semicolons (default all)")
    parser.add_argument("--no-crf", action="store_true")
    parser.add_argument("--full-size-crf", action="store_true",
                        help=f"also run the CRF at full size for {', '.join(CRF_FULL_SIZE_VARIANTS)} (slow)")
    parser.add_argument("--json", help="write the curves here")
    parser.add_argument("--table", help="print the table of an earlier --json and stop")
    args = parser.parse_args()
    if args.table:
        print_table(json.loads(Path(args.table).read_text()))
        return
    if not Path(args.data).is_dir():
        print(f"skipped: no real-photo dataset at {args.data}")
        return
    torch.set_grad_enabled(True)
    model, config = load_run(args.run)
    dataset = VOCDataset(args.data, args.split)
    ids = dataset.ids[: args.images] if args.images else dataset.ids
    chosen = variants(model)
    if args.only:
        chosen = {name: chosen[name] for name in args.only.split(";")}
    records, seconds = collect(model, dataset, ids, chosen)
    if "dcsm (defaults)" in chosen and "cam" in chosen:
        combined(records)
    result = {"data": str(args.data), "split": args.split, "images": len(records), "run": str(args.run),
              "image_size": config.image_size, "threshold_grid": list(THRESHOLD_GRID), "crf_grid": list(CRF_THRESHOLDS),
              "defaults": {"threshold": method_info("dcsm").threshold, "crf": method_info("dcsm-crf").threshold,
                           "cam": method_info("cam").threshold, "cam-crf": method_info("cam-crf").threshold},
              "variants": {}}
    num_labels = dataset.num_classes + 1
    for name in records[0]["maps"]:
        started = time.perf_counter()
        entry = {"seconds_per_image": seconds.get(name),
                 "threshold": curve(records, name, THRESHOLD_GRID, threshold_fuse, num_labels)}
        if not args.no_crf:
            entry["crf"] = curve(records, name, CRF_THRESHOLDS, crf_fuse(CRF), num_labels)
            if args.full_size_crf and name in CRF_FULL_SIZE_VARIANTS:
                entry["crf_full_size"] = curve(records, name, CRF_THRESHOLDS, crf_fuse(FULL_SIZE_CRF), num_labels)
        result["variants"][name] = entry
        print(f"{name}: best {max(entry['threshold']):.1f}" + (f", crf {max(entry['crf']):.1f}" if "crf" in entry else "")
              + f" ({time.perf_counter() - started:.0f} s)", flush=True)
    if args.json:
        write_json_atomic(Path(args.json), result)
    print_table(result)


def print_table(result: dict) -> None:
    grid, crf_grid = result["threshold_grid"], result["crf_grid"]
    print(f"\n{result['images']} images of {result['split']} ({result['data']}), true labels; classifier trained at "
          f"{result['image_size']} px; mIoU %")
    print(f"| variant | maps s/img | thresholded: best (threshold) | + dense CRF at {CRF.max_side} px: best "
          "(threshold) | + dense CRF at full size |")
    print("|---|---:|---:|---:|---:|")
    for name, entry in result["variants"].items():
        plain = entry["threshold"]
        best = int(np.argmax(plain))
        cells = [f"{plain[best]:.1f} ({grid[best]:g})"]
        for key in ("crf", "crf_full_size"):
            if key in entry:
                crf_best = int(np.argmax(entry[key]))
                cells.append(f"{entry[key][crf_best]:.1f} ({crf_grid[crf_best]:g})")
            else:
                cells.append("-")
        speed = "-" if entry.get("seconds_per_image") is None else f"{entry['seconds_per_image']:.2f}"
        print(f"| {name} | {speed} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
