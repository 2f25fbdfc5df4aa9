"""Stage 2 (``wsseg train-seg``): train a segmentation network on label maps.

The labels are pseudo-labels (a ``wsseg segment`` folder; 255 marks pixels left out, e.g. by
``--ignore-uncertain``) or, with ``ground_truth``, the dataset's masks: the same network and
budget trained on both gives the weak/full ratio, the one number that says how good the weak
supervision is. The loss is per-pixel cross-entropy that ignores 255 (its gradient there is
exactly zero), the schedule poly, the augmentation random scale, crop, flip and colour jitter.

Val mIoU is measured after every epoch and logged only: the run keeps its last epoch, because
choosing an epoch by val masks would be an oracle for weak supervision. Reproducible and
resumable as ``wsseg train`` is (same seeding; ``--resume`` after epoch k continues exactly as an
uninterrupted run would), under torchrun too.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from wsseg.data.loading import EpochShards, SegmentationPairs, loader_settings
from wsseg.data.transforms import to_tensor
from wsseg.data.voc import VOCDataset
from wsseg.distributed import ProcessGroup
from wsseg.errors import DataError, WssegError
from wsseg.evaluate import ConfusionMatrix
from wsseg.io import file_sha256, write_json_atomic
from wsseg.models.run import RunConfig, read_history, save_checkpoint
from wsseg.models.segnet import (HEADS, SegmentationNet, SegRunConfig, build_segmentation_net,
                                 init_backbone_from_classifier, start_record)
from wsseg.train import MAX_IMAGE_SIZE, auto_image_size
from wsseg.train_options import SegTrainOptions
from wsseg.training import (check_pseudo_record, check_shared_options, deterministic_on_cpu, EpochSteps, head_optimizer, place,
                            precision_name, pseudo_label_source, read_pseudo_record, refuse_changed, resolve_workers,
                            restore, resume_point, resumed_history, synchronize, training_autocast, training_run)

IGNORE = 255  # the label value no loss falls on (VOC's void, and uncertain pseudo-label pixels)
# the config fields that must equal the run's to --resume it
_RESUME_MUST_MATCH = ("classes", "labels", "init", "backbone", "head", "output_stride", "crop_size", "epochs",
                      "batch_size", "lr", "head_lr_scale", "weight_decay", "scale_range", "jitter", "seed", "split",
                      "data")


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


def _check_options(options: SegTrainOptions) -> None:
    check_shared_options(options.seed, options.precision, options.scale_range)
    for name in ("epochs", "batch_size"):
        if getattr(options, name) < 1:
            raise WssegError(f"--{name.replace('_', '-')} must be at least 1")
    if options.crop_size is not None and not (32 <= options.crop_size <= MAX_IMAGE_SIZE and options.crop_size % 32 == 0):
        raise WssegError(f"--crop-size {options.crop_size}: must be a multiple of 32 from 32 to {MAX_IMAGE_SIZE}")
    for name in ("lr", "head_lr_scale", "weight_decay", "jitter"):
        if not math.isfinite(getattr(options, name)):
            raise WssegError(f"--{name.replace('_', '-')} must be a finite number")
    if options.lr <= 0 or options.head_lr_scale <= 0 or options.weight_decay < 0:
        raise WssegError("--lr and --head-lr-scale must be positive, --weight-decay not negative")
    if options.head not in HEADS:
        raise WssegError(f"--head {options.head!r}: choose from {', '.join(HEADS)}")
    if not 0 <= options.jitter < 1:
        raise WssegError(f"--jitter {options.jitter}: must be in [0, 1)")


def train_segmentation(options: SegTrainOptions) -> list[dict]:
    """Train (or resume) a segmentation network into ``options.out``; returns the history.

    SEGRUN/model.pt holds the last finished epoch, SEGRUN/last.pt the same with the optimiser
    (for ``--resume``), SEGRUN/history.json one record per epoch (loss, images/s, peak memory,
    val mIoU), SEGRUN/config.json the network and where its labels came from."""
    _check_options(options)
    with training_run(options.device, options.out, options.data, options.masks, options.resume,
                      options.overwrite) as group:
        with group.together():
            session = _setup(options, group)
        if session is None:
            return read_history(Path(options.out))
        return _fit(session, group)


@dataclass
class _Session:
    options: SegTrainOptions
    config: SegRunConfig
    val_set: VOCDataset | None
    model: SegmentationNet
    net: torch.nn.Module  # the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    base_lrs: list[float]
    history: list[dict]
    steps_per_epoch: int
    loader: DataLoader
    autocast_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler

    @property
    def out(self) -> Path:
        return Path(self.options.out)


def _setup(options: SegTrainOptions, group: ProcessGroup) -> _Session | None:
    out = Path(options.out)
    train_set = VOCDataset(options.data, options.split, masks=options.masks, max_side=options.max_side,
                           max_file_size=options.max_file_size)
    train_set.require_images()
    val_set = None
    if options.val_split:
        val_set = VOCDataset(options.data, options.val_split, masks=options.masks, classes=train_set.classes,
                             max_side=options.max_side, max_file_size=options.max_file_size)
    folder, labels_record = label_source(options, train_set)
    if options.crop_size is None:
        options = dataclasses.replace(options, crop_size=auto_image_size(train_set))
    config = SegRunConfig(classes=list(train_set.classes.foreground), labels=labels_record,
                          backbone=options.backbone, head=options.head, output_stride=options.output_stride,
                          crop_size=int(options.crop_size), epochs=options.epochs, batch_size=options.batch_size,
                          lr=options.lr, head_lr_scale=options.head_lr_scale, weight_decay=options.weight_decay,
                          scale_range=list(options.scale_range), jitter=options.jitter, seed=options.seed,
                          split=options.split, val_split=options.val_split, data=str(Path(options.data).resolve()),
                          masks=options.masks)
    start, start_note = backbone_start(options, labels_record)
    history: list[dict] = []
    resume_state, previous = resume_point(out, options.resume, SegRunConfig.load)
    if resume_state is not None:
        # the weights come from the checkpoint: an explicit --init-from must be the run's, auto is
        config.init = previous.init if options.init_from == "auto" else start_record(start)
        start_note = f"backbone as the run began ({config.init.get('source')}), its weights from last.pt"
    if previous is not None:  # without a checkpoint, where the backbone starts is decided afresh
        refuse_changed(previous, config, _RESUME_MUST_MATCH if resume_state is not None else
                       tuple(name for name in _RESUME_MUST_MATCH if name != "init"), out)
    if resume_state is not None:
        history = resumed_history(read_history(out), int(resume_state["epoch"]), options.epochs, "train-seg", out,
                                  group.is_main)
        if history is None:
            return None
    elif options.resume and group.is_main and out.is_dir() and any(out.iterdir()):
        print(f"[train-seg] no checkpoint to resume in {out}; starting fresh")
    if resume_state is None and start is None and options.init_from == "auto" and \
            labels_record.get("source") == "pseudo" and group.is_main:  # not what auto meant: say so, even --quiet
        print(f"[train-seg] warning: {start_note}", file=sys.stderr, flush=True)

    torch.manual_seed(options.seed)
    with warnings.catch_warnings():
        if start is not None:  # no 'randomly initialised' warning: the classifier's weights come next
            warnings.simplefilter("ignore")
        model = build_segmentation_net(train_set.num_classes, options.backbone, options.head,
                                       weights=options.weights, output_stride=options.output_stride,
                                       pretrained=start is None)
    if resume_state is None and start is not None:
        init_backbone_from_classifier(model, options.backbone, start)
        config.init = start_record(start)
    optimizer = head_optimizer(model, model.head_parameters(), options.lr, options.weight_decay,
                               options.head_lr_scale)
    base_lrs = [group_["lr"] for group_ in optimizer.param_groups]
    if resume_state is not None:
        restore(model, optimizer, resume_state, out)
    net = place(model, group)  # the model, or its DDP wrapper
    sampler = EpochShards(len(train_set), options.seed, group.rank, group.world_size)
    workers = resolve_workers(options.workers, group.device, group.local_world_size)
    pairs = SegmentationPairs(train_set, folder, config.crop_size, options.seed, options.scale_range, options.jitter)
    loader = DataLoader(pairs, batch_size=options.batch_size, sampler=sampler, **loader_settings(group.device, workers))
    autocast_dtype = training_autocast(group.device, options.precision)
    if group.is_main and options.progress:
        where = "ground-truth masks" if folder is None else f"pseudo-labels in {folder}"
        print(f"[train-seg] {options.head} on {options.backbone}, {group.world_size} x {group.device}, "
              f"{precision_name(autocast_dtype)}, {workers} loader worker(s) per process; {where}; "
              f"{start_note}", flush=True)
    return _Session(options, config, val_set, model, net, optimizer, base_lrs, history,
                    steps_per_epoch=math.ceil(len(sampler) / options.batch_size), loader=loader,
                    autocast_dtype=autocast_dtype,
                    scaler=torch.amp.GradScaler(group.device.type, enabled=autocast_dtype == torch.float16))


def _fit(session: _Session, group: ProcessGroup) -> list[dict]:
    options = session.options
    elapsed_before = float(session.history[-1].get("elapsed", 0.0)) if session.history else 0.0
    started = time.perf_counter()
    with deterministic_on_cpu(group.device):
        last_epoch = options.epochs if options.stop_after is None else min(options.epochs, options.stop_after)
        for epoch in range(len(session.history), last_epoch):
            record = _train_one_epoch(session, group, epoch)
            if group.is_main:
                record["elapsed"] = elapsed_before + time.perf_counter() - started
                _validate_and_checkpoint(session, group, epoch, record)
            group.barrier()
    return session.history


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: the GPU's allocations on CUDA, the process's resident set on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _train_one_epoch(session: _Session, group: ProcessGroup, epoch: int) -> dict:
    options, device = session.options, group.device
    steps = EpochSteps(session.loader, session.net, session.optimizer, session.base_lrs, epoch, options.epochs,
                       session.steps_per_epoch, options.seed, options.skip_bad, f"epoch {epoch + 1}/{options.epochs}",
                       options.progress and group.is_main)
    epoch_started = time.perf_counter()
    losses: list[torch.Tensor] = []
    seen = 0
    for step, images, labels in steps:
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=session.autocast_dtype, enabled=session.autocast_dtype is not None):
            logits = session.net(images)
        loss = segmentation_loss(logits, labels)
        if not torch.isfinite(loss):
            raise WssegError(f"training diverged: the loss is {float(loss.detach())} at epoch {epoch + 1}, step "
                             f"{step + 1}; lower --lr (now {options.lr:g}). The files of earlier epochs are kept.")
        session.optimizer.zero_grad(set_to_none=True)
        session.scaler.scale(loss).backward()
        session.scaler.step(session.optimizer)
        session.scaler.update()
        losses.append(loss.detach())
        seen += len(images)
        if step % 10 == 0:
            steps.bar.set_postfix(loss=f"{float(torch.stack(losses[-20:]).mean()):.4f}")
    synchronize(device)
    seconds = time.perf_counter() - epoch_started
    return {"epoch": epoch + 1, "loss": float(torch.stack(losses).double().mean()) if losses else float("nan"),
            "images_per_second": seen * group.world_size / seconds, "seconds": seconds, "skipped": steps.skipped,
            "precision": precision_name(session.autocast_dtype), "peak_memory_mb": peak_memory_mb(device),
            "loader_wait_seconds": float(sum(steps.waits))}


@torch.no_grad()
def score_network(model: SegmentationNet, dataset: VOCDataset, device: torch.device | str = "cpu",
                  skip_bad: bool = False) -> tuple[ConfusionMatrix, int]:
    """The network's confusion matrix on a split's ground-truth masks, each image at its own size
    (no labels, no test-time augmentation); also the number of images skipped as unreadable."""
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
            logits = model(to_tensor(image)[None].to(device).contiguous(memory_format=torch.channels_last))
            prediction = logits[0].argmax(0).to(torch.uint8).cpu().numpy()
            if mask.shape != prediction.shape:
                raise DataError(dataset.mask_path(image_id), f"mask is {mask.shape[1]}x{mask.shape[0]} but the image "
                                f"is {prediction.shape[1]}x{prediction.shape[0]}")
            confusion.update(prediction, mask)
    finally:
        model.train(was_training)
    return confusion, skipped


def _validate_and_checkpoint(session: _Session, group: ProcessGroup, epoch: int, record: dict) -> None:
    """Score val (logged only), then write config.json -> model.pt -> history.json -> last.pt: a run killed in
    between resumes after last.pt's epoch and writes the same bytes again."""
    options, out = session.options, session.out
    if session.val_set is not None:
        validation_started = time.perf_counter()
        confusion, val_skipped = score_network(session.model, session.val_set, group.device, options.skip_bad)
        miou = confusion.miou()
        record.update(val_miou=None if miou is None else float(miou), val_skipped=val_skipped,
                      val_seconds=time.perf_counter() - validation_started)
    session.history.append(record)
    session.config.save(out)  # with every checkpoint, never before the first: it describes the weights
    save_checkpoint(out / "model.pt", session.model, epoch)
    write_json_atomic(out / "history.json", session.history)
    save_checkpoint(out / "last.pt", session.model, epoch, session.optimizer)
    summary = f"[train-seg] epoch {epoch + 1}/{options.epochs}: loss {record['loss']:.4f}"
    if record.get("val_miou") is not None:
        summary += f", val mIoU {100 * record['val_miou']:.2f} (logged only)"
    summary += f" ({record['images_per_second']:.1f} img/s, peak {record['peak_memory_mb']:.0f} MB"
    summary += f", {record['skipped']} bad images skipped)" if record["skipped"] else ")"
    print(summary, flush=True)

