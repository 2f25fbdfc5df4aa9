"""The segmentation methods by name: each registry name built into its segmenter.

    segmenter = build_segmenter("pipeline-a", run="runs/x")  # its mi-SVM loaded from the run
    labels = segment_images(model, rgb_images, classes, segmenter)

The names, descriptions and default thresholds are :mod:`wsseg.registry`'s table; ``BUILDERS``
here makes each name a segmenter, loading the trained artefacts it needs from the run folder.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from wsseg.errors import WssegError
from wsseg.fusion.misvm import MISVM_FILE, MiSVM
from wsseg.maps import CAM, DCSM, GradCAM, Gradient, Guided, MapMethod
from wsseg.maps.resolution import MaxSide, refuse_useless_map_side
from wsseg.models.affinity import AffinityModel, load_affinity
from wsseg.models.classifier import FCNClassifier
from wsseg.models.run import RunConfig
from wsseg.registry import SEGMENT_METHODS, method_info
from wsseg.segmentation.base import Segmenter, segment_inputs
from wsseg.segmentation.crf import DEFAULT_CRF, DenseCRF
from wsseg.segmentation.pipeline_a import PipelineA
from wsseg.segmentation.pipeline_b import PipelineB
from wsseg.segmentation.random_walk import RandomWalk
from wsseg.segmentation.threshold import Thresholded


def _misvm(run: Path | None) -> MiSVM:
    if run is None:
        raise WssegError("pipeline-a needs a trained mi-SVM: build it from a run folder (build_segmenter(name, run))"
                         " after `wsseg train-misvm --run RUN --data ROOT`")
    return MiSVM.load(run / MISVM_FILE, RunConfig.load(run).classes)


def _affinity(run: Path | None) -> AffinityModel:
    if run is None:
        raise WssegError("the random-walk methods need a trained affinity network: build them from a run folder "
                         "(build_segmenter(name, run)) after `wsseg train-affinity --run RUN --data ROOT --pseudo "
                         "PSEUDO`")
    return load_affinity(run)


Scales = tuple[float, ...] | None
# name -> segmenter from (threshold, scales, run folder); the names are wsseg.registry's
BUILDERS: dict[str, Callable[[float, Scales, Path | None], Segmenter]] = {
    "cam": lambda t, s, run: Thresholded(CAM().with_scales(s), threshold=t),
    "cam-crf": lambda t, s, run: DenseCRF(CAM().with_scales(s), threshold=t),
    "gradcam": lambda t, s, run: Thresholded(GradCAM(), threshold=t),
    "gradient": lambda t, s, run: Thresholded(Gradient(), threshold=t),
    "guided": lambda t, s, run: Thresholded(Guided(), threshold=t),
    "dcsm": lambda t, s, run: Thresholded(DCSM().with_scales(s), threshold=t),
    "dcsm-crf": lambda t, s, run: DenseCRF(DCSM().with_scales(s), threshold=t),
    "pipeline-a": lambda t, s, run: PipelineA(_misvm(run), DCSM().with_scales(s), threshold=t),
    "pipeline-b": lambda t, s, run: PipelineB(CAM().with_scales(s), DCSM().with_scales(s), threshold=t),
    "cam-rw": lambda t, s, run: RandomWalk(CAM().with_scales(s), affinity=_affinity(run), threshold=t),
    "dcsm-rw": lambda t, s, run: RandomWalk(DCSM().with_scales(s), affinity=_affinity(run), threshold=t),
    "cam-rw-crf": lambda t, s, run: RandomWalk(CAM().with_scales(s), affinity=_affinity(run), crf=DEFAULT_CRF,
                                               threshold=t),
    "dcsm-rw-crf": lambda t, s, run: RandomWalk(DCSM().with_scales(s), affinity=_affinity(run), crf=DEFAULT_CRF,
                                                threshold=t),
}
if list(BUILDERS) != list(SEGMENT_METHODS):
    raise ImportError("wsseg.segmentation.methods.BUILDERS and wsseg.registry.SEGMENT_METHODS list different methods")


def build_segmenter(name: str, run: str | Path | None = None, threshold: float | None = None,
                    scales: Sequence[float] | None = None, map_side: MaxSide = "auto") -> Segmenter:
    """The registry's method ``name``: trained artefacts it needs loaded from ``run``; ``threshold``
    (default: the method's), ``scales`` (input scales of its dcsm and cam maps) and ``map_side``
    (the longest side they are computed at: wsseg.maps.resolution) as given."""
    info = method_info(name)
    segmenter = BUILDERS[name](info.threshold if threshold is None else threshold,
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
    segmenter = _segmenter(method)
    timings = timings if timings is not None else defaultdict(float)
    return [segmenter(inputs, timings) for inputs in segment_inputs(model, images, classes, segmenter, timings)]
