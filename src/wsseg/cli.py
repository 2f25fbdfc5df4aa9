"""The ``wsseg`` command line: parses arguments and calls the library, nothing more.

Every user-facing failure (bad file, bad argument) ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from wsseg.errors import WssegError
from wsseg.registry import MAP_METHOD_NAMES, METHODS, SEGMENT_METHODS
from wsseg.training.options import (CHECKPOINT_CHOICES, PRECISIONS, AffinityOptions, SegTrainOptions, TrainerOptions,
                                    TrainOptions)

_TRAIN_DEFAULTS = TrainOptions(data="", out="")
_SEG_DEFAULTS = SegTrainOptions(data="", out="")
_AFFINITY_DEFAULTS = AffinityOptions(data="", run="", pseudo="")

EXIT_USAGE = 2
# one meaning for every command that reads a split
DATA_HELP = ("dataset: a VOC-layout root, or a COCO one (a folder with annotations/instances_<split>.json, or "
             "that JSON)")
SPLIT_HELP = "split name: ImageSets/Segmentation/<split>.txt, or COCO's annotations/instances_<split>.json"
SKIP_BAD_HELP = ("skip unreadable or inconsistent images and count them, instead of stopping (a split whose every "
                 "image is bad is refused all the same)")


class _Parser(argparse.ArgumentParser):
    """argparse, with the usual usage block replaced by one line saying what is wrong (exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(f"{text}: a seed is a whole number from 0 to 2**32 - 1")
    return value


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text}: must be a finite number")
    return value


def _add_dataset_args(parser: argparse.ArgumentParser, split_default: str = "val") -> None:
    parser.add_argument("--data", required=True, type=Path, help=DATA_HELP)
    parser.add_argument("--split", default=split_default, help=SPLIT_HELP)
    parser.add_argument("--masks", default="SegmentationClass",
                        help="mask folder under the root (e.g. SegmentationClassAug; COCO masks are rendered)")
    parser.add_argument("--skip-bad", action="store_true", help=SKIP_BAD_HELP)
    _add_max_side(parser)


def _add_max_side(parser: argparse.ArgumentParser) -> None:
    from wsseg.data.images import DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_SIDE

    parser.add_argument("--max-side", type=_positive_int, default=DEFAULT_MAX_SIDE,
                        help=f"refuse images whose longer side exceeds this, before decoding them "
                             f"(default {DEFAULT_MAX_SIDE})")
    parser.add_argument("--max-file-size", type=_positive_int, default=DEFAULT_MAX_FILE_SIZE // 2 ** 20,
                        metavar="MIB", help="refuse image and mask files larger than this many MiB, unread "
                                            f"(default {DEFAULT_MAX_FILE_SIZE // 2 ** 20})")


def _add_trainer_args(parser: argparse.ArgumentParser, defaults: TrainerOptions, lr_help: str) -> None:
    """The flags every trainer shares, each the field of the same name in its options, with that
    trainer's defaults. They parse only: the options check their bounds (TrainerOptions.check)."""
    parser.add_argument("--epochs", type=int, default=defaults.epochs,
                        help=f"epochs; the poly schedule spans them (default {defaults.epochs})")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help=f"default {defaults.batch_size}")
    parser.add_argument("--lr", type=float, default=defaults.lr, help=f"{lr_help} (default {defaults.lr:g})")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                        help=f"AdamW's weight decay (default {defaults.weight_decay:g})")
    parser.add_argument("--scale-range", type=_scale_range, default=defaults.scale_range, metavar="LOW,HIGH",
                        help="random rescale of the image around the crop size (default "
                             f"{','.join(f'{v:g}' for v in defaults.scale_range)})")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=_workers, default=defaults.workers, metavar="N|auto",
                        help="data-loading processes per training process (default auto: 0 on a CPU, where the "
                             "training process uses every core; on CUDA min(8, CPU cores per process - 1), with "
                             "pinned memory and workers kept between epochs)")
    parser.add_argument("--precision", default=defaults.precision, choices=PRECISIONS,
                        help="training forward pass (default auto: bf16 autocast on a CUDA GPU that has it, fp16 "
                             "with a gradient scaler on older GPUs, fp32 on a CPU); maps and segmentation are "
                             "always fp32")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--resume", action="store_true", help="continue after the last finished epoch")
    parser.add_argument("--stop-after", type=int, metavar="EPOCH",
                        help="stop after this epoch (for time-limited jobs; continue later with --resume)")


def _add_run_args(parser: argparse.ArgumentParser, defaults: TrainOptions | SegTrainOptions, out_help: str) -> None:
    """The flags of a trainer that fine-tunes a backbone into a run folder of its own (``train``, ``train-seg``)."""
    parser.add_argument("--data", required=True, type=Path, help=DATA_HELP)
    parser.add_argument("--out", required=True, type=Path, help=out_help)
    parser.add_argument("--split", default=defaults.split, help=f"training split (default {defaults.split})")
    parser.add_argument("--val-split", default="val", help="split scored after every epoch, or 'none' (default val)")
    _add_max_side(parser)
    parser.add_argument("--backbone", default=defaults.backbone, choices=["efficientnet-lite0", "vgg16"])
    parser.add_argument("--weights", help="backbone weights file (torchvision-layout state dict for vgg16)")
    _add_trainer_args(parser, defaults, "backbone learning rate, AdamW")
    parser.add_argument("--head-lr-scale", type=float, default=defaults.head_lr_scale,
                        help=f"the new head's learning rate is this times --lr (default {defaults.head_lr_scale:g})")
    parser.add_argument("--jitter", type=float, default=defaults.jitter,
                        help=f"colour jitter strength, 0 to turn it off (default {defaults.jitter:g})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in --out (its files are deleted first); without it, or "
                             "--resume, a folder holding a run is refused")
    parser.add_argument("--skip-bad", action="store_true", help=SKIP_BAD_HELP)


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    # --run-dir: the spelling to use under torchrun, whose own parser reads `--run` as an ambiguous
    # abbreviation of its --run-path and stops.
    parser.add_argument("--run", "--run-dir", dest="run", required=True, type=Path,
                        help="training run folder (spell it --run-dir under torchrun)")
    parser.add_argument("--batch-size", type=_positive_int, default=8, help="images per batch (default 8)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def _add_label_args(parser: argparse.ArgumentParser, more: str = "") -> None:
    parser.add_argument("--labels", default="gt", choices=["gt", "predicted"],
                        help="classes per image: the image-level labels (gt, default: pseudo-labels) or the "
                             "classifier's (predicted)" + more)
    parser.add_argument("--label-threshold", type=_finite, default=0.5, help="score threshold for --labels predicted")
    parser.add_argument("--scales", type=_parse_numbers, default=None,
                        help="comma-separated input scales for dcsm and cam (dcsm default 0.8,1,1.2)")
    _add_map_side(parser)


def _add_map_side(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--map-side", type=_map_side, default="auto", metavar="auto|none|PIXELS",
                        help="compute the dcsm and cam maps (or run --method seg's network) on the image shrunk to "
                             "this longer side, then up-sample them: auto (default) = the side the classifier was "
                             "trained at (the network's crop size); none = the image's own")


def _map_side(text: str) -> int | str | None:
    """--map-side: 'auto', 'none' or a whole number of pixels (at least MIN_MAP_SIDE)."""
    from wsseg.maps.resolution import MIN_MAP_SIDE  # local: keeps torch out of `--help`

    if text.lower() in ("auto", "none"):
        return None if text.lower() == "none" else "auto"
    try:
        side = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give auto, none or a whole number of pixels") from None
    if side < MIN_MAP_SIDE:
        raise argparse.ArgumentTypeError(f"{side}: at least {MIN_MAP_SIDE} pixels (smaller maps locate nothing)")
    return side


def _add_segment_method(parser: argparse.ArgumentParser, networks: bool = False) -> None:
    """--method: the registry's methods (with ``networks``, stage 2's too), each with its description."""
    rows = METHODS if networks else SEGMENT_METHODS
    parser.add_argument("--method", default="dcsm-crf", choices=list(rows),
                        help="; ".join(f"{name}: {info.description}" for name, info in rows.items())
                        + " (default dcsm-crf)")


def _cmd_synth(args: argparse.Namespace) -> int:
    from wsseg.data.synth import SynthConfig, write_synthetic_dataset

    config = SynthConfig(kind=args.kind, train=args.train, val=args.val, size=args.size, seed=args.seed).resolved()
    root = write_synthetic_dataset(args.out, config, progress=not args.quiet, force=args.force)
    print(f"wrote {config.train} train + {config.val} val {config.kind} images "
          f"({config.size} px, seed {config.seed}) to {root}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from wsseg.evaluate import score_segmentations

    scores = score_segmentations(args.pred, args.data, args.split, args.masks, args.max_side, args.skip_bad,
                                 not args.quiet, args.json, max_file_size=args.max_file_size * 2 ** 20,
                                 ignore_uncertain=args.ignore_uncertain)
    if scores is None:  # another rank than the main one: it only scored its share
        return 0
    print(scores.result.table())
    if scores.oracle:
        print("note: these segmentations used a background threshold tuned on ground truth (oracle)")
    if args.json:
        print(f"wrote {args.json}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from wsseg.training.classifier import best_record, train

    if args.probe_epochs == "all":  # a linear probe alone
        args.probe_epochs = args.epochs
    history = train(_trainer_options(args, TrainOptions))
    best = best_record(history) if history else {}
    if "val_map" in best:
        print(f"[train] done: best val mAP {best['val_map']:.3f} at epoch {best['epoch']}; "
              f"model in {args.out}/model.pt, last epoch in {args.out}/last.pt")
    return 0


def _trainer_options(args: argparse.Namespace, kind: type[TrainerOptions]) -> TrainerOptions:
    """A trainer's arguments as its options (TrainOptions, SegTrainOptions, AffinityOptions): every
    flag is the field of the same name; paths become strings, sizes bytes, ``none`` None."""
    given = {field.name: getattr(args, field.name) for field in dataclasses.fields(kind) if hasattr(args, field.name)}
    given.update({name: str(given[name]) for name in ("data", "out", "run", "pseudo") if given.get(name) is not None})
    if "val_split" in given:
        given["val_split"] = None if args.val_split.lower() == "none" else args.val_split
    return kind(**{**given, "max_file_size": args.max_file_size * 2 ** 20, "progress": not args.quiet})


def _cmd_train_seg(args: argparse.Namespace) -> int:
    from wsseg.training.segnet import train_segmentation

    history = train_segmentation(_trainer_options(args, SegTrainOptions))
    if history and history[-1].get("val_miou") is not None:
        print(f"[train-seg] done: val mIoU {100 * history[-1]['val_miou']:.2f} at the last epoch ({history[-1]['epoch']}); "
              f"network in {args.out}/model.pt")
    return 0


def _count_or(text: str, word: str, meaning: object) -> object:
    """A count (0 or more), or ``word``, which stands for ``meaning``."""
    if text.lower() == word:
        return meaning
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text}: must be 0 or more, or {word}")
    return int(text)


def _workers(text: str) -> int | None:
    """--workers: a count (0: load in the training process), or 'auto' (None) for the device's policy."""
    return _count_or(text, "auto", None)


def _probe_epochs(text: str) -> int | str:
    """--probe-epochs: a count, or 'all' (resolved to --epochs by _cmd_train: a linear probe alone)."""
    return _count_or(text, "all", "all")


def _patience(text: str) -> int | None:
    if text.lower() == "none":
        return None
    return _positive_int(text)


def _scale_range(text: str) -> tuple[float, float]:
    numbers = _parse_numbers(text)
    if len(numbers) != 2 or numbers[0] > numbers[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: give LOW,HIGH with LOW <= HIGH")
    return numbers[0], numbers[1]


def _parse_numbers(text: str) -> tuple[float, ...]:
    """A comma-separated list of positive numbers (scales, thresholds)."""
    try:
        numbers = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not numbers or any(not (0 < n < math.inf) for n in numbers):
        raise argparse.ArgumentTypeError(f"{text!r}: the numbers must be positive and finite")
    return numbers


def _source(args: argparse.Namespace):
    from wsseg.segmentation.runner import SplitSource

    return SplitSource(args.run, args.data, args.split, args.masks, args.max_side, args.max_file_size * 2 ** 20)


def _segment_options(args: argparse.Namespace):
    from wsseg.segmentation.segment import SegmentOptions

    return SegmentOptions(args.method, args.labels, args.label_threshold, args.scales, args.threshold,
                          args.ignore_uncertain, args.tta, args.crf, map_side=args.map_side,
                          classifier=args.classifier)


def _cmd_maps(args: argparse.Namespace) -> int:
    from wsseg.segmentation.map_folders import export_maps

    counts = export_maps(_source(args), args.out, args.method, args.labels, args.label_threshold, args.scales,
                         args.batch_size, args.device, args.skip_bad, not args.quiet, args.overwrite, args.map_side)
    print(f"[maps]{counts.rank_tag} {counts.summary(args.out)}")
    return 0


def _cmd_segment(args: argparse.Namespace) -> int:
    from wsseg.segmentation.segment import segment_dataset, segment_image_file

    if args.image is not None:
        if args.maps:
            raise WssegError("--maps fuses the maps of a split (--data); --image computes its own")
        if args.labels == "gt":  # given: the parser's default is None
            raise WssegError("--image has no ground-truth labels; use --labels predicted (or leave --labels out)")
        one = segment_image_file(args.run, args.image, args.out, _segment_options(args), args.max_side, args.device,
                                 args.max_file_size * 2 ** 20)
        print(f"[segment] {args.image}: {', '.join(one.classes)} -> {one.label_png} and {one.overlay_png}")
        return 0
    if args.data is None:
        raise WssegError("give --data ROOT (with --split) to segment a split, or --image FILE for one image")
    counts = segment_dataset(_source(args), args.out, _segment_options(args), args.batch_size, args.device,
                             args.skip_bad, not args.quiet, args.maps, args.overwrite)
    print(f"[segment]{counts.rank_tag} {counts.summary(args.out)}")
    return 0


def _cmd_train_misvm(args: argparse.Namespace) -> int:
    from wsseg.segmentation.train_misvm import train_misvm_from_run

    report = train_misvm_from_run(_source(args), args.batch_size, args.device, args.skip_bad, not args.quiet,
                                  args.seed)
    print(f"[train-misvm] {report.images} images, {report.instances} superpixels, {report.skipped} skipped "
          f"-> {report.path}")
    return 0


def _cmd_train_affinity(args: argparse.Namespace) -> int:
    from wsseg.training.affinity import train_affinity

    history = train_affinity(_trainer_options(args, AffinityOptions))
    if history:
        print(f"[train-affinity] done: {len(history)} epochs, last loss {history[-1]['loss']:.4f}; "
              f"{args.run}/affinity.pt and {args.run}/affinity.json")
    return 0


def _cmd_tune_background(args: argparse.Namespace) -> int:
    from wsseg.segmentation.tune import tune_background_on_split

    curve, best = tune_background_on_split(_source(args), args.method, args.thresholds, args.scales,
                                           args.batch_size, args.device, args.skip_bad, not args.quiet, args.map_side)
    print(f"{'threshold':>9}  {'mIoU':>7}")
    for row in curve:
        score = "-" if row["miou"] is None else f"{100 * row['miou']:6.2f}%"
        print(f"{row['threshold']:9.3f}  {score:>7}")
    print(f"[tune-background] {args.method}: threshold {best['threshold']} (mIoU {100 * best['miou']:.2f}% on "
          f"{args.split}, tuned on ground truth) stored in {args.run}/background.json")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from wsseg.report import build_report

    index = build_report(args.folder, data=args.data, run=args.run, split=args.split, examples=args.examples)
    print(f"[report] wrote {index}")
    return 0


def _cmd_export_voc(args: argparse.Namespace) -> int:
    from wsseg.data.export import export_voc

    done = export_voc(args.data, args.split, args.out, args.max_side, args.max_file_size * 2 ** 20, not args.quiet,
                      args.skip_bad)
    print(f"[export-voc] {done.images} images ({done.unannotated} without any annotation, all background; "
          f"{done.linked} hard-linked, {done.converted} converted to PNG, "
          f"{done.images - done.linked - done.converted} copied; {done.skipped} bad images skipped) -> {args.out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from wsseg.demo import run_demo

    run_demo(args.out, quick=args.quick, progress=not args.quiet, pseudo_method=args.pseudo_method)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from wsseg import __version__

    parser = _Parser(
        prog="wsseg", description="Weakly-supervised semantic segmentation from image-level labels.")
    parser.add_argument("--version", action="version", version=f"wsseg {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--quiet", action="store_true", help="no progress bars")
        sub.set_defaults(handler=handler)
        return sub

    synth = command("synth", _cmd_synth, "write the synthetic VOC-layout benchmark")
    synth.add_argument("out", type=Path, help="output dataset root")
    synth.add_argument("--kind", default="shapes", choices=["shapes", "glyphs"],
                       help="shapes: 6 shape classes, square images (the fast demo benchmark, default); glyphs: "
                            "20 font-glyph classes at VOC-like sizes and aspect ratios")
    synth.add_argument("--train", type=_positive_int, help="training images (default 400 shapes / 600 glyphs)")
    synth.add_argument("--val", type=_positive_int, help="validation images (default 100 shapes / 200 glyphs)")
    synth.add_argument("--size", type=_positive_int,
                       help="image side (shapes, default 128) or longest possible side (glyphs, default 224; "
                            "500 gives VOC's scale)")
    synth.add_argument("--seed", type=_seed, default=0, help="random seed; same seed, same bytes (default 0)")
    synth.add_argument("--force", action="store_true", help="write into a folder that is not empty")

    evaluate = command("evaluate", _cmd_evaluate, "score prediction PNGs with the PASCAL VOC protocol (mIoU)")
    evaluate.add_argument("--pred", required=True, type=Path, help="folder of <id>.png predictions")
    _add_dataset_args(evaluate)
    evaluate.add_argument("--json", type=Path, help="also write the scores as JSON here")
    evaluate.add_argument("--ignore-uncertain", action="store_true",
                          help="score only the pixels a prediction does not mark 255 (confident pseudo-labels) "
                               "and report the fraction left out; without it a predicted 255 counts as background")

    train = command("train", _cmd_train, "train the multi-label FCN classifier on image-level labels")
    _add_run_args(train, _TRAIN_DEFAULTS, "run folder (model.pt, config.json, history.json)")
    train.add_argument("--masks", default="SegmentationClass", help="mask folder (labels fall back to masks)")
    train.add_argument("--random-init", action="store_true", help="start from random weights (not advised)")
    train.add_argument("--pooling", default=_TRAIN_DEFAULTS.pooling, choices=["gmp", "gap", "lse"],
                       help="global pooling of the class score maps: gap (default, trains fastest), gmp "
                            "(global max, the authors'), lse")
    train.add_argument("--lse-r", type=float, default=_TRAIN_DEFAULTS.lse_r,
                       help=f"sharpness r of lse pooling (default {_TRAIN_DEFAULTS.lse_r:g})")
    train.add_argument("--image-size", type=int, default=None,
                       help="training crop side, a multiple of 32 (default: the split's median longer side "
                            "rounded up to 32, at most 512)")
    train.add_argument("--output-stride", type=int, default=16, choices=[8, 16, 32],
                       help="class map stride: lower gives finer maps, costs time (default 16)")
    train.add_argument("--patience", type=_patience, default=_TRAIN_DEFAULTS.patience,
                       help="stop when val mAP has not improved for this many epochs, or 'none' "
                            f"(default {_TRAIN_DEFAULTS.patience}); model.pt always keeps the best epoch")
    train.add_argument("--micro-batch", type=int, default=None, metavar="N",
                       help="images per forward pass; their gradients add up to one step of --batch-size "
                            "(default auto: the whole batch; on a CPU with --freeze-bn 4 crops of 512 px, 16 of 256, "
                            "which keeps training at 512 px near 3 GB; with training-mode batch norms each part "
                            "is normalised by its own statistics)")
    train.add_argument("--probe-epochs", type=_probe_epochs, default=_TRAIN_DEFAULTS.probe_epochs, metavar="N|all",
                       help="train only the new head for this many epochs first (a linear probe: the backbone "
                            f"and its batch-norm statistics stay as pretrained), then fine-tune everything; 'all' (or --epochs): "
                            "a linear probe alone, the backbone never differentiated, best with a hundred photos "
                            f"of everyday objects (docs/method.md 1.5; default {_TRAIN_DEFAULTS.probe_epochs})")
    train.add_argument("--cutmix", type=float, default=_TRAIN_DEFAULTS.cutmix, metavar="P",
                       help="probability that a training crop gets a box of another crop of its batch pasted in, "
                            f"its labels mixed by area (multi-label CutMix; default {_TRAIN_DEFAULTS.cutmix:g})")
    train.add_argument("--freeze-bn", action=argparse.BooleanOptionalAction, default=_TRAIN_DEFAULTS.freeze_bn,
                       help="keep the backbone's pretrained batch-norm statistics while fine-tuning "
                            f"(default {'on' if _TRAIN_DEFAULTS.freeze_bn else 'off'})")
    train.add_argument("--checkpoint-activations", choices=CHECKPOINT_CHOICES,
                       default=_TRAIN_DEFAULTS.checkpoint_activations,
                       help="recompute the backbone blocks' activations in the backward pass instead of keeping "
                            "them: about a third of the memory for one more forward pass, the same result "
                            "(default auto: on a CPU when a forward pass holds more than 4 crops of 512 px, "
                            "as the whole batch of 16 at 512 px does)")

    train_seg = command("train-seg", _cmd_train_seg,
                        "stage 2: train a segmentation network on pseudo-labels (or on ground truth: the bound)")
    _add_run_args(train_seg, _SEG_DEFAULTS, "run folder of the network (model.pt, config.json, history.json)")
    labels = train_seg.add_mutually_exclusive_group(required=True)
    labels.add_argument("--pseudo", type=Path, metavar="FOLDER",
                        help="pseudo-labels: the <id>.png of `wsseg segment` (255 = ignored, e.g. --ignore-uncertain)")
    labels.add_argument("--ground-truth", action="store_true",
                        help="train on the dataset's masks (--masks) instead: the fully supervised bound")
    train_seg.add_argument("--masks", default="SegmentationClass",
                           help="mask folder: val mIoU per epoch, and the labels of --ground-truth")
    train_seg.add_argument("--init-from", default=_SEG_DEFAULTS.init_from, metavar="auto|imagenet|RUN",
                           help="where the backbone starts: auto (default) takes the classifier run that made the "
                                "--pseudo labels (their segment.json names it; ImageNet when it is gone or changed, "
                                "and with --ground-truth), imagenet, or a classifier run folder (give the pseudo "
                                "network's run with --ground-truth for a like-for-like bound)")
    train_seg.add_argument("--head", default=_SEG_DEFAULTS.head, choices=["deeplabv3plus", "lraspp"],
                           help="lraspp (MobileNetV3's Lite R-ASPP, default) or deeplabv3plus (ASPP + low-level skip)")
    train_seg.add_argument("--output-stride", type=int, default=16, choices=[8, 16],
                           help="backbone output stride: 8 is finer and slower (default 16)")
    train_seg.add_argument("--crop-size", type=int, default=None,
                           help="training crop side, a multiple of 32 (default: the split's median longer side "
                                "rounded up to 32, at most 512)")

    maps = command("maps", _cmd_maps, "write class maps (saliency, CAM, ...) for every image of a split")
    _add_model_args(maps)
    _add_dataset_args(maps)
    maps.add_argument("--method", default="dcsm", choices=MAP_METHOD_NAMES)
    maps.add_argument("--out", required=True, type=Path, help="folder for <id>.npz and <id>.png")
    maps.add_argument("--overwrite", action="store_true",
                      help="replace the maps of a folder made with other options or weights (else refused)")
    _add_label_args(maps)

    segment = command("segment", _cmd_segment, "segment a split (VOC palette PNGs) or one image")
    _add_model_args(segment)
    segment.add_argument("--data", type=Path, help=DATA_HELP)
    segment.add_argument("--split", default="val")
    segment.add_argument("--masks", default="SegmentationClass")
    segment.add_argument("--maps", action="append", default=[], type=Path, metavar="DIR",
                         help="fuse the maps `wsseg maps` wrote in DIR instead of computing them; one folder per "
                              "map method the segmenter reads (repeat for pipeline-b's cam and dcsm)")
    segment.add_argument("--image", type=Path, help="segment this one image (predicted labels) instead of a split")
    _add_segment_method(segment, networks=True)
    segment.add_argument("--out", required=True, type=Path, help="output folder (split) or PNG file (--image)")
    segment.add_argument("--tta", action="store_true",
                         help="--method seg: average the network over scales 0.75,1,1.25 and their flips")
    segment.add_argument("--crf", action="store_true", help="--method seg: refine with DeepLab's dense CRF")
    segment.add_argument("--classifier", type=Path, metavar="RUN",
                         help="--method seg --labels predicted: the classifier run that predicts each image's "
                              "classes (default: the one the network's config.json names)")
    segment.add_argument("--ignore-uncertain", action="store_true",
                         help="confident pseudo-labels: segment at a lower and a higher background threshold, "
                              "refine both with IRN's label CRF, and write 255 where they disagree")
    segment.add_argument("--overwrite", action="store_true",
                         help="replace the segmentations of a folder made with other options, data or weights "
                              "(else refused)")
    _add_label_args(segment, "; --method seg: the only classes its network may paint (default: any class)")
    # not given: the method's (gt for the map methods; for seg, every class may be painted)
    segment.set_defaults(labels=None, label_threshold=None)
    segment.add_argument("--threshold", type=_finite, default=None,
                         help="background threshold on maps normalised to max 1 (default: the method's)")
    segment.add_argument("--skip-bad", action="store_true", help=SKIP_BAD_HELP)
    _add_max_side(segment)

    misvm = command("train-misvm", _cmd_train_misvm,
                    "train pipeline A's mi-SVM on zoom-out superpixel features (image labels only)")
    _add_model_args(misvm)
    _add_dataset_args(misvm, split_default="train")
    misvm.add_argument("--seed", type=_seed, default=0)

    affinity = command("train-affinity", _cmd_train_affinity,
                       "train the affinity network of the random-walk methods (cam-rw, dcsm-rw) on confident "
                       "pseudo-labels, into RUN/affinity.pt")
    affinity.add_argument("--run", "--run-dir", dest="run", required=True, type=Path,
                          help="the classifier's run folder (its backbone stays frozen; spell it --run-dir under "
                               "torchrun)")
    _add_dataset_args(affinity, split_default=_AFFINITY_DEFAULTS.split)
    affinity.add_argument("--pseudo", required=True, type=Path,
                          help="folder of pseudo-label PNGs written by `wsseg segment` (255 = ignored), e.g. "
                               "--method dcsm-crf --labels gt --ignore-uncertain on the same split")
    _add_trainer_args(affinity, _AFFINITY_DEFAULTS, "AdamW learning rate of the head")
    affinity.add_argument("--image-size", type=int, default=None,
                          help="training crop side, a multiple of 32 (default: the classifier's)")
    affinity.add_argument("--radius", type=int, default=_AFFINITY_DEFAULTS.radius,
                          help=f"pairs within this many grid pixels (stride 4; default {_AFFINITY_DEFAULTS.radius})")
    affinity.add_argument("--limit", type=int, default=None, metavar="N", help="train on the split's first N images only")
    affinity.add_argument("--overwrite", action="store_true",
                          help="replace the affinity network already in the run (its files are deleted first); "
                               "without it, or --resume, a run holding one is refused")

    tune = command("tune-background", _cmd_tune_background,
                   "choose a method's background threshold on a labelled split (an oracle choice)")
    _add_model_args(tune)
    _add_dataset_args(tune, split_default="train")
    _add_segment_method(tune)
    tune.add_argument("--thresholds", type=_parse_numbers, default=None,
                      help="comma-separated thresholds to try (default 0.05..0.95; coarser for CRF methods)")
    tune.add_argument("--scales", type=_parse_numbers, default=None, help="input scales for dcsm and cam")
    _add_map_side(tune)

    report = command("report", _cmd_report, "write FOLDER/report/index.html from FOLDER's scores and predictions")
    report.add_argument("folder", type=Path, help="results folder: scores/<method>.json, predictions/<method>/ "
                        "(the layout `wsseg demo` writes)")
    report.add_argument("--data", type=Path, help="dataset root (default FOLDER/data)")
    report.add_argument("--run", type=Path, help="classifier run folder, for the curve and DCSM maps "
                        "(default FOLDER/run)")
    report.add_argument("--split", default="val", help="split the predictions belong to (default val)")
    report.add_argument("--examples", type=_positive_int, default=8, help="images in the example grid (default 8)")

    export = command("export-voc", _cmd_export_voc,
                     "write a VOC-layout copy of a COCO split (images, rendered masks, labels, split file)")
    export.add_argument("--data", required=True, type=Path, help="COCO dataset (folder or instances JSON)")
    export.add_argument("--split", default="val2014", help="annotations/instances_<split>.json (default val2014)")
    export.add_argument("--out", required=True, type=Path, help="new or empty folder (or an earlier export's)")
    export.add_argument("--skip-bad", action="store_true", help=SKIP_BAD_HELP)
    _add_max_side(export)

    demo = command("demo", _cmd_demo, "run the whole method on the synthetic benchmark and report")
    demo.add_argument("--out", type=Path, default=Path("demo"), help="output folder (default ./demo)")
    demo.add_argument("--quick", action="store_true", help="smaller data, for a smoke test")
    demo.add_argument("--pseudo-method", default="dcsm-crf", choices=list(SEGMENT_METHODS),
                      help="the method whose confident pseudo-labels of train teach the stage-2 network "
                           "(default dcsm-crf)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except WssegError as exc:
        print(f"wsseg {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"wsseg {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"wsseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
