"""The training-recipe search behind ``wsseg train``'s defaults (docs/method.md, "Training recipe").

Trains the classifier with named recipes on the synthetic benchmarks, on the full train split and
on its first 300 images, and on the real photographs of ../shared/data/coco97-voc (benchmark
``real``, its 81 train photos, read in place; at ``--real-size`` px for ``--real-epochs`` epochs
to fit a CPU; skipped when absent), and records each run's per-epoch val mAP (image labels only: choosing a
recipe by it is no oracle for segmentation). Results accumulate in a JSON file, one entry per
(benchmark, train size, recipe), so the search can be stopped and continued.

    python benchmarks/train_recipe.py --work /tmp/recipe --recipes old,new --benchmarks shapes,glyphs
    python benchmarks/train_recipe.py --work /tmp/recipe --recipes new,lpft --benchmarks real --sizes full
    python benchmarks/train_recipe.py --table
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from wsseg.data import SynthConfig, VOCDataset, write_synthetic_dataset
from wsseg.io import write_json_atomic, write_text_atomic
from wsseg.train import TrainOptions, train

HERE = Path(__file__).resolve().parent
REAL = HERE.parent.parent / "shared" / "data" / "coco97-voc"
# each recipe: TrainOptions fields that differ from the current defaults
RECIPES: dict[str, dict] = {
    # the defaults before this search: keep the last of 10 epochs, no colour jitter
    "old": dict(epochs=10, lr=1e-3, head_lr_scale=10.0, weight_decay=1e-4, scale_range=(0.7, 1.3), jitter=0.0,
                patience=None),
    "new": {},
    # small-data fine-tuning (docs/method.md 1.2): a linear probe first, pretrained batch-norm statistics
    "lpft": dict(probe_epochs=3, freeze_bn=True),
    "frozenbn": dict(freeze_bn=True),
    "frozenbn-lr1e-4": dict(freeze_bn=True, lr=1e-4),
    "lpft-lr3e-4": dict(probe_epochs=3, freeze_bn=True, lr=3e-4),
    "lpft-cutmix": dict(probe_epochs=3, freeze_bn=True, cutmix=0.5),
    "lpft-lse": dict(probe_epochs=3, freeze_bn=True, pooling="lse"),
    "lpft-384": dict(probe_epochs=3, freeze_bn=True, image_size=384),
    "new-384": dict(image_size=384),
    # a linear probe alone: the backbone never moves (session 10)
    "probe": dict(epochs=30, probe_epochs=30),
}


def benchmark(work: Path, kind: str) -> Path | None:
    if kind == "real":  # read in place, never copied or written to; its train split is the whole set
        return REAL if (REAL / "JPEGImages").is_dir() else None
    root = work / f"data-{kind}"
    if not (root / "synth.json").exists():
        write_synthetic_dataset(root, SynthConfig(kind=kind), progress=False, force=True)
    first = VOCDataset(root, "train").ids[:300]
    write_text_atomic(root / "ImageSets" / "Segmentation" / "train300.txt", "".join(f"{i}\n" for i in first))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("build/recipe"), help="datasets and runs")
    parser.add_argument("--results", type=Path, default=HERE / "train_recipe.json",
                        help="results file, kept in the repository (default benchmarks/train_recipe.json)")
    parser.add_argument("--benchmarks", default="shapes,glyphs")
    parser.add_argument("--sizes", default="300,full")
    parser.add_argument("--recipes", default="old,new")
    parser.add_argument("--set", action="append", default=[], metavar="NAME:JSON",
                        help="define a recipe on the command line, e.g. 'lr3e-4:{\"lr\": 3e-4}'")
    parser.add_argument("--real-size", type=int, default=256, help="image size of the real-photo runs")
    parser.add_argument("--real-epochs", type=int, default=15, help="epochs of the real-photo runs")
    parser.add_argument("--table", action="store_true", help="print the results as a markdown table and exit")
    parser.add_argument("--patience", type=int, nargs="*", default=[4, 5, 6, 8],
                        help="for --table: where early stopping with these patiences would have stopped")
    args = parser.parse_args()
    if args.table:
        print_table(json.loads(args.results.read_text()), args.patience)
        return
    for definition in args.set:
        name, body = definition.split(":", 1)
        RECIPES[name] = json.loads(body)
    results_path = args.results
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for kind in args.benchmarks.split(","):
        root = benchmark(args.work, kind)
        if root is None:
            print(f"skipped {kind}: no real-photo dataset at {REAL}")
            continue
        for size in args.sizes.split(",") if kind != "real" else ["full"]:
            for recipe in args.recipes.split(","):
                key = f"{kind}/{size}/{recipe}"
                if key in results:
                    continue
                options = RECIPES[recipe]
                if "scale_range" in options:
                    options = {**options, "scale_range": tuple(options["scale_range"])}
                if kind == "real":  # a recipe's own image_size (lpft-384) stands
                    options = {"image_size": args.real_size, "epochs": args.real_epochs, **options}
                started = time.perf_counter()
                history = train(TrainOptions(data=str(root), out=str(args.work / "runs" / key.replace("/", "-")),
                                             split="train" if size == "full" else f"train{size}", progress=False,
                                             **options))
                maps = [record["val_map"] for record in history]
                best = max(range(len(maps)), key=maps.__getitem__)
                results[key] = {"recipe": RECIPES[recipe], "val_map": maps, "best_epoch": best + 1,
                                "best_map": maps[best], "last_map": maps[-1], "epochs_run": len(maps),
                                "seconds": time.perf_counter() - started}
                write_json_atomic(results_path, results)
                print(f"{key:<28} best {maps[best]:.3f} (epoch {best + 1}/{len(maps)}), last {maps[-1]:.3f}, "
                      f"{results[key]['seconds']:.0f} s", flush=True)


def stop_epoch(maps: list[float], patience: int) -> int:
    """The epoch (1-based) at which ``--patience`` would have ended this run: runs stopped early
    are the same run cut short (the schedule depends on --epochs only), so one full run shows
    every patience's outcome exactly."""
    best = 0
    for epoch, value in enumerate(maps):
        if value > maps[best]:
            best = epoch
        if epoch - best >= patience:
            return epoch + 1
    return len(maps)


def print_table(results: dict, patiences: list[int]) -> None:
    print("| benchmark | train images | recipe | epochs run | best val mAP (epoch) | last val mAP | "
          + " | ".join(f"patience {p}: stop, kept mAP" for p in patiences) + " | minutes |")
    print("|---|---|---|---:|---:|---:|" + "---:|" * len(patiences) + "---:|")
    for key, row in results.items():
        kind, size, recipe = key.split("/")
        maps = row["val_map"]
        cells = []
        for patience in patiences:
            stop = stop_epoch(maps, patience)
            cells.append(f"{stop}, {max(maps[:stop]):.3f}")
        print(f"| {kind} | {size} | {recipe} | {len(maps)} | {row['best_map']:.3f} ({row['best_epoch']}) | "
              f"{row['last_map']:.3f} | " + " | ".join(cells) + " | "
              + ("stopped by hand" if row.get("stopped_by_hand") else f"{row['seconds'] / 60:.1f}") + " |")


if __name__ == "__main__":
    main()
