"""Issue 14's goals for the random-walk methods, on both synthetic benchmarks.

    python benchmarks/affinity_goals.py run --bench shapes RUN DATA PSEUDO --bench glyphs RUN DATA PSEUDO
    python benchmarks/affinity_goals.py table     # print the table from affinity_goals.json

For each benchmark: train the affinity network (RUN/affinity.pt, unless there) on PSEUDO, the
confident dcsm-crf pseudo-labels of the whole train split; then on the first 100 train images
(ground-truth image labels: pseudo-label quality) score cam, dcsm-crf and the random-walk
methods at every threshold of the CRF grid, choose each rw method's threshold by the mean of
both benchmarks at one shared threshold (as docs/method.md 3.1), and score the first 100 val
images (predicted labels) at the chosen thresholds. Then the extra cost of the walk per image
at 224 px and the peak memory at 224 and 512 px, each in a fresh process.

Maps are computed once per image; the walk is linear, so each image's class maps are walked
once and each threshold's background channel alone. Runs in about 20 minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from wsseg.data.transforms import batch_tensor
from wsseg.data.voc import VOCDataset
from wsseg.evaluate import ConfusionMatrix
from wsseg.fusion.background import labels_from_maps, soft_background, soft_probabilities
from wsseg.fusion.crf import dense_crf
from wsseg.fusion.random_walk import PSA_LOGT, transition_matrix, walk_scores
from wsseg.maps import CAM, DCSM
from wsseg.models.affinity import load_affinity, neighbours_per_pixel
from wsseg.models.run import load_run
from wsseg.pipelines import CRF_GRID, DEFAULT_CRF, RW_BETA, walked_probabilities
from wsseg.registry import method_info
from wsseg.runner import batch_classes, iter_batches
from wsseg.train_affinity import AffinityOptions, train_affinity

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "affinity_goals.json"
IMAGES = 100
RW_METHODS = ("cam-rw", "dcsm-rw", "cam-rw-crf", "dcsm-rw-crf")


def _labels(scores: np.ndarray, labels: list[int]) -> np.ndarray:
    return np.array([0, *labels], np.uint8)[np.argmax(scores, axis=0)]


def score_split(run: Path, data: Path, split: str, labels: str, thresholds: dict[str, tuple[float, ...]],
                limit: int = IMAGES) -> dict[str, dict[float, float]]:
    """mIoU (%) of every method at each of its thresholds on the first ``limit`` images of the split."""
    model, _ = load_run(run)
    affinity = load_affinity(run)
    dataset = VOCDataset(data, split)
    ids = dataset.ids[:limit]
    methods = {"cam": CAM(), "dcsm": DCSM()}
    matrices = {name: {t: ConfusionMatrix(dataset.num_classes + 1) for t in grid} for name, grid in thresholds.items()}
    for batch in iter_batches(dataset, ids, 8, skip_bad=False, need_labels=labels == "gt"):
        images = batch_tensor([item.image for item in batch])
        classes = batch_classes(model, batch, labels)
        maps = {name: method.normalize(method(model, images, classes)).cpu().numpy() for name, method in methods.items()}
        embeddings = affinity.embed(model, images)
        for n, item in enumerate(batch):
            present = [c + 1 for c in classes[n]]
            truth = dataset.load_mask(item.id)
            transition = transition_matrix(embeddings[n], affinity.config.radius, RW_BETA)
            grid = tuple(embeddings.shape[-2:])
            for source in ("cam", "dcsm"):
                class_maps = np.clip(maps[source][n][: len(present)], 0, 1)
                walked = walk_scores(class_maps, transition, grid, PSA_LOGT)
                for name, grid_t in thresholds.items():
                    if not name.startswith(source):
                        continue
                    for t in grid_t:
                        if name == source:
                            pred = labels_from_maps(class_maps, present, t)
                        elif name == f"{source}-crf":
                            pred = _labels(dense_crf(item.image, soft_probabilities(class_maps, t), DEFAULT_CRF),
                                           present)
                        else:
                            background = walk_scores(soft_background(class_maps, t)[None], transition, grid, PSA_LOGT)
                            scores = np.concatenate([background, walked])
                            if name.endswith("-crf"):
                                scores = dense_crf(item.image, walked_probabilities(scores), DEFAULT_CRF)
                            pred = _labels(scores, present)
                        matrices[name][t].update(pred, truth)
    return {name: {t: 100 * m.miou() for t, m in by_t.items()} for name, by_t in matrices.items()}


def _extra_cost_probe(run: str, size: int, repeats: int) -> dict:
    """In this (fresh) process: seconds per image of CAM alone and of the walk's extra steps, and
    the peak RSS before and after the walk, at size x size."""
    torch.set_num_threads(1)
    model, config = load_run(run)
    affinity = load_affinity(run)
    image = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    images = batch_tensor([image])
    cam = CAM()
    classes = [[0, 1]]
    maps = cam.normalize(cam(model, images, classes)).cpu().numpy()[0]  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        maps = cam.normalize(cam(model, images, classes)).cpu().numpy()[0]
    cam_seconds = (time.perf_counter() - started) / repeats
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    for _ in range(repeats):
        embedding = affinity.embed(model, images)[0]
        transition = transition_matrix(embedding, affinity.config.radius, RW_BETA)
        channels = np.concatenate([soft_background(maps, 0.55)[None], maps])
        walk_scores(channels, transition, tuple(embedding.shape[-2:]), PSA_LOGT)
    walk_seconds = (time.perf_counter() - started) / repeats
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    grid_pixels = embedding.shape[-1] * embedding.shape[-2]
    return {"size": size, "cam_seconds": cam_seconds, "extra_seconds": walk_seconds, "peak_rss_before": before,
            "peak_rss_after": after, "extra_peak_bytes": after - before, "pixels": size * size,
            "bytes_per_pixel": (after - before) / (size * size), "grid_pixels": grid_pixels,
            "nonzeros": int(transition._nnz()), "nonzero_bound": grid_pixels * neighbours_per_pixel(
                affinity.config.radius), "pi_r2_bound": grid_pixels * (np.pi * affinity.config.radius ** 2 + 1)}


def probe(run: Path, size: int, repeats: int) -> dict:
    code = ("import json, sys; sys.path.insert(0, %r); from affinity_goals import _extra_cost_probe; "
            "print(json.dumps(_extra_cost_probe(%r, %d, %d)))" % (str(HERE), str(run), size, repeats))
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run(benches: list[tuple[str, Path, Path, Path]]) -> dict:
    results: dict = {"benchmarks": {}, "images": IMAGES}
    grid = tuple(CRF_GRID)
    for name, run_dir, data, pseudo in benches:
        started = time.perf_counter()
        if not (run_dir / "affinity.pt").exists():
            train_affinity(AffinityOptions(run=str(run_dir), data=str(data), pseudo=str(pseudo), progress=False))
        history = json.loads((run_dir / "affinity-history.json").read_text())
        trained = time.perf_counter() - started
        thresholds = {"cam": (method_info("cam").threshold,), "dcsm-crf": (method_info("dcsm-crf").threshold,),
                      **{m: grid for m in RW_METHODS}}
        train_scores = score_split(run_dir, data, "train", "gt", thresholds)
        results["benchmarks"][name] = {"train": train_scores, "train_seconds": time.perf_counter() - started - trained,
                                       "affinity_training_seconds": sum(r["seconds"] for r in history),
                                       "affinity_epochs": len(history), "run": str(run_dir), "data": str(data)}
        print(f"[affinity-goals] {name}: train scored", flush=True)
    chosen = {}
    for method in RW_METHODS:
        means = {t: np.mean([results["benchmarks"][b]["train"][method][t] for b in results["benchmarks"]])
                 for t in grid}
        chosen[method] = max(means, key=means.get)
    results["chosen_thresholds"] = chosen
    for name, run_dir, data, _ in benches:
        thresholds = {"cam": (method_info("cam").threshold,), "dcsm-crf": (method_info("dcsm-crf").threshold,),
                      **{m: (chosen[m],) for m in RW_METHODS}}
        results["benchmarks"][name]["val"] = score_split(run_dir, data, "val", "predicted", thresholds)
        print(f"[affinity-goals] {name}: val scored", flush=True)
    glyph_run = next(run_dir for name, run_dir, _, _ in benches if name == "glyphs")
    results["cost"] = [probe(glyph_run, 224, 5), probe(glyph_run, 512, 2)]
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


def table(results: dict) -> str:
    chosen = results["chosen_thresholds"]
    defaults = {"cam": method_info("cam").threshold, "dcsm-crf": method_info("dcsm-crf").threshold}
    lines = ["| benchmark | split | cam | dcsm-crf | " + " | ".join(f"{m} ({chosen[m]})" for m in RW_METHODS) + " |",
             "|---|---|" + "---:|" * (2 + len(RW_METHODS))]
    for name, bench in results["benchmarks"].items():
        for split in ("train", "val"):
            scores = bench[split]

            def at(method: str) -> float:
                wanted = defaults.get(method, chosen.get(method))
                return next(v for t, v in scores[method].items() if abs(float(t) - wanted) < 1e-9)

            row = [at("cam"), at("dcsm-crf"), *(at(m) for m in RW_METHODS)]
            lines.append(f"| {name} | {split} | " + " | ".join(f"{v:.1f}" for v in row) + " |")
    lines += ["", "| image | CAM s/img | extra s/img (embedding + T + walk) | extra peak RSS | bytes per pixel | "
              "grid pixels | non-zeros of T | P (pi r^2 + 1) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for cost in results["cost"]:
        lines.append(f"| {cost['size']} px | {cost['cam_seconds']:.3f} | {cost['extra_seconds']:.3f} | "
                     f"{cost['extra_peak_bytes'] / 2 ** 20:.1f} MiB | {cost['bytes_per_pixel']:.0f} | "
                     f"{cost['grid_pixels']} | {cost['nonzeros']} | {cost['pi_r2_bound']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "table"])
    parser.add_argument("--bench", nargs=4, action="append", metavar=("NAME", "RUN", "DATA", "PSEUDO"), default=[])
    args = parser.parse_args()
    if args.command == "run":
        results = run([(name, Path(r), Path(d), Path(p)) for name, r, d, p in args.bench])
    else:
        results = json.loads(RESULTS.read_text())
    print(table(results))


if __name__ == "__main__":
    main()
