"""Kept for earlier imports: ``wsseg segment`` is now :mod:`wsseg.segmentation.segment`, ``wsseg
evaluate``'s entry :func:`wsseg.evaluate.score_segmentations`, and segment.json's reader
:func:`wsseg.outputs.read_segment_record`."""

from wsseg.evaluate import Scores, score_segmentations
from wsseg.outputs import SEGMENT_RECORD, read_segment_record
from wsseg.segmentation.segment import (BackgroundThreshold, OneImage, SegmentOptions, check_options, choose_threshold,
                                        network_record, provenance, record_maps, segment_dataset, segment_image_file,
                                        segment_record, segment_split)

__all__ = ["SEGMENT_RECORD", "BackgroundThreshold", "OneImage", "Scores", "SegmentOptions", "check_options",
           "choose_threshold", "network_record", "provenance", "read_segment_record", "record_maps",
           "score_segmentations", "segment_dataset", "segment_image_file", "segment_record", "segment_split"]
