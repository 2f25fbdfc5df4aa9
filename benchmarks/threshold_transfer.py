"""Can a per-map normalisation make one background threshold serve every benchmark?

On photos DCSM's best threshold (about 0.5 thresholded, 0.45 through the CRF with the 512-px
classifier) lies far below the synthetic images' (0.75-0.8), so a default chosen on one costs
the other points. A threshold is a fraction of each map's range (linear-minmax), so a map whose
object sits lower relative to its peak wants a lower one. This script asks whether a
normalisation that adapts to each map's own distribution moves the benchmarks' best thresholds
together: each candidate is scored, thresholded over the threshold grid, on the maps that
``segment_defaults.py search`` cached (the first train images of each benchmark, their true
image labels; val never read), and the table gives each benchmark's own best threshold, the
spread of those thresholds, and what each benchmark loses at the one threshold best on average.

    python benchmarks/segment_defaults.py search --work W --recipe new --images 100 --real-images 81 --collect-only
    python benchmarks/threshold_transfer.py --work W --images 100 --real-images 81 [--crf]

``--whole`` scores the methods that read DCSM's maps (dcsm, dcsm-crf, pipeline-b) at their
shipped thresholds with the shipped and the Otsu-centred normalisation, on the whole train split
(true labels) and val (predicted labels) of each benchmark, from the maps ``segment_defaults.py
quality --collect-only`` cached: the before/after of the normalisation that became the default.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from segment_defaults import BENCHMARKS, Record, score  # noqa: E402  (the cached records are its Records)

from wsseg.evaluate import ConfusionMatrix  # noqa: E402
from wsseg.fusion.background import labels_from_maps, soft_probabilities  # noqa: E402
from wsseg.fusion.crf import dense_crf  # noqa: E402
from wsseg.io import write_json_atomic  # noqa: E402
from wsseg.maps import CAM, DCSM  # noqa: E402
from wsseg.maps.normalize import centre_on_otsu, normalize_maps  # noqa: E402
from wsseg.pipelines import THRESHOLD_GRID, DenseCRF, PipelineB, Thresholded  # noqa: E402
from wsseg.registry import method_info  # noqa: E402
from wsseg.segmentation.base import to_labels  # noqa: E402
from wsseg.segmentation.crf import DEFAULT_CRF  # noqa: E402

# finer than the library's CRF_GRID (0.05-0.85 by 0.1), and past it: shapes' best lies near its end
CRF_GRID = tuple(round(0.35 + 0.05 * i, 2) for i in range(12))  # 0.35 ... 0.9
Normalisation = Callable[[np.ndarray], np.ndarray]  # [K, H, W] linear maps -> [0, 1]


def minmax(maps: np.ndarray) -> np.ndarray:
    return normalize_maps(torch.from_numpy(maps), "minmax").numpy()


def by_max(maps: np.ndarray) -> np.ndarray:
    return normalize_maps(torch.from_numpy(maps), "max").numpy()


def by_quantile(q: float, base: Normalisation) -> Normalisation:
    """``base``, then divided by its q-quantile over the map's pixels (clipped to 1): a few peak
    pixels no longer set the scale."""
    def normalise(maps: np.ndarray) -> np.ndarray:
        values = base(maps)
        scale = np.quantile(values.reshape(len(values), -1), q, axis=1)[:, None, None]
        return np.clip(values / np.maximum(scale, 1e-6), 0, 1)
    return normalise


def otsu_centred(base: Normalisation) -> Normalisation:
    """``base``, then bent piecewise-linearly so that each map's Otsu threshold lands on 0.5
    (the library's :func:`~wsseg.maps.normalize.centre_on_otsu`, which ``linear-otsu`` applies)."""
    def normalise(maps: np.ndarray) -> np.ndarray:
        return centre_on_otsu(torch.from_numpy(np.ascontiguousarray(base(maps), dtype=np.float32))).numpy()
    return normalise


def linear(method: str, maps: np.ndarray) -> np.ndarray:
    """The cached raw maps before any scaling: DCSM's with its final tanh(3x) undone."""
    return np.arctanh(np.clip(maps, 0, 1 - 1e-6)) / 3.0 if method == "dcsm" else maps


# per map method: the shipped normalisation first, then the candidates
CANDIDATES: dict[str, dict[str, Normalisation]] = {
    "dcsm": {"linear-minmax (the default until session 12)": minmax, "linear-max": by_max,
             "minmax / q0.95": by_quantile(0.95, minmax), "minmax / q0.9": by_quantile(0.9, minmax),
             "linear-otsu (the default since session 12)": otsu_centred(minmax)},
    "cam": {"max (shipped)": by_max, "max / q0.95": by_quantile(0.95, by_max),
            "max, Otsu at 0.5": otsu_centred(by_max)},
}


def curve(records: list[Record], method: str, normalise: Normalisation, crf: bool = False) -> list[float]:
    """mIoU (%) over the threshold grid (``crf``: through the dense CRF as ``dcsm-crf`` runs it,
    over its grid); every mask value fits a 255-label matrix, and classes absent from both masks
    and predictions do not count in the mean."""
    grid = CRF_GRID if crf else THRESHOLD_GRID
    matrices = [ConfusionMatrix(255) for _ in grid]
    for record in records:
        maps = normalise(linear(method, record.raw[method].numpy()))
        for matrix, threshold in zip(matrices, grid):
            if crf:
                refined = dense_crf(record.image, soft_probabilities(maps, threshold), DEFAULT_CRF)
                prediction = to_labels(record.labels, np.argmax(refined, axis=0))
            else:
                prediction = labels_from_maps(maps, record.labels, threshold)
            matrix.update(prediction, record.truth)
    return [100.0 * matrix.miou() for matrix in matrices]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="segment_defaults.py's --work (its cache/)")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--real-images", type=int, default=81)
    parser.add_argument("--crf", action="store_true",
                        help="DCSM's candidates through the dense CRF (dcsm-crf) instead of thresholded")
    parser.add_argument("--only", help="candidates to score, ';'-separated names (default: all)")
    parser.add_argument("--results", type=Path, default=HERE / "threshold_transfer.json")
    parser.add_argument("--table", type=Path, help="print the table of a results file and exit")
    parser.add_argument("--whole", action="store_true", help="the before/after on whole splits (see above)")
    args = parser.parse_args()
    if args.table:
        table = json.loads(args.table.read_text())
        print_whole(table) if "whole" in table else print_table(table)
        return
    if args.work is None:
        parser.error("--work is required (segment_defaults.py's --work, with its cache/)")
    if args.whole:
        results = {"whole": whole(args.work)}
        write_json_atomic(args.results, results)
        print_whole(results)
        return
    only = None if args.only is None else set(args.only.split(";"))
    results: dict = {"grid": list(CRF_GRID if args.crf else THRESHOLD_GRID), "crf": args.crf, "curves": {}}
    for kind in BENCHMARKS:
        path = args.work / "cache" / f"{kind}-train-gt-first{args.real_images if kind == 'real' else args.images}.pkl"
        if not path.is_file():
            print(f"skipped {kind}: no cached maps at {path}")
            continue
        with open(path, "rb") as handle:
            records = pickle.load(handle)
        for method, candidates in CANDIDATES.items():
            for name, normalise in candidates.items():
                if (args.crf and method != "dcsm") or (only is not None and name not in only):
                    continue
                results["curves"].setdefault(method, {}).setdefault(name, {})[kind] = curve(
                    records, method, normalise, args.crf)
                print(f"  {kind} {method} {name}: done", flush=True)
    write_json_atomic(args.results, results)
    print_table(results)


WHOLE_NORMALIZATIONS = ("linear-minmax", "linear-otsu")


def whole(work: Path) -> dict:
    """mIoU of dcsm, dcsm-crf and pipeline-b at their shipped thresholds with each normalisation."""
    results: dict = {}
    for kind in BENCHMARKS:
        for split, labels in (("train", "gt"), ("val", "predicted")):
            path = work / "cache" / f"{kind}-{split}-{labels}.pkl"
            if not path.is_file():
                print(f"skipped {kind} {split}: no cached maps at {path}")
                continue
            with open(path, "rb") as handle:
                records = pickle.load(handle)
            segmenters = {}
            for normalization in WHOLE_NORMALIZATIONS:
                dcsm = DCSM(normalization=normalization)
                segmenters[("dcsm", normalization)] = Thresholded(dcsm, threshold=method_info("dcsm").threshold)
                segmenters[("dcsm-crf", normalization)] = DenseCRF(dcsm, threshold=method_info("dcsm-crf").threshold)
                segmenters[("pipeline-b", normalization)] = PipelineB(CAM(), dcsm,
                                                                      threshold=method_info("pipeline-b").threshold)
            values = score(records, list(segmenters.values()), 255)
            for (method, normalization), value in zip(segmenters, values):
                results.setdefault(f"{kind} {split}", {}).setdefault(method, {})[normalization] = value
            results[f"{kind} {split}"]["images"] = len(records)
            print(f"  {kind} {split}: done", flush=True)
    return results


def print_whole(results: dict) -> None:
    print("whole splits at the shipped thresholds (train: true labels; val: predicted labels), mIoU %, "
          + " -> ".join(WHOLE_NORMALIZATIONS))
    rows = results["whole"]
    methods = ("dcsm", "dcsm-crf", "pipeline-b")
    print("| split | images | " + " | ".join(methods) + " |")
    print("|---|---:|" + "---:|" * len(methods))
    for name, row in rows.items():
        cells = [f"{row[m][WHOLE_NORMALIZATIONS[0]]:.1f} -> {row[m][WHOLE_NORMALIZATIONS[1]]:.1f}" for m in methods]
        print(f"| {name} | {row['images']} | " + " | ".join(cells) + " |")


def print_table(results: dict) -> None:
    grid = results["grid"]
    print(f"{'through the dense CRF' if results.get('crf') else 'thresholded'}; mIoU %, train images, true labels")
    print("| maps | normalisation | " + " | ".join(f"{k}: own best (t)" for k in BENCHMARKS) +
          " | spread of best t | shared t | loss at shared t per benchmark | mean at shared t |")
    print("|---|---|" + "---:|" * (len(BENCHMARKS) + 4))
    for method, candidates in results["curves"].items():
        for name, curves in candidates.items():
            kinds = [k for k in BENCHMARKS if k in curves]
            mean = np.mean([curves[k] for k in kinds], axis=0)
            shared = int(np.argmax(mean))
            best = {k: int(np.argmax(curves[k])) for k in kinds}
            spread = max(grid[b] for b in best.values()) - min(grid[b] for b in best.values())
            cells = [f"{curves[k][best[k]]:.1f} ({grid[best[k]]:g})" if k in curves else "-" for k in BENCHMARKS]
            losses = " / ".join(f"{curves[k][best[k]] - curves[k][shared]:.1f}" for k in kinds)
            print(f"| {method} | {name} | " + " | ".join(cells) +
                  f" | {spread:.2f} | {grid[shared]:g} | {losses} | {mean[shared]:.1f} |")


if __name__ == "__main__":
    main()
