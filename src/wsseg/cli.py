"""The ``wsseg`` command line: parses arguments and calls the library, nothing more.

Every user-facing failure (bad file, bad argument) ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from wsseg.errors import WssegError

EXIT_USAGE = 2


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _add_dataset_args(parser: argparse.ArgumentParser, split_default: str = "val") -> None:
    parser.add_argument("--data", required=True, type=Path, help="VOC-layout dataset root")
    parser.add_argument("--split", default=split_default, help="split name: ImageSets/Segmentation/<split>.txt")
    parser.add_argument("--masks", default="SegmentationClass",
                        help="mask folder under the root (e.g. SegmentationClassAug)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unreadable or inconsistent images and count them, instead of stopping")


def _cmd_synth(args: argparse.Namespace) -> int:
    from wsseg.data.synth import SynthConfig, write_synthetic_dataset

    config = SynthConfig(train=args.train, val=args.val, size=args.size, seed=args.seed)
    root = write_synthetic_dataset(args.out, config, progress=not args.quiet)
    print(f"wrote {config.train} train + {config.val} val images ({config.size} px, seed {config.seed}) to {root}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from wsseg.data.voc import VOCDataset
    from wsseg.evaluate import evaluate_directory, save_result

    dataset = VOCDataset(args.data, args.split, masks=args.masks)
    result = evaluate_directory(args.pred, dataset, skip_bad=args.skip_bad, progress=not args.quiet)
    print(result.table())
    if args.json:
        save_result(args.json, result, {"pred": str(args.pred), "split": args.split})
        print(f"wrote {args.json}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from wsseg.demo import run_demo

    run_demo(args.out, quick=args.quick, progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from wsseg import __version__

    parser = argparse.ArgumentParser(
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
    synth.add_argument("--train", type=_positive_int, default=400, help="training images (default 400)")
    synth.add_argument("--val", type=_positive_int, default=100, help="validation images (default 100)")
    synth.add_argument("--size", type=_positive_int, default=128, help="image side in pixels (default 128)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")

    evaluate = command("evaluate", _cmd_evaluate, "score prediction PNGs with the PASCAL VOC protocol (mIoU)")
    evaluate.add_argument("--pred", required=True, type=Path, help="folder of <id>.png predictions")
    _add_dataset_args(evaluate)
    evaluate.add_argument("--json", type=Path, help="also write the scores as JSON here")

    demo = command("demo", _cmd_demo, "run the whole method on the synthetic benchmark and report")
    demo.add_argument("--out", type=Path, default=Path("demo"), help="output folder (default ./demo)")
    demo.add_argument("--quick", action="store_true", help="smaller data, for a smoke test")
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
