"""What both synthetic benchmarks share: photographs for backgrounds and textures, layering
objects with partial occlusion, the 1-pixel void band, and VOC's XML annotation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from wsseg.data.classes import VOID, ClassList

# Photographs shipped inside scikit-image's package (skimage.data.data_dir), not fetched.
PHOTO_FILES = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
    "hubble_deep_field.jpg", "retina.jpg", "brick.png", "grass.png", "gravel.png", "camera.png",
    "coins.png", "moon.png",
)

Box = tuple[int, int, int, int]  # VOC bndbox: xmin, ymin, xmax, ymax, 1-based inclusive


def load_backgrounds() -> list[np.ndarray]:
    """The bundled photographs as RGB arrays (greyscale ones repeated to three channels)."""
    from skimage import data as skdata  # skimage.data's import is slow; only the generators need it

    folder = Path(skdata.data_dir)
    photos = []
    for name in PHOTO_FILES:
        path = folder / name
        if not path.exists():
            continue
        with Image.open(path) as image:
            photos.append(np.asarray(image.convert("RGB")))
    if not photos:
        raise RuntimeError(f"no background photographs found in {folder}")
    return photos


def photo_crop(rng: np.random.Generator, photos: list[np.ndarray], height: int, width: int,
               min_fraction: float = 0.25) -> np.ndarray:
    """A random crop of a random photograph with the aspect of ``height x width``, resized to it,
    randomly mirrored and brightened (float32)."""
    photo = photos[int(rng.integers(len(photos)))]
    photo_h, photo_w = photo.shape[:2]
    fraction = rng.uniform(min_fraction, 0.9)  # of the largest crop of this aspect that fits
    crop_h = max(1, int(fraction * min(photo_h, photo_w * height / width)))
    crop_w = max(1, int(fraction * min(photo_w, photo_h * width / height)))
    top = int(rng.integers(0, photo_h - crop_h + 1))
    left = int(rng.integers(0, photo_w - crop_w + 1))
    crop = Image.fromarray(np.ascontiguousarray(photo[top:top + crop_h, left:left + crop_w]))
    array = np.asarray(crop.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
    if rng.random() < 0.5:
        array = array[:, ::-1]
    return array * rng.uniform(0.7, 1.2)


def keeps_others_visible(owner: np.ndarray, new_mask: np.ndarray, full_masks: list[np.ndarray],
                         min_pixels: float, min_fraction: float = 0.45) -> bool:
    """A new object may occlude earlier ones only partly, and must itself be big enough."""
    if new_mask.sum() < min_pixels:
        return False
    for index, full in enumerate(full_masks):
        visible = (owner == index) & ~new_mask
        if visible.sum() < max(min_pixels, min_fraction * full.sum()):
            return False
    return True


def finish_scene(image: np.ndarray, owner: np.ndarray, object_labels: list[int]
                 ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, Box]]]:
    """The uint8 image, the label map with a 1-pixel void band around every visible object, and
    (label, box) of every object; ``owner`` holds each pixel's object index (-1 background)."""
    labels = np.zeros(owner.shape, dtype=np.uint8)
    band = np.zeros(owner.shape, dtype=bool)
    boxes = []
    for index, label in enumerate(object_labels):
        visible = owner == index
        labels[visible] = label
        band |= ndimage.binary_dilation(visible) & ~visible
        rows, cols = np.nonzero(visible)
        boxes.append((label, (int(cols.min()) + 1, int(rows.min()) + 1, int(cols.max()) + 1, int(rows.max()) + 1)))
    labels[band] = VOID
    rgb = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return rgb, labels, boxes


def annotation_xml(image_id: str, height: int, width: int, boxes: list[tuple[int, Box]],
                   classes: ClassList, folder: str = "wsseg-synth") -> str:
    """A PASCAL VOC annotation: size, and one object (name, pose, truncated, difficult, bndbox) per box."""
    parts = [
        f"<annotation>\n\t<folder>{folder}</folder>\n",
        f"\t<filename>{image_id}.jpg</filename>\n",
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>\n",
        "\t<segmented>1</segmented>\n",
    ]
    for label, (xmin, ymin, xmax, ymax) in boxes:
        truncated = int(xmin == 1 or ymin == 1 or xmax == width or ymax == height)
        parts.append(
            f"\t<object>\n\t\t<name>{classes.foreground[label - 1]}</name>\n\t\t<pose>Unspecified</pose>\n"
            f"\t\t<truncated>{truncated}</truncated>\n\t\t<difficult>0</difficult>\n"
            f"\t\t<bndbox>\n\t\t\t<xmin>{xmin}</xmin>\n\t\t\t<ymin>{ymin}</ymin>\n"
            f"\t\t\t<xmax>{xmax}</xmax>\n\t\t\t<ymax>{ymax}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        )
    parts.append("</annotation>\n")
    return "".join(parts)
