"""From class maps to segmentations: background decision and the fully-connected CRF."""

from wsseg.fusion.background import alpha_for_threshold, labels_from_maps, soft_probabilities
from wsseg.fusion.crf import IRN, PSA, CRFParams, crf_from_labels, dense_crf

__all__ = ["CRFParams", "IRN", "PSA", "alpha_for_threshold", "crf_from_labels", "dense_crf", "labels_from_maps",
           "soft_probabilities"]
