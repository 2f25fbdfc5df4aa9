"""Class-map methods as typed objects: options in the constructor, one call, their own normalisation.

    method = DCSM(scales=(1.0,), variant="matconvnet")
    raw = method(model, images, classes)  # [N, K, H, W], unnormalised
    prepared = method.normalize(raw)       # [0, 1], as the fusion steps expect

Every method has the same call signature (as captum's ``attribute``), so they swap in one line;
the objects are frozen dataclasses, hashable, so a segmenter can key the maps it needs by them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from wsseg.errors import WssegError
from wsseg.maps.cam import cam_maps, gradcam_maps
from wsseg.maps.distinct import DCSMResult, dcsm
from wsseg.maps.gradient import gradient_maps, guided_maps
from wsseg.maps.layers import layer_maps
from wsseg.maps.normalize import centre_on_otsu, normalize_maps
from wsseg.maps.resolution import MaxSide, check_max_side, grow, resolve_max_side, shrink
from wsseg.registry import MAP_METHOD_NAMES

Classes = Sequence[Sequence[int]]  # per image, the 0-based classes to explain
DCSM_NORMALIZATIONS = ("linear-otsu", "linear-minmax", "linear-max", "saturated")
# the DCSM normalisation of every wsseg before "linear-otsu" became the default: what a record
# (maps.json, segment.json, a tuned threshold) that names none was made with
EARLIER_DCSM_NORMALIZATION = "linear-minmax"


@dataclass(frozen=True)
class MapMethod:
    """Base of the map methods: ``name`` is the registry key of ``wsseg maps --method``."""

    name: ClassVar[str]

    def __call__(self, model: nn.Module, images: torch.Tensor, classes: Classes) -> torch.Tensor:
        raise NotImplementedError

    def with_extras(self, model: nn.Module, images: torch.Tensor,
                    classes: Classes) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The maps and any by-products worth storing beside them (per image, [N, ...])."""
        return self(model, images, classes), {}

    def normalize(self, maps: torch.Tensor) -> torch.Tensor:
        """Raw maps -> [0, 1]: each map divided by its maximum (negatives clipped)."""
        return normalize_maps(maps)

    def with_scales(self, scales: Sequence[float] | None) -> MapMethod:
        """The same method at other input scales; methods without scales ignore them."""
        return self

    def with_max_side(self, max_side: MaxSide) -> MapMethod:
        """The same method computed at another map side; methods without the option ignore it."""
        return self

    @property
    def has_max_side(self) -> bool:
        return False


@dataclass(frozen=True)
class Gradient(MapMethod):
    """Input-gradient saliency (Simonyan et al. 2014); any classifier returning [N, C] logits."""

    name: ClassVar[str] = "gradient"

    def __call__(self, model: nn.Module, images: torch.Tensor, classes: Classes) -> torch.Tensor:
        return gradient_maps(model, images, classes)


@dataclass(frozen=True)
class Guided(MapMethod):
    """Guided back-propagation saliency at the input (Springenberg et al. 2015)."""

    name: ClassVar[str] = "guided"

    def __call__(self, model: nn.Module, images: torch.Tensor, classes: Classes) -> torch.Tensor:
        return guided_maps(model, images, classes)


@dataclass(frozen=True)
class Layers(MapMethod):
    """Non-distinct BP saliency summed over layers (default: the backbone's feature taps)."""

    name: ClassVar[str] = "layers"
    layers: tuple[str, ...] | None = None
    guided: bool = True
    target: str = "map"
    absolute: bool = True

    def __call__(self, model: nn.Module, images: torch.Tensor, classes: Classes) -> torch.Tensor:
        return layer_maps(model, images, classes, self.layers, self.guided, self.target, self.absolute)


# input scales a map method accepts: each scale runs the network on an image that many times larger
# per side (100 made a 64 px image 6400 px, 6.9 GB), so both the range and the count are bounded
SCALE_RANGE = (0.25, 4.0)
MAX_SCALES = 8


@dataclass(frozen=True)
class _Scaled(MapMethod):
    """A method with input scales, computed on the image shrunk to ``max_side`` (wsseg.maps.resolution:
    "auto" = the side the classifier was trained at, None = the image's own size)."""

    scales: tuple[float, ...] | None = None
    max_side: MaxSide = "auto"

    def __post_init__(self) -> None:
        check_max_side(self.max_side)
        low, high = SCALE_RANGE
        if self.scales is not None and not (0 < len(self.scales) <= MAX_SCALES
                                            and all(low <= float(s) <= high for s in self.scales)):
            raise WssegError(f"--scales {','.join(f'{s:g}' for s in self.scales[:MAX_SCALES + 1])}: give 1 to "
                             f"{MAX_SCALES} scales, each from {low:g} to {high:g} (each runs the network on the image "
                             "that many times larger per side)")

    def with_scales(self, scales: Sequence[float] | None) -> MapMethod:
        return self if scales is None else dataclasses.replace(self, scales=tuple(scales))

    def with_max_side(self, max_side: MaxSide) -> MapMethod:
        return dataclasses.replace(self, max_side=max_side)

    @property
    def has_max_side(self) -> bool:
        return True

    def _inputs(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return shrink(images, resolve_max_side(model, self.max_side))


@dataclass(frozen=True)
class CAM(_Scaled):
    """Class activation maps (Zhou et al. 2016) summed over input scales."""

    name: ClassVar[str] = "cam"
    scales: tuple[float, ...] | None = (1.0,)

    def __call__(self, model: nn.Module, images: torch.Tensor, classes: Classes) -> torch.Tensor:
        return grow(cam_maps(model, self._inputs(model, images), classes, self.scales or (1.0,)), images.shape[-2:])


@dataclass(frozen=True)
class GradCAM(MapMethod):
    """Grad-CAM (Selvaraju et al. 2017) at ``layer`` (default: the backbone's output)."""

    name: ClassVar[str] = "gradcam"
    layer: str | None = None

    def __call__(self, model: nn.Module, images: torch.Tensor, classes: Classes) -> torch.Tensor:
        return gradcam_maps(model, images, classes, self.layer)


@dataclass(frozen=True)
class DCSM(_Scaled):
    """Distinct class-specific saliency maps (see :func:`wsseg.maps.distinct.dcsm` for the options);
    ``scales=None`` is the variant's default (matconvnet 0.8, 1, 1.2; caffe 1)."""

    name: ClassVar[str] = "dcsm"
    variant: str = "matconvnet"
    layers: tuple[str, ...] | None = None
    threshold: float = 0.5
    min_candidates: int | None = None
    sharpness: float = 3.0
    fold_bn: bool = True
    normalization: str = "linear-otsu"
    guided: bool = True

    def result(self, model: nn.Module, images: torch.Tensor, classes: Classes) -> DCSMResult:
        """The full :class:`DCSMResult` (class-agnostic map, candidates, scores), its maps at the image's size."""
        result = dcsm(model, self._inputs(model, images), classes, self.scales, self.layers, self.variant,
                      self.threshold, self.min_candidates, self.sharpness, self.fold_bn, self.guided)
        size = images.shape[-2:]
        return dataclasses.replace(result, maps=grow(result.maps, size), agnostic=grow(result.agnostic, size))

    def __call__(self, model: nn.Module, images: torch.Tensor, classes: Classes) -> torch.Tensor:
        return self.result(model, images, classes).maps

    def with_extras(self, model: nn.Module, images: torch.Tensor,
                    classes: Classes) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        result = self.result(model, images, classes)
        return result.maps, {"agnostic": result.agnostic}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.normalization not in DCSM_NORMALIZATIONS:
            raise WssegError(f"unknown DCSM normalisation {self.normalization!r}; "
                             f"choose from {', '.join(DCSM_NORMALIZATIONS)}")

    def normalize(self, maps: torch.Tensor) -> torch.Tensor:
        """DCSM's maps -> [0, 1], by ``normalization``:

        * ``linear-minmax``: undo the final tanh(3x) and stretch each map's range to
          [0, 1]. The authors' maps saturate (tanh(3x) > 0.76 wherever x > 1/4 of the maximum)
          and their sums carry a pedestal over the whole image, so thresholds on them sit close
          to 1; here a threshold is a fraction of the map's range.
        * ``linear-otsu`` (default): linear-minmax, then each map bent piecewise-linearly so
          that its Otsu threshold lands on 0.5 (:func:`~wsseg.maps.normalize.centre_on_otsu`): the same
          background threshold then suits maps whose object stands near the peak (synthetic
          images) and maps whose object sits well below a few peak pixels (photographs).
        * ``linear-max``: undo the tanh, keep the pedestal (each map divided by its maximum).
        * ``saturated``: the authors' maps as they are.
        The choice was made on the train splits of the three benchmarks (docs/method.md 3.1, 3.4).
        """
        if self.normalization == "saturated" or self.variant == "caffe":  # caffe's maps have no final tanh
            return normalize_maps(maps)
        linear = torch.atanh(maps.clamp(0.0, 1.0 - 1e-6)) / self.sharpness
        if self.normalization == "linear-max":
            return normalize_maps(linear, "max")
        stretched = normalize_maps(linear, "minmax")
        return centre_on_otsu(stretched) if self.normalization == "linear-otsu" else stretched


MAP_METHODS: dict[str, type[MapMethod]] = {cls.name: cls for cls in (Gradient, Guided, Layers, DCSM, CAM, GradCAM)}
if tuple(MAP_METHODS) != MAP_METHOD_NAMES:
    raise ImportError("wsseg.maps.MAP_METHODS and wsseg.registry.MAP_METHOD_NAMES list different methods")


def recorded_map_method(name: str, options: dict) -> MapMethod:
    """The method a record (maps.json, segment.json) describes. Records written before map sides
    existed have no ``max_side``: their maps were computed at the image's own size (None), not
    at today's default "auto"."""
    if name in MAP_METHODS and "max_side" in {f.name for f in dataclasses.fields(MAP_METHODS[name])}:
        options = {"max_side": None, **options}
    if name == DCSM.name:  # and before DCSM's normalisation was recorded, it was the earlier default
        options = {"normalization": EARLIER_DCSM_NORMALIZATION, **options}
    return map_method(name, **options)


def map_method(name: str, **options) -> MapMethod:
    """The method called ``name`` with ``options`` (its constructor's keywords)."""
    if name not in MAP_METHODS:
        raise WssegError(f"unknown map method {name!r}; choose from {', '.join(MAP_METHODS)}")
    hashable = {key: tuple(value) if isinstance(value, list) else value for key, value in options.items()}
    try:
        return MAP_METHODS[name](**hashable)
    except TypeError as exc:
        raise WssegError(f"map method {name!r}: {exc}") from None
