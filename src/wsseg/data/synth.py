"""A synthetic VOC-layout benchmark: classes told apart by shape only, on real photographs.

Every object gets a random colour and texture, so a classifier must learn shape. Backgrounds
are crops of the photographs bundled with scikit-image (no download). Output is byte-identical
for the same seed: each image draws from its own generator seeded by (seed, split, index).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.draw import polygon2mask

from wsseg.data.classes import VOID, ClassList, write_class_file
from wsseg.data.images import write_image, write_label_png
from wsseg.errors import WssegError
from wsseg.io import write_json_atomic, write_text_atomic

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")
SYNTH_CLASSES = ClassList(SHAPES)

# Photographs shipped inside scikit-image's package (skimage.data.data_dir), not fetched.
_BACKGROUND_FILES = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
    "hubble_deep_field.jpg", "retina.jpg", "brick.png", "grass.png", "gravel.png", "camera.png",
    "coins.png", "moon.png",
)
_SPLIT_CODES = {"train": 1, "val": 2}
_MIN_VISIBLE_FRACTION = 0.45
_MIN_VISIBLE_PIXELS_FRACTION = 0.012  # of the image area


@dataclass(frozen=True)
class SynthConfig:
    train: int = 400
    val: int = 100
    size: int = 128
    seed: int = 0
    max_objects: int = 3


def load_backgrounds() -> list[np.ndarray]:
    """The bundled photographs as RGB arrays (greyscale ones repeated to three channels)."""
    from skimage import data as skdata

    folder = Path(skdata.data_dir)
    photos = []
    for name in _BACKGROUND_FILES:
        path = folder / name
        if not path.exists():
            continue
        with Image.open(path) as image:
            photos.append(np.asarray(image.convert("RGB")))
    if not photos:
        raise RuntimeError(f"no background photographs found in {folder}")
    return photos


def _background(rng: np.random.Generator, photos: list[np.ndarray], size: int) -> np.ndarray:
    photo = photos[int(rng.integers(len(photos)))]
    height, width = photo.shape[:2]
    side = int(rng.uniform(0.25, 0.9) * min(height, width))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    crop = Image.fromarray(np.ascontiguousarray(photo[top:top + side, left:left + side]))
    array = np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    if rng.random() < 0.5:
        array = array[:, ::-1]
    return array * rng.uniform(0.7, 1.2)


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
                 max_objects: int = 3) -> tuple[np.ndarray, np.ndarray, list[tuple[int, tuple[int, int, int, int]]]]:
    """One image, its label map (with a 1-pixel void band) and its objects (class, VOC box)."""
    image = _background(rng, photos, size)
    owner = np.full((size, size), -1, dtype=np.int32)
    objects: list[tuple[int, np.ndarray]] = []
    count = int(rng.integers(1, max_objects + 1))
    for _ in range(count):
        for _attempt in range(20):
            label = int(rng.integers(len(SHAPES))) + 1
            radius = rng.uniform(0.17, 0.3) * size
            cx, cy = rng.uniform(radius * 0.7, size - radius * 0.7, size=2)
            mask = shape_mask(SHAPES[label - 1], size, cx, cy, radius, rng.uniform(0, 2 * np.pi))
            if not _keeps_others_visible(owner, mask, objects, size):
                continue
            texture = _texture(rng, size)
            image[mask] = texture[mask]
            owner[mask] = len(objects)
            objects.append((label, mask))
            break
    labels = np.zeros((size, size), dtype=np.uint8)
    for index, (label, _) in enumerate(objects):
        labels[owner == index] = label
    band = np.zeros((size, size), dtype=bool)
    for index in range(len(objects)):
        visible = owner == index
        band |= ndimage.binary_dilation(visible) & ~visible
    labels[band] = VOID
    boxes = []
    for index, (label, _) in enumerate(objects):
        rows, cols = np.nonzero(owner == index)
        boxes.append((label, (int(cols.min()) + 1, int(rows.min()) + 1, int(cols.max()) + 1, int(rows.max()) + 1)))
    rgb = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return rgb, labels, boxes


def _keeps_others_visible(owner: np.ndarray, new_mask: np.ndarray,
                          objects: list[tuple[int, np.ndarray]], size: int) -> bool:
    """A new object may occlude earlier ones only partly; it must itself be big enough."""
    minimum = _MIN_VISIBLE_PIXELS_FRACTION * size * size
    if new_mask.sum() < minimum:
        return False
    for index, (_, full) in enumerate(objects):
        visible = (owner == index) & ~new_mask
        if visible.sum() < max(minimum, _MIN_VISIBLE_FRACTION * full.sum()):
            return False
    return True


def annotation_xml(image_id: str, size: int, boxes: list[tuple[int, tuple[int, int, int, int]]],
                   classes: ClassList) -> str:
    parts = [
        "<annotation>\n\t<folder>wsseg-synth</folder>\n",
        f"\t<filename>{image_id}.jpg</filename>\n",
        f"\t<size>\n\t\t<width>{size}</width>\n\t\t<height>{size}</height>\n\t\t<depth>3</depth>\n\t</size>\n",
        "\t<segmented>1</segmented>\n",
    ]
    for label, (xmin, ymin, xmax, ymax) in boxes:
        parts.append(
            f"\t<object>\n\t\t<name>{classes.foreground[label - 1]}</name>\n\t\t<pose>Unspecified</pose>\n"
            "\t\t<truncated>0</truncated>\n\t\t<difficult>0</difficult>\n"
            f"\t\t<bndbox>\n\t\t\t<xmin>{xmin}</xmin>\n\t\t\t<ymin>{ymin}</ymin>\n"
            f"\t\t\t<xmax>{xmax}</xmax>\n\t\t\t<ymax>{ymax}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        )
    parts.append("</annotation>\n")
    return "".join(parts)


def synth_id(split: str, index: int) -> str:
    return f"{split}_{index:06d}"


def write_synthetic_dataset(out: str | Path, config: SynthConfig = SynthConfig(),
                            progress: bool = True) -> Path:
    """Write a complete VOC-layout benchmark under ``out`` and return its root."""
    from tqdm import tqdm

    if config.size < 32:
        raise WssegError(f"--size {config.size}: must be at least 32 pixels")
    if config.train < 0 or config.val < 0 or config.train + config.val == 0:
        raise WssegError("--train and --val must be non-negative and not both zero")
    if config.max_objects < 1:
        raise WssegError("max_objects must be at least 1")
    root = Path(out)
    photos = load_backgrounds()
    splits = {"train": config.train, "val": config.val}
    jobs = [(split, index) for split, count in splits.items() for index in range(count)]
    for split, index in tqdm(jobs, desc="synth", unit="img", disable=not progress):
        rng = np.random.default_rng([config.seed, _SPLIT_CODES[split], index])
        rgb, labels, boxes = render_image(rng, photos, config.size, config.max_objects)
        image_id = synth_id(split, index)
        write_image(root / "JPEGImages" / f"{image_id}.jpg", rgb)
        write_label_png(root / "SegmentationClass" / f"{image_id}.png", labels)
        write_text_atomic(root / "Annotations" / f"{image_id}.xml",
                          annotation_xml(image_id, config.size, boxes, SYNTH_CLASSES))
    sets = root / "ImageSets" / "Segmentation"
    all_ids = []
    for split, count in splits.items():
        ids = [synth_id(split, index) for index in range(count)]
        all_ids += ids
        write_text_atomic(sets / f"{split}.txt", "".join(f"{i}\n" for i in ids))
    write_text_atomic(sets / "trainval.txt", "".join(f"{i}\n" for i in all_ids))
    write_class_file(root / "classes.txt", SYNTH_CLASSES)
    write_json_atomic(root / "synth.json", {"generator": "wsseg synth", "train": config.train,
                                            "val": config.val, "size": config.size,
                                            "seed": config.seed, "classes": list(SHAPES)})
    return root
