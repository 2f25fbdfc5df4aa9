"""The one split runner: the split's pending ids -> fixed batch blocks per rank -> compute -> write.

Every split-level command (``wsseg maps``, ``segment``, ``tune-background``, ``train-misvm``'s
feature pass, the report's example maps) is a short client of :func:`run_split`: it says what is
done already, what to compute for a batch and what to do with each image's result (write it
atomically, or add it to a sum). The runner owns the rest, the same way for all of them:

- batches come from fixed blocks of ``batch_size`` consecutive ids (:func:`iter_batches`), so a
  resumed run, or a rank of a sharded one, computes every image with the neighbours one
  uninterrupted process gives it, and writes the same bytes;
- images already done are skipped (a block whose images are all done is not even read);
- bad files raise, or with ``skip_bad`` are counted and skipped;
- :func:`open_split` loads the run and the dataset, checks they agree, joins torchrun's process
  group, deals this rank its blocks and clears the temporary files a killed run left.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from wsseg.data.classes import class_indices
from wsseg.data.images import DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_SIDE
from wsseg.data.transforms import batch_tensor
from wsseg.data.layout import open_dataset
from wsseg.data.voc import VOCDataset
from wsseg.distributed import ProcessGroup, process_group
from wsseg.errors import DataError, WssegError
from wsseg.outputs import claimed_output
from wsseg.maps.hooks import inference_state
from wsseg.models.classifier import FCNClassifier
from wsseg.models.run import RunConfig, check_same_classes, load_run

LABEL_SOURCES = ("gt", "predicted")
T = TypeVar("T")


@dataclass
class ImageItem:
    id: str
    image: np.ndarray
    labels: tuple[int, ...]  # ground-truth mask values 1..C (empty when unknown)
    done: bool = False  # its output exists already (computed again only as a batch neighbour)


def check_label_source(label_source: str) -> str:
    """Where an image's classes come from (``--labels``): its ground-truth labels or the classifier's."""
    if label_source not in LABEL_SOURCES:
        raise WssegError(f"--labels must be one of {', '.join(LABEL_SOURCES)}, not {label_source!r}")
    return label_source


def predict_labels(model: FCNClassifier, images: torch.Tensor, threshold: float = 0.5) -> list[list[int]]:
    """Classes (0-based) whose sigmoid score passes ``threshold``; the top class when none does
    (every image is assumed to show at least one object, as in PASCAL VOC)."""
    with inference_state(model), torch.no_grad():
        scores = torch.sigmoid(model(images))
    result = []
    for row in scores:
        chosen = torch.nonzero(row > threshold).flatten().tolist()
        result.append(chosen or [int(row.argmax())])
    return result


def batch_classes(model: FCNClassifier, batch: Sequence[ImageItem], label_source: str, threshold: float = 0.5,
                  images: torch.Tensor | None = None) -> list[list[int]]:
    """The classes (0-based) to explain per image: its ground-truth labels, or the classifier's."""
    if label_source == "gt":
        return [class_indices(item.labels) for item in batch]
    if images is None:
        images = batch_tensor([item.image for item in batch], next(model.parameters()).device)
    return predict_labels(model, images, threshold)


def iter_batches(dataset: VOCDataset, ids: Sequence[str], batch_size: int, skip_bad: bool,
                 need_labels: bool, on_skip: Callable[[str], None] | None = None,
                 is_done: Callable[[str], bool] | None = None) -> Iterator[list[ImageItem]]:
    """Batches of equal-size images, cut from fixed blocks of ``batch_size`` consecutive ids.

    The blocks depend on the position in ``ids`` only, never on what is left to do: an image is
    always computed with the same batch neighbours, so a resumed run, or a rank of a sharded one
    (given whole blocks, see ``ProcessGroup.shard_blocks``), gets the same floats as one
    uninterrupted process (batched kernels round differently for another batch). With
    ``is_done``, a batch whose outputs all exist is not yielded (a whole block not even read);
    items mark ``done`` the images computed only as neighbours. Bad files raise or are skipped.
    """
    for start in range(0, len(ids), batch_size):
        block = ids[start:start + batch_size]
        done = [bool(is_done and is_done(image_id)) for image_id in block]
        if all(done):
            continue
        runs: list[list[ImageItem]] = []  # consecutive images of one size
        for image_id, image_done in zip(block, done):
            try:
                image = dataset.load_image(image_id)
                labels = dataset.load_labels(image_id) if need_labels else ()
            except DataError:
                if not skip_bad:
                    raise
                if on_skip:
                    on_skip(image_id)
                continue
            if not runs or runs[-1][0].image.shape != image.shape:
                runs.append([])
            runs[-1].append(ImageItem(image_id, image, labels, image_done))
        yield from (run for run in runs if not all(item.done for item in run))


@dataclass
class RunCounts:
    """What a run did: images finished now, found finished, skipped as bad; seconds per stage."""

    written: int = 0
    already_done: int = 0
    skipped_bad: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    rank_tag: str = ""  # " rank R/W:" when torchrun ran this share

    def summary(self, out: str | Path | None = None) -> str:
        timing = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in self.timings.items())
        return (f"{self.written} written, {self.already_done} already done, {self.skipped_bad} bad images skipped"
                + (f" -> {out}" if out is not None else "") + (f" ({timing})" if timing else ""))


def run_split(dataset: VOCDataset, compute: Callable[[list[ImageItem]], Sequence[T]],
              finish: Callable[[ImageItem, T], None], *, ids: Sequence[str] | None = None, batch_size: int = 8,
              need_labels: bool = True, is_done: Callable[[str], bool] | None = None, skip_bad: bool = False,
              progress: bool = True, desc: str = "run", counts: RunCounts | None = None) -> RunCounts:
    """Run ``compute`` on every pending batch of ``ids`` (default: the split) and ``finish`` each
    image that was not done (write it atomically, or add it up); returns the counts.

    ``compute(batch)`` returns one result per item of the batch; images marked done are computed
    only as batch neighbours and not finished again. ``counts`` may carry timings to add to.
    """
    if batch_size < 1:
        raise WssegError(f"--batch-size must be at least 1, not {batch_size}")
    wanted = list(ids if ids is not None else dataset.ids)
    counts = counts if counts is not None else RunCounts()
    counts.already_done = sum(map(is_done, wanted)) if is_done else 0
    bar = tqdm(total=len(wanted) - counts.already_done, desc=desc, unit="img", disable=not progress)

    def skipped(_image_id: str) -> None:
        counts.skipped_bad += 1
        bar.update(1)

    try:
        for batch in iter_batches(dataset, wanted, batch_size, skip_bad, need_labels, skipped, is_done):
            for item, result in zip(batch, compute(batch), strict=True):
                if item.done:
                    continue
                finish(item, result)
                counts.written += 1
                bar.update(1)
    finally:
        bar.close()
    dataset.require_used(counts.skipped_bad, counts.written + counts.already_done)
    return counts


@dataclass(frozen=True)
class SplitSource:
    """Where a split command reads from: the classifier's run folder and a VOC-layout split."""

    run: Path
    data: Path
    split: str = "val"
    masks: str = "SegmentationClass"
    max_side: int = DEFAULT_MAX_SIDE
    max_file_size: int | None = DEFAULT_MAX_FILE_SIZE  # bytes; larger image and mask files are refused unread

    def dataset(self) -> VOCDataset:
        return open_dataset(self.data, self.split, masks=self.masks, max_side=self.max_side,
                            max_file_size=self.max_file_size)


@dataclass(frozen=True)
class OpenSplit:
    """A loaded run and dataset, and this rank's share of the split (whole batch blocks)."""

    group: ProcessGroup
    model: FCNClassifier  # or a stage-2 SegmentationNet, with its SegRunConfig
    config: RunConfig
    dataset: VOCDataset
    ids: list[str]

    @property
    def rank_tag(self) -> str:
        """`` rank R/W:`` under torchrun, nothing otherwise (for the one-line summaries)."""
        return f" rank {self.group.rank}/{self.group.world_size}:" if self.group.distributed else ""


@contextlib.contextmanager
def open_split(source: SplitSource, device: str = "auto", batch_size: int = 8, out: str | Path | None = None,
               shard: bool = True, records: Sequence[str] = (),
               load: Callable[..., tuple[torch.nn.Module, Any]] = load_run) -> Iterator[OpenSplit]:
    """Load the run and the split, refuse a class-list mismatch, join the process group (when
    torchrun started this one), claim ``out`` by the rules of :mod:`wsseg.outputs` (not inside
    the dataset, not among files without one of ``records``, one run at a time: rank 0 holds the
    lock and clears a killed run's temporaries), and deal this rank its blocks.

    A rank that fails makes every rank stop with a clear message (``ProcessGroup.together``).
    ``shard=False``: every rank gets the whole split (single-process steps such as tuning).
    ``load``: how to rebuild the run's model (default: the classifier; a stage-2 run has its own).
    """
    with process_group(device) as group, contextlib.ExitStack() as held:
        model, config = load(source.run, map_location=group.device)
        dataset = source.dataset().require_images()
        check_same_classes(config, dataset.classes, source.run, source.data)
        if out is not None:
            with group.together():  # a refusal on any rank stops them all
                lock = held.enter_context(claimed_output(out, records, source.data, source.masks, group.is_main))
            if lock.removed_temporaries:
                print(f"removed {lock.removed_temporaries} unfinished temporary file(s) left by an interrupted run "
                      f"in {out}", file=sys.stderr)
        ids = group.shard_blocks(dataset.ids, batch_size) if shard else list(dataset.ids)
        with group.together():
            yield OpenSplit(group, model, config, dataset, ids)
