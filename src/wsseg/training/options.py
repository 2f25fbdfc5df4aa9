"""What each trainer is asked to do, in one family of frozen dataclasses, torch-free so that the CLI
shows the defaults in ``--help`` without importing torch.

:class:`TrainerOptions` holds what every trainer shares (the data, the schedule, the device, resume
and overwrite) and :meth:`TrainerOptions.check` is the one place an option's bounds are checked;
each trainer's class adds its own fields and checks. The CLI builds every one of them the same way,
from the argparse namespace by field name (``wsseg.cli``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from wsseg.data.images import DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_SIDE
from wsseg.errors import WssegError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
CHECKPOINT_CHOICES = ("auto", "on", "off")
# the largest crop side accepted: beyond it one batch would not fit in memory
MAX_IMAGE_SIZE = 1024


@dataclass(frozen=True, kw_only=True)
class TrainerOptions:
    """What every trainer shares; a flag of the same name (``--batch-size``) sets each field."""

    data: str
    split: str = "train"
    masks: str = "SegmentationClass"
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    scale_range: tuple[float, float] = (0.5, 1.5)  # random rescale of the longer side around the crop size
    seed: int = 0
    workers: int | None = None  # loader processes; None (auto): 0 on a CPU, min(8, cores per rank - 1) on CUDA
    # the training forward pass: auto = bf16 on a CUDA GPU that has it, else fp16; fp32 on a CPU
    precision: str = "auto"
    device: str | None = None  # None or "auto": a GPU when there is one
    resume: bool = False
    overwrite: bool = False  # replace a network already there (its files deleted first); else refused
    stop_after: int | None = None  # finish this run after that epoch; the schedule still spans `epochs`
    skip_bad: bool = False
    max_side: int | None = DEFAULT_MAX_SIDE  # longer image sides beyond this are refused unread
    max_file_size: int | None = DEFAULT_MAX_FILE_SIZE  # bytes; larger image and mask files are refused unread
    progress: bool = True

    def check(self) -> None:
        """Refuse options out of bounds, one line naming the flag (the CLI's types only parse)."""
        if not 0 <= self.seed < 2 ** 32:
            raise WssegError(f"--seed {self.seed}: must be from 0 to 2**32 - 1")
        if self.precision not in PRECISIONS:
            raise WssegError(f"--precision {self.precision!r}: choose from {', '.join(PRECISIONS)}")
        low, high = self.scale_range
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
            raise WssegError(f"--scale-range {low},{high}: needs 0 < low <= high")
        for name in ("epochs", "batch_size"):
            _at_least(name, getattr(self, name), 1)
        if self.stop_after is not None:
            _at_least("stop_after", self.stop_after, 1)
        if self.workers is not None and self.workers < 0:
            raise WssegError(f"--workers {self.workers}: must be 0 or more (or auto)")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise WssegError(f"--lr {self.lr}: must be a finite positive number")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise WssegError(f"--weight-decay {self.weight_decay}: must be a finite number, 0 or more")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise WssegError(f"{_flag(name)} {value}: must be at least {low}")


def _crop_side(name: str, value: int | None) -> None:
    if value is not None and not (32 <= value <= MAX_IMAGE_SIZE and value % 32 == 0):
        raise WssegError(f"{_flag(name)} {value}: must be a multiple of 32 from 32 to {MAX_IMAGE_SIZE} (a batch "
                         f"of 16 crops of {MAX_IMAGE_SIZE} px already needs tens of GB; IRN trains VOC at 512)")


@dataclass(frozen=True, kw_only=True)
class RunOptions(TrainerOptions):
    """A network fine-tuned from a pretrained backbone into a run folder of its own (``out``)."""

    out: str
    val_split: str | None = "val"
    backbone: str = "efficientnet-lite0"
    weights: str | None = None
    output_stride: int = 16
    lr: float = 1e-3  # AdamW, the pretrained backbone's; the new head learns head_lr_scale times faster
    head_lr_scale: float = 10.0
    jitter: float = 0.4  # colour jitter strength (brightness, contrast, saturation factors 1 +- jitter)

    def check(self) -> None:
        super().check()
        if not (math.isfinite(self.head_lr_scale) and self.head_lr_scale > 0):
            raise WssegError(f"--head-lr-scale {self.head_lr_scale}: must be a finite positive number")
        if not (math.isfinite(self.jitter) and 0 <= self.jitter < 1):
            raise WssegError(f"--jitter {self.jitter}: must be in [0, 1)")


@dataclass(frozen=True, kw_only=True)
class TrainOptions(RunOptions):
    """What ``wsseg train`` is asked to do; the one source of the training defaults (the CLI and
    RunConfig take theirs from here). The recipe was chosen on the train/val splits of both
    synthetic benchmarks, full and with 300 training images (docs/method.md, section 1.1)."""

    random_init: bool = False
    # gap, not the authors' gmp: on our benchmark it reaches val mAP 0.90 in 7 epochs where gmp
    # plateaus near 0.85 after 12 (max pooling sends gradient to one location per class).
    pooling: str = "gap"
    lse_r: float = 5.0
    image_size: int | None = None  # None: the median longer side of the split, rounded up to 32
    epochs: int = 30  # the chosen recipe peaked at epochs 22-23 of 30 on all four settings (docs/method.md 1.1)
    batch_size: int = 16
    # images per forward pass, their gradients summed into one step of batch_size (None: auto, the whole
    # batch, but on a CPU with freeze_bn as many as keep a 512 px step near 3 GB; classifier.micro_batch_size)
    micro_batch: int | None = None
    patience: int | None = 8  # stop when val mAP has not improved for this many epochs (None: never)
    # a linear probe first: for this many epochs only the new head learns (the backbone and its
    # batch-norm statistics stay as pretrained), then everything is fine-tuned (LP-FT); equal to
    # epochs, the run is a linear probe alone and the backbone is never differentiated
    probe_epochs: int = 0
    freeze_bn: bool = False  # the backbone's batch norms keep their pretrained statistics throughout
    # activation checkpointing of the backbone's blocks: "on", "off", or "auto": on a CPU when one forward
    # pass holds more pixels than CPU_PASS_PIXELS (classifier.uses_activation_checkpointing). The result is
    # the same.
    checkpoint_activations: str = "auto"
    cutmix: float = 0.0  # probability that a training crop gets a box of another pasted in (classifier.cutmix)

    def check(self) -> None:
        super().check()
        _crop_side("image_size", self.image_size)
        if not (math.isfinite(self.lse_r) and self.lse_r > 0):
            raise WssegError(f"--lse-r {self.lse_r}: must be a finite positive number")
        if self.patience is not None and self.patience < 1:
            raise WssegError("--patience must be at least 1 (or 'none')")
        if self.micro_batch is not None:
            _at_least("micro_batch", self.micro_batch, 1)
        if self.checkpoint_activations not in CHECKPOINT_CHOICES:
            raise WssegError(f"--checkpoint-activations {self.checkpoint_activations!r}: choose from "
                             f"{', '.join(CHECKPOINT_CHOICES)}")
        if not 0 <= self.cutmix <= 1:
            raise WssegError(f"--cutmix {self.cutmix}: a probability, in [0, 1]")
        if not 0 <= self.probe_epochs <= self.epochs:
            raise WssegError(f"--probe-epochs {self.probe_epochs}: must be at least 0 and at most --epochs "
                             f"({self.epochs}; equal to it, a linear probe alone)")

    @property
    def probe_only(self) -> bool:
        """Whether the run is a linear probe alone: the backbone never moves."""
        return self.probe_epochs >= self.epochs


@dataclass(frozen=True, kw_only=True)
class SegTrainOptions(RunOptions):
    """What ``wsseg train-seg`` is asked to do: a stage-2 segmentation network trained on the label
    maps in ``pseudo`` (``wsseg segment`` output, 255 = ignored), or on the dataset's ``masks``
    with ``ground_truth`` (the fully supervised bound). The recipe: docs/method.md, stage 2."""

    pseudo: str | None = None
    ground_truth: bool = False
    val_split: str | None = "val"  # val mIoU per epoch, logged only: the run keeps its last epoch
    # where the backbone starts: "auto" (the classifier run that made the pseudo-labels, else
    # ImageNet), "imagenet", or a classifier run folder (docs/method.md, stage 2)
    init_from: str = "auto"
    # lraspp: with the classifier start, as good as deeplabv3plus on average over both benchmarks
    # and never collapsing on glyphs, at less cost (docs/method.md 6.2)
    head: str = "lraspp"
    crop_size: int | None = None  # None: the split's median longer side rounded up to 32 (as train)
    epochs: int = 20
    batch_size: int = 8

    def check(self) -> None:
        super().check()
        _crop_side("crop_size", self.crop_size)


@dataclass(frozen=True, kw_only=True)
class AffinityOptions(TrainerOptions):
    """What ``wsseg train-affinity`` is asked to do: the affinity head of the classifier ``run``,
    trained on the pseudo-labels in ``pseudo``, and the defaults (docs/method.md, section 7)."""

    run: str
    pseudo: str
    epochs: int = 8
    batch_size: int = 8
    lr: float = 1e-2  # AdamW on the new head alone (the backbone is frozen)
    scale_range: tuple[float, float] = (0.7, 1.3)
    image_size: int | None = None  # crop side; None: the classifier's training size
    radius: int = 5  # pairs within this many grid pixels (psa's radius); the model bounds it (MAX_RADIUS)
    limit: int | None = None  # train on the split's first N images only (None: all)

    def check(self) -> None:
        super().check()
        _at_least("radius", self.radius, 1)
        _crop_side("image_size", self.image_size)
        if self.limit is not None:
            _at_least("limit", self.limit, 1)
