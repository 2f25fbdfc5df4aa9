"""The search that chose stage 2's start, head and learning rate (docs/method.md 6.2), on the
TRAIN splits of both synthetic benchmarks only (val is never looked at).

    python benchmarks/stage2_recipe.py run BENCH LABELS NAME EPOCHS ['{"head": "lraspp", ...}'] \
        --data D --work W [--pseudo P] [--json benchmarks/stage2_recipe.json]
    python benchmarks/stage2_recipe.py table [--json ...]

One run: a segmentation network trained on the first 300 train images (``train300``; the
synthetic benchmarks write that split) for EPOCHS epochs, from LABELS = ``gt`` (their masks) or
``pseudo`` (the folder ``--pseudo``, e.g. dcsm-crf's confident labels), then scored on the other
train images (``trainrest``) against their masks; appended to the JSON list. The JSON object is
any of SegTrainOptions' fields (``head``, ``lr``, ``init_from``: a classifier run trained on
train300 keeps trainrest unseen) plus two variants that were tried and are not train-seg options:
``freeze_bn`` (the backbone's BatchNorm statistics kept at their start) and ``aspp_rates``.

The runs of docs/method.md 6.2 (CPU, two threads, one at a time; about 3 minutes each on
glyphs at 8 epochs) were, for each benchmark B and its train300 classifier C:
``run B gt imagenet-deeplab 8 '{"head": "deeplabv3plus", "init_from": "imagenet"}'``,
``run B gt classifier-lraspp 8 '{"init_from": "C"}'``, and so on over head, lr and start.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from wsseg.data.voc import VOCDataset
from wsseg.models import segnet
from wsseg.models.segnet import SegmentationNet, load_segmentation_run
from wsseg.train_options import SegTrainOptions
from wsseg.train_seg import score_network, train_segmentation

DEFAULT_JSON = Path(__file__).resolve().parent / "stage2_recipe.json"


def _freeze_backbone_batchnorm() -> None:
    """Variant: the backbone's BatchNorm layers stay in eval mode while the network trains."""
    train = SegmentationNet.train

    def frozen(self, mode: bool = True):
        train(self, mode)
        if mode:
            for module in self.backbone.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.eval()
        return self

    SegmentationNet.train = frozen


def _aspp_rates(rates: list[int]) -> None:
    """Variant: the DeepLabV3+ head's ASPP at other dilation rates (ours are DeepLab's 6/12/18,
    made for 33x33 feature maps; our small images give 10-14)."""
    build = segnet.ASPP.__init__

    def with_rates(self, inputs: int, width: int, _rates: tuple[int, ...]) -> None:
        build(self, inputs, width, tuple(rates))

    segnet.ASPP.__init__ = with_rates


def run(args: argparse.Namespace) -> dict:
    options = json.loads(args.options) if args.options else {}
    if options.pop("freeze_bn", False):
        _freeze_backbone_batchnorm()
    if "aspp_rates" in options:
        _aspp_rates(options.pop("aspp_rates"))
    labels = {"ground_truth": True} if args.labels == "gt" else {"pseudo": args.pseudo}
    out = Path(args.work) / f"{args.bench}-{args.labels}-{args.name}-e{args.epochs}"
    started = time.perf_counter()
    train_segmentation(SegTrainOptions(data=args.data, out=str(out), split="train300", val_split=None,
                                       epochs=args.epochs, progress=False, resume=True, device="cpu",
                                       **labels, **options))
    model, config = load_segmentation_run(out)
    miou = score_network(model, VOCDataset(args.data, "trainrest"), "cpu", max_side=config.crop_size)[0].miou()
    result = {"bench": args.bench, "labels": args.labels, "name": args.name, "epochs": args.epochs,
              "options": args.options or "", "head": config.head, "lr": config.lr,
              "start": config.init["source"], "trainrest_miou": round(100 * miou, 2),
              "seconds": round(time.perf_counter() - started)}
    stored = json.loads(args.json.read_text()) if args.json.exists() else []
    if not isinstance(stored, list):
        raise SystemExit(f"{args.json}: not a list of stage2_recipe runs; give another --json")
    args.json.write_text(json.dumps(stored + [result], indent=1) + "\n")
    print(json.dumps(result), flush=True)
    return result


def table(path: Path) -> None:
    print("| benchmark | labels | epochs | start | head | lr | variant | rest-of-train mIoU |")
    print("|---|---|---:|---|---|---:|---|---:|")
    for r in json.loads(path.read_text()):
        print(f"| {r['bench']} | {r['labels']} | {r['epochs']} | {r['start']} | {r['head']} | {r['lr']:g} | "
              f"{r['name']} | {r['trainrest_miou']:.2f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run")
    one.add_argument("bench")
    one.add_argument("labels", choices=["gt", "pseudo"])
    one.add_argument("name")
    one.add_argument("epochs", type=int)
    one.add_argument("options", nargs="?", default="")
    one.add_argument("--data", required=True)
    one.add_argument("--work", required=True)
    one.add_argument("--pseudo")
    show = sub.add_parser("table")
    for command in (one, show):
        command.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    if args.command == "run":
        if args.labels == "pseudo" and not args.pseudo:
            parser.error("pseudo labels need --pseudo FOLDER")
        run(args)
    else:
        table(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
