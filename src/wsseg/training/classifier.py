"""The classifier's task (``wsseg train``): the multi-label FCN classifier trained on image-level
labels by :func:`wsseg.training.loop.fit`.

What only the classifier does: the image size chosen from the split, a linear probe before
fine-tuning (LP-FT), frozen batch norms, multi-label CutMix, micro-batches (automatic on a CPU
with frozen batch norms), and the best epoch by val mAP (image labels only, so no oracle) with
patience. RUN/model.pt holds the best epoch (the last without a val split), RUN/last.pt the last.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from wsseg.data.loading import LabelledImages
from wsseg.data.voc import VOCDataset
from wsseg.distributed import ProcessGroup
from wsseg.errors import WssegError
from wsseg.models.classifier import FCNClassifier, build_classifier
from wsseg.models.run import RunConfig
from wsseg.training.loop import Task, best_record, fit
from wsseg.training.options import TrainOptions
from wsseg.training.steps import (auto_image_size, drop_bad, head_optimizer, same_setting, training_splits,
                                  unannotated_note)

__all__ = ["ClassifierTask", "TrainOptions", "auto_image_size", "best_record", "classification_metrics", "cutmix",
           "micro_batch_size", "predict_scores", "train"]


def train(options: TrainOptions) -> list[dict]:
    """Train (or resume) a classifier into ``options.out``; returns the per-epoch history.

    RUN/model.pt holds the epoch with the best val mAP (image labels only, so no oracle), the
    last epoch when there is no val split; RUN/last.pt the last epoch, for ``--resume``."""
    return fit(ClassifierTask(), options)


class ClassifierTask(Task):
    """The classifier: image-level labels, binary cross-entropy, the best epoch by val mAP."""

    tag = "train"
    best_key, best_name = "val_map", "val mAP"

    def prepare(self, options: TrainOptions, group: ProcessGroup) -> TrainOptions:
        self.train_set, self.val_set = training_splits(options)
        if options.image_size is None:
            options = dataclasses.replace(options, image_size=auto_image_size(self.train_set))
        self.options = options
        self.config = run_config(options, self.train_set.classes.foreground)  # written with every checkpoint
        self.micro_batch = micro_batch_size(options, group.device)
        # recorded (None: the whole batch): parts change what a step computes unless every batch norm is
        # frozen, and even then drop-connect's random draws, so a resumed run must keep them
        self.config.micro_batch = self.micro_batch if self.micro_batch < options.batch_size else None
        self.checkpoint_blocks = uses_activation_checkpointing(options, group.device, self.micro_batch)
        return options

    def read_record(self, folder: Path) -> RunConfig:
        return RunConfig.load(folder)

    def changed(self, previous: RunConfig, resuming: bool) -> list[str]:
        return [name for name in _RESUME_MUST_MATCH
                if not same_setting(name, getattr(previous, name), getattr(self.config, name))]

    def patience(self) -> int | None:
        return self.options.patience if self.val_set is not None else None

    def build(self, resuming: bool) -> FCNClassifier:
        options = self.options
        self.model = build_classifier(self.train_set.num_classes, backbone=options.backbone, pooling=options.pooling,
                                      pretrained=not options.random_init, weights=options.weights,
                                      output_stride=options.output_stride, lse_r=options.lse_r)
        if self.checkpoint_blocks and not hasattr(self.model.backbone, "checkpoint_blocks"):
            if options.checkpoint_activations == "on":
                raise WssegError(f"--checkpoint-activations on: the {options.backbone} backbone does not support it")
            self.checkpoint_blocks = False  # auto: this backbone trains as it is
        if self.checkpoint_blocks:
            self.model.backbone.checkpoint_blocks = True
        if options.probe_only:  # no gradient reaches the backbone: no backward pass through it, no activations kept
            self.model.backbone.requires_grad_(False)
        return self.model

    def optimizer(self, model: FCNClassifier) -> torch.optim.Optimizer:
        return head_optimizer(model, model.classifier.parameters(), self.options.lr, self.options.weight_decay,
                              self.options.head_lr_scale)

    def items(self) -> Dataset:
        options = self.options
        return LabelledImages(self.train_set, options.image_size, options.seed, augment=True,
                              scale_range=options.scale_range, jitter=options.jitter)

    def describe(self, group: ProcessGroup, precision: str, workers: int) -> str:
        return (f"{group.world_size} x {group.device}, {precision}, {workers} loader worker(s) per process"
                + (", activation checkpointing" if self.checkpoint_blocks else "")
                + (", a linear probe alone (the backbone stays as pretrained)" if self.options.probe_only else "")
                + unannotated_note(self.train_set))

    def start_epoch(self, epoch: int, steps, optimizer: torch.optim.Optimizer) -> None:
        probe_epochs = self.options.probe_epochs
        probing = epoch < probe_epochs
        if probing:  # the linear probe: the backbone does not move; AdamW at lr 0 leaves it as it is
            steps.base_lrs = [0.0, *steps.base_lrs[1:]]
        # When fine-tuning starts, AdamW keeps the moments it gathered from the probe's backbone gradients:
        # they make its first backbone steps small. Dropped (fresh moments: full-size steps at once), the
        # real photos' val mAP fell from 0.539 to 0.20-0.36 after the probe (docs/method.md 1.4).
        # A probe keeps drop-connect on: with the backbone wholly in eval mode a probe alone on the real
        # photos gave seeds 1-3 points worse on train and val (docs/method.md 1.5)
        if probing or self.options.freeze_bn:
            freeze_batchnorm(self.model.backbone)

    def batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
        if self.options.cutmix > 0:
            inputs, targets = cutmix(inputs, targets, self.options.cutmix)
        return inputs, targets

    def forward(self, net: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return net(inputs)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return F.binary_cross_entropy_with_logits(outputs.float(), targets), {}

    def epoch_facts(self, device: torch.device, first_step_seconds: float) -> dict[str, float]:
        return {"first_step_seconds": first_step_seconds}

    def validate(self, model: FCNClassifier, group: ProcessGroup, workers: int, record: dict) -> None:
        if self.val_set is None:
            return
        started = time.perf_counter()
        scores, targets, skipped = predict_scores(model, self.val_set, self.options.image_size, device=group.device,
                                                  workers=workers, skip_bad=self.options.skip_bad)
        metrics = classification_metrics(scores, targets)
        record.update(val_map=metrics["map"], val_f1=metrics["f1"], val_skipped=skipped,
                      val_seconds=time.perf_counter() - started)

    def write_record(self, folder: Path) -> None:
        self.config.save(folder)

    def summary(self, record: dict, best: bool, workers: int) -> str:
        summary = f"loss {record['loss']:.4f}"
        if "val_map" in record:
            summary += f", val mAP {record['val_map']:.3f}, F1 {record['val_f1']:.3f}" + (" (best)" if best else "")
        summary += f" ({record['images_per_second']:.1f} img/s"
        summary += f", {record['skipped']} bad images skipped)" if record["skipped"] else ")"
        waiting = record["loader_wait_seconds"] / max(record["seconds"], 1e-9)
        if waiting > 0.2:
            summary += f"; {100 * waiting:.0f}% of the epoch waiting for data (--workers {workers}: raise it)"
        return summary


_RESUME_MUST_MATCH = ("classes", "backbone", "pooling", "lse_r", "image_size", "output_stride", "epochs",
                      "batch_size", "lr", "head_lr_scale", "weight_decay", "scale_range", "jitter", "patience",
                      "seed", "probe_epochs", "freeze_bn", "cutmix", "micro_batch", "data", "split")


# On a CPU a forward pass of more pixels than this is made smaller: with --freeze-bn by micro-batches,
# else by activation checkpointing. 4 crops of 512 px (the default size for photographs) peak at 2.9 GB
# where the whole batch of 16 needs 8.8 GB (benchmarks/train_memory.py)
CPU_PASS_PIXELS = 4 * 512 * 512


def micro_batch_size(options: TrainOptions, device: torch.device) -> int:
    """Images per forward pass: ``--micro-batch``, else the whole batch, except on a CPU with
    ``--freeze-bn``: as many crops as fit CPU_PASS_PIXELS. Only frozen batch norms make
    the parts' step the whole batch's (training-mode ones would normalise each part by its own
    statistics); what still differs is drop-connect's random draws per image, the same
    distribution drawn in another order."""
    if options.micro_batch is not None:
        return min(options.micro_batch, options.batch_size)
    if device.type != "cpu" or not options.freeze_bn:
        return options.batch_size
    return max(1, min(options.batch_size, CPU_PASS_PIXELS // (options.image_size or 512) ** 2))


def uses_activation_checkpointing(options: TrainOptions, device: torch.device, micro_batch: int) -> bool:
    """Whether the backbone recomputes its blocks' insides in the backward pass (``--checkpoint-activations``):
    "auto" does on a CPU when a forward pass holds more than CPU_PASS_PIXELS, as the default recipe at
    512 px does (training-mode batch norms, so no micro-batches). It costs one more forward pass and
    changes nothing else: the same draws, the same running statistics (tests/test_train.py)."""
    if options.checkpoint_activations != "auto":
        return options.checkpoint_activations == "on"
    if options.probe_only:  # the backbone is never differentiated: nothing to recompute
        return False
    return device.type == "cpu" and micro_batch * (options.image_size or 512) ** 2 > CPU_PASS_PIXELS


def run_config(options: TrainOptions, classes: tuple[str, ...]) -> RunConfig:
    """The run's record of what was trained: every option it shares a name with."""
    recorded = {f.name: getattr(options, f.name) for f in dataclasses.fields(RunConfig)
                if f.name not in ("classes", "extra")}
    recorded["data"] = str(Path(options.data).resolve())  # absolute: compared on --resume from anywhere
    recorded["scale_range"] = list(options.scale_range)
    return RunConfig(classes=list(classes), **recorded)


def cutmix(inputs: torch.Tensor, targets: torch.Tensor, probability: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-label CutMix (Yun et al. 2019): with ``probability`` an image gets a box of another
    image of the batch pasted in (its area a uniform fraction 1 - lambda of the image), and its
    targets become lambda * own + (1 - lambda) * the other's, at most 1 (a class both hold stays
    1). Two photos in one crop are a combination the network cannot have memorised. Draws from
    torch's generator, which the trainer reseeds every epoch, so resumed runs repeat them."""
    count, _, height, width = inputs.shape
    chosen = torch.rand(count) < probability
    if count < 2 or not chosen.any():
        return inputs, targets
    partners = torch.randperm(count)
    source_inputs, source_targets = inputs, targets  # boxes and labels come from the unmixed batch
    inputs, targets = inputs.clone(), targets.clone()
    for index in torch.nonzero(chosen).flatten().tolist():
        partner = int(partners[index])
        if partner == index:
            continue
        fraction = float(torch.rand(()))  # the pasted area's share of the image
        box_h, box_w = max(1, round(height * fraction ** 0.5)), max(1, round(width * fraction ** 0.5))
        top, left = int(torch.randint(0, height - box_h + 1, ())), int(torch.randint(0, width - box_w + 1, ()))
        inputs[index, :, top:top + box_h, left:left + box_w] = source_inputs[partner, :, top:top + box_h,
                                                                             left:left + box_w]
        pasted = box_h * box_w / (height * width)
        targets[index] = torch.clamp((1 - pasted) * source_targets[index] + pasted * source_targets[partner], max=1.0)
    return inputs, targets


def freeze_batchnorm(module: torch.nn.Module) -> None:
    """Batch norms in eval mode: they normalise with their stored (pretrained) statistics and
    stop updating them. A batch of a few photos per class gives noisy statistics, and frozen ones
    make a step on micro-batches the same as one on the whole batch."""
    for layer in module.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.eval()


def collate_as_list(items: list) -> list:
    """Keep a loader's items apart: evaluation images differ in size and are never padded."""
    return items


def average_precision(scores: np.ndarray, targets: np.ndarray) -> list[float | None]:
    """Per-class average precision (None for a class with no positive image)."""
    result: list[float | None] = []
    for c in range(targets.shape[1]):
        result.append(float(average_precision_score(targets[:, c], scores[:, c])) if targets[:, c].any() else None)
    return result


def classification_metrics(scores: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """mAP over classes with positives, and macro F1 of ``score > threshold``."""
    aps = [ap for ap in average_precision(scores, targets) if ap is not None]
    predicted = scores > threshold
    f1s = []
    for c in range(targets.shape[1]):
        tp = float((predicted[:, c] & (targets[:, c] > 0)).sum())
        denominator = float(predicted[:, c].sum() + (targets[:, c] > 0).sum())
        if denominator:
            f1s.append(2 * tp / denominator)
    return {"map": float(np.mean(aps)) if aps else float("nan"), "f1": float(np.mean(f1s)) if f1s else float("nan")}


@torch.no_grad()
def predict_scores(model: FCNClassifier, dataset: VOCDataset, image_size: int, batch_size: int = 32,
                   device: torch.device | str = "cpu", workers: int = 0, skip_bad: bool = False,
                   progress: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """Sigmoid class scores and multi-hot targets for every (readable) image of a split.

    Each image is scaled to ``image_size`` on its longer side, unpadded; consecutive images of
    one shape share a forward pass, so no padding ever enters the global pooling."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    loader = DataLoader(LabelledImages(dataset, image_size), batch_size=batch_size, num_workers=workers,
                        pin_memory=device.type == "cuda", collate_fn=collate_as_list)
    scores, targets, skipped = [], [], 0
    try:
        for items in tqdm(loader, desc="validate", unit="batch", leave=False, disable=not progress):
            for run in _equal_shape_runs(items):
                images, labels, bad = drop_bad(_stack(run), skip_bad)
                skipped += bad
                if len(images):
                    scores.append(torch.sigmoid(model(images.to(device, non_blocking=True))).cpu().numpy())
                    targets.append(labels.numpy())
    finally:
        model.train(was_training)
    if not scores:
        raise WssegError(f"{dataset.root}: no readable image in split {dataset.split!r}")
    return np.concatenate(scores), np.concatenate(targets), skipped


def _equal_shape_runs(items: list) -> list[list]:
    runs: list[list] = []
    for item in items:
        if not runs or runs[-1][0][0].shape != item[0].shape:
            runs.append([])
        runs[-1].append(item)
    return runs


def _stack(items: list) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    images, labels, errors = zip(*items)
    return torch.stack(images), torch.stack(labels), list(errors)
