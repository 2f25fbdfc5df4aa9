"""``wsseg train-misvm``: pipeline A's mi-SVM from a split's image labels (a client of the runner).

The feature pass: every image of the split becomes a bag of SLIC superpixels described by
zoom-out features of the classifier's feature taps, each seeded by the classes' CAM; the
mi-SVM (:mod:`wsseg.fusion.misvm`) is trained on all of them and saved in the run folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsseg.data.classes import class_indices
from wsseg.data.transforms import batch_tensor
from wsseg.data.voc import VOCDataset
from wsseg.errors import WssegError
from wsseg.fusion.misvm import MISVM_FILE, MISVM_MAX_SIDE, PIXELS_PER_SUPERPIXEL, train_misvm
from wsseg.fusion.superpixels import slic_superpixels, superpixel_means
from wsseg.fusion.zoomout import layer_features, zoomout, zoomout_layers
from wsseg.maps import CAM
from wsseg.maps.resolution import shrink, shrink_image
from wsseg.models.classifier import FCNClassifier
from wsseg.segmentation.runner import ImageItem, SplitSource, open_split, run_split


@dataclass(frozen=True)
class MiSVMReport:
    images: int
    instances: int  # superpixels
    skipped: int
    path: Path


def train_misvm_on_split(model: FCNClassifier, dataset: VOCDataset, run: str | Path, batch_size: int = 8,
                         skip_bad: bool = False, progress: bool = True, seed: int = 0,
                         max_side: int | None = MISVM_MAX_SIDE) -> MiSVMReport:
    """Zoom-out features of every superpixel of the split (each image shrunk to at most ``max_side``,
    the side pipeline A will shrink to), one mi-SVM per class, saved in RUN."""
    descriptors: list[np.ndarray] = []
    seeds: list[np.ndarray] = []
    bag_labels: list[list[int]] = []
    device = next(model.parameters()).device
    cam_method, layers = CAM(), zoomout_layers(model)

    def compute(batch: list[ImageItem]) -> list[tuple[np.ndarray, np.ndarray]]:
        images = shrink(batch_tensor([item.image for item in batch], device), max_side)
        every_class = [list(range(dataset.num_classes))] * len(batch)
        cams = cam_method.normalize(cam_method(model, images, every_class)).cpu().numpy()
        results = []
        for item, features, cam in zip(batch, layer_features(model, images, layers), cams):
            superpixels = slic_superpixels(shrink_image(item.image, max_side), PIXELS_PER_SUPERPIXEL)
            results.append((zoomout(features, superpixels), superpixel_means(cam, superpixels)))
        return results

    def finish(item: ImageItem, result: tuple[np.ndarray, np.ndarray]) -> None:
        descriptors.append(result[0])
        seeds.append(result[1])
        bag_labels.append(class_indices(item.labels))

    counts = run_split(dataset, compute, finish, batch_size=batch_size, skip_bad=skip_bad, progress=progress,
                       desc="zoom-out features")
    if not descriptors:
        raise WssegError(f"{dataset.root}: no usable image in split {dataset.split!r}")
    bags = np.concatenate([np.full(len(instance), bag) for bag, instance in enumerate(descriptors)])
    svm = train_misvm(np.concatenate(descriptors), bags, bag_labels, dataset.num_classes,
                      seed=seed, progress=progress, seeds=np.concatenate(seeds))
    path = Path(run) / MISVM_FILE
    # pipeline A checks the classes on load, and shrinks its images to the same side
    dataclasses.replace(svm, classes=dataset.classes.foreground, max_side=max_side).save(path)
    return MiSVMReport(len(bag_labels), int(sum(len(d) for d in descriptors)), counts.skipped_bad, path)


def train_misvm_from_run(source: SplitSource, batch_size: int = 8, device: str = "auto", skip_bad: bool = False,
                         progress: bool = True, seed: int = 0) -> MiSVMReport:
    """``wsseg train-misvm``: the run's classifier on the whole split (one process), mi-SVM into RUN."""
    with open_split(source, device, batch_size, shard=False) as split:
        return train_misvm_on_split(split.model, split.dataset, source.run, batch_size, skip_bad, progress, seed)
