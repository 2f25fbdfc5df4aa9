"""Training the multi-label FCN classifier on image-level labels (``wsseg train``).

Reproducible and resumable by construction: the shuffling of epoch e and the augmentation of
image i in epoch e come from generators seeded by (seed, e) and (seed, e, i), and torch's own
generator (dropout, drop-connect) is reseeded at every epoch, so ``--resume`` after epoch k
continues exactly as an uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score
from torch.utils.data import DataLoader
from tqdm import tqdm

from wsseg.data.images import read_image_size
from wsseg.data.loading import EpochShards, LabelledImages, loader_settings
from wsseg.data.voc import VOCDataset
from wsseg.distributed import ProcessGroup
from wsseg.errors import DataError, WssegError
from wsseg.io import write_json_atomic
from wsseg.models.classifier import FCNClassifier, build_classifier
from wsseg.models.run import RunConfig, read_history, save_checkpoint
from wsseg.train_options import TrainOptions
from wsseg.training import (PRECISIONS, check_shared_options, deterministic_on_cpu, drop_bad, EpochSteps,
                            head_optimizer, place, precision_name, refuse_changed, resolve_workers, restore,
                            resume_point, synchronize, training_autocast, training_run)

__all__ = ["PRECISIONS", "TrainOptions", "best_record", "precision_name", "resolve_workers", "train",
           "training_autocast"]


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


# the largest --image-size accepted: beyond it one batch would not fit in memory
MAX_IMAGE_SIZE = 1024


def _check_options(options: TrainOptions) -> None:
    check_shared_options(options.seed, options.precision, options.scale_range)
    for name in ("epochs", "batch_size"):
        if getattr(options, name) < 1:
            raise WssegError(f"--{name.replace('_', '-')} must be at least 1")
    if options.image_size is not None and (options.image_size < 32 or options.image_size % 32):
        raise WssegError(f"--image-size {options.image_size}: must be a multiple of 32")
    if options.image_size is not None and options.image_size > MAX_IMAGE_SIZE:
        raise WssegError(f"--image-size {options.image_size}: at most {MAX_IMAGE_SIZE} (a batch of 16 crops of "
                         f"{MAX_IMAGE_SIZE} px already needs tens of GB; IRN trains VOC at 512)")
    for name in ("lr", "head_lr_scale", "weight_decay", "lse_r", "jitter"):
        if not math.isfinite(getattr(options, name)):
            raise WssegError(f"--{name.replace('_', '-')} must be a finite number")
    if options.lr <= 0 or options.head_lr_scale <= 0:
        raise WssegError("--lr and --head-lr-scale must be positive")
    if options.weight_decay < 0:
        raise WssegError("--weight-decay must not be negative")
    if options.stop_after is not None and options.stop_after < 1:
        raise WssegError(f"--stop-after {options.stop_after}: must be at least 1")
    if options.patience is not None and options.patience < 1:
        raise WssegError("--patience must be at least 1 (or 'none')")
    if not 0 <= options.jitter < 1:
        raise WssegError(f"--jitter {options.jitter}: must be in [0, 1)")
    if options.micro_batch is not None and options.micro_batch < 1:
        raise WssegError(f"--micro-batch {options.micro_batch}: must be at least 1")
    if not 0 <= options.cutmix <= 1:
        raise WssegError(f"--cutmix {options.cutmix}: a probability, in [0, 1]")
    if not 0 <= options.probe_epochs < options.epochs:
        raise WssegError(f"--probe-epochs {options.probe_epochs}: must be at least 0 and below --epochs "
                         f"({options.epochs}), or nothing but the head would ever learn")


_RESUME_MUST_MATCH = ("classes", "backbone", "pooling", "lse_r", "image_size", "output_stride", "epochs",
                      "batch_size", "lr", "head_lr_scale", "weight_decay", "scale_range", "jitter", "patience",
                      "seed", "probe_epochs", "freeze_bn", "cutmix", "micro_batch", "data", "split")


def auto_image_size(dataset: VOCDataset, cap: int = 512, sample: int = 200) -> int:
    """The median longer side of the split (up to ``sample`` images spread over it, read from their
    headers), rounded up to a multiple of 32 and at most ``cap`` (128 for the shapes benchmark, 192
    for glyphs at 224, 512 for PASCAL VOC's ~500 px images, as IRN crops)."""
    ids = dataset.ids
    chosen = [ids[int(i)] for i in np.unique(np.linspace(0, len(ids) - 1, min(sample, len(ids))).round())]
    sides = []
    for image_id in chosen:
        try:
            sides.append(max(read_image_size(dataset.image_path(image_id))))
        except DataError:
            continue
    if not sides:
        raise WssegError(f"{dataset.root}: no image of split {dataset.split!r} can be read")
    return int(min(cap, max(32, math.ceil(float(np.median(sides)) / 32) * 32)))


def train(options: TrainOptions) -> list[dict]:
    """Train (or resume) a classifier into ``options.out``; returns the per-epoch history.

    RUN/model.pt holds the epoch with the best val mAP (image labels only, so no oracle), the
    last epoch when there is no val split; RUN/last.pt the last epoch, for ``--resume``."""
    _check_options(options)
    with training_run(options.device, options.out, options.data, options.masks, options.resume,
                      options.overwrite) as group:
        session = _setup(options, group)
        if session is None:
            return read_history(Path(options.out))
        return _fit(session, group)


@dataclass
class _Session:
    """Everything one training run carries from epoch to epoch."""

    options: TrainOptions
    config: RunConfig  # written with every checkpoint, never before the first: it describes the weights
    train_set: VOCDataset
    val_set: VOCDataset | None
    model: FCNClassifier
    net: torch.nn.Module  # the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    base_lrs: list[float]
    history: list[dict]  # one record per finished epoch: the next epoch is len(history)
    steps_per_epoch: int
    loader: DataLoader  # its sampler (EpochShards) deals this rank's share of each epoch; workers outlive epochs
    workers: int
    autocast_dtype: torch.dtype | None  # mixed precision of the training forward pass (None: float32)
    scaler: torch.amp.GradScaler  # enabled for float16 only
    micro_batch: int  # images per forward/backward pass; their gradients add up to the batch's step

    @property
    def out(self) -> Path:
        return Path(self.options.out)


def stopped_early(history: list[dict], patience: int | None) -> bool:
    """Whether val mAP has not improved for ``patience`` epochs (the run's last epochs)."""
    maps = [record.get("val_map") for record in history]
    if patience is None or not maps or maps[-1] is None:
        return False
    best = int(np.nanargmax(np.array(maps, dtype=float)))
    return len(maps) - 1 - best >= patience


def _setup(options: TrainOptions, group: ProcessGroup) -> _Session | None:
    """Datasets, model, optimiser and, with ``--resume``, the state of the last finished epoch;
    None when the run being resumed has nothing left to do (finished or stopped early)."""
    out = Path(options.out)
    train_set = VOCDataset(options.data, options.split, masks=options.masks, max_side=options.max_side,
                           max_file_size=options.max_file_size)
    train_set.require_images()
    val_set = None
    if options.val_split:
        val_set = VOCDataset(options.data, options.val_split, masks=options.masks, classes=train_set.classes,
                             max_side=options.max_side, max_file_size=options.max_file_size)
    if options.image_size is None:
        options = dataclasses.replace(options, image_size=auto_image_size(train_set))
    config = run_config(options, train_set.classes.foreground)
    micro_batch = micro_batch_size(options, group.device)
    # recorded (None: the whole batch): parts change what a step computes unless every batch norm is
    # frozen, and even then drop-connect's random draws, so a resumed run must keep them
    config.micro_batch = micro_batch if micro_batch < options.batch_size else None
    history: list[dict] = []
    resume_state, previous = resume_point(out, options.resume, RunConfig.load)
    if previous is not None:
        refuse_changed(previous, config, _RESUME_MUST_MATCH, out)
    if resume_state is not None:
        history = read_history(out)[:int(resume_state["epoch"]) + 1]
        finished = len(history) >= options.epochs
        if finished or stopped_early(history, options.patience if val_set is not None else None):
            if group.is_main:
                why = "finished" if finished else f"stopped early (val mAP not improved for {options.patience} epochs)"
                print(f"[train] {out} {why} after epoch {len(history)}; nothing to do")
            return None
        if group.is_main:
            print(f"[train] resuming {out} after epoch {len(history)}")
    elif options.resume and group.is_main and out.is_dir() and any(out.iterdir()):
        print(f"[train] no checkpoint to resume in {out}; starting fresh")

    torch.manual_seed(options.seed)
    model = build_classifier(train_set.num_classes, backbone=options.backbone, pooling=options.pooling,
                             pretrained=not options.random_init, weights=options.weights,
                             output_stride=options.output_stride, lse_r=options.lse_r)
    optimizer = head_optimizer(model, model.classifier.parameters(), options.lr, options.weight_decay,
                               options.head_lr_scale)
    base_lrs = [group_["lr"] for group_ in optimizer.param_groups]
    if resume_state is not None:
        restore(model, optimizer, resume_state, out)
    net = place(model, group)  # the model, or its DDP wrapper
    sampler = EpochShards(len(train_set), options.seed, group.rank, group.world_size)
    workers = resolve_workers(options.workers, group.device, group.local_world_size)
    images = LabelledImages(train_set, options.image_size, options.seed, augment=True,
                            scale_range=options.scale_range, jitter=options.jitter)
    loader = DataLoader(images, batch_size=options.batch_size, sampler=sampler,
                        **loader_settings(group.device, workers))
    autocast_dtype = training_autocast(group.device, options.precision)
    scaler = torch.amp.GradScaler(group.device.type, enabled=autocast_dtype == torch.float16)
    if group.is_main and options.progress:
        print(f"[train] {group.world_size} x {group.device}, {precision_name(autocast_dtype)}, "
              f"{workers} loader worker(s) per process", flush=True)
    return _Session(options, config, train_set, val_set, model, net, optimizer, base_lrs, history,
                    steps_per_epoch=math.ceil(len(sampler) / options.batch_size), loader=loader,
                    workers=workers, autocast_dtype=autocast_dtype, scaler=scaler,
                    micro_batch=micro_batch)


# On a CPU with --freeze-bn a step forwards at most this many pixels at once: 4 crops of 512 px
# (the default size for photographs) peak at 2.9 GB where the whole batch of 16 needs 8.8 GB
# (benchmarks/train_memory.py)
CPU_MICRO_BATCH_PIXELS = 4 * 512 * 512


def micro_batch_size(options: TrainOptions, device: torch.device) -> int:
    """Images per forward pass: ``--micro-batch``, else the whole batch, except on a CPU with
    ``--freeze-bn``: as many crops as fit CPU_MICRO_BATCH_PIXELS. Only frozen batch norms make
    the parts' step the whole batch's (training-mode ones would normalise each part by its own
    statistics); what still differs is drop-connect's random draws per image, the same
    distribution drawn in another order."""
    if options.micro_batch is not None:
        return min(options.micro_batch, options.batch_size)
    if device.type != "cpu" or not options.freeze_bn:
        return options.batch_size
    return max(1, min(options.batch_size, CPU_MICRO_BATCH_PIXELS // (options.image_size or 512) ** 2))


def run_config(options: TrainOptions, classes: tuple[str, ...]) -> RunConfig:
    """The run's record of what was trained: every option it shares a name with."""
    recorded = {f.name: getattr(options, f.name) for f in dataclasses.fields(RunConfig)
                if f.name not in ("classes", "extra")}
    recorded["data"] = str(Path(options.data).resolve())  # absolute: compared on --resume from anywhere
    recorded["scale_range"] = list(options.scale_range)
    return RunConfig(classes=list(classes), **recorded)


def _fit(session: _Session, group: ProcessGroup) -> list[dict]:
    options = session.options
    elapsed_before = float(session.history[-1].get("elapsed", 0.0)) if session.history else 0.0
    run_started = time.perf_counter()
    with deterministic_on_cpu(group.device):
        last_epoch = options.epochs if options.stop_after is None else min(options.epochs, options.stop_after)
        patience = options.patience if session.val_set is not None else None
        for epoch in range(len(session.history), last_epoch):
            record = _train_one_epoch(session, group, epoch)
            if group.is_main:
                record["elapsed"] = elapsed_before + time.perf_counter() - run_started
                _validate_and_checkpoint(session, group, epoch, record)
            group.barrier()
            if patience is not None and stopped_early(_broadcast_history(session, group), patience):
                if group.is_main:
                    print(f"[train] stopping early: val mAP has not improved for {patience} epochs; "
                          f"model.pt keeps epoch {best_record(session.history)['epoch']}", flush=True)
                break
    return session.history


def _broadcast_history(session: _Session, group: ProcessGroup) -> list[dict]:
    """Rank 0 validates; every rank must agree on stopping early, so they share its val mAPs."""
    if not group.distributed:
        return session.history
    maps = [record.get("val_map") for record in session.history] if group.is_main else None
    shared = [maps]
    torch.distributed.broadcast_object_list(shared, src=0)
    return [{"val_map": value} for value in shared[0]]


def best_record(history: list[dict]) -> dict:
    """The epoch record whose weights RUN/model.pt holds (the last one for runs of older versions)."""
    return next((record for record in history if record.get("best")), history[-1])


def _train_one_epoch(session: _Session, group: ProcessGroup, epoch: int) -> dict:
    """One pass over this rank's share of the shuffled split; returns the epoch's record."""
    options = session.options
    steps = EpochSteps(session.loader, session.net, session.optimizer, session.base_lrs, epoch, options.epochs,
                       session.steps_per_epoch, options.seed, options.skip_bad, f"epoch {epoch + 1}/{options.epochs}",
                       options.progress and group.is_main)
    probing = epoch < options.probe_epochs
    if probing:  # the linear probe: the backbone does not move; AdamW at lr 0 leaves it as it is
        steps.base_lrs = [0.0, *session.base_lrs[1:]]
    elif options.probe_epochs and epoch == options.probe_epochs:
        # fine-tuning starts afresh for the backbone: AdamW's moments of the probe's backbone
        # gradients (taken under a half-trained head) are dropped (a resumed run drops them alike)
        for parameter in session.optimizer.param_groups[0]["params"]:
            session.optimizer.state.pop(parameter, None)
    if probing or options.freeze_bn:
        freeze_batchnorm(session.model.backbone)
    started = time.perf_counter()
    losses: list[torch.Tensor] = []
    seen, first_step_seconds = 0, 0.0
    device = group.device
    for step, inputs, targets in steps:
        inputs = inputs.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        if options.cutmix > 0:
            inputs, targets = cutmix(inputs, targets, options.cutmix)
        session.optimizer.zero_grad(set_to_none=True)
        loss = inputs.new_zeros((), dtype=torch.float32)
        # micro-batches: the gradients of the parts add up to the whole batch's (the loss is a mean);
        # under DDP only the last part's backward pass all-reduces them
        parts = torch.split(torch.arange(len(inputs)), session.micro_batch)
        for index, part in enumerate(parts):
            defer = index < len(parts) - 1 and isinstance(session.net, torch.nn.parallel.DistributedDataParallel)
            with session.net.no_sync() if defer else contextlib.nullcontext():
                with torch.autocast(device.type, dtype=session.autocast_dtype,
                                    enabled=session.autocast_dtype is not None):
                    logits = session.net(inputs[part])
                part_loss = F.binary_cross_entropy_with_logits(logits.float(), targets[part]) * (len(part) / len(inputs))
                if not torch.isfinite(part_loss):  # nothing after this would be worth keeping
                    raise WssegError(f"training diverged: the loss is {float(part_loss.detach())} at epoch {epoch + 1}, "
                                     f"step {step + 1}; lower --lr (now {options.lr:g}). The files of earlier epochs "
                                     "are kept.")
                session.scaler.scale(part_loss).backward()
            loss = loss + part_loss.detach()
        session.scaler.step(session.optimizer)
        session.scaler.update()
        losses.append(loss.detach())
        seen += len(inputs)
        if not first_step_seconds:  # worker start-up, first batch, allocations: the warm-up
            synchronize(device)
            first_step_seconds = time.perf_counter() - started
        if step % 10 == 0:  # reading the loss waits for the GPU: not at every step
            steps.bar.set_postfix(loss=f"{float(torch.stack(losses[-20:]).mean()):.4f}")
    mean_loss = float(torch.stack(losses).double().mean()) if losses else float("nan")
    seconds = time.perf_counter() - started
    return {"epoch": epoch + 1, "loss": mean_loss, "images_per_second": seen * group.world_size / seconds,
            "seconds": seconds, "skipped": steps.skipped, "precision": precision_name(session.autocast_dtype),
            "first_step_seconds": first_step_seconds, "loader_wait_seconds": float(sum(steps.waits))}


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


def _validate_and_checkpoint(session: _Session, group: ProcessGroup, epoch: int, record: dict) -> None:
    """Score val, mark the best epoch, write config.json -> model.pt (when best) -> history.json -> last.pt.

    That order keeps a killed run consistent: resuming starts after last.pt's epoch, and what
    was written after it is simply written again, with the same bytes."""
    options, out = session.options, session.out
    if session.val_set is not None:
        validation_started = time.perf_counter()
        scores, targets, val_skipped = predict_scores(session.model, session.val_set, options.image_size,
                                                      device=group.device, workers=session.workers,
                                                      skip_bad=options.skip_bad)
        metrics = classification_metrics(scores, targets)
        record.update(val_map=metrics["map"], val_f1=metrics["f1"], val_skipped=val_skipped,
                      val_seconds=time.perf_counter() - validation_started)
        earlier = [r["val_map"] for r in session.history if r.get("val_map") is not None]
        is_best = not earlier or metrics["map"] > max(earlier)
    else:
        is_best = True  # without a val split the run keeps its last epoch
    if is_best:
        for previous in session.history:
            previous["best"] = False
    record["best"] = is_best
    session.history.append(record)
    session.config.save(out)
    if is_best:
        save_checkpoint(out / "model.pt", session.model, epoch)
    write_json_atomic(out / "history.json", session.history)
    save_checkpoint(out / "last.pt", session.model, epoch, session.optimizer)
    summary = f"[train] epoch {epoch + 1}/{options.epochs}: loss {record['loss']:.4f}"
    if "val_map" in record:
        summary += f", val mAP {record['val_map']:.3f}, F1 {record['val_f1']:.3f}" + (" (best)" if is_best else "")
    summary += f" ({record['images_per_second']:.1f} img/s"
    summary += f", {record['skipped']} bad images skipped)" if record["skipped"] else ")"
    waiting = record["loader_wait_seconds"] / max(record["seconds"], 1e-9)
    if waiting > 0.2:
        summary += f"; {100 * waiting:.0f}% of the epoch waiting for data (--workers {session.workers}: raise it)"
    print(summary, flush=True)
