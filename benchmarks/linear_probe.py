"""How far a linear probe on the frozen ImageNet features goes on the real photographs, fitted to
convergence (the "LP" of LP-FT as Kumar et al. fit it), against `wsseg train`'s own probe
(`--probe-epochs` equal to `--epochs`: AdamW on augmented crops, docs/method.md 1.5).

Features: EfficientNet-Lite0's last feature map (output stride 16, as the classifier's head sees it),
average pooled (`gap`) or average and max pooled (`gap+gmp`), of each whole photo scaled to a longer
side, and of its mirror; optionally of `--views` augmented crops per photo too (the trainer's
augmentation: scale 0.5-1.5, colour jitter 0.4), and optionally L2-normalised. One logistic
regression per class (scikit-learn, L2 penalty C), val mAP from image labels only; the mean score of
the true classes on the training photos says whether the probe is underfit. C is searched on val mAP
(image labels, no masks), as the training recipes are.

Reads ../shared/data/coco97-voc (or --data) in place and skips with a message when it is absent.

    python benchmarks/linear_probe.py [--sizes 256,384,448,512] [--views 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from wsseg.data import open_dataset
from wsseg.data.loading import LabelledImages
from wsseg.io import write_json_atomic
from wsseg.models.classifier import build_classifier
from wsseg.train import classification_metrics

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "coco97-voc"
C_GRID = {False: (0.001, 0.003, 0.01, 0.03, 0.1, 1.0), True: (0.3, 1.0, 3.0, 10.0)}


@torch.no_grad()
def features(model: torch.nn.Module, items: LabelledImages, keys, flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """[N, 2D] average then max pooled features of the items, and their [N, C] labels."""
    pooled, labels = [], []
    for key in keys:
        image, label, error = items[key]
        if error:
            raise SystemExit(error)
        x = image[None].flip(-1) if flip else image[None]
        feature_map = model.backbone((x - model.mean) / model.std)
        pooled.append(torch.cat([feature_map.mean((2, 3)), feature_map.amax((2, 3))], 1)[0].numpy())
        labels.append(label.numpy())
    return np.array(pooled), np.array(labels)


def fit_scores(train_x: np.ndarray, train_y: np.ndarray, tests: list[np.ndarray], c: float) -> list[np.ndarray]:
    """One L2 logistic regression per class; decision values of each test set (0 for a class
    every training photo has, or none has)."""
    outputs = [np.zeros((len(x), train_y.shape[1])) for x in tests]
    for k in range(train_y.shape[1]):
        if train_y[:, k].min() == train_y[:, k].max():
            continue
        model = LogisticRegression(C=c, max_iter=3000).fit(train_x, train_y[:, k])
        for output, x in zip(outputs, tests):
            output[:, k] = model.decision_function(x)
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--sizes", default="256,384,448,512")
    parser.add_argument("--views", type=int, default=4, help="augmented crops per photo in the 'views' rows")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    if not (Path(args.data) / "JPEGImages").is_dir():
        print(f"skipped: no real-photo dataset at {args.data}")
        return
    torch.set_num_threads(args.threads)
    train, val = open_dataset(args.data, "train"), open_dataset(args.data, "val")
    model = build_classifier(train.num_classes, pretrained=True).eval()
    rows = []
    print("| side | pooled | training features | normalised | C | val mAP | train mAP | mean p(true class), train |")
    print("|---:|---|---|---|---:|---:|---:|---:|")
    for side in (int(s) for s in args.sizes.split(",")):
        started = time.perf_counter()
        plain, val_items = LabelledImages(train, side), LabelledImages(val, side)
        x_train, y_train = features(model, plain, range(len(train)))
        x_mirror, _ = features(model, plain, range(len(train)), flip=True)
        x_val, y_val = features(model, val_items, range(len(val)))
        augmented = LabelledImages(train, side, seed=0, augment=True, scale_range=(0.5, 1.5), jitter=0.4)
        x_views, y_views = features(model, augmented, [(e, i) for e in range(args.views) for i in range(len(train))])
        seconds = time.perf_counter() - started
        half = x_train.shape[1] // 2
        sets = {"photo + mirror": (np.concatenate([x_train, x_mirror]), np.concatenate([y_train, y_train])),
                f"+ {args.views} crops each": (np.concatenate([x_train, x_mirror, x_views]),
                                               np.concatenate([y_train, y_train, y_views]))}
        for pooled, columns in (("gap", slice(0, half)), ("gap+gmp", slice(None))):
            for set_name, (x_fit, y_fit) in sets.items():
                for normalised in (False, True):
                    if pooled == "gap+gmp" and (normalised or set_name != "photo + mirror"):
                        continue
                    scale = (lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)) if normalised else (lambda a: a)
                    for c in C_GRID[normalised]:
                        val_scores, train_scores = fit_scores(scale(x_fit[:, columns]), y_fit,
                                                              [scale(x_val[:, columns]), scale(x_train[:, columns])], c)
                        row = {"side": side, "pooled": pooled, "training": set_name, "normalised": normalised, "C": c,
                               "val_map": classification_metrics(val_scores, y_val)["map"],
                               "train_map": classification_metrics(train_scores, y_train)["map"],
                               "train_true_score": float((1 / (1 + np.exp(-train_scores)))[y_train > 0].mean()),
                               "feature_seconds": seconds}
                        rows.append(row)
                        print(f"| {side} | {pooled} | {set_name} | {'yes' if normalised else 'no'} | {c:g} | "
                              f"{row['val_map']:.3f} | {row['train_map']:.3f} | {row['train_true_score']:.2f} |",
                              flush=True)
    if args.json:
        write_json_atomic(Path(args.json), {"data": str(Path(args.data).resolve()), "views": args.views, "rows": rows})


if __name__ == "__main__":
    main()
