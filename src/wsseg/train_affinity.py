"""Training the affinity network on confident pseudo-labels (``wsseg train-affinity``).

The classifier of RUN stays frozen (its taps are read under no_grad); only the small head of
:mod:`wsseg.models.affinity` learns, from the pairs within the radius of each augmented crop:
same label attracts, different labels repel, 255 ignored, psa's three groups balanced. The
result is RUN/affinity.pt (weights only, with the optimiser for ``--resume``), RUN/affinity.json
(the head, the options, and where the labels came from: PSEUDO/segment.json's method, run,
threshold ...) and RUN/affinity-history.json.

Reproducible and resumable as ``wsseg train``: the epoch's order and each crop come from
generators seeded by (seed, epoch) and (seed, epoch, index), torch's generator is reseeded at
every epoch, and ``--resume`` after epoch k ends with the same bytes as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from wsseg.data.images import DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_SIDE
from wsseg.data.loading import EpochShards, SegmentationPairs, loader_settings
from wsseg.data.voc import VOCDataset
from wsseg.distributed import ProcessGroup
from wsseg.errors import WssegError
from wsseg.io import file_sha256, read_json, write_json_atomic
from wsseg.models.affinity import (AFFINITY_FILE, AFFINITY_RECORD, MAX_RADIUS, AffinityConfig, AffinityHead,
                                   affinity_loss, label_grid, neighbours_per_pixel, pair_affinities, pair_targets,
                                   tap_outputs)
from wsseg.models.classifier import FCNClassifier
from wsseg.models.run import check_same_classes, load_run, read_checkpoint, read_history, save_checkpoint
from wsseg.train import MAX_IMAGE_SIZE
from wsseg.train_options import AFFINITY_DEFAULTS
from wsseg.training import (check_pseudo_record, check_shared_options, deterministic_on_cpu, EpochSteps, place, precision_name,
                            pseudo_label_source, read_pseudo_record, resolve_workers, restore, resumed_history,
                            RUN_RECORD, same_setting, synchronize, training_autocast, training_run)

AFFINITY_HISTORY = "affinity-history.json"
# an affinity network's files in the run folder, weights first (--overwrite deletes them in this order)
AFFINITY_FILES = (AFFINITY_FILE, AFFINITY_HISTORY, AFFINITY_RECORD)


@dataclass(frozen=True)
class AffinityOptions:
    """What ``wsseg train-affinity`` is asked to do, and the defaults (docs/method.md, section 7)."""

    run: str
    data: str
    pseudo: str
    split: str = "train"
    epochs: int = AFFINITY_DEFAULTS["epochs"]
    batch_size: int = AFFINITY_DEFAULTS["batch_size"]
    lr: float = AFFINITY_DEFAULTS["lr"]  # AdamW on the new head alone (the backbone is frozen)
    weight_decay: float = AFFINITY_DEFAULTS["weight_decay"]
    image_size: int | None = None  # crop side; None: the classifier's training size
    scale_range: tuple[float, float] = AFFINITY_DEFAULTS["scale_range"]
    radius: int = AFFINITY_DEFAULTS["radius"]
    seed: int = 0
    limit: int | None = None  # train on the split's first N images only (None: all)
    workers: int | None = None
    precision: str = "auto"
    device: str = "auto"
    resume: bool = False
    overwrite: bool = False  # replace an affinity network already in the run (its files deleted first)
    stop_after: int | None = None
    skip_bad: bool = False
    progress: bool = True
    masks: str = "SegmentationClass"
    max_side: int = DEFAULT_MAX_SIDE
    max_file_size: int | None = DEFAULT_MAX_FILE_SIZE


# options whose change makes another network: resuming with any of them changed is refused
_RESUME_MUST_MATCH = ("epochs", "batch_size", "lr", "weight_decay", "image_size", "scale_range", "radius", "seed",
                      "split", "limit")


def _check_options(options: AffinityOptions) -> None:
    check_shared_options(options.seed, options.precision, options.scale_range)
    for name in ("epochs", "batch_size", "radius"):
        if getattr(options, name) < 1:
            raise WssegError(f"--{name.replace('_', '-')} must be at least 1")
    if not (math.isfinite(options.lr) and options.lr > 0):
        raise WssegError(f"--lr {options.lr}: must be a finite positive number")
    if not (math.isfinite(options.weight_decay) and options.weight_decay >= 0):
        raise WssegError(f"--weight-decay {options.weight_decay}: must be a finite number, 0 or more")
    if options.image_size is not None and not (32 <= options.image_size <= MAX_IMAGE_SIZE
                                                and options.image_size % 32 == 0):
        raise WssegError(f"--image-size {options.image_size}: must be a multiple of 32 from 32 to {MAX_IMAGE_SIZE} "
                         "(as train-seg's crops: beyond it one batch would not fit in memory)")
    if options.radius > MAX_RADIUS:
        raise WssegError(f"--radius {options.radius}: at most {MAX_RADIUS} (the loss holds one tensor per offset of the pairs "
                         f"it compares, {neighbours_per_pixel(options.radius) // 2} at this radius; psa's radius is 5)")
    if options.limit is not None and options.limit < 1:
        raise WssegError(f"--limit {options.limit}: must be at least 1")


@dataclass
class _Session:
    options: AffinityOptions
    classifier: FCNClassifier
    config: AffinityConfig
    record: dict[str, Any]  # affinity.json: written with every checkpoint, never before the first
    head: AffinityHead
    net: torch.nn.Module  # the head, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    base_lrs: list[float]
    history: list[dict]
    loader: DataLoader
    steps_per_epoch: int
    autocast_dtype: torch.dtype | None


def train_affinity(options: AffinityOptions) -> list[dict]:
    """Train (or resume) the affinity head of ``options.run``; returns the per-epoch history."""
    _check_options(options)
    run = Path(options.run)
    # the run folder is ours (config.json); one writer at a time; an affinity network in it is replaced
    # only when asked (--overwrite), continued only with its own settings (--resume)
    with training_run(options.device, run, options.data, options.masks, options.resume, options.overwrite,
                      records=[RUN_RECORD], run_files=AFFINITY_FILES, what="an affinity network") as group:
        with group.together():
            session = _setup(options, group)
        if session is None:
            return read_history(run, AFFINITY_HISTORY)
        return _fit(session, group)


def _record(options: AffinityOptions, config: AffinityConfig, run: Path, pseudo: dict[str, Any],
            image_size: int, images: int) -> dict[str, Any]:
    training = {name: getattr(options, name) for name in _RESUME_MUST_MATCH}
    training.update(image_size=image_size, scale_range=list(options.scale_range), images=images,
                    data=str(Path(options.data).resolve()), backbone_frozen=True)
    record = {"network": dataclasses.asdict(config), "classifier_sha256": file_sha256(run / "model.pt"),
              "training": training, "labels": pseudo_label_source(pseudo, options.pseudo)}
    return json.loads(json.dumps(record))  # as it reads back from the file (lists, not tuples)


def _setup(options: AffinityOptions, group: ProcessGroup) -> _Session | None:
    run = Path(options.run)
    classifier, run_config = load_run(run, map_location=group.device)
    for parameter in classifier.parameters():
        parameter.requires_grad_(False)
    dataset = VOCDataset(options.data, options.split, masks=options.masks, max_side=options.max_side,
                         max_file_size=options.max_file_size)
    check_same_classes(run_config, dataset.classes, run, options.data)
    if options.limit is not None:
        dataset = VOCDataset(options.data, options.split, masks=options.masks, classes=dataset.classes,
                             ids=dataset.ids[: options.limit], max_side=options.max_side,
                             max_file_size=options.max_file_size)
    dataset.require_images()
    pseudo = read_pseudo_record(options.pseudo, required=True)
    check_pseudo_record(pseudo, options.pseudo, dataset)
    image_size = options.image_size or run_config.image_size
    config = AffinityConfig.for_classifier(classifier, options.radius)
    grid = image_size // config.stride
    if options.radius >= grid:
        raise WssegError(f"--radius {options.radius}: must be below {grid}, the side of a {image_size} px crop's grid "
                         f"at stride {config.stride} (no pairs lie farther apart than the grid)")
    record = _record(options, config, run, pseudo, image_size, len(dataset))

    history: list[dict] = []
    state = None
    # with --resume, a record is compared whenever there is one (a damaged one refused, never taken for
    # none), and weights without a record are refused
    if options.resume and ((run / AFFINITY_FILE).exists() or (run / AFFINITY_RECORD).exists()):
        try:
            previous = read_json(run / AFFINITY_RECORD)
        except (OSError, ValueError, UnicodeDecodeError):
            previous = None
        if not (isinstance(previous, dict) and isinstance(previous.get("training"), dict)
                and previous["training"].get("epochs") is not None):
            raise WssegError(f"{run / AFFINITY_RECORD}: missing, damaged or unreadable; cannot resume (train again "
                             "with --overwrite)")
        changed = [key for key in (*_RESUME_MUST_MATCH, "image_size", "data")
                   if not same_setting(key, previous["training"].get(key), record["training"].get(key))]
        changed += [key for key in ("network", "classifier_sha256", "labels") if previous.get(key) != record[key]]
        if changed:
            raise WssegError(f"{run / AFFINITY_RECORD}: cannot resume with other settings than the run's "
                             f"({', '.join(changed)} differ); train again without --resume")
    if options.resume and (run / AFFINITY_FILE).exists():
        state = read_checkpoint(run / AFFINITY_FILE)
        history = resumed_history(read_history(run, AFFINITY_HISTORY), int(state["epoch"]), options.epochs,
                                  "train-affinity", run / AFFINITY_FILE, group.is_main)
        if history is None:
            return None

    torch.manual_seed(options.seed)
    head = config.build()
    optimizer = torch.optim.AdamW(head.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    base_lrs = [group_["lr"] for group_ in optimizer.param_groups]  # before a resumed state's decayed rates
    if state is not None:
        restore(head, optimizer, state, run / AFFINITY_FILE)
    net = place(head, group)  # the head, or its DDP wrapper
    sampler = EpochShards(len(dataset), options.seed, group.rank, group.world_size)
    workers = resolve_workers(options.workers, group.device, group.local_world_size)
    pairs = SegmentationPairs(dataset, options.pseudo, image_size, options.seed, options.scale_range)
    loader = DataLoader(pairs, batch_size=options.batch_size, sampler=sampler, **loader_settings(group.device, workers))
    autocast_dtype = training_autocast(group.device, options.precision)
    if group.is_main and options.progress:
        print(f"[train-affinity] {group.world_size} x {group.device}, {precision_name(autocast_dtype)}, "
              f"{workers} loader worker(s); frozen backbone, head on {', '.join(config.taps)}", flush=True)
    return _Session(options, classifier, config, record, head, net, optimizer, base_lrs,
                    history, loader, math.ceil(len(sampler) / options.batch_size), autocast_dtype)


def _fit(session: _Session, group: ProcessGroup) -> list[dict]:
    options = session.options
    with deterministic_on_cpu(group.device):
        last_epoch = options.epochs if options.stop_after is None else min(options.epochs, options.stop_after)
        for epoch in range(len(session.history), last_epoch):
            record = _train_one_epoch(session, group, epoch)
            if group.is_main:
                _checkpoint(session, epoch, record)
            group.barrier()
    return session.history


def _train_one_epoch(session: _Session, group: ProcessGroup, epoch: int) -> dict:
    options = session.options
    steps = EpochSteps(session.loader, session.net, session.optimizer, session.base_lrs, epoch, options.epochs,
                       session.steps_per_epoch, options.seed, options.skip_bad,
                       f"affinity epoch {epoch + 1}/{options.epochs}", options.progress and group.is_main)
    device = group.device
    started = time.perf_counter()
    losses: list[torch.Tensor] = []
    groups: dict[str, list[torch.Tensor]] = {"bg": [], "fg": [], "neg": []}
    seen = 0
    for step, images, labels in steps:
        images = images.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=session.autocast_dtype, enabled=session.autocast_dtype is not None):
            taps = tap_outputs(session.classifier, images, session.config.feature_taps())
            embedding = session.net(taps)
        embedding = embedding.float()
        grid = label_grid(labels.to(device), tuple(embedding.shape[-2:]))
        loss, parts = affinity_loss(pair_affinities(embedding, options.radius), pair_targets(grid, options.radius))
        if not torch.isfinite(loss):
            raise WssegError(f"affinity training diverged: the loss is {float(loss.detach())} at epoch {epoch + 1}, "
                             f"step {step + 1}; lower --lr (now {options.lr:g})")
        session.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        session.optimizer.step()
        losses.append(loss.detach())
        for name, value in parts.items():
            groups[name].append(value)
        seen += len(images)
        if step % 10 == 0:  # reading the loss waits for the GPU: not at every step
            steps.bar.set_postfix(loss=f"{float(torch.stack(losses[-20:]).mean()):.4f}")
    synchronize(device)
    seconds = time.perf_counter() - started
    return {"epoch": epoch + 1, "loss": _mean(losses),
            **{f"loss_{name}": _mean(values) for name, values in groups.items()},
            "images_per_second": seen * group.world_size / seconds, "seconds": seconds, "skipped": steps.skipped,
            "precision": precision_name(session.autocast_dtype), "loader_wait_seconds": float(sum(steps.waits))}


def _mean(values: list[torch.Tensor]) -> float:
    return float(torch.stack(values).double().mean()) if values else float("nan")


def _checkpoint(session: _Session, epoch: int, record: dict) -> None:
    """affinity.json, history, then affinity.pt: resuming starts after affinity.pt's epoch and rewrites the
    rest; the record never comes before the weights it describes."""
    run = Path(session.options.run)
    session.history.append(record)
    write_json_atomic(run / AFFINITY_RECORD, session.record)
    write_json_atomic(run / AFFINITY_HISTORY, session.history)
    save_checkpoint(run / AFFINITY_FILE, session.head, epoch, session.optimizer)
    if session.options.progress:
        print(f"[train-affinity] epoch {epoch + 1}/{session.options.epochs}: loss {record['loss']:.4f} "
              f"(bg {record['loss_bg']:.3f}, fg {record['loss_fg']:.3f}, different {record['loss_neg']:.3f}; "
              f"{record['images_per_second']:.1f} img/s)", flush=True)
