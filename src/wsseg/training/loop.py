"""The one training loop, :func:`fit`, and the :class:`Task` a trainer hands it.

``fit(task, options)`` owns what every wsseg trainer does the same way: the device and torchrun's
process group, claiming the run folder, ``--resume`` (which settings must match, the history cut
back to the checkpoint's epoch, a finished run left alone), the epochs with the poly schedule,
autocast and the gradient scaler, micro-batches (DDP's ``no_sync``), the divergence check, patience
and the best epoch, the checkpoint order, the barriers and the progress bar. A task says what only
it knows: its model and training items, one step's forward pass and loss, validation, its record,
and what "best" means.

Reproducible and resumable by construction: the shuffling of epoch e and the augmentation of item i
in epoch e come from generators seeded by (seed, e) and (seed, e, i), and torch's own generator is
reseeded at every epoch (:class:`~wsseg.training.steps.EpochSteps`), so ``--resume`` after epoch k
continues exactly as an uninterrupted run would.

Checkpoint order, the rule every trainer keeps: after an epoch rank 0 writes the task's record
(``config.json``, ``affinity.json``), then the best weights (``model.pt``), then the history, then the
checkpoint that ``--resume`` continues from (``last.pt``, ``affinity.pt``). A record is written with
its weights, never before the first of them, and a run killed part-way resumes after the last
checkpoint and writes the rest again with the same bytes.
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from wsseg.data.loading import EpochShards, loader_settings
from wsseg.distributed import ProcessGroup, process_group
from wsseg.errors import WssegError
from wsseg.io import write_json_atomic
from wsseg.models.run import read_checkpoint, read_history, save_checkpoint
from wsseg.outputs import claim_run_files, claimed_output
from wsseg.registry import ARTEFACTS
from wsseg.training.options import TrainerOptions
from wsseg.training.steps import (EpochSteps, deterministic_on_cpu, place, precision_name, resolve_workers, restore,
                                  synchronize, training_autocast)

# what a run folder of `wsseg train` or `train-seg` holds, checkpoints and the trained files the
# registry's methods read first: --overwrite deletes them in this order, so that a kill part-way never
# leaves a record over weights it does not describe
RUN_FILES = ("last.pt", "model.pt", *(artefact.file for artefact in ARTEFACTS), "history.json",
             "affinity-history.json", "background.json", "affinity.json", "config.json")
RUN_RECORD = "config.json"


class Task(abc.ABC):
    """One trainer, as the loop sees it. A task object serves one run: :meth:`prepare` fills it.

    The class attributes name its files; the methods build, step, validate and describe."""

    tag = "train"  # the command, and the prefix of every line the run prints
    what = "a training run"  # what a folder holding ``run_files`` is said to hold
    run_files: Sequence[str] = RUN_FILES  # deleted by --overwrite, in this order
    claimed_records: Sequence[str] = (RUN_RECORD, "history.json")  # the records that mark a folder as a run
    record_file = RUN_RECORD  # the task's record, written with every checkpoint (write_record)
    history_file = "history.json"
    checkpoint = "last.pt"  # weights and optimiser: what --resume continues from
    best_file: str | None = "model.pt"  # the weights to use; None: the checkpoint is all
    best_key: str | None = None  # the epoch record's field whose highest value is the best epoch (None: the last)
    best_name = ""  # how messages name that field ("val mAP")
    fresh_hint = "use another --out for a new run"  # how to start afresh when resuming is refused
    records_elapsed = True  # epoch records carry the run's elapsed seconds
    loss_parts: tuple[str, ...] = ()  # the named parts of the loss, averaged as loss_NAME
    micro_batch: int | None = None  # images per forward pass (None: the whole batch)

    def folder(self, options: TrainerOptions) -> Path:
        """The folder the run writes in."""
        return Path(options.out)

    @abc.abstractmethod
    def prepare(self, options: TrainerOptions, group: ProcessGroup) -> TrainerOptions:
        """Read the data, check it and make the record; returns the options with automatic ones resolved."""

    @abc.abstractmethod
    def read_record(self, folder: Path) -> Any:
        """The record of the run being resumed (refusing a damaged one, naming it)."""

    @abc.abstractmethod
    def changed(self, previous: Any, resuming: bool) -> list[str]:
        """The settings in which this run differs from the recorded one (``resuming``: it has a checkpoint)."""

    def continue_from(self, previous: Any) -> None:
        """Adopt what a run being resumed fixed when it began (called before :meth:`changed`)."""

    def patience(self) -> int | None:
        """Epochs without a better ``best_key`` after which training stops (None: never)."""
        return None

    @abc.abstractmethod
    def build(self, resuming: bool) -> torch.nn.Module:
        """The module that learns (its weights come from the checkpoint when ``resuming``)."""

    @abc.abstractmethod
    def optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """The optimiser; its groups' rates are the poly schedule's base rates."""

    @abc.abstractmethod
    def items(self) -> Dataset:
        """The training items, (input, target, error text) each, augmented by (seed, epoch, index)."""

    @abc.abstractmethod
    def describe(self, group: ProcessGroup, precision: str, workers: int) -> str:
        """The line the run starts with (shown with progress on)."""

    def start_epoch(self, epoch: int, steps: EpochSteps, optimizer: torch.optim.Optimizer) -> None:
        """Anything an epoch changes before its first step (a linear probe, frozen batch norms)."""

    def batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch on the device as the step's forward pass takes it."""
        return inputs, targets

    @abc.abstractmethod
    def forward(self, net: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """The forward pass (under autocast)."""

    @abc.abstractmethod
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's loss (a mean over the batch) and its named parts (``loss_parts``), in float32."""

    def epoch_facts(self, device: torch.device, first_step_seconds: float) -> dict[str, float]:
        """What this trainer adds to an epoch's record about its training pass."""
        return {}

    def validate(self, model: torch.nn.Module, group: ProcessGroup, workers: int, record: dict) -> None:
        """Score the epoch's weights into ``record`` (rank 0 only)."""

    @abc.abstractmethod
    def write_record(self, folder: Path) -> None:
        """Write the task's record (``record_file``): the loop calls it with every checkpoint, before the weights."""

    @abc.abstractmethod
    def summary(self, record: dict, best: bool, workers: int) -> str | None:
        """The epoch's line after ``[tag] epoch e/E:`` (None: print nothing)."""


@dataclass
class _Session:
    """Everything one training run carries from epoch to epoch."""

    options: TrainerOptions
    folder: Path
    model: torch.nn.Module
    net: torch.nn.Module  # the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    base_lrs: list[float]
    history: list[dict]  # one record per finished epoch: the next epoch is len(history)
    loader: DataLoader  # its sampler (EpochShards) deals this rank's share of each epoch; workers outlive epochs
    steps_per_epoch: int
    workers: int
    autocast_dtype: torch.dtype | None  # mixed precision of the training forward pass (None: float32)
    scaler: torch.amp.GradScaler  # enabled for float16 only
    micro_batch: int  # images per forward/backward pass; their gradients add up to the batch's step


def fit(task: Task, options: TrainerOptions) -> list[dict]:
    """Train (or resume) ``task`` as ``options`` say; returns the per-epoch history."""
    options.check()
    folder = task.folder(options)
    with training_run(options.device, folder, options.data, options.masks, options.resume, options.overwrite,
                      task.claimed_records, task.run_files, task.what) as group:
        with group.together():
            session = _start(task, options, group)
        if session is None:
            return read_history(folder, task.history_file)
        return _epochs(task, session, group)


@contextlib.contextmanager
def training_run(device: str | None, out: str | Path, data: str | Path, masks: str, resume: bool = False,
                 overwrite: bool = False, records: Sequence[str] = (RUN_RECORD, "history.json"),
                 run_files: Sequence[str] = RUN_FILES, what: str = "a training run") -> Iterator[ProcessGroup]:
    """Join torchrun's process group and claim the run folder ``out`` by the rules of
    :mod:`wsseg.outputs` (rank 0 holds the lock, which also clears a killed run's temporaries; a
    refusal on any rank stops them all); a folder already holding ``run_files`` is refused unless
    ``resume`` or ``overwrite`` (then rank 0 deletes them first)."""
    with process_group(device) as group, contextlib.ExitStack() as held:
        with group.together():
            held.enter_context(claimed_output(out, records, data, masks, group.is_main))
            if group.is_main:
                claim_run_files(out, run_files, resume, overwrite, what)
        yield group


def _start(task: Task, options: TrainerOptions, group: ProcessGroup) -> _Session | None:
    """The task prepared, the state to resume from, the model, optimiser and loader; None when the
    run being resumed has nothing left to do (finished, or stopped early)."""
    folder = task.folder(options)
    options = task.prepare(options, group)
    state, history = _resume_point(task, options, folder, group)
    if history is None:
        return None
    torch.manual_seed(options.seed)
    model = task.build(resuming=state is not None)
    optimizer = task.optimizer(model)
    base_lrs = [group_["lr"] for group_ in optimizer.param_groups]  # before a resumed state's decayed rates
    if state is not None:
        restore(model, optimizer, state, folder / task.checkpoint)
    net = place(model, group)  # the model, or its DDP wrapper
    items = task.items()
    sampler = EpochShards(len(items), options.seed, group.rank, group.world_size)
    workers = resolve_workers(options.workers, group.device, group.local_world_size)
    loader = DataLoader(items, batch_size=options.batch_size, sampler=sampler, **loader_settings(group.device, workers))
    autocast_dtype = training_autocast(group.device, options.precision)
    if group.is_main and options.progress:
        print(f"[{task.tag}] {task.describe(group, precision_name(autocast_dtype), workers)}", flush=True)
    return _Session(options, folder, model, net, optimizer, base_lrs, history, loader,
                    steps_per_epoch=-(-len(sampler) // options.batch_size), workers=workers,
                    autocast_dtype=autocast_dtype,
                    scaler=torch.amp.GradScaler(group.device.type, enabled=autocast_dtype == torch.float16),
                    micro_batch=min(task.micro_batch or options.batch_size, options.batch_size))


def _resume_point(task: Task, options: TrainerOptions, folder: Path, group: ProcessGroup
                  ) -> tuple[dict | None, list[dict] | None]:
    """With ``--resume``: the checkpoint to continue from (None: start afresh) and the history up to
    its epoch (None: nothing left to do). The run's record is read whenever it exists -- a damaged
    one, or one of another kind of run, is refused, never taken for 'no record' -- and compared with
    this run's settings; a checkpoint without a record is refused."""
    if not options.resume:
        return None, []
    record = folder / task.record_file
    previous = task.read_record(folder) if record.exists() else None
    state = _resume_state(task, folder)
    if state is not None and previous is None:
        raise WssegError(f"{record}: missing; the checkpoint in {folder} has no record of its settings, so it "
                         "cannot be resumed (--overwrite starts afresh)")
    if state is not None:
        task.continue_from(previous)
    if previous is not None:
        changed = task.changed(previous, resuming=state is not None)
        if changed:
            raise WssegError(f"{record}: cannot resume with other settings than the run's ({', '.join(changed)} "
                             f"differ); {task.fresh_hint}")
    if state is None:
        if group.is_main and folder.is_dir() and any(folder.iterdir()):
            print(f"[{task.tag}] no checkpoint to resume in {folder}; starting fresh")
        return None, []
    history = read_history(folder, task.history_file)[:int(state["epoch"]) + 1]
    finished = len(history) >= options.epochs
    patience = task.patience()
    if finished or stopped_early(history, task.best_key, patience):
        if group.is_main:
            why = "finished" if finished else f"stopped early ({task.best_name} not improved for {patience} epochs)"
            print(f"[{task.tag}] {folder} {why} after epoch {len(history)}; nothing to do")
        return state, None
    if group.is_main:
        print(f"[{task.tag}] resuming {folder} after epoch {len(history)}")
    return state, history


def _resume_state(task: Task, folder: Path) -> dict | None:
    """The checkpoint, or the best-weights file of a run from before checkpoints existed (it carried
    the optimiser). Best weights alone (killed before the first checkpoint) are no state: such a run
    starts afresh."""
    if (folder / task.checkpoint).exists():
        return read_checkpoint(folder / task.checkpoint)
    if task.best_file is not None and (folder / task.best_file).exists():
        state = read_checkpoint(folder / task.best_file)
        return state if "optimizer" in state else None
    return None


def stopped_early(history: list[dict], key: str | None, patience: int | None) -> bool:
    """Whether ``key`` (val mAP) has not improved for ``patience`` epochs (the run's last epochs)."""
    scores = [record.get(key) for record in history] if key is not None else []
    if patience is None or not scores or scores[-1] is None:
        return False
    best = int(np.nanargmax(np.array(scores, dtype=float)))
    return len(scores) - 1 - best >= patience


def best_record(history: list[dict]) -> dict:
    """The epoch record whose weights the best-weights file holds (the last one for runs of older versions)."""
    return next((record for record in history if record.get("best")), history[-1])


def _epochs(task: Task, session: _Session, group: ProcessGroup) -> list[dict]:
    options = session.options
    elapsed_before = float(session.history[-1].get("elapsed", 0.0)) if session.history else 0.0
    run_started = time.perf_counter()
    patience = task.patience()
    with deterministic_on_cpu(group.device):
        last_epoch = options.epochs if options.stop_after is None else min(options.epochs, options.stop_after)
        for epoch in range(len(session.history), last_epoch):
            record = _train_one_epoch(task, session, group, epoch)
            if group.is_main:
                if task.records_elapsed:
                    record["elapsed"] = elapsed_before + time.perf_counter() - run_started
                _validate_and_checkpoint(task, session, group, epoch, record)
            group.barrier()
            if patience is not None and stopped_early(_shared_scores(task, session, group), task.best_key, patience):
                if group.is_main:
                    print(f"[{task.tag}] stopping early: {task.best_name} has not improved for {patience} epochs; "
                          f"{task.best_file} keeps epoch {best_record(session.history)['epoch']}", flush=True)
                break
    return session.history


def _shared_scores(task: Task, session: _Session, group: ProcessGroup) -> list[dict]:
    """Rank 0 validates; every rank must agree on stopping early, so they share its scores."""
    if not group.distributed:
        return session.history
    shared = [[record.get(task.best_key) for record in session.history] if group.is_main else None]
    torch.distributed.broadcast_object_list(shared, src=0)
    return [{task.best_key: value} for value in shared[0]]


def _train_one_epoch(task: Task, session: _Session, group: ProcessGroup, epoch: int) -> dict:
    """One pass over this rank's share of the shuffled split; returns the epoch's record."""
    options, device = session.options, group.device
    steps = EpochSteps(session.loader, session.net, session.optimizer, session.base_lrs, epoch, options.epochs,
                       session.steps_per_epoch, options.seed, options.skip_bad, f"epoch {epoch + 1}/{options.epochs}",
                       options.progress and group.is_main)
    task.start_epoch(epoch, steps, session.optimizer)
    started = time.perf_counter()
    losses: list[torch.Tensor] = []
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in task.loss_parts}
    seen, first_step_seconds = 0, 0.0
    for step, inputs, targets in steps:
        inputs, targets = task.batch(inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True))
        session.optimizer.zero_grad(set_to_none=True)
        loss, step_parts = _step(task, session, inputs, targets, epoch, step)
        session.scaler.step(session.optimizer)
        session.scaler.update()
        losses.append(loss)
        for name, value in step_parts.items():
            parts.setdefault(name, []).append(value)
        seen += len(inputs)
        if not first_step_seconds:  # worker start-up, first batch, allocations: the warm-up
            synchronize(device)
            first_step_seconds = time.perf_counter() - started
        if step % 10 == 0:  # reading the loss waits for the GPU: not at every step
            steps.bar.set_postfix(loss=f"{float(torch.stack(losses[-20:]).mean()):.4f}")
    synchronize(device)
    seconds = time.perf_counter() - started
    return {"epoch": epoch + 1, "loss": _mean(losses), **{f"loss_{name}": _mean(values) for name, values in parts.items()},
            "images_per_second": seen * group.world_size / seconds, "seconds": seconds, "skipped": steps.skipped,
            "precision": precision_name(session.autocast_dtype), **task.epoch_facts(device, first_step_seconds),
            "loader_wait_seconds": float(sum(steps.waits))}


def _step(task: Task, session: _Session, inputs: torch.Tensor, targets: torch.Tensor, epoch: int, step: int
          ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The forward and backward passes of one batch, in micro-batches whose gradients add up to the
    batch's (each part's loss is weighted by its share); under DDP only the last part all-reduces."""
    device, count = inputs.device, len(inputs)
    chunks = [slice(start, start + session.micro_batch) for start in range(0, count, session.micro_batch)]
    total = inputs.new_zeros((), dtype=torch.float32)
    parts: dict[str, torch.Tensor] = {}
    for index, chunk in enumerate(chunks):
        defer = index < len(chunks) - 1 and isinstance(session.net, torch.nn.parallel.DistributedDataParallel)
        with session.net.no_sync() if defer else contextlib.nullcontext():
            with torch.autocast(device.type, dtype=session.autocast_dtype, enabled=session.autocast_dtype is not None):
                outputs = task.forward(session.net, inputs[chunk])
            loss, chunk_parts = task.loss(outputs, targets[chunk])
            share = len(range(count)[chunk]) / count
            loss = loss * share
            if not torch.isfinite(loss):  # nothing after this would be worth keeping
                raise WssegError(f"training diverged: the loss is {float(loss.detach())} at epoch {epoch + 1}, "
                                 f"step {step + 1}; lower --lr (now {session.options.lr:g}). The files of earlier "
                                 "epochs are kept.")
            session.scaler.scale(loss).backward()
        total = total + loss.detach()
        for name, value in chunk_parts.items():
            parts[name] = parts.get(name, 0) + value.detach() * share
    return total, parts


def _mean(values: list[torch.Tensor]) -> float:
    return float(torch.stack(values).double().mean()) if values else float("nan")


def _validate_and_checkpoint(task: Task, session: _Session, group: ProcessGroup, epoch: int, record: dict) -> None:
    """Score the epoch, mark the best one, then write record -> best weights -> history -> checkpoint.

    That order keeps a killed run consistent: resuming starts after the checkpoint's epoch, and what
    was written after it is simply written again, with the same bytes."""
    task.validate(session.model, group, session.workers, record)
    best = _is_best(task, session.history, record)
    if task.best_key is not None:
        if best:
            for previous in session.history:
                previous["best"] = False
        record["best"] = best
    session.history.append(record)
    folder = session.folder
    task.write_record(folder)  # with every checkpoint, never before the first: it describes the weights
    if task.best_file is not None and best:
        save_checkpoint(folder / task.best_file, session.model, epoch)
    write_json_atomic(folder / task.history_file, session.history)
    save_checkpoint(folder / task.checkpoint, session.model, epoch, session.optimizer)
    summary = task.summary(record, best, session.workers)
    if summary is not None:
        print(f"[{task.tag}] epoch {epoch + 1}/{session.options.epochs}: {summary}", flush=True)


def _is_best(task: Task, history: list[dict], record: dict) -> bool:
    """Whether ``record``'s epoch beats every earlier one on ``best_key``; without a score the last epoch is kept."""
    score = record.get(task.best_key) if task.best_key is not None else None
    if score is None:
        return True
    earlier = [r[task.best_key] for r in history if r.get(task.best_key) is not None]
    return not earlier or score > max(earlier)
