"""Training speed on the default synthetic benchmark with the default `wsseg train` settings.

Prints training images/s and the wall time (training + per-epoch validation) until the val
mAP first reaches the target (default 0.90). Usage:
    .venv/bin/python benchmarks/train_speed.py [--epochs N] [--target 0.9] [--data ROOT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

from wsseg.data import SynthConfig, write_synthetic_dataset
from wsseg.train import TrainOptions, best_record, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="dataset root (default: synthesise the default benchmark)")
    parser.add_argument("--epochs", type=int, default=TrainOptions.epochs)
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data = args.data or write_synthetic_dataset(Path(scratch) / "bench", SynthConfig(), progress=False)
        history = train(TrainOptions(data=str(data), out=str(Path(scratch) / "run"), epochs=args.epochs,
                                     progress=False))
    reached = next((r for r in history if r.get("val_map", 0) >= args.target), None)
    speed = sum(r["images_per_second"] for r in history) / len(history)
    print()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("| epoch | loss | val mAP | val F1 | img/s | elapsed s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in history:
        print(f"| {r['epoch']} | {r['loss']:.4f} | {r.get('val_map', float('nan')):.3f} | "
              f"{r.get('val_f1', float('nan')):.3f} | {r['images_per_second']:.1f} | {r['elapsed']:.1f} |")
    print()
    print("| metric | value |")
    print("|---|---:|")
    print(f"| training images/s (mean over epochs) | {speed:.1f} |")
    best = best_record(history)
    print(f"| val mAP of the kept model (epoch {best['epoch']} of {len(history)}) | "
          f"{best.get('val_map', float('nan')):.3f} |")
    if reached:
        print(f"| time to val mAP >= {args.target:.2f} | {reached['elapsed']:.0f} s (epoch {reached['epoch']}) |")
    else:
        print(f"| time to val mAP >= {args.target:.2f} | not reached in {len(history)} epochs "
              f"({history[-1]['elapsed']:.0f} s) |")
    if args.json:
        args.json.write_text(json.dumps({"history": history, "images_per_second": speed,
                                         "seconds_to_target": reached["elapsed"] if reached else None}, indent=2))


if __name__ == "__main__":
    main()
