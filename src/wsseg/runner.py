"""Kept for earlier imports: this module is now :mod:`wsseg.segmentation.runner`."""

from wsseg.segmentation.runner import (LABEL_SOURCES, ImageItem, OpenSplit, RunCounts, SplitSource, batch_classes,
                                       check_label_source, iter_batches, open_split, predict_labels, run_split)

__all__ = ["LABEL_SOURCES", "ImageItem", "OpenSplit", "RunCounts", "SplitSource", "batch_classes",
           "check_label_source", "iter_batches", "open_split", "predict_labels", "run_split"]
