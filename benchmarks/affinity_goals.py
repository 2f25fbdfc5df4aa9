"""Issue 14's goals for the random-walk methods, on both synthetic benchmarks.

    python benchmarks/affinity_goals.py run --bench shapes RUN DATA PSEUDO --bench glyphs RUN DATA PSEUDO
    python benchmarks/affinity_goals.py table     # print the table from affinity_goals.json

For each benchmark: train the affinity network (RUN/affinity.pt, unless there) on PSEUDO, the
confident dcsm-crf pseudo-labels of the whole train split; then on the first 100 train images
(ground-truth image labels: pseudo-label quality) score cam and dcsm-crf at their defaults and
cam-rw, dcsm-rw at every threshold of the CRF grid for each beta of BETAS; choose beta by the
mean of both methods and benchmarks (each method at its best shared threshold), then each rw
method's threshold (and the rw-crf variants') by the mean of both benchmarks at one shared
threshold (as docs/method.md 3.1); score the first 100 val images (predicted labels) at the
chosen settings. Then the extra cost of the walk per image
at 224 px and the peak memory at 224 and 512 px, each in a fresh process.

Maps are computed once per image; the walk is linear, so each image's class maps are walked
once and each threshold's background channel alone. Runs in about 20 minutes on one core.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys
import time
from dataclasses import dataclass
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
from wsseg.outputs import LOCK_FILE
from wsseg.pipelines import CRF_GRID, DEFAULT_CRF, walked_probabilities
from wsseg.registry import method_info
from wsseg.runner import batch_classes, iter_batches
from wsseg.train_affinity import AffinityOptions, train_affinity

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "affinity_goals.json"
IMAGES = 100
RW_METHODS = ("cam-rw", "dcsm-rw", "cam-rw-crf", "dcsm-rw-crf")
BETAS = (8.0, 16.0, 32.0)  # psa's 8 (IRN: 10), and sharper


def _labels(scores: np.ndarray, labels: list[int]) -> np.ndarray:
    return np.array([0, *labels], np.uint8)[np.argmax(scores, axis=0)]


@dataclass
class Item:
    """One image with what every setting reads: its classes, maps and affinity embedding."""

    image: np.ndarray
    truth: np.ndarray
    present: list[int]
    maps: dict[str, np.ndarray]  # "cam", "dcsm": [K, H, W] in [0, 1]
    embedding: torch.Tensor


def compute_items(run: Path, data: Path, split: str, labels: str, limit: int) -> tuple[list[Item], int]:
    """The first ``limit`` images of the split with their maps (computed once for every setting)."""
    model, _ = load_run(run)
    affinity = load_affinity(run)
    dataset = VOCDataset(data, split)
    methods = {"cam": CAM(), "dcsm": DCSM()}
    items = []
    for batch in iter_batches(dataset, dataset.ids[:limit], 8, skip_bad=False, need_labels=labels == "gt"):
        images = batch_tensor([item.image for item in batch])
        classes = batch_classes(model, batch, labels)
        maps = {name: method.normalize(method(model, images, classes)).cpu().numpy() for name, method in methods.items()}
        embeddings = affinity.embed(model, images)
        for n, item in enumerate(batch):
            present = [c + 1 for c in classes[n]]
            items.append(Item(item.image, dataset.load_mask(item.id), present,
                              {name: np.clip(values[n][: len(present)], 0, 1) for name, values in maps.items()},
                              embeddings[n]))
    return items, dataset.num_classes + 1


def score_items(items: list[Item], num_labels: int, radius: int, beta: float,
                thresholds: dict[str, tuple[float, ...]]) -> dict[str, dict[float, float]]:
    """mIoU (%) of each method at each of its thresholds (the walk with ``beta``)."""
    matrices = {name: {t: ConfusionMatrix(num_labels) for t in grid} for name, grid in thresholds.items()}
    for item in items:
        transition = transition_matrix(item.embedding, radius, beta)
        grid = tuple(item.embedding.shape[-2:])
        for source in ("cam", "dcsm"):
            class_maps = item.maps[source]
            wanted = {name: grid_t for name, grid_t in thresholds.items() if name.split("-")[0] == source}
            walked = walk_scores(class_maps, transition, grid, PSA_LOGT) if any("-rw" in n for n in wanted) else None
            for name, grid_t in wanted.items():
                for t in grid_t:
                    if name == source:
                        pred = labels_from_maps(class_maps, item.present, t)
                    elif name == f"{source}-crf":
                        pred = _labels(dense_crf(item.image, soft_probabilities(class_maps, t), DEFAULT_CRF),
                                       item.present)
                    else:
                        background = walk_scores(soft_background(class_maps, t)[None], transition, grid, PSA_LOGT)
                        scores = np.concatenate([background, walked])
                        if name.endswith("-crf"):
                            scores = dense_crf(item.image, walked_probabilities(scores), DEFAULT_CRF)
                        pred = _labels(scores, item.present)
                    matrices[name][t].update(pred, item.truth)
    return {name: {t: 100 * m.miou() for t, m in by_t.items()} for name, by_t in matrices.items()}


def _status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status (kB there), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _extra_cost_probe(run: str, size: int, repeats: int, beta: float) -> dict:
    """In this (fresh) process: seconds per image of CAM alone and of the walk's extra steps, and
    the peak RSS before and after the walk, at size x size."""
    torch.set_num_threads(1)
    model, config = load_run(run)
    affinity = load_affinity(run)
    image = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    images = batch_tensor([image])
    cam = CAM()
    classes = [[0, 1]]
    maps = cam.normalize(cam(model, images, classes)).cpu().numpy()[0]
    embedding = affinity.embed(model, images)[0]
    # the walk's own peak: freed heap handed back (malloc_trim), the peak RSS reset (Linux:
    # 5 > /proc/self/clear_refs), then the transition matrix and the walk alone
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_bytes("VmRSS")
    transition = transition_matrix(embedding, affinity.config.radius, beta)
    channels = np.concatenate([soft_background(maps, 0.55)[None], maps])
    walk_scores(channels, transition, tuple(embedding.shape[-2:]), PSA_LOGT)
    after = _status_bytes("VmHWM")
    started = time.perf_counter()
    for _ in range(repeats):
        maps = cam.normalize(cam(model, images, classes)).cpu().numpy()[0]
    cam_seconds = (time.perf_counter() - started) / repeats
    started = time.perf_counter()
    for _ in range(repeats):
        embedding = affinity.embed(model, images)[0]
        transition = transition_matrix(embedding, affinity.config.radius, beta)
        channels = np.concatenate([soft_background(maps, 0.55)[None], maps])
        walk_scores(channels, transition, tuple(embedding.shape[-2:]), PSA_LOGT)
    walk_seconds = (time.perf_counter() - started) / repeats
    process_peak = _status_bytes("VmHWM")
    grid_pixels = embedding.shape[-1] * embedding.shape[-2]
    return {"size": size, "cam_seconds": cam_seconds, "extra_seconds": walk_seconds, "rss_before_walk": before,
            "walk_peak_rss": after, "process_peak_rss": process_peak, "extra_peak_bytes": after - before, "pixels": size * size,
            "bytes_per_pixel": (after - before) / (size * size), "grid_pixels": grid_pixels,
            "nonzeros": int(transition._nnz()), "nonzero_bound": grid_pixels * neighbours_per_pixel(
                affinity.config.radius), "pi_r2_bound": grid_pixels * (np.pi * affinity.config.radius ** 2 + 1)}


def probe(run: Path, size: int, repeats: int, beta: float) -> dict:
    """:func:`_extra_cost_probe` in a fresh process (its peak RSS is this measurement's alone)."""
    code = ("import json, sys; sys.path.insert(0, %r); from affinity_goals import _extra_cost_probe; "
            "print(json.dumps(_extra_cost_probe(%r, %d, %d, %r)))" % (str(HERE), str(run), size, repeats, beta))
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _shared_best(per_benchmark: list[dict[float, float]]) -> tuple[float, float]:
    """The threshold with the best mean over the benchmarks, and that mean."""
    means = {t: float(np.mean([scores[t] for scores in per_benchmark])) for t in per_benchmark[0]}
    best = max(means, key=means.get)
    return best, means[best]


def run(benches: list[tuple[str, Path, Path, Path]], images: int = IMAGES, out: Path = RESULTS,
        epochs: int = AffinityOptions.epochs) -> dict:
    results: dict = {"benchmarks": {}, "images": images, "betas": BETAS, "logt": PSA_LOGT}
    grid = tuple(CRF_GRID)
    baselines = {"cam": (method_info("cam").threshold,), "dcsm-crf": (method_info("dcsm-crf").threshold,)}
    train_items = {}
    for name, run_dir, data, pseudo in benches:
        while (run_dir / LOCK_FILE).exists():  # a training of this run's affinity network still going
            time.sleep(10)
        # trains it, or finishes an interrupted training, or (finished) does nothing
        train_affinity(AffinityOptions(run=str(run_dir), data=str(data), pseudo=str(pseudo), epochs=epochs,
                                       resume=True, progress=False))
        history = json.loads((run_dir / "affinity-history.json").read_text())
        radius = load_affinity(run_dir).config.radius
        started = time.perf_counter()
        train_items[name] = compute_items(run_dir, data, "train", "gt", images)
        search = {str(beta): score_items(*train_items[name], radius, beta,
                                         {**(baselines if beta == BETAS[0] else {}), "cam-rw": grid, "dcsm-rw": grid})
                  for beta in BETAS}
        results["benchmarks"][name] = {"search": search, "affinity_training_seconds": sum(r["seconds"] for r in history),
                                       "affinity_epochs": len(history), "affinity_final_loss": history[-1]["loss"],
                                       "radius": radius, "run": str(run_dir), "data": str(data),
                                       "train_search_seconds": time.perf_counter() - started}
        print(f"[affinity-goals] {name}: beta and thresholds searched on train", flush=True)
    names = list(results["benchmarks"])
    # beta: the best mean of cam-rw and dcsm-rw over both benchmarks, each at its best shared threshold
    quality = {beta: np.mean([_shared_best([results["benchmarks"][b]["search"][str(beta)][m] for b in names])[1]
                              for m in ("cam-rw", "dcsm-rw")]) for beta in BETAS}
    beta = max(quality, key=quality.get)
    chosen = {m: _shared_best([results["benchmarks"][b]["search"][str(beta)][m] for b in names])[0]
              for m in ("cam-rw", "dcsm-rw")}
    for name in names:
        bench = results["benchmarks"][name]
        started = time.perf_counter()
        crf = score_items(*train_items[name], bench["radius"], beta, {"cam-rw-crf": grid, "dcsm-rw-crf": grid})
        bench["search"][str(beta)].update(crf)
        bench["train_search_seconds"] += time.perf_counter() - started
    for m in ("cam-rw-crf", "dcsm-rw-crf"):
        chosen[m] = _shared_best([results["benchmarks"][b]["search"][str(beta)][m] for b in names])[0]
    results.update(beta=beta, beta_quality={str(b): q for b, q in quality.items()}, chosen_thresholds=chosen)
    for name, run_dir, data, _ in benches:
        bench = results["benchmarks"][name]
        bench["train"] = {"cam": bench["search"][str(BETAS[0])]["cam"],
                          "dcsm-crf": bench["search"][str(BETAS[0])]["dcsm-crf"],
                          **{m: {t: bench["search"][str(beta)][m][t]} for m, t in chosen.items()}}
        started = time.perf_counter()
        items = compute_items(run_dir, data, "val", "predicted", images)
        bench["val"] = score_items(*items, bench["radius"], beta, {**baselines, **{m: (t,) for m, t in chosen.items()}})
        bench["val_seconds"] = time.perf_counter() - started
        print(f"[affinity-goals] {name}: val scored", flush=True)
    glyph_run = next(run_dir for name, run_dir, _, _ in benches if name == "glyphs")
    results["cost"] = [probe(glyph_run, 224, 5, beta), probe(glyph_run, 512, 2, beta)]
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


def search_table(results: dict) -> str:
    """The train-split search: each setting's best threshold per benchmark and the shared one."""
    names = list(results["benchmarks"])
    lines = ["| setting | " + " | ".join(f"{n}: best (threshold)" for n in names) + " | mean of both at one threshold |",
             "|---|" + "---:|" * (len(names) + 1)]
    for beta in results["betas"]:
        methods = results["benchmarks"][names[0]]["search"][str(beta)]
        for method in methods:
            if method in ("cam", "dcsm-crf"):
                continue
            curves = [{float(t): v for t, v in results["benchmarks"][n]["search"][str(beta)][method].items()}
                      for n in names]
            best = [max(curve, key=curve.get) for curve in curves]
            shared, mean = _shared_best(curves)
            chosen = float(beta) == float(results["beta"]) and results["chosen_thresholds"].get(method) == shared
            cells = [f"{curve[t]:.1f} ({t:g})" for curve, t in zip(curves, best)]
            mean_text = f"{mean:.1f} at {shared:g}"
            lines.append(f"| {method}, beta {beta:g} | " + " | ".join(cells) + " | "
                         + (f"**{mean_text}**" if chosen else mean_text) + " |")
    return "\n".join(lines)


def _verdict(margin: float, goal: float) -> str:
    return "met" if margin >= goal else f"missed by {goal - margin:.1f}"


def table(results: dict) -> str:
    chosen = results["chosen_thresholds"]
    defaults = {"cam": method_info("cam").threshold, "dcsm-crf": method_info("dcsm-crf").threshold}
    goals = ["| benchmark | split | cam-rw - cam (goal +10) | best random walk - dcsm-crf (goal +3) |",
             "|---|---|---:|---:|"]
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
            best = max(RW_METHODS, key=at)
            goals.append(f"| {name} | {split} | {at('cam-rw') - at('cam'):+.1f} ({_verdict(at('cam-rw') - at('cam'), 10)}) | "
                         f"{best} {at(best) - at('dcsm-crf'):+.1f} ({_verdict(at(best) - at('dcsm-crf'), 3)}) |")
    lines += ["", *goals]
    lines += ["", "| image | CAM s/img | extra s/img (embedding + T + walk) | peak RSS (CAM, then walk) | "
              "walk's extra peak | bytes per image pixel | grid pixels | non-zeros of T | P (pi r^2 + 1) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for cost in results["cost"]:
        lines.append(f"| {cost['size']} px | {cost['cam_seconds']:.3f} | {cost['extra_seconds']:.3f} | "
                     f"{cost['process_peak_rss'] / 2 ** 20:.0f} MiB | {cost['extra_peak_bytes'] / 2 ** 20:.1f} MiB | "
                     f"{cost['bytes_per_pixel']:.0f} | {cost['grid_pixels']} | {cost['nonzeros']} | "
                     f"{cost['pi_r2_bound']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "table"])
    parser.add_argument("--bench", nargs=4, action="append", metavar=("NAME", "RUN", "DATA", "PSEUDO"), default=[])
    parser.add_argument("--images", type=int, default=IMAGES, help=f"first N images of each split (default {IMAGES})")
    parser.add_argument("--json", type=Path, default=RESULTS, help="results file (default beside this script)")
    parser.add_argument("--epochs", type=int, default=AffinityOptions.epochs,
                        help=f"affinity training epochs (default {AffinityOptions.epochs}, wsseg's)")
    args = parser.parse_args()
    if args.command == "run":
        results = run([(name, Path(r), Path(d), Path(p)) for name, r, d, p in args.bench], args.images, args.json,
                      args.epochs)
    else:
        results = json.loads(args.json.read_text())
    print(search_table(results))
    print()
    print(table(results))


if __name__ == "__main__":
    main()
