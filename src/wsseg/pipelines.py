"""Kept for earlier imports: the segmenters live in :mod:`wsseg.segmentation`, one module per kind."""

from wsseg.segmentation.base import (CRF_GRID, THRESHOLD_GRID, SegmentInput, Segmenter, label_overlay, segment_inputs,
                                     timed)
from wsseg.segmentation.confident import Confident
from wsseg.segmentation.crf import DEFAULT_CRF, DenseCRF
from wsseg.segmentation.methods import BUILDERS, build_segmenter, segment_images, with_map_side
from wsseg.segmentation.network import NetworkSegmenter
from wsseg.segmentation.pipeline_a import PIPELINE_A_MISVM_WEIGHT, PipelineA
from wsseg.segmentation.pipeline_b import PIPELINE_B_CAM_WEIGHT, PIPELINE_B_OBJECTNESS_WEIGHT, PipelineB
from wsseg.segmentation.random_walk import RW_BETA, RW_LOGT, RandomWalk, walked_probabilities
from wsseg.segmentation.threshold import Thresholded

__all__ = ["BUILDERS", "CRF_GRID", "Confident", "DEFAULT_CRF", "DenseCRF", "NetworkSegmenter", "PIPELINE_A_MISVM_WEIGHT",
           "PIPELINE_B_CAM_WEIGHT", "PIPELINE_B_OBJECTNESS_WEIGHT", "PipelineA", "PipelineB", "RW_BETA", "RW_LOGT",
           "RandomWalk", "SegmentInput", "Segmenter", "THRESHOLD_GRID", "Thresholded", "build_segmenter",
           "label_overlay", "segment_images", "segment_inputs", "timed", "walked_probabilities", "with_map_side"]
