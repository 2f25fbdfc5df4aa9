"""The pieces that :func:`wsseg.training.loop.fit` and the tasks put together: the training and
val splits and the crop size chosen from them, device precision, loader workers, the poly schedule,
dropping bad items, timing the loader, placing and restoring a model, and one epoch's steps
(:class:`EpochSteps`).
"""

from __future__ import annotations

import contextlib
import math
import resource
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from wsseg.data.images import read_image_size
from wsseg.data.loading import auto_workers, cpus_per_rank
from wsseg.data.layout import open_dataset
from wsseg.data.voc import VOCDataset
from wsseg.distributed import ProcessGroup
from wsseg.errors import DataError, WssegError
from wsseg.training.options import PRECISIONS, RunOptions


def training_splits(options: RunOptions) -> tuple[VOCDataset, VOCDataset | None]:
    """The training split (refused when it has no image), without the images that have no label (a COCO
    split's; counted in its ``skipped_unannotated``), and the val split, whole (None without one)."""
    train_set = open_dataset(options.data, options.split, masks=options.masks, max_side=options.max_side,
                             max_file_size=options.max_file_size).for_training()
    train_set.require_images()
    val_set = None
    if options.val_split:
        val_set = open_dataset(options.data, options.val_split, masks=options.masks, classes=train_set.classes,
                               max_side=options.max_side, max_file_size=options.max_file_size, split_beside_json=True)
    return train_set, val_set


def unannotated_note(dataset: VOCDataset) -> str:
    """What a trainer's first line adds when the split lost images without any label (COCO's rule)."""
    skipped = dataset.skipped_unannotated
    return f"; {skipped} image(s) without any annotation skipped" if skipped else ""


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


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: the GPU's allocations on CUDA, the process's resident set on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


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
