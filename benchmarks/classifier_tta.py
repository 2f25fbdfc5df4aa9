"""Test-time resolution and horizontal-flip averaging for a trained classifier (issue 22).

A classifier trained on crops of N px is scored on a split with each image scaled to other
sides on its longer side (the train/test resolution discrepancy, "FixRes"), each with and
without averaging the sigmoid scores of the image and its mirror, and with averages over a few
sides. Per setting: mAP and macro F1 at 0.5 (``wsseg.train.classification_metrics``), the macro
F1 of the labels that ``wsseg segment --labels predicted`` would take from those scores (its
rule, ``wsseg.runner.predict_labels``: the classes scoring above 0.5, else the top class) with
their micro F1 and TP / FP / FN counts, seconds per image (wall time of the scoring, image
reading and resizing included; on a shared machine only comparable within one run of this
script), and a paired bootstrap over the split's images (1000 draws) of the row's mAP gain over
the run's own training side without flip: its 5th and 95th percentiles. With 16 val photos,
one photo ranked differently moves mAP by about 0.04.

The row ``native`` is what the segment command does: it scores each image at its own size
(640 px on the longer side for most COCO photos), unflipped; its labels are taken with
``predict_labels`` itself and compared with the rule applied to the scores (``rule_check``).

Reads ../shared/data/coco97-voc (or --data) in place and skips with a message when it is absent.

    python benchmarks/classifier_tta.py --run /tmp/tta/run256 [--run RUN ...] --out benchmarks/classifier_tta.json
    python benchmarks/classifier_tta.py --table benchmarks/classifier_tta.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from wsseg.data.transforms import to_tensor
from wsseg.data.voc import VOCDataset, labels_to_vector
from wsseg.io import write_json_atomic
from wsseg.models.run import check_same_classes, load_run, read_history
from wsseg.runner import predict_labels
from wsseg.train import classification_metrics, predict_scores

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "coco97-voc"
SIDES = (256, 320, 384, 448, 512, 640)
# averages over sides, fixed before any result was seen (not chosen on val)
MULTI = ((256, 384, 512), (384, 512, 640), SIDES)
THRESHOLD = 0.5  # wsseg segment's --label-threshold default
RESAMPLES = 1000  # paired bootstrap over the split's images: how far a row's mAP gain is from noise


class Mirrored(torch.nn.Module):
    """The classifier applied to the horizontally mirrored input."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)  # predict_scores restores the wrapper's mode, and so the model's

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.flip(-1))


def rule_labels(scores: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Multi-hot labels by ``predict_labels``' rule (above ``threshold``, else the top class),
    applied to scores already computed (so that averaged scores can be judged too)."""
    chosen = scores > threshold
    empty = ~chosen.any(axis=1)
    chosen[np.flatnonzero(empty), scores[empty].argmax(axis=1)] = True
    return chosen


def label_metrics(chosen: np.ndarray, targets: np.ndarray) -> dict:
    truth = targets > 0
    tp = float((chosen & truth).sum())
    return {
        # macro F1 over classes, as classification_metrics counts it (0/1 scores against 0.5)
        "label_f1": classification_metrics(chosen.astype(np.float32), targets, 0.5)["f1"],
        "label_f1_micro": 2 * tp / float(chosen.sum() + truth.sum()),
        "tp": int(tp), "fp": int((chosen & ~truth).sum()), "fn": int((~chosen & truth).sum()),
        "exact": int((chosen == truth).all(axis=1).sum()),
        "labels_per_image": float(chosen.sum(axis=1).mean()),
    }


def native_scores(model: torch.nn.Module, dataset: VOCDataset) -> tuple[np.ndarray, np.ndarray, list, float, float]:
    """Scores at each image's own size, plain and mirrored, the labels ``predict_labels`` gives
    (the segment command's call, not timed) and the seconds of each scoring (half of the image
    reading counted in each)."""
    plain, mirrored, labels, seconds = [], [], [], [0.0, 0.0]
    model.eval()
    with torch.no_grad():
        for image_id in dataset.ids:
            start = time.perf_counter()
            image = to_tensor(dataset.load_image(image_id))[None]
            read = time.perf_counter() - start
            start = time.perf_counter()
            plain.append(torch.sigmoid(model(image))[0].numpy())
            seconds[0] += time.perf_counter() - start + read / 2
            start = time.perf_counter()
            mirrored.append(torch.sigmoid(model(image.flip(-1)))[0].numpy())
            seconds[1] += time.perf_counter() - start + read / 2
            labels.append(predict_labels(model, image, THRESHOLD)[0])
    return np.stack(plain), np.stack(mirrored), labels, seconds[0], seconds[1]


def fast_map(scores: np.ndarray, targets: np.ndarray) -> float:
    """classification_metrics' mAP (sklearn's average precision, ties grouped, classes without a
    positive left out) in a few numpy steps: the bootstrap needs it thousands of times, and
    ``check_fast_map`` holds it to the library's on every row it is used for."""
    aps = []
    for c in np.flatnonzero(targets.any(axis=0)):
        order = np.argsort(-scores[:, c], kind="stable")
        s, t = scores[order, c], targets[order, c] > 0
        last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # the end of each group of equal scores
        tp = np.cumsum(t)[last]
        precision = tp / (last + 1)
        recall = tp / t.sum()
        aps.append(float(np.sum(np.diff(np.r_[0.0, recall]) * precision)))
    return float(np.mean(aps))


def check_fast_map(scores: np.ndarray, targets: np.ndarray, rng: np.random.Generator) -> None:
    for _ in range(3):
        pick = rng.integers(0, len(targets), len(targets))
        for s, t in ((scores, targets), (scores[pick], targets[pick])):
            assert abs(fast_map(s, t) - classification_metrics(s, t)["map"]) < 1e-9


def bootstrap_gain(mean: np.ndarray, base: np.ndarray, targets: np.ndarray) -> list[float]:
    """The 5th and 95th percentiles of mAP(mean) - mAP(base) over images drawn with replacement
    (the same draws for every row; classes without a positive in a draw are left out, as
    classification_metrics does)."""
    check_fast_map(mean, targets, np.random.default_rng(1))
    rng = np.random.default_rng(0)
    gains = []
    for _ in range(RESAMPLES):
        pick = rng.integers(0, len(targets), len(targets))
        gains.append(fast_map(mean[pick], targets[pick]) - fast_map(base[pick], targets[pick]))
    return [float(np.percentile(gains, 5)), float(np.percentile(gains, 95))]


def evaluate_split(model: torch.nn.Module, dataset: VOCDataset, trained_at: int) -> dict:
    n = len(dataset)
    scores: dict[str, tuple[np.ndarray, float]] = {}  # "256" / "256f" -> (scores, seconds)
    targets = None
    for side in SIDES:
        for key, net in ((str(side), model), (f"{side}f", Mirrored(model))):
            start = time.perf_counter()
            s, t, _ = predict_scores(net, dataset, side, batch_size=1)
            scores[key] = (s, time.perf_counter() - start)
            assert not model.training
            if targets is None:
                targets = t
            assert np.array_equal(t, targets)
    plain, mirrored, native_labels, plain_s, mirrored_s = native_scores(model, dataset)
    scores["native"] = (plain, plain_s)
    scores["nativef"] = (mirrored, mirrored_s)
    truth = np.stack([labels_to_vector(dataset.load_labels(i), dataset.num_classes) for i in dataset.ids])
    assert np.array_equal(truth, targets)

    chosen_by_segment = np.zeros_like(targets, dtype=bool)
    for row, classes in enumerate(native_labels):
        chosen_by_segment[row, classes] = True
    rule_check = int((rule_labels(plain) == chosen_by_segment).all(axis=1).sum())

    base = scores[str(trained_at)][0] if str(trained_at) in scores else scores["native"][0]

    def row(name: str, sides: list[str], flip: bool) -> dict:
        parts = [scores[s] for s in sides] + ([scores[s + "f"] for s in sides] if flip else [])
        mean = np.mean([p[0] for p in parts], axis=0)
        seconds = sum(p[1] for p in parts)
        metrics = classification_metrics(mean, targets)
        return {"test": name, "flip": flip, "map": metrics["map"], "f1": metrics["f1"],
                **label_metrics(rule_labels(mean), targets), "seconds_per_image": seconds / n,
                "map_gain_90": bootstrap_gain(mean, base, targets)}

    rows = []
    for flip in (False, True):
        rows += [row(str(side), [str(side)], flip) for side in SIDES]
        rows.append(row("native", ["native"], flip))
        rows += [row("+".join(map(str, sides)), [str(s) for s in sides], flip) for sides in MULTI]
    return {"images": n, "positives": int(targets.sum()), "rule_check": f"{rule_check}/{n}",
            "gain_against": f"{trained_at} px, no flip" if str(trained_at) in scores else "native, no flip",
            "rows": rows}


def evaluate_run(run: Path, data: Path, splits: list[str]) -> dict:
    model, config = load_run(run)  # in eval mode
    history = read_history(run)
    best = [r for r in history if r.get("best")]
    result = {"run": str(run), "trained_at": config.image_size, "epochs": config.epochs,
              "probe_epochs": config.probe_epochs, "freeze_bn": config.freeze_bn,
              "kept_epoch": best[-1]["epoch"] if best else None,
              "history_val_map": best[-1].get("val_map") if best else None, "splits": {}}
    for split in splits:
        dataset = VOCDataset(data, split)
        check_same_classes(config, dataset.classes, run, data)
        print(f"{run.name}: {split} ({len(dataset)} images) ...", flush=True)
        result["splits"][split] = evaluate_split(model, dataset, config.image_size)
    return result


def print_table(results: dict) -> None:
    for name, run in results["runs"].items():
        for split, part in run["splits"].items():
            print(f"\n**{name}** (trained at {run['trained_at']} px, epoch {run['kept_epoch']} kept), {split}: "
                  f"{part['images']} images, {part['positives']} labels; segment-rule check {part['rule_check']}\n")
            print(f"| test side | flip | mAP | mAP gain against {part['gain_against']}: 90 % bootstrap interval "
                  "| F1 at 0.5 | predicted-label F1 (macro / micro) | exact label sets | TP / FP / FN | s per image |")
            print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
            for r in part["rows"]:
                low, high = r["map_gain_90"]
                print(f"| {r['test']} | {'yes' if r['flip'] else 'no'} | {r['map']:.3f} | {low:+.3f} .. {high:+.3f} | "
                      f"{r['f1']:.3f} | "
                      f"{r['label_f1']:.3f} / {r['label_f1_micro']:.3f} | {r['exact']}/{part['images']} | "
                      f"{r['tp']} / {r['fp']} / {r['fn']} | {r['seconds_per_image']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", default=[], help="a classifier's run folder (repeatable)")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--split", nargs="+", default=["val", "train"])
    parser.add_argument("--out", help="JSON file; runs already in it are kept unless measured again")
    parser.add_argument("--table", metavar="JSON", help="print the markdown table of a results file and stop")
    args = parser.parse_args()
    if args.table:
        print_table(json.loads(Path(args.table).read_text()))
        return
    if not args.run:
        parser.error("--run is required (or --table)")
    data = Path(args.data)
    if not (data / "JPEGImages").is_dir():
        print(f"skipped: no real-photo dataset at {data} (the coco97-voc set lives in ../shared/data)")
        return
    out = Path(args.out) if args.out else None
    results = json.loads(out.read_text()) if out and out.exists() else {"runs": {}}
    results["meta"] = {"data": data.name, "threshold": THRESHOLD, "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "machine": platform.machine()}
    for run in map(Path, args.run):
        results["runs"][run.name] = evaluate_run(run, data, args.split)
        if out:
            write_json_atomic(out, results)
    print_table(results)


if __name__ == "__main__":
    main()
