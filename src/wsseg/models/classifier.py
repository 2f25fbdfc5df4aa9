"""The fully convolutional multi-label classifier: backbone -> 1x1 conv class score maps -> pooling."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from wsseg.errors import WssegError
from wsseg.models.backbones import IMAGENET_MEAN, IMAGENET_STD, FeatureTap, build_backbone

POOLINGS = ("gmp", "gap", "lse")
# Smallest input side the backbones take (smaller images are stretched up to it).
MIN_INPUT_SIDE = 32


def global_pool(score_maps: torch.Tensor, pooling: str, lse_r: float = 5.0) -> torch.Tensor:
    """[N, C, h, w] score maps -> [N, C] image scores.

    gmp: global max (the authors'); gap: mean; lse: (1/r) log mean exp(r x), between the two.
    """
    flat = score_maps.flatten(2)
    if pooling == "gmp":
        return flat.amax(dim=2)
    if pooling == "gap":
        return flat.mean(dim=2)
    if pooling == "lse":
        return (torch.logsumexp(lse_r * flat, dim=2) - math.log(flat.shape[2])) / lse_r
    raise WssegError(f"unknown pooling {pooling!r}; choose from {', '.join(POOLINGS)}")


class FCNClassifier(nn.Module):
    """Fully convolutional classifier whose image scores are a global pooling of class score maps.

    Input: images as floats in [0, 1], [N, 3, H, W] (ImageNet normalisation happens inside).
    ``forward`` returns logits [N, C]; ``score_maps`` the class score maps [N, C, h, w].
    """

    def __init__(self, num_classes: int, backbone: nn.Module, pooling: str = "gmp", lse_r: float = 5.0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise WssegError(f"unknown pooling {pooling!r}; choose from {', '.join(POOLINGS)}")
        if num_classes < 1:
            raise WssegError("the classifier needs at least one class")
        self.num_classes = num_classes
        self.pooling = pooling
        self.lse_r = lse_r
        self.backbone = backbone
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(backbone.out_channels, num_classes, kernel_size=1)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)
        # the crop side it was trained at (RunConfig.image_size, set by load_run; None: unknown): the map
        # methods compute at most at this side by default, the scale at which it learnt its objects
        self.input_size: int | None = None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def output_stride(self) -> int:
        return int(self.backbone.output_stride)

    @property
    def layer_names(self) -> list[str]:
        """Intermediate layers, as names in ``self.named_modules()``, in forward order."""
        return [f"backbone.{name}" for name in self.backbone.layer_names]

    @property
    def feature_taps(self) -> list[FeatureTap]:
        """The backbone's declared taps, named in ``self.named_modules()``, in forward order."""
        return [dataclasses.replace(tap, module=f"backbone.{tap.module}") for tap in self.backbone.feature_taps]

    @property
    def saliency_layers(self) -> list[str]:
        """Default layers whose derivatives make the DCSM saliency maps: every feature tap."""
        return [tap.module for tap in self.feature_taps]

    @property
    def score_layer(self) -> str:
        """The module whose output is the class score maps."""
        return "classifier"

    def conv_bn_pairs(self) -> list:
        """(conv, batch norm) pairs of the backbone that may be folded for inference."""
        return list(self.backbone.conv_bn_pairs()) if hasattr(self.backbone, "conv_bn_pairs") else []

    def features(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        if min(height, width) < MIN_INPUT_SIDE:
            # Too small for the strided convolutions (a 1x1 image would crash them): stretch each short
            # side to the minimum. Every map is resized back to the image's own size afterwards.
            size = (max(height, MIN_INPUT_SIDE), max(width, MIN_INPUT_SIDE))
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        return self.backbone((images - self.mean) / self.std)

    def score_maps(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(images)))

    def pool(self, score_maps: torch.Tensor) -> torch.Tensor:
        return global_pool(score_maps, self.pooling, self.lse_r)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.score_maps(images))


def build_classifier(num_classes: int, backbone: str = "efficientnet-lite0", pooling: str = "gap",
                     pretrained: bool = True, weights: str | Path | None = None, output_stride: int = 16,
                     lse_r: float = 5.0, dropout: float = 0.0) -> FCNClassifier:
    """A classifier with ``num_classes`` outputs on the named backbone.

    ``pretrained`` loads the bundled ImageNet weights (efficientnet-lite0) or, with ``weights``,
    a local torchvision-layout file (vgg16). VGG16 has no bundled weights: without ``weights``
    it needs ``pretrained=False`` (random initialisation, with a warning).
    """
    net = build_backbone(backbone, pretrained=pretrained, weights=weights, output_stride=output_stride)
    return FCNClassifier(num_classes, net, pooling=pooling, lse_r=lse_r, dropout=dropout)
