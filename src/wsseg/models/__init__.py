"""Backbones and the fully convolutional multi-label classifier."""

from wsseg.models.backbones import BACKBONES, EfficientNetLite0, VGG16, build_backbone, load_state_dict_file
from wsseg.models.classifier import POOLINGS, FCNClassifier, build_classifier, global_pool

__all__ = ["BACKBONES", "POOLINGS", "EfficientNetLite0", "FCNClassifier", "VGG16", "build_backbone",
           "build_classifier", "global_pool", "load_state_dict_file"]
