"""The search behind the segmentation defaults, and the results tables of both benchmarks.

``search`` scores candidate settings on the first ``--images`` images of each benchmark's
**train** split (ground-truth image labels; never val): DCSM's normalisation, the dense CRF's
parameters, pipeline A's and B's combination weights, and every method's background threshold.
It is a coordinate search in that order (each stage keeps the earlier stages' choices), and a
setting is chosen by its mIoU averaged over the two benchmarks, so one default serves both.

``quality`` scores every method at its defaults on the whole train split with ground-truth
labels (pseudo-label quality) and on val with predicted labels, beside the all-background
baseline, and checks the goals of docs/method.md (dcsm-crf >= cam + 15, pipelines A and B >=
dcsm, on val with predicted labels).

Both read the benchmarks and classifier runs that benchmarks/train_recipe.py made under
``--work`` (``data-<kind>`` and ``runs/<kind>-full-<recipe>``); pipeline A needs the run's
mi-SVM (``wsseg train-misvm --run RUN --data ROOT``). Maps are computed once per image and
reused by every setting.

    python benchmarks/segment_defaults.py search --work /tmp/recipe --images 150
    python benchmarks/segment_defaults.py quality --work /tmp/recipe
    python benchmarks/segment_defaults.py table           # both tables, from the JSON files
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from wsseg.data.transforms import batch_tensor
from wsseg.data.voc import VOCDataset
from wsseg.evaluate import ConfusionMatrix
from wsseg.fusion.crf import IRN, PSA
from wsseg.fusion.misvm import MISVM_FILE, MiSVM
from wsseg.fusion.zoomout import layer_features, zoomout_layers
from wsseg.io import atomic_write, write_json_atomic
from wsseg.maps import CAM, DCSM, GradCAM, Gradient, Guided, MapMethod
from wsseg.runner import batch_classes, iter_batches
from wsseg.models.run import load_run
from wsseg.pipelines import (CRF_GRID, THRESHOLD_GRID, Confident, DenseCRF, PipelineA, PipelineB, SegmentInput, Segmenter,
                             Thresholded, build_segmenter)
from wsseg.registry import SEGMENT_METHODS

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("shapes", "glyphs")
RAW_METHODS: dict[str, MapMethod] = {"dcsm": DCSM(), "cam": CAM(), "gradcam": GradCAM(), "gradient": Gradient(),
                                     "guided": Guided()}
CRF_CANDIDATES = {"psa": PSA, "irn": IRN, "psa-weak": dataclasses.replace(PSA, bilateral_compat=4.0),
                  "psa-narrow": dataclasses.replace(PSA, bilateral_sxy=40.0)}
NORMALIZATIONS = ("linear-minmax", "linear-max", "saturated")
OBJECTNESS_WEIGHTS = (0.0, 0.5, 1.0)
CAM_WEIGHTS = (0.25, 0.5, 0.75)
MISVM_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class Record:
    """One image with what every candidate setting needs: raw maps (per map-method name) and the
    superpixel work of pipelines A and B (per pipeline name), computed once."""

    image: np.ndarray
    labels: list[int]  # mask values 1..C segmented (ground truth or predicted)
    truth: np.ndarray
    raw: dict[str, torch.Tensor]
    prepared: dict[str, object]
    normalized: dict[MapMethod, np.ndarray] = field(default_factory=dict)

    def maps(self, method: MapMethod) -> np.ndarray:
        if method not in self.normalized:
            self.normalized[method] = method.normalize(self.raw[method.name][None])[0].numpy()
        return self.normalized[method]

    def segment(self, segmenter: Segmenter, timings: dict[str, float]) -> np.ndarray:
        inputs = SegmentInput(self.image, self.labels, {method: self.maps(method) for method in segmenter.maps})
        prepared = self.prepared.get(_pipeline_name(getattr(segmenter, "base", segmenter)))  # Confident wraps one
        return segmenter(inputs, timings, prepared)


def _pipeline_name(segmenter: Segmenter) -> str | None:
    return {PipelineA: "pipeline-a", PipelineB: "pipeline-b"}.get(type(segmenter))


def collect(model: torch.nn.Module, dataset: VOCDataset, ids: Sequence[str], labels: str,
            pipelines: dict[str, Segmenter], batch_size: int = 8) -> list[Record]:
    """Raw maps of every method in RAW_METHODS, and pipelines' prepared superpixels, per image."""
    records: list[Record] = []
    bar = tqdm(total=len(ids), desc=f"maps ({labels} labels)", unit="img")
    for batch in iter_batches(dataset, list(ids), batch_size, False, True):
        images = batch_tensor([item.image for item in batch], "cpu")
        classes = batch_classes(model, batch, labels, 0.5, images)
        raw = {name: method(model, images, classes).detach() for name, method in RAW_METHODS.items()}
        features = layer_features(model, images, zoomout_layers(model)) if "pipeline-a" in pipelines else None
        for n, item in enumerate(batch):
            count = len(classes[n])
            record = Record(item.image, [c + 1 for c in classes[n]], dataset.load_mask(item.id),
                            {name: maps[n, :count].clone() for name, maps in raw.items()}, {})
            inputs = SegmentInput(item.image, record.labels, {}, None if features is None else features[n])
            record.prepared = {name: segmenter.prepare(inputs, {}) for name, segmenter in pipelines.items()}
            records.append(record)
            bar.update(1)
    bar.close()
    return records


def score(records: Sequence[Record], segmenters: Sequence[Segmenter], num_labels: int) -> list[float]:
    """mIoU (percent) of each segmenter over the records."""
    matrices = [ConfusionMatrix(num_labels) for _ in segmenters]
    timings: dict[str, float] = {}
    for record in records:
        for matrix, segmenter in zip(matrices, segmenters):
            matrix.update(record.segment(segmenter, timings), record.truth)
    return [100.0 * matrix.miou() for matrix in matrices]


def with_thresholds(segmenter: Segmenter, grid: Sequence[float]) -> list[Segmenter]:
    return [dataclasses.replace(segmenter, threshold=t) for t in grid]


@dataclass
class Benchmark:
    kind: str
    run: Path
    dataset: VOCDataset
    model: torch.nn.Module
    misvm: MiSVM
    records: list[Record] = field(default_factory=list)


def open_benchmark(work: Path, kind: str, recipe: str, split: str) -> Benchmark:
    run = work / "runs" / f"{kind}-full-{recipe}"
    model, _ = load_run(run)
    model.eval()
    return Benchmark(kind, run, VOCDataset(work / f"data-{kind}", split), model, MiSVM.load(run / MISVM_FILE))


def pipelines_of(benchmark: Benchmark) -> dict[str, Segmenter]:
    """Pipelines whose prepare() the records keep (the threshold is irrelevant to prepare)."""
    return {"pipeline-a": PipelineA(benchmark.misvm, threshold=0.5), "pipeline-b": PipelineB(threshold=0.5)}


Family = Callable[[Benchmark], list[Segmenter]]


def curves(benchmarks: Sequence[Benchmark], family: Family, label: str) -> dict[str, list[float]]:
    """mIoU per benchmark of every segmenter ``family`` builds, plus their mean over benchmarks."""
    started = time.perf_counter()
    result = {b.kind: score(b.records, family(b), b.dataset.num_classes + 1) for b in benchmarks}
    result["mean"] = [float(np.mean(values)) for values in zip(*(result[b.kind] for b in benchmarks))]
    print(f"  {label}: best mean {max(result['mean']):.2f} ({time.perf_counter() - started:.0f} s)", flush=True)
    return result


def best_threshold(curve: dict[str, list[float]], grid: Sequence[float]) -> dict:
    best = int(np.argmax(curve["mean"]))
    return {"threshold": grid[best], "mean": curve["mean"][best],
            **{kind: {"at_chosen": values[best], "own_best": max(values),
                      "own_best_threshold": grid[int(np.argmax(values))]}
               for kind, values in curve.items() if kind != "mean"}}


def search(benchmarks: list[Benchmark]) -> dict:
    """The coordinate search; returns every curve and the chosen settings."""
    out: dict = {"stages": {}, "chosen": {}}
    stages, chosen = out["stages"], out["chosen"]

    def stage(name: str, family: Family, grid: Sequence[float]) -> dict:
        curve = curves(benchmarks, family, name)
        stages[name] = {"grid": list(grid), "miou": curve, "best": best_threshold(curve, grid)}
        return stages[name]["best"]

    # 1. thresholds of the methods nothing else is tuned for
    for name, method in (("cam", CAM()), ("gradcam", GradCAM()), ("gradient", Gradient()), ("guided", Guided())):
        stage(name, lambda b, m=method: with_thresholds(Thresholded(m, threshold=0.5), THRESHOLD_GRID), THRESHOLD_GRID)
    # 2. DCSM's normalisation, judged by dcsm and dcsm-crf (the CRF at psa's parameters)
    totals = {}
    for norm in NORMALIZATIONS:
        dcsm = DCSM(normalization=norm)
        plain = stage(f"dcsm/{norm}", lambda b, m=dcsm: with_thresholds(Thresholded(m, threshold=0.5),
                                                                        THRESHOLD_GRID), THRESHOLD_GRID)
        crf = stage(f"dcsm-crf/{norm}/psa", lambda b, m=dcsm: with_thresholds(DenseCRF(m, threshold=0.5),
                                                                              CRF_GRID), CRF_GRID)
        totals[norm] = plain["mean"] + crf["mean"]
    chosen["dcsm_normalization"] = norm = max(totals, key=totals.get)
    dcsm = DCSM(normalization=norm)
    # 3. the dense CRF's parameters, judged by cam-crf and dcsm-crf
    totals = {}
    for crf_name, params in CRF_CANDIDATES.items():
        cam = stage(f"cam-crf/{crf_name}", lambda b, p=params: with_thresholds(DenseCRF(CAM(), threshold=0.5, crf=p),
                                                                               CRF_GRID), CRF_GRID)
        key = f"dcsm-crf/{norm}/{crf_name}"
        if key not in stages:
            stage(key, lambda b, p=params: with_thresholds(DenseCRF(dcsm, threshold=0.5, crf=p), CRF_GRID), CRF_GRID)
        totals[crf_name] = cam["mean"] + stages[key]["best"]["mean"]
    chosen["crf"] = crf_name = max(totals, key=totals.get)
    chosen["crf_params"] = dataclasses.asdict(CRF_CANDIDATES[crf_name])
    # 4. pipeline B's weights, 5. pipeline A's
    totals = {}
    for objectness in OBJECTNESS_WEIGHTS:
        for cam_weight in CAM_WEIGHTS:
            key = f"pipeline-b/objectness={objectness}/cam={cam_weight}"
            totals[(objectness, cam_weight)] = stage(key, lambda b, o=objectness, c=cam_weight: with_thresholds(
                PipelineB(CAM(), dcsm, o, c, threshold=0.5), CRF_GRID), CRF_GRID)["mean"]
    chosen["pipeline_b"] = dict(zip(("objectness_weight", "cam_weight"), max(totals, key=totals.get)))
    totals = {}
    for weight in MISVM_WEIGHTS:
        totals[weight] = stage(f"pipeline-a/misvm={weight}", lambda b, w=weight: with_thresholds(
            PipelineA(b.misvm, dcsm, w, threshold=0.5), CRF_GRID), CRF_GRID)["mean"]
    chosen["pipeline_a"] = {"misvm_weight": max(totals, key=totals.get)}
    # the thresholds at the chosen settings
    b_weights, a_weight = chosen["pipeline_b"], chosen["pipeline_a"]["misvm_weight"]
    final = {"cam": "cam", "cam-crf": f"cam-crf/{crf_name}", "gradcam": "gradcam", "gradient": "gradient",
             "guided": "guided", "dcsm": f"dcsm/{norm}", "dcsm-crf": f"dcsm-crf/{norm}/{crf_name}",
             "pipeline-a": f"pipeline-a/misvm={a_weight}",
             "pipeline-b": f"pipeline-b/objectness={b_weights['objectness_weight']}/cam={b_weights['cam_weight']}"}
    chosen["thresholds"] = {method: stages[key]["best"] for method, key in final.items()}
    return out


def cached_records(path: Path, benchmark: Benchmark, labels: str) -> list[Record]:
    """The split's records, kept in ``path`` (a pickle of our own making) so that scoring other
    defaults later does not compute the maps again."""
    if path.exists():
        with open(path, "rb") as handle:
            return pickle.load(handle)
    records = collect(benchmark.model, benchmark.dataset, benchmark.dataset.ids, labels, pipelines_of(benchmark))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        pickle.dump(records, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return records


def quality(benchmarks: list[Benchmark], labels: str) -> dict:
    """mIoU of every registry method at its defaults (and of all-background) per benchmark."""
    result = {}
    for b in benchmarks:
        segmenters = {name: build_segmenter(name, b.run) for name in SEGMENT_METHODS}
        values = score(b.records, list(segmenters.values()), b.dataset.num_classes + 1)
        matrix = ConfusionMatrix(b.dataset.num_classes + 1)
        for record in b.records:
            matrix.update(np.zeros_like(record.truth), record.truth)
        result[b.kind] = {"all-background": 100.0 * matrix.miou(), **dict(zip(segmenters, values)),
                          "images": len(b.records), "labels": labels}
    return result


def confident(benchmarks: list[Benchmark]) -> dict:
    """Per method: mIoU of its confident pseudo-labels (``--ignore-uncertain``) on the pixels they
    keep, the fraction they leave out, and the plain method's mIoU, on train with true labels."""
    result = {}
    for b in benchmarks:
        rows = {}
        for name in SEGMENT_METHODS:
            plain = build_segmenter(name, b.run)
            kept, whole = ConfusionMatrix(b.dataset.num_classes + 1), ConfusionMatrix(b.dataset.num_classes + 1)
            timings: dict[str, float] = {}
            for record in tqdm(b.records, desc=f"{b.kind} {name} (confident)", unit="img"):
                labels = record.segment(Confident.of(plain), timings)
                kept.update(labels, record.truth, ignore_uncertain=True)
                whole.update(record.segment(plain, timings), record.truth)
            rows[name] = {"confident_miou": 100.0 * kept.miou(), "ignored_fraction": kept.ignored_fraction(),
                          "plain_miou": 100.0 * whole.miou()}
        result[b.kind] = rows
    return result


def goals(val: dict) -> list[str]:
    lines = []
    for kind, row in val.items():
        lines.append(f"{kind}: dcsm-crf {row['dcsm-crf']:.1f} vs cam {row['cam']:.1f} + 15 -> "
                     f"{'met' if row['dcsm-crf'] >= row['cam'] + 15 else 'MISSED by %.1f' % (row['cam'] + 15 - row['dcsm-crf'])}")
        for pipeline in ("pipeline-a", "pipeline-b"):
            gap = row["dcsm"] - row[pipeline]
            lines.append(f"{kind}: {pipeline} {row[pipeline]:.1f} vs dcsm {row['dcsm']:.1f} -> "
                         f"{'met' if gap <= 0 else 'MISSED by %.1f' % gap}")
    return lines


def print_tables(search_path: Path, quality_path: Path, confident_path: Path | None = None) -> None:
    if search_path.exists():
        found = json.loads(search_path.read_text())
        print(f"Search on the first {found['images']} train images of each benchmark (mIoU %, ground-truth labels):\n")
        print("| stage / setting | shapes best (threshold) | glyphs best (threshold) | mean at one shared threshold |")
        print("|---|---:|---:|---:|")
        for name, entry in found["stages"].items():
            best = entry["best"]
            cells = [f"{best[kind]['own_best']:.1f} ({best[kind]['own_best_threshold']})" for kind in BENCHMARKS
                     if kind in best]
            print(f"| {name} | " + " | ".join(cells) + f" | {best['mean']:.1f} at {best['threshold']} |")
        print("\nChosen:", json.dumps({k: v for k, v in found["chosen"].items() if k != "thresholds"}))
        print("Thresholds:", {m: v["threshold"] for m, v in found["chosen"]["thresholds"].items()})
    if quality_path.exists():
        table = json.loads(quality_path.read_text())
        kinds = [k for k in BENCHMARKS if k in table.get("train", {})]
        print("\n| method | " + " | ".join(f"{k} train (gt labels) | {k} val (predicted)" for k in kinds) + " |")
        print("|---|" + "---:|---:|" * len(kinds))
        for method in ("all-background", *SEGMENT_METHODS):
            cells = [f"{table['train'][k][method]:.1f} | {table['val'][k][method]:.1f}" for k in kinds]
            print(f"| {method} | " + " | ".join(cells) + " |")
        print("\nGoals (val, predicted labels):")
        for line in goals({k: table["val"][k] for k in kinds}):
            print(" ", line)
    if confident_path is not None and confident_path.exists():
        table = json.loads(confident_path.read_text())
        kinds = [k for k in BENCHMARKS if k in table]
        print("\nConfident pseudo-labels (--ignore-uncertain), train, ground-truth labels: mIoU % on the pixels "
              "kept / % of labelled pixels left out (255) / the plain method's mIoU %:\n")
        print("| method | " + " | ".join(f"{k}: confident mIoU | {k}: left out | {k}: plain mIoU" for k in kinds) + " |")
        print("|---|" + "---:|---:|---:|" * len(kinds))
        for method in SEGMENT_METHODS:
            cells = [f"{table[k][method]['confident_miou']:.1f} | {100 * table[k][method]['ignored_fraction']:.1f} | "
                     f"{table[k][method]['plain_miou']:.1f}" for k in kinds]
            print(f"| {method} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("search", "quality", "confident", "table"))
    parser.add_argument("--work", type=Path, default=Path("build/recipe"),
                        help="the datasets and runs of benchmarks/train_recipe.py")
    parser.add_argument("--recipe", default="long", help="which recipe's full-train-split runs to use")
    parser.add_argument("--benchmarks", default=",".join(BENCHMARKS))
    parser.add_argument("--images", type=int, default=150, help="search: the first N train images of each")
    parser.add_argument("--search-results", type=Path, default=HERE / "segment_defaults.json")
    parser.add_argument("--collect-only", action="store_true",
                        help="quality: compute and cache the maps (WORK/cache), score nothing yet")
    parser.add_argument("--confident-results", type=Path, default=HERE / "confident_labels.json")
    parser.add_argument("--quality-results", type=Path, default=HERE / "segment_quality.json")
    args = parser.parse_args()
    if args.command == "table":
        print_tables(args.search_results, args.quality_results, args.confident_results)
        return
    torch.manual_seed(0)
    kinds = args.benchmarks.split(",")
    if args.command == "confident":
        table = {}
        for kind in kinds:
            b = open_benchmark(args.work, kind, args.recipe, "train")
            b.records = cached_records(args.work / "cache" / f"{kind}-train-gt.pkl", b, "gt")
            table.update(confident([b]))
            b.records.clear()
        write_json_atomic(args.confident_results, table)
    elif args.command == "search":
        benchmarks = [open_benchmark(args.work, kind, args.recipe, "train") for kind in kinds]
        for b in benchmarks:
            b.records = collect(b.model, b.dataset, b.dataset.ids[:args.images], "gt", pipelines_of(b))
        found = search(benchmarks)
        write_json_atomic(args.search_results, {"images": args.images, "recipe": args.recipe, **found})
    else:
        table = {}
        for split, labels in (("train", "gt"), ("val", "predicted")):
            table[split] = {}
            for kind in kinds:
                b = open_benchmark(args.work, kind, args.recipe, split)
                b.records = cached_records(args.work / "cache" / f"{kind}-{split}-{labels}.pkl", b, labels)
                if not args.collect_only:
                    table[split].update(quality([b], labels))
                b.records.clear()
        if not args.collect_only:
            write_json_atomic(args.quality_results, table)
    print_tables(args.search_results, args.quality_results, args.confident_results)


if __name__ == "__main__":
    main()
