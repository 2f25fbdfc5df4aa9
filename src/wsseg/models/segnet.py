"""Stage 2: a segmentation network trained on label maps (pseudo-labels, or ground-truth masks
for the fully supervised bound), and its run folder.

The network is one of our backbones read through its ``segmentation_taps`` (a stride-4 layer
for detail, the last block for semantics) with one of two heads:

- ``deeplabv3plus`` (Chen et al. 2018): atrous spatial pyramid pooling (rates 6/12/18 at output
  stride 16, doubled at 8) plus image pooling on the last block, up-sampled to stride 4 and
  joined with 48 projected low-level channels, then two 3x3 convolutions. Convolutions are
  depthwise-separable, as in DeepLabV3+'s Xception variant, so the head costs about as much as
  the EfficientNet backbone;
- ``lraspp`` (MobileNetV3's Lite R-ASPP, the default): one 1x1 branch gated by global pooling,
  plus a linear classifier on the low-level features. Cheaper, and it learnt both benchmarks
  where DeepLabV3+ at the same rate did not learn glyphs.

The backbone starts from ImageNet's weights or, better on small datasets, from the classifier
run that made the pseudo-labels (:func:`init_backbone_from_classifier`): that backbone has
already learnt the dataset's classes from the image labels, so stage 2 learns the masks instead
of the classes. docs/method.md (stage 2) gives the measurements that chose the default head and
start.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsseg.data.transforms import grow, shrink
from wsseg.errors import WssegError
from wsseg.io import file_sha256
from wsseg.models.backbones import IMAGENET_MEAN, IMAGENET_STD, build_backbone
from wsseg.models.run import TrainedRunConfig, load_run, read_checkpoint

HEADS = ("deeplabv3plus", "lraspp")
PAD_TO = 32  # inputs are padded to a multiple of the backbone's largest stride
# what a segmentation run's config.json says it is: a classifier's run folder says nothing
SEGMENTATION_NETWORK = "segmentation"


def _conv_bn_relu(inputs: int, outputs: int, kernel: int = 1, dilation: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, kernel, padding=dilation * (kernel // 2), dilation=dilation,
                                   groups=groups, bias=False),
                         nn.BatchNorm2d(outputs), nn.ReLU(inplace=True))


def _separable(inputs: int, outputs: int, dilation: int = 1) -> nn.Sequential:
    """Depthwise 3x3 (dilated) then pointwise 1x1, each with batch norm and ReLU."""
    return nn.Sequential(_conv_bn_relu(inputs, inputs, 3, dilation, groups=inputs), _conv_bn_relu(inputs, outputs))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1x1 branch, three dilated 3x3 branches and image pooling."""

    def __init__(self, inputs: int, width: int, rates: tuple[int, ...]) -> None:
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn_relu(inputs, width)] + [_separable(inputs, width, r) for r in rates])
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(inputs, width, 1, bias=False),
                                        nn.ReLU(inplace=True))
        self.project = nn.Sequential(_conv_bn_relu(width * (len(rates) + 2), width), nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pool(x).expand(-1, -1, *x.shape[-2:])
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1))


class DeepLabV3PlusHead(nn.Module):
    def __init__(self, low_channels: int, high_channels: int, num_labels: int, output_stride: int,
                 width: int = 128) -> None:
        super().__init__()
        rates = (6, 12, 18) if output_stride >= 16 else (12, 24, 36)
        self.aspp = ASPP(high_channels, width, rates)
        self.low = _conv_bn_relu(low_channels, 48)
        self.fuse = nn.Sequential(_separable(width + 48, width), _separable(width, width))
        self.classify = nn.Conv2d(width, num_labels, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        high = F.interpolate(self.aspp(high), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classify(self.fuse(torch.cat([high, self.low(low)], dim=1)))


class LRASPPHead(nn.Module):
    def __init__(self, low_channels: int, high_channels: int, num_labels: int, output_stride: int,
                 width: int = 128) -> None:
        super().__init__()
        self.branch = _conv_bn_relu(high_channels, width)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_channels, width, 1), nn.Sigmoid())
        self.classify_high = nn.Conv2d(width, num_labels, 1)
        self.classify_low = nn.Conv2d(low_channels, num_labels, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        gated = self.branch(high) * self.gate(high)
        gated = F.interpolate(gated, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classify_high(gated) + self.classify_low(low)


class SegmentationNet(nn.Module):
    """Backbone taps -> head -> per-pixel logits [N, C + 1, H, W] at the input's size (class 0 is
    background). Input: images as floats in [0, 1]; ImageNet normalisation happens inside."""

    def __init__(self, num_classes: int, backbone: nn.Module, head: str = "deeplabv3plus", width: int = 128) -> None:
        super().__init__()
        if head not in HEADS:
            raise WssegError(f"unknown segmentation head {head!r}; choose from {', '.join(HEADS)}")
        self.num_classes = num_classes
        # the longer side the network learnt its objects at (the run's crop size: training scales
        # each image to it, times the random scale); set by load_segmentation_run, None if unknown
        self.input_size: int | None = None
        self.backbone = backbone
        low, high = backbone.segmentation_taps
        backbone.trim_after(high.module)
        self.taps = (low.module, high.module)
        head_class = DeepLabV3PlusHead if head == "deeplabv3plus" else LRASPPHead
        self.head = head_class(low.channels, high.channels, num_classes + 1, backbone.output_stride, width)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def head_parameters(self) -> list[nn.Parameter]:
        """The new layers (they learn faster than the pretrained backbone)."""
        return list(self.head.parameters())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        # Pad bottom and right to a multiple of 32 (with the mean colour: zero once normalised), as
        # DeepLab pads to its crop: the strided layers then see whole cells, tiny images work, and
        # a GPU meets few distinct input shapes (cuDNN plans a convolution per shape, which made
        # scoring 200 differently sized images take minutes), then crop the logits back.
        padded = (height + (-height) % PAD_TO, width + (-width) % PAD_TO)
        x = F.pad((images - self.mean) / self.std, (0, padded[1] - width, 0, padded[0] - height))
        found = self.backbone.forward_taps(x, self.taps)
        logits = self.head(found[self.taps[0]], found[self.taps[1]])
        return F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)[..., :height, :width]


def build_segmentation_net(num_classes: int, backbone: str = "efficientnet-lite0", head: str = "deeplabv3plus",
                           pretrained: bool = True, weights: str | Path | None = None,
                           output_stride: int = 16) -> SegmentationNet:
    if output_stride not in (8, 16):
        raise WssegError(f"--output-stride {output_stride}: a segmentation network uses 16 or 8")
    net = build_backbone(backbone, pretrained=pretrained, weights=weights, output_stride=output_stride)
    return SegmentationNet(num_classes, net, head)


def init_backbone_from_classifier(model: SegmentationNet, backbone: str, run: str | Path) -> None:
    """Load the backbone weights of a classifier run (``wsseg train``) into ``model``'s backbone
    (the layers after its last tap, which the segmentation network drops, are skipped)."""
    run = Path(run)
    classifier, config = load_run(run)
    if config.backbone != backbone:
        raise WssegError(f"{run}: the classifier's backbone is {config.backbone}, the segmentation network's "
                         f"{backbone}; give --backbone {config.backbone} or another --init-from")
    missing, _dropped = model.backbone.load_state_dict(classifier.backbone.state_dict(), strict=False)
    if missing:
        raise WssegError(f"{run / 'model.pt'}: the classifier's backbone lacks {len(missing)} of the segmentation "
                         f"network's weights (first: {missing[0]})")


IMAGENET_START = {"source": "imagenet"}


def start_record(run: str | Path | None) -> dict[str, Any]:
    """What config.json records of where the backbone started: ImageNet, or a classifier run and
    the SHA-256 of its model.pt."""
    if run is None:
        return dict(IMAGENET_START)
    weights = Path(run) / "model.pt"
    if not weights.is_file():
        raise WssegError(f"{weights}: missing; --init-from needs a classifier run made by `wsseg train`")
    return {"source": "classifier", "run": str(Path(run).resolve()), "model_sha256": file_sha256(weights)}


@dataclass
class SegRunConfig(TrainedRunConfig):
    """A stage-2 run folder's config.json: what the network is, how it was trained, and where its
    training labels came from (``labels``: ``{"source": "pseudo", "folder", "method", "run", ...}``
    or ``{"source": "ground-truth", "masks"}``)."""

    labels: dict[str, Any] = field(kw_only=True)
    # where the backbone's weights started: IMAGENET_START, or the classifier run's record
    init: dict[str, Any] = field(default_factory=lambda: dict(IMAGENET_START))
    network: str = SEGMENTATION_NETWORK
    head: str = "deeplabv3plus"
    crop_size: int = 224
    # the recipe's defaults of the versions that wrote no such key
    epochs: int = 20
    batch_size: int = 8
    scale_range: list[float] = field(default_factory=lambda: [0.5, 1.5])
    jitter: float = 0.4

    @classmethod
    def load(cls, run: str | Path) -> SegRunConfig:
        path, data = cls.read(run, f"missing; is {run} a run folder made by `wsseg train-seg`?")
        if not isinstance(data, dict) or data.get("network") != SEGMENTATION_NETWORK:
            raise WssegError(f"{path}: not a segmentation network's run (made by `wsseg train-seg`); "
                             "--method seg needs one")
        data = cls.known(data)
        problems = []
        if not (isinstance(data.get("classes"), list) and data["classes"]
                and all(isinstance(c, str) for c in data["classes"])):
            problems.append("classes must be a non-empty list of names")
        if not isinstance(data.get("labels"), dict):
            problems.append("labels must be an object")
        if not isinstance(data.get("init", IMAGENET_START), dict):
            problems.append("init must be an object")
        if data.get("head", "deeplabv3plus") not in HEADS:
            problems.append(f"head must be one of {', '.join(HEADS)}")
        if data.get("output_stride", 16) not in (8, 16):
            problems.append("output_stride must be 8 or 16")
        if not isinstance(data.get("backbone", ""), str):
            problems.append("backbone must be a name")
        if problems:
            raise WssegError(f"{path}: {'; '.join(problems)}")
        return cls(**data)


def load_segmentation_run(run: str | Path, map_location: str | torch.device = "cpu"
                          ) -> tuple[SegmentationNet, SegRunConfig]:
    """Rebuild a trained segmentation network from its run folder (weights_only), in eval mode."""
    config = SegRunConfig.load(run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no 'randomly initialised' warning: the weights come next
        model = build_segmentation_net(len(config.classes), config.backbone, config.head, pretrained=False,
                                       output_stride=config.output_stride)
    path = Path(run) / "model.pt"
    if not path.is_file():
        raise WssegError(f"{path}: missing; the run has not finished an epoch yet")
    state = read_checkpoint(path)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise WssegError(f"{path}: weights do not fit the {config.backbone} {config.head} network with "
                         f"{len(config.classes)} classes described in config.json "
                         f"({str(exc).splitlines()[0][:120]})") from None
    model.input_size = config.crop_size
    return model.to(map_location).eval(), config


@torch.no_grad()
def network_probabilities(model: SegmentationNet, images: torch.Tensor, tta: bool = False,
                          max_side: int | None = None) -> torch.Tensor:
    """Softmax probabilities [N, C + 1, H, W] at the images' size, the network run on the images
    shrunk to at most ``max_side`` on their longer side (``None``: their own size).

    Why: ``wsseg train-seg`` scales every image to its crop size (times a random 0.5-1.5) before
    cropping, so the network learnt objects at that scale; a 640x480 photo at its own size shows
    them up to five times larger than a network trained at crop 256 ever saw (on real photos this
    cost about a quarter of the network's val mIoU). Images smaller than that are not enlarged,
    as the class maps are not (``wsseg.maps.resolution``)."""
    probabilities = segment_probabilities(model, shrink(images, max_side), tta)
    return grow(probabilities, images.shape[-2:])


@torch.no_grad()
def segment_probabilities(model: SegmentationNet, images: torch.Tensor, tta: bool = False,
                          scales: tuple[float, ...] = (0.75, 1.0, 1.25)) -> torch.Tensor:
    """Softmax probabilities [N, C + 1, H, W]; with ``tta`` averaged over ``scales`` and their
    horizontal flips (DeepLab's test-time augmentation)."""
    height, width = images.shape[-2:]
    if not tta:
        return torch.softmax(model(images).float(), dim=1)
    total = None
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = images if scale == 1.0 else F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        for flipped in (False, True):
            logits = model(scaled.flip(-1) if flipped else scaled).float()
            logits = logits.flip(-1) if flipped else logits
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            probabilities = torch.softmax(logits, dim=1)
            total = probabilities if total is None else total + probabilities
    return total / (2 * len(scales))
