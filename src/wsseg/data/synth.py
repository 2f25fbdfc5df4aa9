"""The synthetic VOC-layout benchmarks, byte-identical per seed: each image draws from its own
generator seeded by (seed, split, index).

``shapes`` (the default): 6 classes told apart by shape only (every object gets a random colour
and texture, so a classifier must learn shape), square 128 px images, 1-3 objects. ``glyphs``
(wsseg.data.glyphs): 20 classes of font-glyph silhouettes at VOC-like sizes and aspect ratios.
Backgrounds are crops of the photographs bundled with scikit-image (no download).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.draw import polygon2mask
from tqdm import tqdm

from wsseg.data.classes import ClassList, write_class_file
from wsseg.data.glyphs import GLYPH_CLASSES, GlyphAtlas, render_glyph_image
from wsseg.data.images import write_image, write_label_png
from wsseg.data.scene import Box, annotation_xml, finish_scene, keeps_others_visible, load_backgrounds, photo_crop
from wsseg.errors import WssegError
from wsseg.io import write_json_atomic, write_text_atomic

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")
SYNTH_CLASSES = ClassList(SHAPES)
KINDS = ("shapes", "glyphs")
# each kind's defaults: (train images, val images, size in pixels, most objects per image)
KIND_DEFAULTS = {"shapes": (400, 100, 128, 3), "glyphs": (600, 200, 224, 4)}
_SPLIT_CODES = {"train": 1, "val": 2}
_MIN_VISIBLE_FRACTION = 0.45
_MIN_VISIBLE_PIXELS_FRACTION = 0.012  # of the image area


@dataclass(frozen=True)
class SynthConfig:
    """What to generate; a field left None takes the kind's default (``KIND_DEFAULTS``)."""

    train: int | None = None
    val: int | None = None
    size: int | None = None  # shapes: the side; glyphs: the longest possible side
    seed: int = 0
    max_objects: int | None = None
    kind: str = "shapes"

    def resolved(self) -> SynthConfig:
        if self.kind not in KIND_DEFAULTS:
            raise WssegError(f"--kind {self.kind!r}: choose from {', '.join(KINDS)}")
        defaults = dict(zip(("train", "val", "size", "max_objects"), KIND_DEFAULTS[self.kind]))
        return dataclasses.replace(self, **{name: value for name, value in defaults.items()
                                            if getattr(self, name) is None})


def _background(rng: np.random.Generator, photos: list[np.ndarray], size: int) -> np.ndarray:
    return photo_crop(rng, photos, size, size)


def _regular_polygon(n: int, radius: float, phase: float) -> np.ndarray:
    angles = phase + np.arange(n) * 2 * np.pi / n
    return np.stack([np.cos(angles), np.sin(angles)], axis=1) * radius


def _star_polygon() -> np.ndarray:
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    return np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=1)


def shape_mask(shape: str, size: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Boolean size x size mask of one shape centred at (cx, cy) with the given radius and rotation."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cos, sin = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * cos + (yy - cy) * sin) / radius
    v = (-(xx - cx) * sin + (yy - cy) * cos) / radius
    if shape == "circle":
        return u * u + v * v <= 0.85
    if shape == "ring":
        rr = u * u + v * v
        return (rr <= 1.0) & (rr >= 0.36)
    if shape == "square":
        return (np.abs(u) <= 0.78) & (np.abs(v) <= 0.78)
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(u) <= 1.0) & (np.abs(v) <= 0.3))
    if shape in ("triangle", "star"):
        local = _regular_polygon(3, 1.1, -np.pi / 2) if shape == "triangle" else _star_polygon() * 1.1
        rotation = np.array([[cos, -sin], [sin, cos]])
        points = local @ rotation.T * radius + np.array([cx, cy])
        return polygon2mask((size, size), points[:, ::-1] - 0.5)
    raise ValueError(f"unknown shape {shape!r}")


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random size x size x 3 texture: colour and pattern carry no class information."""
    first, second = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    pattern = int(rng.integers(5))
    if pattern == 0:
        weight = np.zeros((size, size), np.float32)
    elif pattern == 1:
        direction = rng.uniform(0, np.pi)
        period = rng.uniform(4, 12)
        weight = (np.sin((xx * np.cos(direction) + yy * np.sin(direction)) * 2 * np.pi / period) > 0)
    elif pattern == 2:
        cell = int(rng.integers(3, 9))
        weight = ((xx // cell + yy // cell) % 2).astype(np.float32)
    elif pattern == 3:
        direction = rng.uniform(0, 2 * np.pi)
        ramp = xx * np.cos(direction) + yy * np.sin(direction)
        weight = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    else:
        coarse = rng.random((size // 8 + 2, size // 8 + 2)).astype(np.float32)
        weight = ndimage.zoom(coarse, 8, order=1)[:size, :size]
    weight = np.asarray(weight, np.float32)[:, :, None]
    noise = rng.normal(0, 8, size=(size, size, 3)).astype(np.float32)
    return first * (1 - weight) + second * weight + noise


def render_image(rng: np.random.Generator, photos: list[np.ndarray], size: int,
                 max_objects: int = 3) -> tuple[np.ndarray, np.ndarray, list[tuple[int, Box]]]:
    """One image, its label map (with a 1-pixel void band) and its objects (class, VOC box)."""
    image = _background(rng, photos, size)
    owner = np.full((size, size), -1, dtype=np.int32)
    labels: list[int] = []
    full_masks: list[np.ndarray] = []
    count = int(rng.integers(1, max_objects + 1))
    for _ in range(count):
        for _attempt in range(20):
            label = int(rng.integers(len(SHAPES))) + 1
            radius = rng.uniform(0.17, 0.3) * size
            cx, cy = rng.uniform(radius * 0.7, size - radius * 0.7, size=2)
            mask = shape_mask(SHAPES[label - 1], size, cx, cy, radius, rng.uniform(0, 2 * np.pi))
            if not keeps_others_visible(owner, mask, full_masks, _MIN_VISIBLE_PIXELS_FRACTION * size * size,
                                        _MIN_VISIBLE_FRACTION):
                continue
            texture = _texture(rng, size)
            image[mask] = texture[mask]
            owner[mask] = len(labels)
            labels.append(label)
            full_masks.append(mask)
            break
    return finish_scene(image, owner, labels)


def synth_id(split: str, index: int) -> str:
    return f"{split}_{index:06d}"


def write_synthetic_dataset(out: str | Path, config: SynthConfig = SynthConfig(),
                            progress: bool = True, force: bool = False) -> Path:
    """Write a complete VOC-layout benchmark under ``out`` and return its root.

    A folder that already holds anything is refused unless ``force``: its split files and class
    list would be replaced, silently changing somebody's dataset."""
    config = config.resolved()
    minimum = 32 if config.kind == "shapes" else 64  # glyph images may be 0.6 x 0.6 of the size
    if config.size < minimum:
        raise WssegError(f"--size {config.size}: must be at least {minimum} pixels for {config.kind}")
    if config.train < 0 or config.val < 0 or config.train + config.val == 0:
        raise WssegError("--train and --val must be non-negative and not both zero")
    if config.max_objects < 1:
        raise WssegError("max_objects must be at least 1")
    root = Path(out)
    if not force and root.is_dir() and any(root.iterdir()):
        raise WssegError(f"{root}: folder is not empty; choose a new folder, or --force to write into it")
    if root.exists() and not root.is_dir():
        raise WssegError(f"{root}: exists and is not a folder")
    photos = load_backgrounds()
    if config.kind == "glyphs":
        atlas, classes = GlyphAtlas(), GLYPH_CLASSES

        def render(rng: np.random.Generator):
            return render_glyph_image(rng, photos, atlas, config.size, config.max_objects)
    else:
        classes = SYNTH_CLASSES

        def render(rng: np.random.Generator):
            return render_image(rng, photos, config.size, config.max_objects)
    splits = {"train": config.train, "val": config.val}
    jobs = [(split, index) for split, count in splits.items() for index in range(count)]
    for split, index in tqdm(jobs, desc=f"synth ({config.kind})", unit="img", disable=not progress):
        rgb, labels, boxes = render(np.random.default_rng([config.seed, _SPLIT_CODES[split], index]))
        image_id = synth_id(split, index)
        write_image(root / "JPEGImages" / f"{image_id}.jpg", rgb)
        write_label_png(root / "SegmentationClass" / f"{image_id}.png", labels)
        write_text_atomic(root / "Annotations" / f"{image_id}.xml",
                          annotation_xml(image_id, *labels.shape, boxes, classes))
    sets = root / "ImageSets" / "Segmentation"
    all_ids = []
    for split, count in splits.items():
        ids = [synth_id(split, index) for index in range(count)]
        all_ids += ids
        write_text_atomic(sets / f"{split}.txt", "".join(f"{i}\n" for i in ids))
    write_text_atomic(sets / "trainval.txt", "".join(f"{i}\n" for i in all_ids))
    write_class_file(root / "classes.txt", classes)
    write_json_atomic(root / "synth.json", {"generator": "wsseg synth", "kind": config.kind, "train": config.train,
                                            "val": config.val, "size": config.size, "seed": config.seed,
                                            "classes": list(classes.foreground)})
    return root
