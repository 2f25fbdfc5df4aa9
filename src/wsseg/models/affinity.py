"""The affinity network (AffinityNet, Ahn & Kwak 2018): which pixels belong together.

A small head on the classifier's own feature taps: each level (the deepest tap at each stride,
plus a stride-4 layer for edges) goes through a 1x1 convolution, is up-sampled to the finest
level's grid (stride 4) and concatenated; two more 1x1 convolutions give an embedding. The
affinity of two grid pixels is exp(-mean |f_i - f_j|) over the embedding's channels (psa's),
1 for identical embeddings, towards 0 for distant ones.

The classifier's backbone stays frozen: the head is trained alone (cheap on a CPU), the class
maps are unchanged, and at inference the head reads the taps of one forward pass of the same
network (docs/method.md, section 7).

Pairs are taken within a radius on the grid (psa: 5), each unordered pair once
(:func:`pair_offsets`); the targets of a pseudo-label map are the three groups psa balances:
background-background and foreground-foreground pairs (attract), pairs of different labels
(repel); a pair touching 255 (uncertain) is in no group.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from wsseg.data.classes import VOID
from wsseg.errors import WssegError
from wsseg.io import file_sha256, read_json
from wsseg.models.backbones import FeatureTap
from wsseg.models.classifier import FCNClassifier
from wsseg.models.run import read_checkpoint
from wsseg.registry import AFFINITY

AFFINITY_FILE = AFFINITY.file  # the registry names the trained files its methods read
AFFINITY_RECORD = "affinity.json"
DEFAULT_RADIUS = 5  # psa's, on its stride-8 grid; ours is stride 4 (section 7 of docs/method.md)
# the largest radius accepted: training holds one tensor per pair offset (about pi r^2 / 2 of them) and
# the walk's transition matrix as many non-zeros per pixel
MAX_RADIUS = 16
LEVEL_CHANNELS = 32  # each tap's width after its 1x1 convolution
EMBEDDING_CHANNELS = 64
# Backbones whose declared taps start at stride 8 get this stride-4 layer for the edges
# (EfficientNet-Lite0's second stage ends at block 2: 24 channels at stride 4).
_STRIDE4_LAYERS = {"efficientnet-lite0": FeatureTap("blocks.2", 4, 24)}


def affinity_taps(classifier: FCNClassifier) -> list[FeatureTap]:
    """The levels the affinity head reads: a stride-4 layer and the deepest declared tap at
    each stride, in forward order, named in ``classifier.named_modules()``."""
    deepest: dict[int, FeatureTap] = {}
    for tap in classifier.feature_taps:  # forward order: the last one at a stride is its deepest
        deepest[tap.stride] = tap
    taps = list(deepest.values())
    if min(deepest) > 4:
        extra = _STRIDE4_LAYERS.get(getattr(classifier.backbone, "name", ""))
        if extra is not None:
            taps.insert(0, FeatureTap(f"backbone.{extra.module}", extra.stride, extra.channels))
    return taps


@contextlib.contextmanager
def _captured(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Outputs of the named modules during the block's forward passes; hooks always removed."""
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}
    handles = [modules[name].register_forward_hook(
        lambda _module, _inputs, output, name=name: captured.__setitem__(name, output)) for name in names]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def tap_outputs(classifier: FCNClassifier, images: torch.Tensor, taps: Sequence[FeatureTap]) -> list[torch.Tensor]:
    """The frozen classifier's outputs at ``taps`` for a batch of images in [0, 1] (eval mode,
    no gradients; the classifier's train/eval mode is restored)."""
    was_training = classifier.training
    classifier.eval()
    try:
        with _captured(classifier, [tap.module for tap in taps]) as captured:
            classifier.features(images)
        return [captured[tap.module].float() for tap in taps]
    finally:
        classifier.train(was_training)


class AffinityHead(nn.Module):
    """Tap outputs (as :func:`tap_outputs` gives them) -> [N, D, h, w] embedding on the finest tap's grid."""

    def __init__(self, channels: Sequence[int], level_channels: int = LEVEL_CHANNELS,
                 embedding_channels: int = EMBEDDING_CHANNELS) -> None:
        super().__init__()
        self.levels = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, level_channels, 1, bias=False), nn.GroupNorm(4, level_channels), nn.ReLU())
            for c in channels)
        width = level_channels * len(channels)
        self.mix = nn.Sequential(nn.Conv2d(width, width, 1, bias=False), nn.GroupNorm(4, width), nn.ReLU(),
                                 nn.Conv2d(width, embedding_channels, 1))

    def forward(self, taps: Sequence[torch.Tensor]) -> torch.Tensor:
        size = taps[0].shape[-2:]
        levels = [level(F.interpolate(tap, size=size, mode="bilinear", align_corners=False)
                        if tap.shape[-2:] != size else tap) for level, tap in zip(self.levels, taps)]
        return self.mix(torch.cat(levels, dim=1))


@dataclass(frozen=True)
class AffinityConfig:
    """What the head is: the taps it reads and its widths (recorded in RUN/affinity.json)."""

    taps: tuple[str, ...]
    channels: tuple[int, ...]
    stride: int  # of the embedding grid: the finest tap's
    radius: int = DEFAULT_RADIUS
    level_channels: int = LEVEL_CHANNELS
    embedding_channels: int = EMBEDDING_CHANNELS

    @classmethod
    def for_classifier(cls, classifier: FCNClassifier, radius: int = DEFAULT_RADIUS) -> AffinityConfig:
        taps = affinity_taps(classifier)
        return cls(tuple(t.module for t in taps), tuple(t.channels for t in taps), min(t.stride for t in taps),
                   radius)

    def build(self) -> AffinityHead:
        return AffinityHead(self.channels, self.level_channels, self.embedding_channels)

    def feature_taps(self) -> list[FeatureTap]:
        return [FeatureTap(name, self.stride, channels) for name, channels in zip(self.taps, self.channels)]


def embed(classifier: FCNClassifier, head: AffinityHead, config: AffinityConfig, images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] images in [0, 1] -> [N, D, h, w] embedding (gradients reach the head only)."""
    return head(tap_outputs(classifier, images, config.feature_taps()))


def pair_offsets(radius: int) -> list[tuple[int, int]]:
    """Grid offsets (dy, dx) with 0 < dy^2 + dx^2 < radius^2, one of each +- pair (dy > 0, or
    dy = 0 and dx > 0): every unordered pair of pixels within the radius is taken once."""
    if radius < 1:
        raise ValueError(f"radius must be at least 1, not {radius}")
    return [(dy, dx) for dy in range(0, radius) for dx in range(-radius + 1, radius)
            if 0 < dy * dy + dx * dx < radius * radius and (dy > 0 or dx > 0)]


def neighbours_per_pixel(radius: int) -> int:
    """Non-zeros per row of the transition matrix: both directions of every offset, and the pixel itself."""
    return 2 * len(pair_offsets(radius)) + 1


def shifted_pairs(grid: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For a [..., h, w] grid, the values at p and at p + (dy, dx) for every p where both lie inside."""
    height, width = grid.shape[-2:]
    x0, x1 = max(0, -dx), width - max(0, dx)
    first = grid[..., : height - dy, x0:x1]
    second = grid[..., dy:, x0 + dx:x1 + dx]
    return first, second


def pair_affinities(embedding: torch.Tensor, radius: int) -> list[torch.Tensor]:
    """[N, D, h, w] embedding -> per offset of :func:`pair_offsets`, the affinities
    exp(-mean_d |f_p - f_q|) of the pairs (p, p + offset), each [N, h - dy, w - |dx|]."""
    result = []
    for dy, dx in pair_offsets(radius):
        first, second = shifted_pairs(embedding, dy, dx)
        result.append(torch.exp(-(first - second).abs().mean(dim=1)))
    return result


@dataclass(frozen=True)
class PairTargets:
    """Per offset of :func:`pair_offsets`, boolean masks of the three pair groups."""

    background: list[torch.Tensor]  # both background: attract
    foreground: list[torch.Tensor]  # both the same class: attract
    different: list[torch.Tensor]  # different labels: repel


def pair_targets(labels: torch.Tensor, radius: int) -> PairTargets:
    """[..., h, w] label grid (0 background, 1..C, 255 uncertain) -> the pair groups; a pair with
    a 255 end is in none."""
    background, foreground, different = [], [], []
    for dy, dx in pair_offsets(radius):
        first, second = shifted_pairs(labels, dy, dx)
        known = (first != VOID) & (second != VOID)
        same = known & (first == second)
        background.append(same & (first == 0))
        foreground.append(same & (first != 0))
        different.append(known & (first != second))
    return PairTargets(background, foreground, different)


def affinity_loss(affinities: Sequence[torch.Tensor], targets: PairTargets
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """psa's balanced loss: the mean -log a over background pairs / 4, over foreground pairs / 4,
    and the mean -log(1 - a) over pairs of different labels / 2 (each group averaged on its own,
    so the many background pairs do not drown the others); an empty group adds 0. The groups'
    losses come back detached, on the device (reading them would wait for a GPU)."""
    def mean_over(group: list[torch.Tensor], values: list[torch.Tensor]) -> torch.Tensor:
        total = sum((v * m).sum() for v, m in zip(values, group))
        count = sum(m.sum() for m in group)
        return total / (count + 1e-5)

    attract = [-torch.log(a + 1e-5) for a in affinities]
    repel = [-torch.log(1.0 + 1e-5 - a) for a in affinities]
    masks = {name: [m.to(a.dtype) for m, a in zip(group, affinities)]
             for name, group in (("bg", targets.background), ("fg", targets.foreground), ("neg", targets.different))}
    bg, fg, neg = mean_over(masks["bg"], attract), mean_over(masks["fg"], attract), mean_over(masks["neg"], repel)
    loss = bg / 4 + fg / 4 + neg / 2
    return loss, {"bg": bg.detach(), "fg": fg.detach(), "neg": neg.detach()}


def label_grid(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[N, H, W] uint8 label maps -> [N, h, w] on the embedding grid, nearest neighbour (as psa
    down-samples its labels): no label is invented between two."""
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].to(torch.uint8)


@dataclass(frozen=True, eq=False)
class AffinityModel:
    """A trained affinity head with what it reads (loaded from RUN by :func:`load_affinity`)."""

    head: AffinityHead
    config: AffinityConfig

    def embed(self, classifier: FCNClassifier, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] images in [0, 1] -> [N, D, h, w] embedding, on the classifier's device."""
        device = next(classifier.parameters()).device
        self.head.to(device).eval()
        with torch.no_grad():
            return embed(classifier, self.head, self.config, images.to(device))


def config_from_record(record: dict, path: str) -> AffinityConfig:
    """The head's config from RUN/affinity.json's ``network`` entry; a damaged one is refused."""
    network = record.get("network") if isinstance(record, dict) else None
    try:
        config = AffinityConfig(taps=tuple(str(t) for t in network["taps"]),
                                channels=tuple(int(c) for c in network["channels"]), stride=int(network["stride"]),
                                radius=int(network["radius"]), level_channels=int(network["level_channels"]),
                                embedding_channels=int(network["embedding_channels"]))
    except (KeyError, TypeError, ValueError):
        raise WssegError(f"{path}: damaged affinity record (its 'network' entry is incomplete); "
                         "run wsseg train-affinity again") from None
    if len(config.taps) != len(config.channels) or not config.taps or not 1 <= config.radius <= MAX_RADIUS:
        raise WssegError(f"{path}: damaged affinity record (taps, channels or radius)")
    return config


def load_affinity(run: str | Path) -> AffinityModel:
    """RUN/affinity.pt (weights only) with RUN/affinity.json; refused, naming the file, when
    missing, damaged, or trained on other classifier weights than RUN/model.pt's."""
    run = Path(run)
    weights, record_path = run / AFFINITY_FILE, run / AFFINITY_RECORD
    for path in (weights, record_path):
        if not path.is_file():
            raise WssegError(f"{path}: no affinity network; run wsseg train-affinity first "
                             f"(wsseg train-affinity --run {run} --data ROOT --pseudo PSEUDO)")
    try:
        record = read_json(record_path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise WssegError(f"{record_path}: unreadable affinity record ({exc.__class__.__name__})") from None
    config = config_from_record(record, str(record_path))
    if record.get("classifier_sha256") != file_sha256(run / "model.pt"):
        raise WssegError(f"{weights}: trained on the features of other classifier weights than {run / 'model.pt'}; "
                         "run wsseg train-affinity again")
    state = read_checkpoint(weights)
    head = config.build()
    try:
        head.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise WssegError(f"{weights}: weights do not fit the affinity head described in {record_path} "
                         f"({str(exc).splitlines()[0][:120]})") from None
    return AffinityModel(head.eval(), config)
