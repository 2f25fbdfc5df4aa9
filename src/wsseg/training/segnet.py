"""Stage 2's task (``wsseg train-seg``): a segmentation network trained on label maps by
:func:`wsseg.training.loop.fit`.

The labels are pseudo-labels (a ``wsseg segment`` folder; 255 marks pixels left out, e.g. by
``--ignore-uncertain``) or, with ``ground_truth``, the dataset's masks: the same network and
budget trained on both gives the weak/full ratio, the one number that says how good the weak
supervision is. The loss is per-pixel cross-entropy that ignores 255 (its gradient there is
exactly zero), the augmentation random scale, crop, flip and colour jitter.

Val mIoU is measured after every epoch and logged only: the run keeps its last epoch, because
choosing an epoch by val masks would be an oracle for weak supervision.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from wsseg.data.loading import SegmentationPairs
from wsseg.data.transforms import to_tensor
from wsseg.data.voc import VOCDataset
from wsseg.distributed import ProcessGroup
from wsseg.errors import DataError, WssegError
from wsseg.evaluate import ConfusionMatrix
from wsseg.io import file_sha256
from wsseg.models.run import RunConfig
from wsseg.models.segnet import (HEADS, SegmentationNet, SegRunConfig, build_segmentation_net,
                                 init_backbone_from_classifier, network_probabilities, start_record)
from wsseg.training.loop import Task, fit
from wsseg.training.options import SegTrainOptions
from wsseg.training.pseudo import check_pseudo_record, pseudo_label_source, read_pseudo_record
from wsseg.training.steps import (auto_image_size, head_optimizer, peak_memory_mb, same_setting, training_splits,
                                  unannotated_note)

IGNORE = 255  # the label value no loss falls on (VOC's void, and uncertain pseudo-labels)
# the config fields that must equal the run's to --resume it
_RESUME_MUST_MATCH = ("classes", "labels", "init", "backbone", "head", "output_stride", "crop_size", "epochs",
                      "batch_size", "lr", "head_lr_scale", "weight_decay", "scale_range", "jitter", "seed", "split",
                      "data")


def train_segmentation(options: SegTrainOptions) -> list[dict]:
    """Train (or resume) a segmentation network into ``options.out``; returns the history.

    SEGRUN/model.pt holds the last finished epoch, SEGRUN/last.pt the same with the optimiser
    (for ``--resume``), SEGRUN/history.json one record per epoch (loss, images/s, peak memory,
    val mIoU), SEGRUN/config.json the network and where its labels came from."""
    return fit(SegmentationTask(), options)


class SegmentationTask(Task):
    """The stage-2 network: label maps, cross-entropy ignoring 255, the last epoch kept."""

    tag = "train-seg"

    def prepare(self, options: SegTrainOptions, group: ProcessGroup) -> SegTrainOptions:
        if options.head not in HEADS:
            raise WssegError(f"--head {options.head!r}: choose from {', '.join(HEADS)}")
        self.train_set, self.val_set = training_splits(options)
        self.labels, labels_record = label_source(options, self.train_set)
        if options.crop_size is None:
            options = dataclasses.replace(options, crop_size=auto_image_size(self.train_set))
        self.options = options
        self.config = SegRunConfig(
            classes=list(self.train_set.classes.foreground), labels=labels_record, backbone=options.backbone,
            head=options.head, output_stride=options.output_stride, crop_size=int(options.crop_size),
            epochs=options.epochs, batch_size=options.batch_size, lr=options.lr, head_lr_scale=options.head_lr_scale,
            weight_decay=options.weight_decay, scale_range=list(options.scale_range), jitter=options.jitter,
            seed=options.seed, split=options.split, val_split=options.val_split,
            data=str(Path(options.data).resolve()), masks=options.masks)
        self.start, self.start_note = backbone_start(options, labels_record)
        self.is_main = group.is_main
        return options

    def read_record(self, folder: Path) -> SegRunConfig:
        return SegRunConfig.load(folder)

    def continue_from(self, previous: SegRunConfig) -> None:
        # the weights come from the checkpoint: an explicit --init-from must be the run's, auto is
        self.config.init = previous.init if self.options.init_from == "auto" else start_record(self.start)
        self.start_note = f"backbone as the run began ({self.config.init.get('source')}), its weights from last.pt"

    def changed(self, previous: SegRunConfig, resuming: bool) -> list[str]:
        # without a checkpoint, where the backbone starts is decided afresh
        names = _RESUME_MUST_MATCH if resuming else tuple(name for name in _RESUME_MUST_MATCH if name != "init")
        return [name for name in names if not same_setting(name, getattr(previous, name), getattr(self.config, name))]

    def build(self, resuming: bool) -> SegmentationNet:
        options, start = self.options, self.start
        if not resuming and start is None and options.init_from == "auto" and \
                self.config.labels.get("source") == "pseudo" and self.is_main:  # not what auto meant: say so, even --quiet
            print(f"[train-seg] warning: {self.start_note}", file=sys.stderr, flush=True)
        with warnings.catch_warnings():
            if start is not None:  # no 'randomly initialised' warning: the classifier's weights come next
                warnings.simplefilter("ignore")
            model = build_segmentation_net(self.train_set.num_classes, options.backbone, options.head,
                                           weights=options.weights, output_stride=options.output_stride,
                                           pretrained=start is None)
        if not resuming and start is not None:
            init_backbone_from_classifier(model, options.backbone, start)
            self.config.init = start_record(start)
        return model

    def optimizer(self, model: SegmentationNet) -> torch.optim.Optimizer:
        return head_optimizer(model, model.head_parameters(), self.options.lr, self.options.weight_decay,
                              self.options.head_lr_scale)

    def items(self) -> Dataset:
        options = self.options
        return SegmentationPairs(self.train_set, self.labels, self.config.crop_size, options.seed,
                                 options.scale_range, options.jitter)

    def describe(self, group: ProcessGroup, precision: str, workers: int) -> str:
        where = "ground-truth masks" if self.labels is None else f"pseudo-labels in {self.labels}"
        return (f"{self.options.head} on {self.options.backbone}, {group.world_size} x {group.device}, {precision}, "
                f"{workers} loader worker(s) per process; {where}; {self.start_note}{unannotated_note(self.train_set)}")

    def batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return inputs.contiguous(memory_format=torch.channels_last), targets

    def forward(self, net: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return net(inputs)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return segmentation_loss(outputs, targets), {}

    def epoch_facts(self, device: torch.device, first_step_seconds: float) -> dict[str, float]:
        return {"peak_memory_mb": peak_memory_mb(device)}

    def validate(self, model: SegmentationNet, group: ProcessGroup, workers: int, record: dict) -> None:
        if self.val_set is None:
            return
        started = time.perf_counter()
        confusion, skipped = score_network(model, self.val_set, group.device, self.options.skip_bad,
                                           self.config.crop_size)
        miou = confusion.miou()
        record.update(val_miou=None if miou is None else float(miou), val_skipped=skipped,
                      val_seconds=time.perf_counter() - started)

    def write_record(self, folder: Path) -> None:
        self.config.save(folder)

    def summary(self, record: dict, best: bool, workers: int) -> str:
        summary = f"loss {record['loss']:.4f}"
        if record.get("val_miou") is not None:
            summary += f", val mIoU {100 * record['val_miou']:.2f} (logged only)"
        summary += f" ({record['images_per_second']:.1f} img/s, peak {record['peak_memory_mb']:.0f} MB"
        return summary + (f", {record['skipped']} bad images skipped)" if record["skipped"] else ")")


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the pixels not labelled 255; 0 (with a zero gradient, so every
    DDP rank still takes its backward pass) when a batch has none."""
    valid = int((labels != IGNORE).sum())
    total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE, reduction="sum")
    return total / max(valid, 1)


def label_source(options: SegTrainOptions, dataset: VOCDataset) -> tuple[Path | None, dict[str, Any]]:
    """The folder of the training label maps (None: the dataset's masks) and what config.json
    records about them: for pseudo-labels, what ``PSEUDO/segment.json`` says made them."""
    if options.ground_truth == (options.pseudo is not None):
        raise WssegError("give --pseudo FOLDER (pseudo-labels from `wsseg segment`) or --ground-truth "
                         "(the dataset's masks: the fully supervised bound), not both or neither")
    if options.ground_truth:
        return None, {"source": "ground-truth", "masks": options.masks}
    folder = Path(options.pseudo)
    if not folder.is_dir():
        raise WssegError(f"{folder}: pseudo-label folder does not exist")
    missing = [image_id for image_id in dataset.ids if not (folder / f"{image_id}.png").is_file()]
    if missing and not options.skip_bad:
        raise DataError(folder / f"{missing[0]}.png", f"pseudo-label is missing ({len(missing)} of the "
                        f"{len(dataset)} images of split {dataset.split!r} have none; --skip-bad trains without them)")
    pseudo_record = read_pseudo_record(folder, required=False)
    check_pseudo_record(pseudo_record, folder, dataset)
    record = {"source": "pseudo", **pseudo_label_source(pseudo_record, folder)}
    return folder, record


def backbone_start(options: SegTrainOptions, labels_record: dict[str, Any]) -> tuple[Path | None, str]:
    """The classifier run whose backbone the network starts from (None: ImageNet's weights), and
    a line saying why. ``--init-from auto`` takes the run that made the pseudo-labels, as their
    segment.json names it, while its model.pt is the one that made them; a classifier that has
    learnt the dataset's classes from image labels is a far better start than ImageNet on a small
    dataset (docs/method.md, stage 2)."""
    if options.init_from == "imagenet":
        return None, "backbone from ImageNet (--init-from imagenet)"
    if options.init_from != "auto":
        return Path(options.init_from), f"backbone from the classifier {options.init_from} (--init-from)"
    if labels_record.get("source") != "pseudo":
        return None, ("backbone from ImageNet (--init-from auto with --ground-truth: give --init-from RUN to "
                      "start as a pseudo-label network did, for a like-for-like bound)")
    run, digest = labels_record.get("run"), labels_record.get("model_sha256")
    if not (run and digest):
        return None, "backbone from ImageNet (the pseudo-labels name no classifier run)"
    weights = Path(run) / "model.pt"
    if not weights.is_file():
        return None, f"backbone from ImageNet (the pseudo-labels' classifier {weights} is gone)"
    try:
        RunConfig.load(run)
    except WssegError:
        return None, f"backbone from ImageNet ({run}, which made the pseudo-labels, is no classifier run)"
    if file_sha256(weights) != digest:
        return None, f"backbone from ImageNet ({weights} changed since it made the pseudo-labels)"
    return Path(run), f"backbone from the classifier {run}, which made the pseudo-labels (--init-from auto)"


@torch.no_grad()
def score_network(model: SegmentationNet, dataset: VOCDataset, device: torch.device | str = "cpu",
                  skip_bad: bool = False, max_side: int | None = None) -> tuple[ConfusionMatrix, int]:
    """The network's confusion matrix on a split's ground-truth masks, each image shrunk to at
    most ``max_side`` (the crop size it trains at, as ``wsseg segment --method seg`` sees it by
    default) and the prediction grown back (no labels, no test-time augmentation); also the
    number of images skipped as unreadable."""
    was_training = model.training
    model.eval()
    confusion, skipped = ConfusionMatrix(dataset.num_classes + 1), 0
    try:
        for image_id in dataset.ids:
            try:
                image, mask = dataset.load_image(image_id), dataset.load_mask(image_id, required=True)
            except DataError:
                if not skip_bad:
                    raise
                skipped += 1
                continue
            images = to_tensor(image)[None].to(device).contiguous(memory_format=torch.channels_last)
            probabilities = network_probabilities(model, images, max_side=max_side)
            prediction = probabilities[0].argmax(0).to(torch.uint8).cpu().numpy()
            if mask.shape != prediction.shape:
                raise DataError(dataset.mask_path(image_id), f"mask is {mask.shape[1]}x{mask.shape[0]} but the image "
                                f"is {prediction.shape[1]}x{prediction.shape[0]}")
            confusion.update(prediction, mask)
    finally:
        model.train(was_training)
    return confusion, skipped
