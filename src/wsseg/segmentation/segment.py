"""``wsseg segment`` as library calls: what the CLI and the demo both run.

- :func:`choose_threshold`, the background-threshold policy: ``--threshold`` when given, else
  the one ``wsseg tune-background`` stored in the run (an oracle choice, said so), else the
  method's default from :mod:`wsseg.registry`;
- ``OUT/segment.json``, the record of every option that shaped the segmentations (the maps'
  methods and options, the labels, the threshold and its source): the report draws the maps it
  describes, and ``wsseg evaluate`` repeats its oracle flag (its file name, reader and keys, and
  the protocol of a folder with a record: :mod:`wsseg.outputs`);
- :func:`segment_split` (a client of :mod:`wsseg.segmentation.runner`), with maps computed on the
  fly or read from ``wsseg maps`` folders (:class:`wsseg.segmentation.map_folders.StoredMaps`);
- :func:`segment_image_file`, the single-image path (predicted labels, PNG and overlay).

``wsseg evaluate``'s entry, :func:`wsseg.evaluate.score_segmentations`, sits beside the scoring.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from wsseg.data.classes import class_indices
from wsseg.data.images import DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_SIDE, read_image, write_label_png
from wsseg.data.transforms import to_tensor
from wsseg.data.voc import VOCDataset
from wsseg.distributed import pick_device
from wsseg.errors import WssegError
from wsseg.io import atomic_write, file_sha256
from wsseg.maps.methods import MapMethod, recorded_map_method
from wsseg.maps.resolution import MaxSide, check_max_side, resolve_max_side
from wsseg.models.classifier import FCNClassifier
from wsseg.models.run import RunConfig, load_run
from wsseg.models.segnet import SegmentationNet, SegRunConfig, load_segmentation_run
from wsseg.outputs import SEGMENTATIONS, check_may_write, segment_record_differs
from wsseg.registry import ARTEFACTS, CLASSIFIER_RUN, METHODS, STAGE2_RUN, method_info, method_row
from wsseg.segmentation.base import Segmenter, label_overlay
from wsseg.segmentation.confident import Confident
from wsseg.segmentation.map_folders import StoredMaps, method_options, model_digest
from wsseg.segmentation.methods import build_segmenter
from wsseg.segmentation.network import NetworkSegmenter
from wsseg.segmentation.runner import (ImageItem, RunCounts, SplitSource, batch_classes, check_label_source,
                                      open_split, predict_labels, run_split)
from wsseg.segmentation.tune import BACKGROUND_FILE, load_choices, tuned_for_other_maps

@dataclass(frozen=True)
class SegmentOptions:
    """Everything that decides what a segmentation is (``wsseg segment``'s options)."""

    method: str = "dcsm-crf"
    # the image-level labels (pseudo-labels), or "predicted" by the classifier; None: not given (gt, for
    # the methods that use labels; for --method seg, the classes each pixel may take: None = every one)
    label_source: str | None = None  # --labels; segment.json's "labels"
    label_threshold: float | None = None  # score threshold for predicted labels; None: not given (0.5)
    scales: tuple[float, ...] | None = None  # input scales of the dcsm and cam maps (None: each's default)
    threshold: float | None = None  # background threshold; None: the tuned one, else the method's default
    ignore_uncertain: bool = False  # confident pseudo-labels: 255 where the label is unreliable (Confident)
    tta: bool = False  # --method seg: test-time scales and flips
    crf: bool = False  # --method seg: DeepLab's dense CRF on the softmax
    # the longest side the dcsm and cam maps (or stage 2's network) are computed at: "auto" (the side
    # the classifier, or the network, was trained at), None (the image's own) or pixels
    # (wsseg.maps.resolution)
    map_side: MaxSide = "auto"
    # --method seg --labels predicted: the classifier run that predicts them (None: the one the
    # network's config.json names, see network_classifier)
    classifier: str | Path | None = None

    @property
    def uses_labels(self) -> bool:
        """Whether the method segments each image's labelled classes (all but stage 2's network)."""
        return self.method not in METHODS or METHODS[self.method].uses_labels

    def __post_init__(self) -> None:
        if self.uses_labels or self.label_source is not None:  # the defaults of the methods that use labels
            object.__setattr__(self, "label_source", "gt" if self.label_source is None else self.label_source)
            object.__setattr__(self, "label_threshold", 0.5 if self.label_threshold is None else self.label_threshold)


def check_options(options: SegmentOptions, stored_maps: bool = False) -> None:
    """Refuse options that do not apply to the method (silently ignoring them would mislead)."""
    if not options.uses_labels:
        given = [flag for flag, on in (("--ignore-uncertain", options.ignore_uncertain),
                                       ("--threshold", options.threshold is not None),
                                       ("--scales", options.scales is not None), ("--maps", stored_maps)) if on]
        if given:
            raise WssegError(f"{' and '.join(given)}: not for --method {options.method}, which reads no maps or "
                             "background threshold")
        if options.classifier is not None and options.label_source != "predicted":
            raise WssegError("--classifier predicts the labels of --labels predicted; give both, or neither")
        if options.label_source is None and options.label_threshold is not None:
            raise WssegError("--label-threshold is for --labels predicted")
        check_max_side(options.map_side)
        return
    if options.tta or options.crf:
        raise WssegError("--tta and --crf are for --method seg (a network from `wsseg train-seg`); the other methods "
                         "have their own fusion")
    if options.classifier is not None:
        raise WssegError(f"--classifier is for --method seg; --method {options.method} reads the classifier of --run")


def network_classifier(config: SegRunConfig) -> Path | None:
    """The classifier run a stage-2 network's config.json names: the one its backbone started from,
    else the one that made its pseudo-labels, while it is a classifier run whose weights are the
    ones recorded; None when neither is (named, still there, unchanged)."""
    for record in (config.init, config.labels):
        run = record.get("run") if isinstance(record, dict) else None
        digest = record.get("model_sha256") if isinstance(record, dict) else None
        if not isinstance(run, str) or not (Path(run) / "model.pt").is_file():
            continue
        try:
            RunConfig.load(run)
        except WssegError:  # e.g. pseudo-labels made by another stage-2 network
            continue
        if digest is None or model_digest(run) == digest:
            return Path(run)
    return None


def label_classifier_run(options: SegmentOptions, network_run: str | Path) -> Path | None:
    """The classifier run that predicts the classes a stage-2 network may paint (``--labels
    predicted``: ``--classifier``, else the one the network's config.json names), checked to be a
    classifier of the network's classes before anything is written; None without it."""
    if options.label_source != "predicted":
        return None
    config = SegRunConfig.load(network_run)
    if options.classifier is not None:
        run, which = Path(options.classifier), f"--classifier {options.classifier}"
    else:
        run = network_classifier(config)
        if run is None:
            raise WssegError(f"--labels predicted: {Path(network_run) / 'config.json'} names no classifier run that "
                             "is still there unchanged; give one with --classifier RUN")
        which = f"the classifier {run} that {Path(network_run) / 'config.json'} names"
    classes = RunConfig.load(run).classes
    if list(classes) != list(config.classes):
        raise WssegError(f"{which}: its classes ({', '.join(classes)}) are not the network's "
                         f"({', '.join(config.classes)})")
    return run


def network_segmenter(model: SegmentationNet, options: SegmentOptions, label_run: Path | None,
                      device: str | torch.device) -> tuple[NetworkSegmenter, FCNClassifier | None]:
    """Stage 2's segmenter as ``options`` shape it (the side the network sees, restricted to each
    image's classes when ``--labels`` is given), and the classifier of ``label_run`` loaded on
    ``device`` to predict them (None without one)."""
    segmenter = NetworkSegmenter(model, options.tta, options.crf, resolve_max_side(model, options.map_side),
                                 restrict=options.label_source is not None)
    return segmenter, None if label_run is None else load_run(label_run, map_location=device)[0]


@dataclass(frozen=True)
class BackgroundThreshold:
    """The background threshold a segmentation uses, and where it came from (recorded with it)."""

    value: float
    source: str  # "given" (--threshold), "tuned" (RUN/background.json) or "default" (the registry's)
    tuned_split: str | None = None  # the split whose ground truth chose it, when tuned

    @property
    def oracle(self) -> bool:
        """Chosen by looking at ground truth: scores made with it are oracle numbers."""
        return self.source == "tuned"

    def warning(self, method: str) -> str:
        return (f"[segment] {method}: background threshold {self.value} tuned on the ground truth of split "
                f"{self.tuned_split!r}: scores made with it are oracle numbers")


def choose_threshold(run: str | Path | None, method: str, given: float | None = None,
                     scales: Sequence[float] | None = None, map_side: MaxSide = "auto") -> BackgroundThreshold:
    """``given``, else the threshold tuned for ``method`` in the run on maps like these (same
    scales and map side), else the method's default."""
    if given is not None:
        return BackgroundThreshold(float(given), "given")
    stored = load_choices(run).get(method) if run is not None else None
    if stored:
        differs = tuned_for_other_maps(stored, scales, map_side, method)
        if differs is None:
            return BackgroundThreshold(float(stored["threshold"]), "tuned", stored.get("split"))
        print(f"[segment] warning: the {method} threshold in {Path(run) / BACKGROUND_FILE} was tuned on other maps "
              f"({differs}); using the default {method_info(method).threshold}", file=sys.stderr)
    return BackgroundThreshold(method_info(method).threshold, "default")


def segment_record(options: SegmentOptions, segmenter: Segmenter, threshold: BackgroundThreshold,
                   run: str | Path | None = None, stored: StoredMaps | None = None) -> dict[str, Any]:
    """What ``segment.json`` says about a folder of segmentations."""
    return {"method": options.method, "labels": options.label_source, "label_threshold": options.label_threshold,
            "ignore_uncertain": options.ignore_uncertain,
            "scales": None if options.scales is None else list(options.scales),
            "maps": [{"method": method.name, "options": method_options(method)} for method in segmenter.maps],
            "threshold": threshold.value, "threshold_source": threshold.source,
            "tuned_on_ground_truth": threshold.oracle, "tuned_split": threshold.tuned_split,
            "stored_maps": {} if stored is None else {m.name: str(f) for m, f in stored.folders.items()},
            "run": None if run is None else str(Path(run).resolve())}  # absolute: found from anywhere


def record_maps(record: dict[str, Any]) -> list[MapMethod]:
    """The map methods, with their options, that a ``segment.json`` says the segmenter read."""
    try:
        return [recorded_map_method(entry["method"], entry["options"]) for entry in record.get("maps", [])]
    except (KeyError, TypeError, WssegError):
        return []


def provenance(source: SplitSource, method: str, dataset: VOCDataset) -> dict[str, Any]:
    """What a folder's segmentations were made from: the split, the dataset, and the exact bytes of
    the run's weights and of every trained file the method's registry row reads (a retrained model
    at the same path makes other segmentations); the digest of a file it does not read is null."""
    run, reads = Path(source.run), method_row(method).artefacts
    digests = {artefact.record_key: file_sha256(run / artefact.file)
               if artefact in reads and (run / artefact.file).is_file() else None for artefact in ARTEFACTS}
    return {"split": dataset.split, "data": str(Path(source.data).resolve()),
            "classes": list(dataset.classes.foreground), "model_sha256": model_digest(run), **digests}


def segment_split(model: FCNClassifier | SegmentationNet, dataset: VOCDataset,
                  method: Segmenter | NetworkSegmenter | str, out: str | Path, label_source: str = "gt",
                  batch_size: int = 8,
                  label_threshold: float = 0.5, skip_bad: bool = False, progress: bool = True,
                  ids: Sequence[str] | None = None, stored: StoredMaps | None = None,
                  label_model: FCNClassifier | None = None) -> RunCounts:
    """Write ``out/<id>.png`` (VOC palette) for every image of ``ids`` (default: the split) not done yet.

    ``method``: a segmenter (stage 2's network too: it reads labels only when restricted to them),
    or a registry name with its defaults. ``stored``: read the maps (and the classes) from
    ``wsseg maps`` folders instead of computing them. ``label_model``: the classifier that
    predicts the labels when ``model`` is not one (a stage-2 network restricted to each image's
    classes).
    """
    segmenter = build_segmenter(method) if isinstance(method, str) else method
    check_label_source(label_source)
    if isinstance(model, SegmentationNet) and segmenter.uses_labels and label_source == "predicted" \
            and label_model is None:
        raise WssegError("a stage-2 network restricted to predicted labels needs the classifier that predicts them "
                         "(label_model)")
    out = Path(out)
    counts = RunCounts()

    def compute(batch: list[ImageItem]) -> list[np.ndarray]:
        maps = None
        if stored is not None:
            classes, maps = stored.batch(batch, dataset.num_classes)
        else:
            classes = (batch_classes(label_model or model, batch, label_source, label_threshold)
                       if segmenter.uses_labels else [])
        return segmenter.segment_batch(model, [item.image for item in batch], classes, counts.timings, maps)

    def finish(item: ImageItem, label_map: np.ndarray) -> None:
        write_label_png(out / f"{item.id}.png", label_map)

    return run_split(dataset, compute, finish, ids=ids, batch_size=batch_size,
                     need_labels=segmenter.uses_labels and label_source == "gt",
                     is_done=lambda image_id: (out / f"{image_id}.png").exists(), skip_bad=skip_bad,
                     progress=progress, desc="segment", counts=counts)


# how each kind of run a registry row reads is loaded
RUN_LOADERS: dict[str, Callable[..., tuple[Any, Any]]] = {CLASSIFIER_RUN: load_run, STAGE2_RUN: load_segmentation_run}


def segment_dataset(source: SplitSource, out: str | Path, options: SegmentOptions = SegmentOptions(),
                    batch_size: int = 8, device: str = "auto", skip_bad: bool = False, progress: bool = True,
                    maps: Sequence[str | Path] = (), overwrite: bool = False) -> RunCounts:
    """``wsseg segment --data``: this rank's share of the split into ``out``, with ``out/segment.json``.

    ``maps``: folders written by ``wsseg maps``, one per map method the segmenter reads, fused
    instead of computing the maps again (each checked against what the segmenter would compute).
    With stage 2's ``seg``, ``source.run`` is a ``train-seg`` run and no image labels are read.
    """
    out = Path(out)
    check_options(options, bool(maps))
    info = method_row(options.method)
    if info.uses_labels:
        check_label_source(options.label_source)
    label_run = None if info.uses_labels else label_classifier_run(options, source.run)
    with open_split(source, device, batch_size, out, records=[SEGMENTATIONS.record],
                    load=RUN_LOADERS[info.run]) as split:
        threshold, stored, label_model = None, None, None
        if info.uses_labels:
            threshold = choose_threshold(source.run, options.method, options.threshold, options.scales,
                                         options.map_side)
            segmenter = build_segmenter(options.method, source.run, threshold.value, options.scales, options.map_side)
            if options.ignore_uncertain:
                segmenter = Confident.of(segmenter)
            stored = StoredMaps.open(maps, segmenter.maps, options.label_source, options.label_threshold, source,
                                     options.method) if maps else None
            record = {**segment_record(options, segmenter, threshold, source.run, stored),
                      **provenance(source, options.method, split.dataset)}
        else:
            segmenter, label_model = network_segmenter(split.model, options, label_run, split.group.device)
            record = network_record(options, source, split.config.labels, split.dataset, segmenter, label_run)
        SEGMENTATIONS.start(split.group, out, record, lambda: segment_record_differs(out, record), overwrite)
        if split.group.is_main and threshold is not None and threshold.oracle:
            print(threshold.warning(options.method), file=sys.stderr)
        counts = segment_split(split.model, split.dataset, segmenter, out, options.label_source or "gt", batch_size,
                               0.5 if options.label_threshold is None else options.label_threshold, skip_bad,
                               progress and split.group.is_main, split.ids,
                               stored, label_model)
    counts.rank_tag = split.rank_tag
    return counts


def network_record(options: SegmentOptions, source: SplitSource, trained_on: dict[str, Any],
                   dataset: VOCDataset, segmenter: NetworkSegmenter, classifier: Path | None) -> dict[str, Any]:
    """``segment.json`` for a stage-2 network's segmentations: what its labels were learnt from, the
    side it saw the images at, and which classes it could paint (every one, or each image's labels
    from the ground truth or from the classifier named with the digest of its weights)."""
    return {"method": options.method, "labels": options.label_source, "label_threshold": options.label_threshold,
            "ignore_uncertain": False, "scales": None, "maps": [], "threshold": None, "threshold_source": None,
            "tuned_on_ground_truth": False, "tuned_split": None, "stored_maps": {},
            "run": str(Path(source.run).resolve()), "tta": options.tta, "crf": options.crf,
            "network_side": segmenter.max_side,
            "classifier": None if classifier is None else str(classifier.resolve()),
            "classifier_sha256": None if classifier is None else model_digest(classifier),
            "trained_on": trained_on, **provenance(source, options.method, dataset)}


@dataclass(frozen=True)
class OneImage:
    """What ``wsseg segment --image`` wrote, and the classes it found."""

    label_png: Path
    overlay_png: Path
    classes: list[str]  # the predicted classes' names


def segment_image_file(run: str | Path, image_path: str | Path, out: str | Path,
                       options: SegmentOptions = SegmentOptions(), max_side: int = DEFAULT_MAX_SIDE,
                       device: str = "auto", max_file_size: int | None = DEFAULT_MAX_FILE_SIZE) -> OneImage:
    """``wsseg segment --image``: one image with the classes the classifier predicts, written as a
    label PNG (``out``, ``.png`` added when missing) and ``<out>_overlay.png``. With ``--method
    seg`` the run is a stage-2 network's, and the classes are those its label map holds."""
    check_options(options)
    out = Path(out)
    out = out if out.suffix.lower() == ".png" else out.with_suffix(".png")
    overlay = out.with_name(out.stem + "_overlay.png")
    for path in (out, overlay):  # before any work: neither may replace the image or a dataset's file
        check_may_write(path, inputs=[image_path])
    image = read_image(image_path, max_side, max_file_size)
    info = method_row(options.method)
    model, config = RUN_LOADERS[info.run](run, map_location=pick_device(device))
    if info.uses_labels:
        classes = predict_labels(model, to_tensor(image)[None].to(next(model.parameters()).device),
                                 options.label_threshold)
        threshold = choose_threshold(run, options.method, options.threshold, options.scales, options.map_side)
        if threshold.oracle:
            print(threshold.warning(options.method), file=sys.stderr)
        segmenter = build_segmenter(options.method, run, threshold.value, options.scales, options.map_side)
    else:
        if options.label_source == "gt":
            raise WssegError("--image has no ground-truth labels; use --labels predicted (or leave --labels out)")
        device_used = next(model.parameters()).device
        segmenter, label_model = network_segmenter(model, options, label_classifier_run(options, run), device_used)
        classes = ([[]] if label_model is None else
                   predict_labels(label_model, to_tensor(image)[None].to(device_used), options.label_threshold))
    (label_map,) = segmenter.segment_batch(model, [image], classes, {})
    if not info.uses_labels:  # the classes the network found
        classes = [class_indices(v for v in np.unique(label_map) if 0 < v <= len(config.classes))]
    class_names = [config.classes[c] for c in classes[0]]
    write_label_png(out, label_map)
    with atomic_write(overlay) as handle:
        Image.fromarray(label_overlay(image, label_map)).save(handle, format="PNG")
    return OneImage(out, overlay, class_names)
