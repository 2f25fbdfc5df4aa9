"""Confident pseudo-labels of any segmenter, by IRN's rule (``wsseg segment --ignore-uncertain``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from wsseg.data.classes import VOID
from wsseg.errors import WssegError
from wsseg.fusion.background import check_threshold
from wsseg.fusion.crf import crf_from_labels
from wsseg.maps import MapMethod
from wsseg.models.classifier import FCNClassifier
from wsseg.segmentation.base import SegmentInput, Segmenter, timed, to_labels


@dataclass(frozen=True, eq=False)
class Confident(Segmenter):
    """Confident pseudo-labels, by IRN's rule: the base segmenter at a higher and at a lower
    background threshold, each refined by IRN's CRF on hard labels (``crf_from_labels``). A
    pixel keeps a class where the higher threshold still gives it one, is background where even
    the lower threshold leaves it background, and is 255 (uncertain, ignored by training and by
    ``wsseg evaluate --ignore-uncertain``) in between. The thresholds lie halfway from the base's
    threshold t to 0 and to 1 (t / 2 and (1 + t) / 2); IRN uses 0.05 and 0.30 around its 0.15.
    ``low`` and ``high`` set the two thresholds otherwise (``benchmarks/confident_band.py``
    compares bands: on peaky photo maps the halfway-to-1 rule keeps almost no object).
    """

    base: Segmenter
    low: float | None = None
    high: float | None = None
    grid: ClassVar[tuple[float, ...]] = ()

    def __post_init__(self) -> None:
        check_threshold(self.threshold)
        if isinstance(self.base, Confident):
            raise WssegError("confident pseudo-labels of confident pseudo-labels make no sense")
        low, high = self.band
        if not 0 <= low <= high <= 1:
            raise WssegError(f"confident band: need 0 <= low <= high <= 1, got low {low}, high {high}")

    @property
    def band(self) -> tuple[float, float]:
        """The background threshold below which a pixel is surely background, and the one above
        which its class is sure."""
        return (self.threshold / 2 if self.low is None else self.low,
                (1 + self.threshold) / 2 if self.high is None else self.high)

    @classmethod
    def of(cls, base: Segmenter) -> Confident:
        return cls(base, threshold=base.threshold)

    @property
    def maps(self) -> tuple[MapMethod, ...]:
        return self.base.maps

    @property
    def needs_features(self) -> bool:  # type: ignore[override]
        return self.base.needs_features

    def image_features(self, model: FCNClassifier, batch: torch.Tensor) -> list[np.ndarray | torch.Tensor | None]:
        return self.base.image_features(model, batch)

    def prepare(self, inputs: SegmentInput, timings: dict[str, float]) -> object:
        return self.base.prepare(inputs, timings)

    def fuse(self, inputs: SegmentInput, prepared: object, timings: dict[str, float]) -> np.ndarray:
        low, high = self.band
        index = np.zeros(256, np.int32)
        index[[0, *inputs.labels]] = np.arange(len(inputs.labels) + 1)
        refined = []
        for threshold in (low, high):
            labels = dataclasses.replace(self.base, threshold=threshold).fuse(inputs, prepared, timings)
            with timed(timings, "confidence crf"):
                refined.append(crf_from_labels(inputs.image, index[labels], len(inputs.labels) + 1))
        loose, strict = refined  # loose: little background; strict: much background
        choice = np.where(strict > 0, strict, np.where(loose == 0, 0, -1))
        return np.where(choice < 0, VOID, to_labels(inputs.labels, np.maximum(choice, 0))).astype(np.uint8)
