"""Folders of class maps written by ``wsseg maps``, and read back by ``wsseg segment --maps``.

A folder holds ``<id>.npz``/``<id>.png`` per image (:mod:`wsseg.maps.export`) and
``maps.json``, the record of what shaped them: the method with all its options, where the
classes came from (ground-truth labels, or the classifier's at a label threshold) and the run
(its folder and a digest of its weights). Computing DCSM once and fusing it many ways is only
right when the maps are the ones the segmenter would compute, so a folder whose record differs
from what the segmenter asks for is refused, with one line saying what differs.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsseg.data.classes import class_indices, mask_values
from wsseg.data.transforms import batch_tensor
from wsseg.data.voc import VOCDataset
from wsseg.errors import WssegError
from wsseg.io import file_sha256, read_json
from wsseg.maps.resolution import MaxSide, refuse_useless_map_side
from wsseg.maps.export import maps_written, read_maps, write_image_maps
from wsseg.maps.methods import MapMethod, map_method, recorded_map_method
from wsseg.models.classifier import FCNClassifier
from wsseg.outputs import RecordedFolder
from wsseg.segmentation.runner import (ImageItem, RunCounts, SplitSource, batch_classes, check_label_source, open_split,
                          run_split)

MAPS_RECORD = "maps.json"
MAPS = RecordedFolder(MAPS_RECORD, ("*.npz", "*.png"), "maps")
RECORD_FORMAT = "wsseg-maps-1"


def model_digest(run: str | Path) -> str:
    """SHA-256 of the run's weights: maps made by other weights must not be fused as this run's."""
    return file_sha256(Path(run) / "model.pt")


def method_options(method: MapMethod) -> dict[str, Any]:
    """The method's options as plain JSON values (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(method)))


@dataclass(frozen=True)
class MapsRecord:
    """What shaped a folder's maps (its ``maps.json``)."""

    method: MapMethod
    label_source: str  # "gt" or "predicted" (maps.json's "labels")
    label_threshold: float | None  # for predicted labels
    run: str
    model_sha256: str
    data: str | None = None  # the dataset root, resolved (None: a record of an older wsseg, which kept none)
    split: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"format": RECORD_FORMAT, "method": self.method.name, "options": method_options(self.method),
                "labels": self.label_source, "label_threshold": self.label_threshold, "run": self.run,
                "model_sha256": self.model_sha256, "data": self.data, "split": self.split}

    @classmethod
    def read(cls, folder: Path) -> MapsRecord:
        path = folder / MAPS_RECORD
        if not path.is_file():
            raise WssegError(f"{path}: missing; is {folder} a folder written by `wsseg maps`?")
        try:
            data = read_json(path)
            if data.get("format") != RECORD_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, not {RECORD_FORMAT}")
            where = {key: data.get(key) for key in ("data", "split")}
            if not all(value is None or isinstance(value, str) for value in where.values()):
                raise ValueError("data and split must be strings")
            return cls(recorded_map_method(data["method"], data["options"]), data["labels"], data["label_threshold"],
                       data["run"], data["model_sha256"], **where)
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, WssegError) as exc:
            raise WssegError(f"{path}: damaged: not a wsseg maps record ({str(exc)[:120]})") from None

    def difference(self, other: MapsRecord) -> str | None:
        """What differs from ``other`` (in words), or None when the maps would be the same."""
        if self.method != other.method:
            return f"{self.method} here, {other.method} asked for"
        if self.label_source != other.label_source:
            return f"--labels {self.label_source} here, {other.label_source} asked for"
        if self.label_source == "predicted" and self.label_threshold != other.label_threshold:
            return f"--label-threshold {self.label_threshold} here, {other.label_threshold} asked for"
        if self.model_sha256 != other.model_sha256:
            return f"made by the weights of {self.run}, not those of {other.run}"
        if self.data is None or self.split is None:
            return "made by an older wsseg, whose maps.json names no dataset or split"
        if Path(self.data).resolve() != Path(str(other.data)).resolve():
            return f"made on the dataset {self.data}, not {other.data}"
        if self.split != other.split:
            return f"made on split {self.split!r}, not {other.split!r}"
        return None


def maps_record(method: MapMethod, label_source: str, label_threshold: float, source: SplitSource) -> MapsRecord:
    """The record of maps made by ``method`` on these classes with the run's weights, on the source's
    dataset (its resolved root) and split."""
    return MapsRecord(method, label_source, label_threshold if label_source == "predicted" else None, str(source.run),
                      model_digest(source.run), str(Path(source.data).resolve()), source.split)


def maps_record_differs(out: Path, record: MapsRecord) -> str | None:
    """What ``out``'s maps.json says the folder holds, when made otherwise than ``record`` says
    (a damaged maps.json raises)."""
    if not (out / MAPS_RECORD).is_file():
        return None
    difference = MapsRecord.read(out).difference(record)
    return f"other maps ({difference})" if difference else None


def compute_split_maps(model: FCNClassifier, dataset: VOCDataset, method: MapMethod | str, out: str | Path,
                       label_source: str = "gt", scales: Sequence[float] | None = None, batch_size: int = 8,
                       threshold: float = 0.5, skip_bad: bool = False, progress: bool = True,
                       ids: Sequence[str] | None = None) -> RunCounts:
    """Write maps for every image of ``ids`` (default: the split) not already done.

    ``method``: a map method, or its name (with ``scales`` for the methods that take them).
    """
    check_label_source(label_source)
    method = (map_method(method) if isinstance(method, str) else method).with_scales(scales)
    out = Path(out)
    device = next(model.parameters()).device

    def compute(batch: list[ImageItem]) -> list[tuple]:
        images = batch_tensor([item.image for item in batch], device)
        classes = batch_classes(model, batch, label_source, threshold, images)
        maps, extras = method.with_extras(model, images, classes)
        shown = method.normalize(maps).cpu().numpy()
        raw = maps.detach().cpu().numpy()
        extra = {key: value.detach().cpu().numpy() for key, value in extras.items()}
        return [(raw[n, :len(per_image)], mask_values(per_image), shown[n], {k: v[n] for k, v in extra.items()})
                for n, per_image in enumerate(classes)]

    def finish(item: ImageItem, result: tuple) -> None:
        raw, mask_values, shown, extras = result
        write_image_maps(out, item.id, item.image, raw, mask_values, shown, extras)

    return run_split(dataset, compute, finish, ids=ids, batch_size=batch_size, need_labels=label_source == "gt",
                     is_done=lambda image_id: maps_written(out, image_id), skip_bad=skip_bad, progress=progress,
                     desc=f"maps ({method.name})")


def export_maps(source: SplitSource, out: str | Path, method: str = "dcsm", label_source: str = "gt",
                label_threshold: float = 0.5, scales: Sequence[float] | None = None, batch_size: int = 8,
                device: str = "auto", skip_bad: bool = False, progress: bool = True,
                overwrite: bool = False, map_side: MaxSide = "auto") -> RunCounts:
    """``wsseg maps``: this rank's share of the split's maps into ``out``, with ``out/maps.json``;
    ``overwrite`` replaces a folder of maps made another way (else refused); ``map_side``: the
    longest side the maps are computed at, for the methods that have the option."""
    out = Path(out)
    chosen = map_method(method).with_scales(scales)
    refuse_useless_map_side(map_side, chosen.has_max_side, method)
    chosen = chosen.with_max_side(map_side)
    check_label_source(label_source)
    with open_split(source, device, batch_size, out, records=[MAPS.record]) as split:
        record = maps_record(chosen, label_source, label_threshold, source)
        MAPS.start(split.group, out, record.to_json(), lambda: maps_record_differs(out, record), overwrite)
        counts = compute_split_maps(split.model, split.dataset, chosen, out, label_source, None, batch_size,
                                    label_threshold, skip_bad, progress and split.group.is_main, split.ids)
    counts.rank_tag = split.rank_tag
    return counts


@dataclass(frozen=True)
class StoredMaps:
    """Maps of one method read from ``wsseg maps`` folders instead of computed."""

    folders: Mapping[MapMethod, Path]

    @classmethod
    def open(cls, folders: Sequence[str | Path], wanted: Sequence[MapMethod], label_source: str, label_threshold: float,
             source: SplitSource, segmenter_name: str) -> StoredMaps:
        """One folder per map method the segmenter reads, each checked against what it would compute
        (on the source's dataset and split, with its run's weights)."""
        expected = {method.name: maps_record(method, label_source, label_threshold, source) for method in wanted}
        found: dict[MapMethod, Path] = {}
        for folder in map(Path, folders):
            record = MapsRecord.read(folder)
            if record.method.name not in expected:
                raise WssegError(f"{folder / MAPS_RECORD}: {record.method.name} maps, but {segmenter_name} reads "
                                 f"{' and '.join(expected)} maps")
            # the files hold raw maps, normalised as they are read by the method asked for: a
            # normalisation of their own (an older default's) does not make them other maps
            if hasattr(record.method, "normalization"):
                wanted_normalization = getattr(expected[record.method.name].method, "normalization")
                record = dataclasses.replace(record, method=dataclasses.replace(
                    record.method, normalization=wanted_normalization))
            difference = record.difference(expected[record.method.name])
            if difference:
                raise WssegError(f"{folder / MAPS_RECORD}: these maps are not the ones {segmenter_name} would "
                                 f"compute ({difference})")
            found[expected[record.method.name].method] = folder
        missing = [method.name for method in wanted if method not in found]
        if missing:
            raise WssegError(f"{segmenter_name} reads {' and '.join(m.name for m in wanted)} maps: give a --maps "
                             f"folder for {' and '.join(missing)} too")
        return cls(found)

    def batch(self, batch: Sequence[ImageItem], num_classes: int | None = None
              ) -> tuple[list[list[int]], dict[MapMethod, list[np.ndarray]]]:
        """The stored classes (0-based) and normalised maps of a batch's images, each file validated
        against its image (and the dataset's ``num_classes``) before use."""
        classes: list[list[int]] = []
        prepared: dict[MapMethod, list[np.ndarray]] = {method: [] for method in self.folders}
        for item in batch:
            per_image = None
            for method, folder in self.folders.items():
                arrays = read_maps(folder / f"{item.id}.npz", item.image.shape[:2], num_classes)
                stored = class_indices(arrays["labels"])
                if per_image is not None and stored != per_image:
                    raise WssegError(f"{folder / f'{item.id}.npz'}: other classes than the other --maps folder's "
                                     f"for this image")
                per_image = stored
                prepared[method].append(method.normalize(torch.from_numpy(arrays["maps"])[None])[0].numpy())
            classes.append(per_image or [])
        return classes, prepared
