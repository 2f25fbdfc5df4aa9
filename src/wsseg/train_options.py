"""The options of ``wsseg train`` and their defaults, in a module without torch so that the CLI
can show the defaults in ``wsseg train --help`` without importing it."""

from __future__ import annotations

from dataclasses import dataclass

from wsseg.data.images import DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_SIDE


@dataclass
class TrainOptions:
    """What ``wsseg train`` is asked to do; the one source of the training defaults (the CLI and
    RunConfig take theirs from here). The recipe was chosen on the train/val splits of both
    synthetic benchmarks, full and with 300 training images (docs/method.md, section 1.1)."""

    data: str
    out: str
    split: str = "train"
    val_split: str | None = "val"
    masks: str = "SegmentationClass"
    backbone: str = "efficientnet-lite0"
    weights: str | None = None
    random_init: bool = False
    # gap, not the authors' gmp: on our benchmark it reaches val mAP 0.90 in 7 epochs where gmp
    # plateaus near 0.85 after 12 (max pooling sends gradient to one location per class).
    pooling: str = "gap"
    lse_r: float = 5.0
    image_size: int | None = None  # None: the median longer side of the split, rounded up to 32
    output_stride: int = 16
    epochs: int = 30  # the chosen recipe peaked at epochs 22-23 of 30 on all four settings (docs/method.md 1.1)
    batch_size: int = 16
    # images per forward pass, their gradients summed into one step of batch_size (None: auto, the
    # whole batch, but on a CPU with freeze_bn as many as keep a 512 px step near 3 GB; wsseg.train.micro_batch_size)
    micro_batch: int | None = None
    lr: float = 1e-3  # the pretrained backbone's; the new head learns head_lr_scale times faster
    head_lr_scale: float = 10.0
    weight_decay: float = 1e-4
    scale_range: tuple[float, float] = (0.5, 1.5)  # random rescale of the longer side around image_size
    jitter: float = 0.4  # colour jitter strength (brightness, contrast, saturation factors 1 +- jitter)
    patience: int | None = 8  # stop when val mAP has not improved for this many epochs (None: never)
    # a linear probe first: for this many epochs only the new head learns (the backbone and its
    # batch-norm statistics stay as pretrained), then everything is fine-tuned (LP-FT)
    probe_epochs: int = 0
    freeze_bn: bool = False  # the backbone's batch norms keep their pretrained statistics throughout
    cutmix: float = 0.0  # probability that a training crop gets a box of another pasted in (wsseg.train.cutmix)
    seed: int = 0
    workers: int | None = None  # loader processes; None (auto): 0 on a CPU, min(8, cores per rank - 1) on CUDA
    # the training forward pass: auto = bf16 on a CUDA GPU that has it, else fp16; fp32 on a CPU
    precision: str = "auto"
    resume: bool = False
    overwrite: bool = False  # replace a run already in `out` (its files deleted first); else refused
    stop_after: int | None = None  # finish this run after that epoch; the schedule still spans `epochs`
    skip_bad: bool = False
    max_side: int | None = DEFAULT_MAX_SIDE  # longer image sides beyond this are refused unread
    max_file_size: int | None = DEFAULT_MAX_FILE_SIZE  # bytes; larger image and mask files are refused unread
    device: str | None = None
    progress: bool = True


@dataclass
class SegTrainOptions:
    """What ``wsseg train-seg`` is asked to do: a stage-2 segmentation network trained on the label
    maps in ``pseudo`` (``wsseg segment`` output, 255 = ignored), or on the dataset's ``masks``
    with ``ground_truth`` (the fully supervised bound). The recipe: docs/method.md, stage 2."""

    data: str
    out: str
    pseudo: str | None = None
    ground_truth: bool = False
    split: str = "train"
    val_split: str | None = "val"  # val mIoU per epoch, logged only: the run keeps its last epoch
    masks: str = "SegmentationClass"
    backbone: str = "efficientnet-lite0"
    weights: str | None = None
    # where the backbone starts: "auto" (the classifier run that made the pseudo-labels, else
    # ImageNet), "imagenet", or a classifier run folder (docs/method.md, stage 2)
    init_from: str = "auto"
    # lraspp: with the classifier start, as good as deeplabv3plus on average over both benchmarks
    # and never collapsing on glyphs, at less cost (docs/method.md 6.2)
    head: str = "lraspp"
    output_stride: int = 16
    crop_size: int | None = None  # None: the split's median longer side rounded up to 32 (as train)
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3  # AdamW, the pretrained backbone's; the new head learns head_lr_scale times faster
    head_lr_scale: float = 10.0
    weight_decay: float = 1e-4
    scale_range: tuple[float, float] = (0.5, 1.5)
    jitter: float = 0.4
    seed: int = 0
    workers: int | None = None
    precision: str = "auto"
    resume: bool = False
    overwrite: bool = False
    stop_after: int | None = None
    skip_bad: bool = False
    max_side: int | None = DEFAULT_MAX_SIDE
    max_file_size: int | None = DEFAULT_MAX_FILE_SIZE
    device: str | None = None
    progress: bool = True


# ``wsseg train-affinity``'s defaults (wsseg.train_affinity.AffinityOptions reads them; docs/method.md 7)
AFFINITY_DEFAULTS: dict = {"epochs": 8, "batch_size": 8, "lr": 1e-2, "weight_decay": 1e-4, "scale_range": (0.7, 1.3),
                           "radius": 5}
