"""Feeding the classifier: labelled images with seeded augmentation, each rank's share of every
epoch, and the loader settings that keep a GPU fed.

Augmentation is seeded by (seed, epoch, split index) and the epoch's order by (seed, epoch), so
what a batch holds depends neither on the number of loader workers nor on the number of ranks'
shards it was cut from. The epoch travels in the sampler's keys (as DistributedSampler's
``set_epoch``), which is what lets loader workers persist from one epoch to the next.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from wsseg.data.images import read_label_png
from wsseg.data.transforms import (colour_jitter, random_scale_crop_flip, random_scale_crop_flip_pair,
                                   resize_longer_side, to_tensor)
from wsseg.data.voc import VOCDataset, labels_to_vector
from wsseg.errors import DataError

# More workers than this rarely help one GPU (the benchmark: benchmarks/loader_speed.py) and each
# holds a copy of the dataset object and a prefetch queue.
MAX_AUTO_WORKERS = 8


class SeededImages(Dataset):
    """What both training datasets share: a split read by key (a split index, or ``(epoch, split
    index)``, as :class:`EpochShards` gives), and augmentation seeded by (seed, epoch, split index),
    so that an item is the same whichever worker or rank reads it."""

    def __init__(self, dataset: VOCDataset, seed: int, scale_range: tuple[float, float], jitter: float) -> None:
        self.dataset = dataset
        self.seed = seed
        self.scale_range = scale_range
        self.jitter = jitter

    def __len__(self) -> int:
        return len(self.dataset)

    def locate(self, key: int | tuple[int, int]) -> tuple[str, np.random.Generator]:
        """The image id a key names, and the generator of that item's augmentation in that epoch."""
        epoch, split_index = key if isinstance(key, tuple) else (0, key)
        return self.dataset.ids[split_index], np.random.default_rng([self.seed, epoch, split_index])


class LabelledImages(SeededImages):
    """(image tensor, multi-hot labels, error text) by key: a split index, or ``(epoch, split index)``.

    With ``augment`` the image is randomly rescaled, cropped, flipped and colour-jittered by a
    generator seeded by (seed, epoch, split index); without, it is scaled to ``image_size`` on its
    longer side and not padded, so images of different shapes come out in different sizes.
    Errors travel as text, so that a bad file read in a loader worker becomes one clear message
    in the main process.
    """

    def __init__(self, dataset: VOCDataset, image_size: int, seed: int = 0, augment: bool = False,
                 scale_range: tuple[float, float] = (0.7, 1.3), jitter: float = 0.0) -> None:
        super().__init__(dataset, seed, scale_range, jitter)
        self.image_size = image_size
        self.augment = augment

    def __getitem__(self, key: int | tuple[int, int]):
        image_id, rng = self.locate(key)
        try:
            rgb = self.dataset.load_image(image_id)
            labels = self.dataset.load_labels(image_id)
        except DataError as exc:
            return torch.zeros(3, self.image_size, self.image_size), torch.zeros(self.dataset.num_classes), str(exc)
        if self.augment:
            rgb = random_scale_crop_flip(rgb, self.image_size, rng, self.scale_range)
            rgb = colour_jitter(rgb, rng, self.jitter)
        else:
            rgb = resize_longer_side(rgb, self.image_size)
        return to_tensor(rgb), torch.from_numpy(labels_to_vector(labels, self.dataset.num_classes)), ""


class SegmentationPairs(SeededImages):
    """(image tensor, label map tensor, error text) by key: a split index, or ``(epoch, split index)``,
    for training a segmentation network on label maps: pseudo-labels (``label_folder/<id>.png``)
    or, with ``label_folder=None``, the dataset's own masks (the fully supervised bound).

    Image and labels are rescaled, cropped and flipped alike (labels by nearest neighbour, padding
    255 so no loss falls on it), seeded like :class:`LabelledImages`. A label map that is not the
    size of its image, or holds values outside 0..C and 255, is an error naming the PNG.
    """

    def __init__(self, dataset: VOCDataset, label_folder: str | Path | None, crop_size: int, seed: int = 0,
                 scale_range: tuple[float, float] = (0.5, 1.5), jitter: float = 0.0) -> None:
        super().__init__(dataset, seed, scale_range, jitter)
        self.label_folder = None if label_folder is None else Path(label_folder)
        self.crop_size = crop_size

    def load_pair(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The image and its label map, checked against each other (raises DataError)."""
        rgb = self.dataset.load_image(image_id)
        if self.label_folder is None:
            what = "mask"
            path = self.dataset.mask_path(image_id) or \
                self.dataset.root / (self.dataset.mask_dir or "SegmentationClass") / f"{image_id}.png"
            labels = self.dataset.load_mask(image_id, required=True)
        else:
            what, path = "pseudo-label", self.label_folder / f"{image_id}.png"
            if not path.is_file():
                raise DataError(path, "pseudo-label is missing")
            labels = read_label_png(path, self.dataset.num_classes, what, self.dataset.max_file_size)
        if labels.shape != rgb.shape[:2]:
            raise DataError(path, f"{what} is {labels.shape[1]}x{labels.shape[0]} but its image is "
                                  f"{rgb.shape[1]}x{rgb.shape[0]}")
        return rgb, labels

    def __getitem__(self, key: int | tuple[int, int]):
        image_id, rng = self.locate(key)
        try:
            rgb, labels = self.load_pair(image_id)
        except DataError as exc:
            size = self.crop_size
            return torch.zeros(3, size, size), torch.full((size, size), 255, dtype=torch.long), str(exc)
        rgb, labels = random_scale_crop_flip_pair(rgb, labels, self.crop_size, rng, self.scale_range)
        rgb = colour_jitter(rgb, rng, self.jitter)
        return to_tensor(rgb), torch.from_numpy(labels.astype(np.int64)), ""


class EpochShards(Sampler):
    """This rank's share of each epoch's shuffled split, as ``(epoch, split index)`` keys.

    The order of epoch e is a permutation seeded by (seed, e), padded with its own first items
    to a multiple of ``world_size`` so every rank takes as many steps; rank r takes every
    world_size-th item from position r. Call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.size = size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.size / self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        order = np.concatenate([order, order[: len(self) * self.world_size - self.size]])
        return iter([(self.epoch, int(i)) for i in order[self.rank::self.world_size]])


def auto_workers(device_type: str, cpus_per_rank: int) -> int:
    """Loader processes for ``--workers auto``: none on a CPU, where the training process already
    keeps every core busy and workers would compete with it; on a GPU one per CPU core of this
    rank but one (the training process needs its own), at most ``MAX_AUTO_WORKERS``."""
    if device_type != "cuda":
        return 0
    return max(0, min(MAX_AUTO_WORKERS, cpus_per_rank - 1))


def cpus_per_rank(local_world_size: int = 1) -> int:
    """The CPU cores this process may use, shared among the ranks of its machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_world_size))


def loader_settings(device: torch.device, workers: int) -> dict:
    """DataLoader keywords for a device: pinned host memory on CUDA (asynchronous copies), and
    workers kept alive between epochs rather than started again for each."""
    settings: dict = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        settings["persistent_workers"] = True
    return settings
