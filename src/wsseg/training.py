"""What every wsseg trainer shares (the classifier, the stage-2 segmentation network, the
affinity network): device precision, loader workers, the poly schedule, dropping bad items,
timing the loader, and finding the checkpoint to resume from.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from wsseg.data.loading import auto_workers, cpus_per_rank
from wsseg.data.voc import VOCDataset
from wsseg.distributed import ProcessGroup, process_group
from wsseg.io import NUMBER, check_fields, read_json
from wsseg.errors import DataError, WssegError
from wsseg.models.run import read_checkpoint
from wsseg.outputs import claim_run_files, claimed_output


def drop_bad(batch, skip_bad: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(inputs, targets, error texts) from a loader -> the good items; a bad one raises its
    error (as the DataError naming its file) unless ``skip_bad``, which counts it."""
    images, targets, errors = batch
    bad = [i for i, error in enumerate(errors) if error]
    if bad and not skip_bad:
        raise DataError(errors[bad[0]].split(": ", 1)[0], errors[bad[0]].split(": ", 1)[-1])
    if bad:
        keep = torch.tensor([i for i in range(len(errors)) if not errors[i]], dtype=torch.long)
        images, targets = images[keep], targets[keep]
    return images, targets, len(bad)


def poly_lr(optimizer: torch.optim.Optimizer, base: list[float], step: int, total: int) -> None:
    """The poly schedule (DeepLab's, power 0.9): each group's base rate times (1 - step/total)^0.9."""
    factor = (1 - step / max(total, 1)) ** 0.9
    for group, lr in zip(optimizer.param_groups, base):
        group["lr"] = lr * factor


def resolve_workers(requested: int | None, device: torch.device, local_world_size: int = 1) -> int:
    """``--workers``: the number given, or for ``auto`` (None) :func:`wsseg.data.loading.auto_workers`."""
    if requested is not None:
        if requested < 0:
            raise WssegError(f"--workers {requested}: must be 0 or more (or auto)")
        return requested
    return auto_workers(device.type, cpus_per_rank(local_world_size))


PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def check_shared_options(seed: int, precision: str, scale_range: tuple[float, float]) -> None:
    """The option checks every trainer shares, with one message each whichever trainer it is."""
    if not 0 <= seed < 2 ** 32:
        raise WssegError(f"--seed {seed}: must be from 0 to 2**32 - 1")
    if precision not in PRECISIONS:
        raise WssegError(f"--precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    low, high = scale_range
    if not 0 < low <= high:
        raise WssegError(f"--scale-range {low},{high}: needs 0 < low <= high")


def training_autocast(device: torch.device, precision: str = "auto", bf16_supported: bool | None = None
                      ) -> torch.dtype | None:
    """The autocast dtype of the training forward pass, None for plain float32.

    ``auto`` is bfloat16 on a GPU that has it natively (Ampere and later): float32's exponent
    range, so no loss scaling and nothing to overflow, at half the memory traffic; fp16 with a
    gradient scaler on older GPUs; float32 on a CPU, where autocast would make training slower
    and no longer bit-reproducible. Maps and segmentation never autocast (docs/method.md)."""
    if precision not in PRECISIONS:
        raise WssegError(f"--precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise WssegError(f"--precision {precision}: mixed precision is for CUDA devices; {device} trains in fp32")
    if bf16_supported is None:
        bf16_supported = _native_bf16(device)
    if precision == "bf16" and not bf16_supported:
        raise WssegError(f"--precision bf16: {device} has no native bfloat16; use fp16 or auto")
    if precision == "auto":
        return torch.bfloat16 if bf16_supported else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def _native_bf16(device: torch.device) -> bool:
    with torch.cuda.device(device):
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # torch before 2.3 has no emulation argument
            return bool(torch.cuda.is_bf16_supported())


def precision_name(autocast_dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + grad scaler"}[autocast_dtype]


def resume_checkpoint(out: Path) -> dict | None:
    """The state to resume from: last.pt, or the model.pt of a run from before last.pt existed
    (it carried the optimiser). A model.pt alone without it (killed before the first last.pt)
    is only a best-epoch snapshot: such a run starts afresh."""
    if (out / "last.pt").exists():
        return read_checkpoint(out / "last.pt")
    if (out / "model.pt").exists():
        state = read_checkpoint(out / "model.pt")
        return state if "optimizer" in state else None
    return None


def timed_batches(batches, waits: list[float]):
    """The batches of a loader, appending to ``waits`` how long each took to arrive: time the
    training step spent waiting for data (too many seconds here: raise --workers)."""
    iterator = iter(batches)
    while True:
        asked = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        waits.append(time.perf_counter() - asked)
        yield batch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def head_optimizer(model: torch.nn.Module, head: Sequence[torch.nn.Parameter], lr: float, weight_decay: float,
                   head_lr_scale: float) -> torch.optim.Optimizer:
    """AdamW in two groups: the pretrained body at ``lr``, the new head ``head_lr_scale`` times
    faster (as IRN trains its new layers)."""
    head = list(head)
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    return torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": lr * head_lr_scale}],
                             lr=lr, weight_decay=weight_decay)


def restore(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict, out: Path) -> None:
    """Load a checkpoint to resume from, refusing one made for another network in one line."""
    try:
        model.load_state_dict(state["model"])
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise WssegError(f"{out}: the checkpoint to resume does not fit this run's model "
                         f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]})") from None


def place(model: torch.nn.Module, group: ProcessGroup) -> torch.nn.Module:
    """Move the model to this rank's device (channels-last: CPU convolutions, depthwise ones above
    all, run markedly faster so) and wrap it for DistributedDataParallel under torchrun."""
    model.to(group.device, memory_format=torch.channels_last)
    if not group.distributed:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[group.device.index] if group.device.type == "cuda" else None)


def same_setting(name: str, recorded: object, given: object) -> bool:
    """Whether a recorded setting is the one given; the dataset (``data``) by its resolved path."""
    if name == "data" and isinstance(recorded, str) and isinstance(given, str):
        return Path(recorded).resolve() == Path(given).resolve()
    return recorded == given


def refuse_changed(previous: object, config: object, must_match: Sequence[str], out: Path) -> None:
    """``--resume`` continues a run only with the settings it was started with (its dataset and split too)."""
    changed = [name for name in must_match if not same_setting(name, getattr(previous, name), getattr(config, name))]
    if changed:
        raise WssegError(f"{out}: cannot resume with other settings than the run's ({', '.join(changed)} "
                         "differ); use another --out for a new run")


@contextlib.contextmanager
def deterministic_on_cpu(device: torch.device) -> Iterator[None]:
    """Deterministic kernels while training on a CPU (bit-identical reruns and resumes); the
    previous setting restored afterwards."""
    before = torch.are_deterministic_algorithms_enabled()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


# what a run folder of `wsseg train` or `train-seg` holds, checkpoints first: --overwrite deletes them in
# this order, so that a kill part-way never leaves a record over weights it does not describe
RUN_FILES = ("last.pt", "model.pt", "affinity.pt", "misvm.npz", "history.json", "affinity-history.json",
             "background.json", "affinity.json", "config.json")
RUN_RECORD = "config.json"


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


def resume_point(out: Path, resume: bool, load_record: Callable[[Path], Any]) -> tuple[dict | None, Any]:
    """With ``resume``: the checkpoint to resume from (None: start afresh) and the run's record (None
    where it has none yet), read whenever it exists -- a damaged record, or one of another kind of
    run, is refused, never taken for 'no record' -- and a checkpoint without a record is refused."""
    if not resume:
        return None, None
    previous = load_record(out) if (out / RUN_RECORD).exists() else None
    state = resume_checkpoint(out)
    if state is not None and previous is None:
        raise WssegError(f"{out / RUN_RECORD}: missing; the checkpoint in {out} has no record of its settings, so "
                         "it cannot be resumed (--overwrite starts afresh)")
    return state, previous


def resumed_history(records: list[dict], epoch: int, epochs: int, tag: str, what: str | Path,
                    is_main: bool) -> list[dict] | None:
    """The history of a run resumed from its checkpoint of ``epoch`` (0-based; records written
    after it are dropped), saying so on rank 0; None when the run had already finished."""
    history = records[:epoch + 1]
    if len(history) >= epochs:
        if is_main:
            print(f"[{tag}] {what} finished after epoch {len(history)}; nothing to do")
        return None
    if is_main:
        print(f"[{tag}] resuming {what} after epoch {len(history)}")
    return history


PSEUDO_RECORD = "segment.json"  # what `wsseg segment` leaves beside its PNGs
# the kinds of segment.json's fields that readers use (null allowed): a field of another kind is damage
SEGMENT_RECORD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "method": str, "labels": str, "label_threshold": NUMBER, "threshold": NUMBER, "ignore_uncertain": bool,
    "tuned_on_ground_truth": bool, "run": str, "model_sha256": str, "data": str, "split": str, "classes": list,
    "maps": list, "stored_maps": dict, "scales": list}
# what a trainer records of it: where the pseudo-labels it learnt from came from
_PSEUDO_KEYS = ("method", "labels", "ignore_uncertain", "threshold", "threshold_source", "tuned_on_ground_truth",
                "run", "split", "data", "model_sha256", "scales")


def read_pseudo_record(pseudo: str | Path, required: bool) -> dict[str, Any] | None:
    """PSEUDO/segment.json, what made the pseudo-labels; when not ``required`` (pseudo-labels another
    tool made are welcome), None where it is missing. One that is there but damaged is refused
    either way: it is never taken for 'no record'."""
    path = Path(pseudo) / PSEUDO_RECORD
    if not path.is_file():
        if not required:
            return None
        raise WssegError(f"{path}: missing; --pseudo must be a folder written by `wsseg segment` (e.g. "
                         "wsseg segment --split train --labels gt --method dcsm-crf --ignore-uncertain --out PSEUDO)")
    try:
        record = read_json(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise WssegError(f"{path}: damaged or unreadable ({exc.__class__.__name__}: {str(exc)[:80]}); make the "
                         "pseudo-labels again with `wsseg segment`") from None
    if not isinstance(record, dict) or not isinstance(record.get("method"), str):
        raise WssegError(f"{path}: damaged: not a wsseg segment record (no method)")
    return check_fields(record, SEGMENT_RECORD_FIELDS, path)


def check_pseudo_record(record: dict[str, Any] | None, pseudo: str | Path, dataset: VOCDataset) -> None:
    """Refuse pseudo-labels whose segment.json says they were made on another dataset (resolved path),
    split or class list than the one given, saying which; a record that names none of them (another
    tool's, or an older wsseg's) is not compared on what it does not name."""
    if record is None:
        return
    given_root = dataset.root.resolve()
    differ = []
    if isinstance(record.get("data"), str) and not same_setting("data", record["data"], str(given_root)):
        differ.append(f"dataset {record['data']} (given {given_root})")
    if isinstance(record.get("split"), str) and record["split"] != dataset.split:
        differ.append(f"split {record['split']!r} (given {dataset.split!r})")
    if isinstance(record.get("classes"), list) and record["classes"] != list(dataset.classes.foreground):
        differ.append(f"class list of {len(record['classes'])} classes (given {len(dataset.classes.foreground)})")
    if differ:
        raise WssegError(f"{Path(pseudo) / PSEUDO_RECORD}: these pseudo-labels were made on another "
                         f"{'; another '.join(differ)}; make them for this one with `wsseg segment`")


def pseudo_label_source(record: dict[str, Any] | None, pseudo: str | Path) -> dict[str, Any]:
    """The part of a segment record that says where pseudo-labels came from (None for each key
    when there is no record)."""
    record = record or {}
    return {"folder": str(Path(pseudo).resolve()), **{key: record.get(key) for key in _PSEUDO_KEYS}}


class EpochSteps:
    """One epoch of a trainer's steps, with what every trainer does around them: torch's generator
    reseeded by (seed, epoch) (dropout, drop-connect: a resumed run draws as an uninterrupted one),
    the sampler told the epoch, the network in train mode, a progress bar, bad items dropped (or
    raised, without ``skip_bad``) and counted in ``skipped``, the poly learning rate set before
    each step, and the seconds spent waiting for the loader in ``waits``.

    Iterating yields ``(step, inputs, targets)`` for every batch with something left in it."""

    def __init__(self, loader: torch.utils.data.DataLoader, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 base_lrs: list[float], epoch: int, epochs: int, steps_per_epoch: int, seed: int, skip_bad: bool,
                 desc: str, show: bool) -> None:
        torch.manual_seed(seed * 100003 + epoch)
        loader.sampler.set_epoch(epoch)
        net.train()
        self.optimizer, self.base_lrs = optimizer, base_lrs
        self.first_step = epoch * steps_per_epoch
        self.total_steps = steps_per_epoch * epochs
        self.skip_bad = skip_bad
        self.dataset = loader.dataset.dataset  # the split the loader's items come from
        self.bar = tqdm(loader, desc=desc, unit="batch", disable=not show)
        self.skipped = 0
        self.waits: list[float] = []

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        used = 0
        for step, batch in enumerate(timed_batches(self.bar, self.waits)):
            inputs, targets, bad = drop_bad(batch, self.skip_bad)
            self.skipped += bad
            poly_lr(self.optimizer, self.base_lrs, self.first_step + step, self.total_steps)
            if len(inputs):
                used += len(inputs)
                yield step, inputs, targets
        self.dataset.require_used(self.skipped, used)  # every item bad: refused, as every command does
