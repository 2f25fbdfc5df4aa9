"""``wsseg train-seg``'s Python entry point, kept where earlier versions had it: stage 2's task
lives in :mod:`wsseg.training.segnet`, the loop in :mod:`wsseg.training.loop`."""

from wsseg.training.options import SegTrainOptions
from wsseg.training.segnet import (IGNORE, backbone_start, label_source, score_network, segmentation_loss,
                                   train_segmentation)

__all__ = ["IGNORE", "SegTrainOptions", "backbone_start", "label_source", "score_network", "segmentation_loss",
           "train_segmentation"]
