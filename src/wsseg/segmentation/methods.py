"""The segmentation methods by name: each row of :mod:`wsseg.registry`'s table built into its segmenter.

    segmenter = build_segmenter("pipeline-a", run="runs/x")  # its mi-SVM loaded from the run
    labels = segment_images(model, rgb_images, classes, segmenter)

A row names its fusion kind; the segmenter class that declares that kind in its ``fusions``
builds it (``Segmenter.from_row``) from the row's map methods and the trained artefacts the row
lists, loaded here from the run folder. Nothing here names a method.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsseg.errors import WssegError
from wsseg.fusion.misvm import MiSVM
from wsseg.maps import MapMethod, map_method
from wsseg.maps.resolution import MaxSide, refuse_useless_map_side
from wsseg.models.affinity import load_affinity
from wsseg.models.classifier import FCNClassifier
from wsseg.models.run import RunConfig
from wsseg.registry import AFFINITY, ARTEFACTS, METHODS, MISVM, SEGMENT_METHODS, MethodInfo, method_info
from wsseg.segmentation.base import Segmenter
from wsseg.segmentation.crf import DenseCRF
from wsseg.segmentation.network import NetworkSegmenter
from wsseg.segmentation.pipeline_a import PipelineA
from wsseg.segmentation.pipeline_b import PipelineB
from wsseg.segmentation.random_walk import RandomWalk
from wsseg.segmentation.threshold import Thresholded

# fusion kind -> the segmenter class that implements it (each class declares its kinds)
SEGMENTERS: dict[str, type[Segmenter] | type[NetworkSegmenter]] = {
    kind: cls for cls in (Thresholded, DenseCRF, PipelineA, PipelineB, RandomWalk, NetworkSegmenter)
    for kind in cls.fusions}
# trained artefact (by file name) -> how it is loaded from a run folder
LOADERS: dict[str, Callable[[Path], Any]] = {
    MISVM.file: lambda run: MiSVM.load(run / MISVM.file, RunConfig.load(run).classes),
    AFFINITY.file: load_affinity,
}
_unknown = [f"{info.name}: {info.fusion}" for info in METHODS.values() if info.fusion not in SEGMENTERS]
if _unknown or set(LOADERS) != {artefact.file for artefact in ARTEFACTS}:
    raise ImportError(f"wsseg.registry's rows name fusion kinds or artefacts no segmenter implements: {_unknown}")

Scales = tuple[float, ...] | None


def _artefacts(info: MethodInfo, run: Path | None) -> dict[str, Any]:
    """The trained files the row reads, loaded from ``run``."""
    if info.artefacts and run is None:
        artefact = info.artefacts[0]
        raise WssegError(f"{info.name} needs a trained {artefact.file}: build it from a run folder "
                         f"(build_segmenter(name, run)) after {artefact.made_by}")
    return {artefact.file: LOADERS[artefact.file](run) for artefact in info.artefacts}


def _build(name: str, threshold: float, scales: Scales, run: Path | None) -> Segmenter:
    info = method_info(name)
    maps = tuple(map_method(map_name).with_scales(scales) for map_name in info.maps)
    return SEGMENTERS[info.fusion].from_row(info, threshold, maps, _artefacts(info, run))


# name -> segmenter from (threshold, scales, run folder), for every method that fuses maps: derived
# from the registry, kept for earlier imports
BUILDERS: dict[str, Callable[[float, Scales, Path | None], Segmenter]] = {
    name: (lambda t, s, run, name=name: _build(name, t, s, run)) for name in SEGMENT_METHODS}


def build_segmenter(name: str, run: str | Path | None = None, threshold: float | None = None,
                    scales: Sequence[float] | None = None, map_side: MaxSide = "auto") -> Segmenter:
    """The registry's method ``name``: trained artefacts it needs loaded from ``run``; ``threshold``
    (default: the method's), ``scales`` (input scales of its dcsm and cam maps) and ``map_side``
    (the longest side they are computed at: wsseg.maps.resolution) as given."""
    info = method_info(name)
    segmenter = _build(name, info.threshold if threshold is None else threshold,
                       None if scales is None else tuple(scales), None if run is None else Path(run))
    return with_map_side(segmenter, map_side)


def with_map_side(segmenter: Segmenter, map_side: MaxSide) -> Segmenter:
    """The segmenter with every map method that has a resolution option computing at ``map_side``;
    refused for a segmenter whose maps have none (a side given there would be silently ignored)."""
    changes = {field.name: value.with_max_side(map_side) for field in dataclasses.fields(segmenter)
               if isinstance(value := getattr(segmenter, field.name), MapMethod) and value.has_max_side}
    refuse_useless_map_side(map_side, bool(changes), "this method's")
    return dataclasses.replace(segmenter, **changes) if changes else segmenter


def _segmenter(method: Segmenter | str) -> Segmenter:
    return build_segmenter(method) if isinstance(method, str) else method


def segment_images(model: FCNClassifier, images: Sequence[np.ndarray], classes: Sequence[Sequence[int]],
                   method: Segmenter | str, timings: dict[str, float] | None = None) -> list[np.ndarray]:
    """Label maps for equally sized RGB images; ``classes`` are 0-based classifier outputs per image.

    ``method``: a segmenter, or a registry name with its defaults (``build_segmenter``).
    """
    timings = timings if timings is not None else defaultdict(float)
    return _segmenter(method).segment_batch(model, images, classes, timings)
