"""The search behind the segmentation defaults, and the results tables of the benchmarks.

``search`` scores candidate settings on the first ``--images`` images of each benchmark's
**train** split (ground-truth image labels; never val): DCSM's normalisation and which classes
its distinct subtraction takes away, the dense CRF's parameters, pipeline A's and B's
combination weights, and every method's background threshold. It is a coordinate search in that
order (each stage keeps the earlier stages' choices), and a setting is chosen by its mIoU
averaged over the benchmarks (shapes, glyphs and, when ../shared/data/coco97-voc or
``--real-data`` is present, the real photographs), so one default serves all of them.

``quality`` scores every method at its defaults on the whole train split with ground-truth
labels (pseudo-label quality) and on val with predicted labels, beside the all-background
baseline, and checks the goals of docs/method.md (dcsm-crf >= cam + 15, pipelines A and B >=
dcsm, on val with predicted labels).

Both read the benchmarks and classifier runs that benchmarks/train_recipe.py made under
``--work`` (``data-<kind>`` and ``runs/<kind>-full-<recipe>``; the real photographs are read
from ``--real-data``, never copied, with the classifier run ``runs/real-full-<recipe>``);
pipeline A needs the run's mi-SVM (``wsseg train-misvm --run RUN --data ROOT``): a benchmark
whose run has none is left out of pipeline A's stages, and the table says so. Maps are computed
once per image and reused by every setting (``search`` keeps them in WORK/cache too).

    python benchmarks/segment_defaults.py search --work /tmp/recipe --images 100 --real-images 40
    python benchmarks/segment_defaults.py quality --work /tmp/recipe
    python benchmarks/segment_defaults.py table           # both tables, from the JSON files
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
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
from wsseg.errors import WssegError
from wsseg.evaluate import ConfusionMatrix
from wsseg.fusion.crf import IRN, PSA
from wsseg.fusion.misvm import MISVM_FILE, MiSVM
from wsseg.io import atomic_write, write_json_atomic
from wsseg.maps import CAM, DCSM, GradCAM, Gradient, Guided, MapMethod
from wsseg.runner import batch_classes, iter_batches
from wsseg.models.run import load_run
from wsseg.pipelines import (CRF_GRID, THRESHOLD_GRID, Confident, DenseCRF, PipelineA, PipelineB, SegmentInput, Segmenter,
                             Thresholded, build_segmenter)
from wsseg.registry import SEGMENT_METHODS

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("shapes", "glyphs", "real")
REAL_DATA = HERE.parent.parent / "shared" / "data" / "coco97-voc"
# the maps every record keeps, computed once; a candidate method reads the one it equals up to
# its normalisation (a step applied afterwards: raw_key)
RAW_METHODS: dict[str, MapMethod] = {"dcsm": DCSM(), "dcsm/present": DCSM(min_candidates=1), "cam": CAM(),
                                     "gradcam": GradCAM(), "gradient": Gradient(), "guided": Guided()}
# whose maps DCSM's distinct subtraction takes away from a class's: the authors' (the other
# classes present, padded to 4 with the best-scoring absent ones) or the present ones only
SUBTRACTIONS = {"authors": None, "present": 1}
CRF_CANDIDATES = {"psa": PSA, "irn": IRN, "psa-weak": dataclasses.replace(PSA, bilateral_compat=4.0),
                  "psa-narrow": dataclasses.replace(PSA, bilateral_sxy=40.0)}
NORMALIZATIONS = ("linear-otsu", "linear-minmax", "linear-max", "saturated")
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
            self.normalized[method] = method.normalize(self.raw[raw_key(method)][None])[0].numpy()
        return self.normalized[method]

    def segment(self, segmenter: Segmenter, timings: dict[str, float]) -> np.ndarray:
        inputs = SegmentInput(self.image, self.labels, {method: self.maps(method) for method in segmenter.maps})
        prepared = self.prepared.get(_pipeline_name(getattr(segmenter, "base", segmenter)))  # Confident wraps one
        return segmenter(inputs, timings, prepared)


def raw_key(method: MapMethod) -> str:
    """The RAW_METHODS entry whose raw maps ``method`` normalises."""
    plain = dataclasses.replace(method, normalization=DCSM().normalization) if isinstance(method, DCSM) else method
    for key, candidate in RAW_METHODS.items():
        if candidate == plain:
            return key
    raise KeyError(f"no raw maps kept for {method}")


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
        features = pipelines["pipeline-a"].image_features(model, images) if "pipeline-a" in pipelines else None
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
    """mIoU (percent) of each segmenter over the records; with JOBS > 1, the segmenters are shared
    out among forked worker processes (the records are read, not copied: fork shares them)."""
    if JOBS > 1 and len(segmenters) > 1:
        global _SCORING
        _SCORING = (records, segmenters, num_labels)
        shares = [list(range(len(segmenters)))[job::JOBS] for job in range(JOBS)]
        with multiprocessing.get_context("fork").Pool(JOBS) as pool:
            parts = pool.map(_score_share, shares)
        _SCORING = None
        values = [0.0] * len(segmenters)
        for share, part in zip(shares, parts):
            for index, value in zip(share, part):
                values[index] = value
        return values
    matrices = [ConfusionMatrix(num_labels) for _ in segmenters]
    timings: dict[str, float] = {}
    for record in records:
        for matrix, segmenter in zip(matrices, segmenters):
            matrix.update(record.segment(segmenter, timings), record.truth)
    return [100.0 * matrix.miou() for matrix in matrices]


JOBS = 1  # worker processes for score(); --jobs
_SCORING: tuple | None = None  # what forked workers read


def _score_share(indices: list[int]) -> list[float]:
    assert _SCORING is not None
    records, segmenters, num_labels = _SCORING
    global JOBS
    JOBS = 1
    return score(records, [segmenters[i] for i in indices], num_labels)


def with_thresholds(segmenter: Segmenter, grid: Sequence[float]) -> list[Segmenter]:
    return [dataclasses.replace(segmenter, threshold=t) for t in grid]


@dataclass
class Benchmark:
    kind: str
    run: Path
    dataset: VOCDataset
    model: torch.nn.Module
    misvm: MiSVM | None  # None: no mi-SVM trained for this run; left out of pipeline A's stages
    records: list[Record] = field(default_factory=list)


def open_benchmark(work: Path, kind: str, recipe: str, split: str, real_data: Path = REAL_DATA) -> Benchmark:
    run = work / "runs" / f"{kind}-full-{recipe}"
    model, _ = load_run(run)
    model.eval()
    root = real_data if kind == "real" else work / f"data-{kind}"
    misvm = MiSVM.load(run / MISVM_FILE) if (run / MISVM_FILE).is_file() else None
    return Benchmark(kind, run, VOCDataset(root, split), model, misvm)


def pipelines_of(benchmark: Benchmark) -> dict[str, Segmenter]:
    """Pipelines whose prepare() the records keep (the threshold is irrelevant to prepare)."""
    pipelines: dict[str, Segmenter] = {"pipeline-b": PipelineB(threshold=0.5)}
    if benchmark.misvm is not None:
        pipelines["pipeline-a"] = PipelineA(benchmark.misvm, threshold=0.5)
    return pipelines


Family = Callable[[Benchmark], list[Segmenter]]


def curves(benchmarks: Sequence[Benchmark], family: Family, label: str) -> dict[str, list[float]]:
    """mIoU per benchmark of every segmenter ``family`` builds, plus their mean over benchmarks."""
    started = time.perf_counter()
    if label.startswith("pipeline-a"):
        benchmarks = [b for b in benchmarks if b.misvm is not None]
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


def search(benchmarks: list[Benchmark], thresholds_only: bool = False) -> dict:
    """The coordinate search; returns every curve and the chosen settings. ``thresholds_only``:
    every method's threshold (and DCSM's subtraction) at the shipped settings only (CRF
    parameters, normalisation and pipeline weights as they are), in a fraction of the time."""
    out: dict = {"stages": {}, "chosen": {}}
    stages, chosen = out["stages"], out["chosen"]

    def stage(name: str, family: Family, grid: Sequence[float]) -> dict:
        curve = curves(benchmarks, family, name)
        stages[name] = {"grid": list(grid), "miou": curve, "best": best_threshold(curve, grid)}
        return stages[name]["best"]

    if thresholds_only:
        return shipped_thresholds(benchmarks, stage, out)

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
    # 2b. whose maps the distinct subtraction takes away, judged alike at the chosen normalisation
    totals = {}
    for subtraction, min_candidates in SUBTRACTIONS.items():
        dcsm = DCSM(normalization=norm, min_candidates=min_candidates)
        suffix = "" if min_candidates is None else f"/subtract-{subtraction}"
        keys = f"dcsm/{norm}{suffix}", f"dcsm-crf/{norm}{suffix}/psa"
        if keys[0] not in stages:
            stage(keys[0], lambda b, m=dcsm: with_thresholds(Thresholded(m, threshold=0.5), THRESHOLD_GRID),
                  THRESHOLD_GRID)
        if keys[1] not in stages:
            stage(keys[1], lambda b, m=dcsm: with_thresholds(DenseCRF(m, threshold=0.5), CRF_GRID), CRF_GRID)
        totals[subtraction] = stages[keys[0]]["best"]["mean"] + stages[keys[1]]["best"]["mean"]
    chosen["dcsm_subtraction"] = subtraction = max(totals, key=totals.get)
    dcsm = DCSM(normalization=norm, min_candidates=SUBTRACTIONS[subtraction])
    norm = norm if SUBTRACTIONS[subtraction] is None else f"{norm}/subtract-{subtraction}"
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
    # 4. pipeline B's weights, 5. pipeline A's (on the benchmarks with a mi-SVM)
    totals = {}
    for objectness in OBJECTNESS_WEIGHTS:
        for cam_weight in CAM_WEIGHTS:
            key = f"pipeline-b/objectness={objectness}/cam={cam_weight}"
            totals[(objectness, cam_weight)] = stage(key, lambda b, o=objectness, c=cam_weight: with_thresholds(
                PipelineB(CAM(), dcsm, o, c, threshold=0.5), CRF_GRID), CRF_GRID)["mean"]
    chosen["pipeline_b"] = dict(zip(("objectness_weight", "cam_weight"), max(totals, key=totals.get)))
    totals = {}
    chosen["pipeline_a_benchmarks"] = [b.kind for b in benchmarks if b.misvm is not None]
    for weight in MISVM_WEIGHTS if chosen["pipeline_a_benchmarks"] else ():
        totals[weight] = stage(f"pipeline-a/misvm={weight}", lambda b, w=weight: with_thresholds(
            PipelineA(b.misvm, dcsm, w, threshold=0.5), CRF_GRID), CRF_GRID)["mean"]
    # the thresholds at the chosen settings
    b_weights = chosen["pipeline_b"]
    final = {"cam": "cam", "cam-crf": f"cam-crf/{crf_name}", "gradcam": "gradcam", "gradient": "gradient",
             "guided": "guided", "dcsm": f"dcsm/{norm}", "dcsm-crf": f"dcsm-crf/{norm}/{crf_name}",
             "pipeline-b": f"pipeline-b/objectness={b_weights['objectness_weight']}/cam={b_weights['cam_weight']}"}
    if totals:
        chosen["pipeline_a"] = {"misvm_weight": max(totals, key=totals.get)}
        final["pipeline-a"] = f"pipeline-a/misvm={chosen['pipeline_a']['misvm_weight']}"
    chosen["thresholds"] = {method: stages[key]["best"] for method, key in final.items()}
    return out


def shipped_thresholds(benchmarks: list[Benchmark], stage: Callable[[str, Family, Sequence[float]], dict],
                       out: dict) -> dict:
    """search(thresholds_only=True): each method's threshold curve at the shipped settings, and
    DCSM's subtraction (the authors' against the present classes only) judged as in search()."""
    for name, method in (("cam", CAM()), ("gradcam", GradCAM()), ("gradient", Gradient()), ("guided", Guided())):
        stage(name, lambda b, m=method: with_thresholds(Thresholded(m, threshold=0.5), THRESHOLD_GRID), THRESHOLD_GRID)
    totals = {}
    for subtraction, min_candidates in SUBTRACTIONS.items():
        dcsm = DCSM(min_candidates=min_candidates)
        suffix = "" if min_candidates is None else f"/subtract-{subtraction}"
        plain = stage(f"dcsm{suffix}", lambda b, m=dcsm: with_thresholds(Thresholded(m, threshold=0.5),
                                                                         THRESHOLD_GRID), THRESHOLD_GRID)
        crf = stage(f"dcsm-crf{suffix}", lambda b, m=dcsm: with_thresholds(DenseCRF(m, threshold=0.5), CRF_GRID),
                    CRF_GRID)
        totals[subtraction] = plain["mean"] + crf["mean"]
    out["chosen"]["dcsm_subtraction"] = max(totals, key=totals.get)
    stage("cam-crf", lambda b: with_thresholds(DenseCRF(CAM(), threshold=0.5), CRF_GRID), CRF_GRID)
    stage("pipeline-b", lambda b: with_thresholds(PipelineB(threshold=0.5), CRF_GRID), CRF_GRID)
    if any(b.misvm is not None for b in benchmarks):
        stage("pipeline-a", lambda b: with_thresholds(PipelineA(b.misvm, threshold=0.5), CRF_GRID), CRF_GRID)
    out["chosen"]["thresholds"] = {name: out["stages"][name]["best"] for name in
                                   ("cam", "cam-crf", "gradcam", "gradient", "guided", "dcsm", "dcsm-crf",
                                    "pipeline-a", "pipeline-b") if name in out["stages"]}
    return out


def cached_records(path: Path, benchmark: Benchmark, labels: str, images: int | None = None) -> list[Record]:
    """The split's records (its first ``images``, default all), kept in ``path`` (a pickle of our
    own making) so that scoring other defaults later does not compute the maps again."""
    if path.exists():
        with open(path, "rb") as handle:
            return pickle.load(handle)
    records = collect(benchmark.model, benchmark.dataset, benchmark.dataset.ids[:images], labels,
                      pipelines_of(benchmark))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        pickle.dump(records, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return records


def quality(benchmarks: list[Benchmark], labels: str) -> dict:
    """mIoU of every registry method at its defaults (and of all-background) per benchmark; a
    method whose trained file the run lacks (an affinity network, a mi-SVM) is left out, and said."""
    result = {}
    for b in benchmarks:
        segmenters = {}
        for name in SEGMENT_METHODS:
            try:
                segmenters[name] = build_segmenter(name, b.run)
            except WssegError as exc:
                print(f"  {b.kind}: {name} left out ({exc})", flush=True)
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
        images = found["images"] if isinstance(found["images"], dict) else dict.fromkeys(BENCHMARKS, found["images"])
        kinds = [k for k in BENCHMARKS if k in images and any(k in e["best"] for e in found["stages"].values())]
        print("Search on the first " + ", ".join(f"{images[k]} {k}" for k in kinds) + " train images "
              "(mIoU %, ground-truth labels); each benchmark's own best (its threshold), and at the shared "
              "choice:\n")
        print("| stage / setting | " + " | ".join(f"{k}: own best | {k}: at shared" for k in kinds)
              + " | mean at one shared threshold |")
        print("|---|" + "---:|---:|" * len(kinds) + "---:|")
        for name, entry in found["stages"].items():
            best = entry["best"]
            cells = [f"{best[k]['own_best']:.1f} ({best[k]['own_best_threshold']}) | {best[k]['at_chosen']:.1f}"
                     if k in best else "- | -" for k in kinds]
            print(f"| {name} | " + " | ".join(cells) + f" | {best['mean']:.1f} at {best['threshold']} |")
        print("\nChosen:", json.dumps({k: v for k, v in found["chosen"].items() if k != "thresholds"}))
        print("Thresholds:", {m: v["threshold"] for m, v in found["chosen"]["thresholds"].items()})
    if quality_path.exists():
        table = json.loads(quality_path.read_text())
        kinds = [k for k in BENCHMARKS if k in table.get("train", {})]
        print("\n| method | " + " | ".join(f"{k} train (gt labels) | {k} val (predicted)" for k in kinds) + " |")
        print("|---|" + "---:|---:|" * len(kinds))
        for method in ("all-background", *SEGMENT_METHODS):  # a method newer than the table shows "-"
            cells = [f"{table['train'][k][method]:.1f} | {table['val'][k][method]:.1f}" if method in table["val"][k]
                     else "- | -" for k in kinds]
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
        for method in (m for m in SEGMENT_METHODS if all(m in table[k] for k in kinds)):
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
    parser.add_argument("--real-images", type=int, default=40,
                        help="search: the first N train photographs of the real set")
    parser.add_argument("--real-data", type=Path, default=REAL_DATA, help="the real photographs (VOC layout)")
    parser.add_argument("--thresholds-only", action="store_true",
                        help="search: the thresholds (and DCSM's subtraction) at the shipped settings only")
    parser.add_argument("--jobs", type=int, default=1, help="search, quality, confident: worker processes "
                        "that score candidate settings side by side (fork; each with one thread)")
    parser.add_argument("--search-results", type=Path, default=HERE / "segment_defaults.json")
    parser.add_argument("--collect-only", action="store_true",
                        help="search, quality: compute and cache the maps (WORK/cache), score nothing yet")
    parser.add_argument("--confident-results", type=Path, default=HERE / "confident_labels.json")
    parser.add_argument("--quality-results", type=Path, default=HERE / "segment_quality.json")
    args = parser.parse_args()
    if args.command == "table":
        print_tables(args.search_results, args.quality_results, args.confident_results)
        return
    torch.manual_seed(0)
    global JOBS
    JOBS = max(1, args.jobs)
    kinds = args.benchmarks.split(",")
    if "real" in kinds and not (args.real_data / "ImageSets").is_dir():
        print(f"real photographs not found at {args.real_data}: searching without them")
        kinds.remove("real")
    if args.command == "confident":
        table = {}
        for kind in kinds:
            b = open_benchmark(args.work, kind, args.recipe, "train", args.real_data)
            b.records = cached_records(args.work / "cache" / f"{kind}-train-gt.pkl", b, "gt")
            table.update(confident([b]))
            b.records.clear()
        write_json_atomic(args.confident_results, table)
    elif args.command == "search":
        benchmarks = [open_benchmark(args.work, kind, args.recipe, "train", args.real_data) for kind in kinds]
        images = {b.kind: args.real_images if b.kind == "real" else args.images for b in benchmarks}
        for b in benchmarks:
            b.records = cached_records(args.work / "cache" / f"{b.kind}-train-gt-first{images[b.kind]}.pkl", b, "gt",
                                       images[b.kind])
        if args.collect_only:
            return
        found = search(benchmarks, args.thresholds_only)
        write_json_atomic(args.search_results, {"images": images, "recipe": args.recipe, **found})
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
