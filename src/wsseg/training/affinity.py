"""The affinity network's task (``wsseg train-affinity``), trained on confident pseudo-labels by
:func:`wsseg.training.loop.fit`.

The classifier of RUN stays frozen (its taps are read under no_grad); only the small head of
:mod:`wsseg.models.affinity` learns, from the pairs within the radius of each augmented crop:
same label attracts, different labels repel, 255 ignored, psa's three groups balanced. The
result is RUN/affinity.pt (weights only, with the optimiser for ``--resume``), RUN/affinity.json
(the head, the options, and where the labels came from: PSEUDO/segment.json's method, run,
threshold ...) and RUN/affinity-history.json.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from wsseg.data.loading import SegmentationPairs
from wsseg.data.layout import open_dataset
from wsseg.distributed import ProcessGroup
from wsseg.errors import WssegError
from wsseg.io import file_sha256, read_json, write_json_atomic
from wsseg.models.affinity import (AFFINITY_FILE, AFFINITY_RECORD, MAX_RADIUS, AffinityConfig, AffinityHead,
                                   affinity_loss, label_grid, neighbours_per_pixel, pair_affinities, pair_targets,
                                   tap_outputs)
from wsseg.models.run import check_same_classes, load_run
from wsseg.training.loop import RUN_RECORD, Task, fit
from wsseg.training.options import AffinityOptions
from wsseg.training.pseudo import check_pseudo_record, pseudo_label_source, read_pseudo_record
from wsseg.training.steps import same_setting, unannotated_note

AFFINITY_HISTORY = "affinity-history.json"
# an affinity network's files in the run folder, weights first (--overwrite deletes them in this order)
AFFINITY_FILES = (AFFINITY_FILE, AFFINITY_HISTORY, AFFINITY_RECORD)
# options whose change makes another network: resuming with any of them changed is refused
_RESUME_MUST_MATCH = ("epochs", "batch_size", "lr", "weight_decay", "image_size", "scale_range", "radius", "seed",
                      "split", "limit")


def train_affinity(options: AffinityOptions) -> list[dict]:
    """Train (or resume) the affinity head of ``options.run``; returns the per-epoch history."""
    return fit(AffinityTask(), options)


class AffinityTask(Task):
    """The affinity head on the frozen classifier of a run folder: no validation, the last epoch kept.

    The run folder is the classifier's (config.json): one writer at a time; an affinity network in it
    is replaced only when asked (--overwrite), continued only with its own settings (--resume)."""

    tag = "train-affinity"
    what = "an affinity network"
    run_files = AFFINITY_FILES
    claimed_records = (RUN_RECORD,)
    record_file = AFFINITY_RECORD
    history_file = AFFINITY_HISTORY
    checkpoint = AFFINITY_FILE
    best_file = None
    fresh_hint = "train again without --resume"
    records_elapsed = False
    loss_parts = ("bg", "fg", "neg")

    def folder(self, options: AffinityOptions) -> Path:
        return Path(options.run)

    def prepare(self, options: AffinityOptions, group: ProcessGroup) -> AffinityOptions:
        run = Path(options.run)
        self.options = options
        self.classifier, run_config = load_run(run, map_location=group.device)
        for parameter in self.classifier.parameters():
            parameter.requires_grad_(False)
        dataset = open_dataset(options.data, options.split, masks=options.masks, max_side=options.max_side,
                               max_file_size=options.max_file_size)
        check_same_classes(run_config, dataset.classes, run, options.data)
        if options.limit is not None:
            dataset = open_dataset(options.data, options.split, masks=options.masks, classes=dataset.classes,
                                   ids=dataset.ids[: options.limit], max_side=options.max_side,
                                   max_file_size=options.max_file_size)
        dataset = dataset.for_training()
        dataset.require_images()
        self.dataset = dataset
        pseudo = read_pseudo_record(options.pseudo, required=True)
        check_pseudo_record(pseudo, options.pseudo, dataset)
        self.image_size = options.image_size or run_config.image_size
        self.config = AffinityConfig.for_classifier(self.classifier, options.radius)
        if options.radius > MAX_RADIUS:
            raise WssegError(f"--radius {options.radius}: at most {MAX_RADIUS} (the loss holds one tensor per offset "
                             f"of the pairs it compares, {neighbours_per_pixel(options.radius) // 2} at this radius; "
                             "psa's radius is 5)")
        grid = self.image_size // self.config.stride
        if options.radius >= grid:
            raise WssegError(f"--radius {options.radius}: must be below {grid}, the side of a {self.image_size} px "
                             f"crop's grid at stride {self.config.stride} (no pairs lie farther apart than the grid)")
        self.record = self._record(pseudo, len(dataset))  # affinity.json, written with every checkpoint
        return options

    def _record(self, pseudo: dict[str, Any], images: int) -> dict[str, Any]:
        options, run = self.options, Path(self.options.run)
        training = {name: getattr(options, name) for name in _RESUME_MUST_MATCH}
        training.update(image_size=self.image_size, scale_range=list(options.scale_range), images=images,
                        data=str(Path(options.data).resolve()), backbone_frozen=True)
        record = {"network": dataclasses.asdict(self.config), "classifier_sha256": file_sha256(run / "model.pt"),
                  "training": training, "labels": pseudo_label_source(pseudo, options.pseudo)}
        return json.loads(json.dumps(record))  # as it reads back from the file (lists, not tuples)

    def read_record(self, folder: Path) -> dict[str, Any]:
        try:
            previous = read_json(folder / AFFINITY_RECORD)
        except (OSError, ValueError, UnicodeDecodeError):
            previous = None
        if not (isinstance(previous, dict) and isinstance(previous.get("training"), dict)
                and previous["training"].get("epochs") is not None):
            raise WssegError(f"{folder / AFFINITY_RECORD}: missing, damaged or unreadable; cannot resume (train "
                             "again with --overwrite)")
        return previous

    def changed(self, previous: dict[str, Any], resuming: bool) -> list[str]:
        changed = [key for key in (*_RESUME_MUST_MATCH, "image_size", "data")
                   if not same_setting(key, previous["training"].get(key), self.record["training"].get(key))]
        return changed + [key for key in ("network", "classifier_sha256", "labels") if previous.get(key) != self.record[key]]

    def build(self, resuming: bool) -> AffinityHead:
        return self.config.build()

    def optimizer(self, model: AffinityHead) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=self.options.lr, weight_decay=self.options.weight_decay)

    def items(self) -> Dataset:
        return SegmentationPairs(self.dataset, self.options.pseudo, self.image_size, self.options.seed,
                                 self.options.scale_range)

    def describe(self, group: ProcessGroup, precision: str, workers: int) -> str:
        return (f"{group.world_size} x {group.device}, {precision}, {workers} loader worker(s); frozen backbone, "
                f"head on {', '.join(self.config.taps)}{unannotated_note(self.dataset)}")

    def forward(self, net: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return net(tap_outputs(self.classifier, inputs, self.config.feature_taps()))

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        embedding = outputs.float()
        grid = label_grid(targets, tuple(embedding.shape[-2:]))
        radius = self.options.radius
        return affinity_loss(pair_affinities(embedding, radius), pair_targets(grid, radius))

    def write_record(self, folder: Path) -> None:
        write_json_atomic(folder / AFFINITY_RECORD, self.record)

    def summary(self, record: dict, best: bool, workers: int) -> str | None:
        if not self.options.progress:
            return None
        return (f"loss {record['loss']:.4f} (bg {record['loss_bg']:.3f}, fg {record['loss_fg']:.3f}, different "
                f"{record['loss_neg']:.3f}; {record['images_per_second']:.1f} img/s)")
