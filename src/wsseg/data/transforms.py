"""The few image transforms we need, written with numpy and Pillow (no torchvision).

Images are H x W x 3 uint8 arrays; the model takes float tensors in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# ImageNet mean colour: padding with it becomes zero after normalisation.
PAD_COLOUR = (124, 116, 104)


def resize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize (Pillow, with antialiasing when shrinking)."""
    if rgb.shape[:2] == (height, width):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR))


def random_scale_crop_flip(rgb: np.ndarray, size: int, rng: np.random.Generator,
                           scale_range: tuple[float, float] = (0.7, 1.3)) -> np.ndarray:
    """Training augmentation: random rescale, random size x size crop (padding if needed), h-flip."""
    return random_scale_crop_flip_pair(rgb, None, size, rng, scale_range)[0]


def random_scale_crop_flip_pair(rgb: np.ndarray, labels: np.ndarray | None, size: int, rng: np.random.Generator,
                                scale_range: tuple[float, float] = (0.7, 1.3),
                                label_pad: int = 255) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`random_scale_crop_flip` applied alike to an image and its H x W label map (nearest
    neighbour for labels; padding is ``label_pad``, the ignored value, so no loss falls on it)."""
    height, width = rgb.shape[:2]
    scale = size / max(height, width) * rng.uniform(*scale_range)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    scaled = resize(rgb, new_h, new_w)
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = PAD_COLOUR
    # place a crop of the scaled image at a random spot of the canvas (covers both crop and pad)
    crop_h, crop_w = min(size, new_h), min(size, new_w)
    top = int(rng.integers(0, new_h - crop_h + 1))
    left = int(rng.integers(0, new_w - crop_w + 1))
    at_y = int(rng.integers(0, size - crop_h + 1))
    at_x = int(rng.integers(0, size - crop_w + 1))
    canvas[at_y:at_y + crop_h, at_x:at_x + crop_w] = scaled[top:top + crop_h, left:left + crop_w]
    label_canvas = None
    if labels is not None:
        scaled_labels = resize_labels(labels, new_h, new_w)
        label_canvas = np.full((size, size), label_pad, np.uint8)
        label_canvas[at_y:at_y + crop_h, at_x:at_x + crop_w] = scaled_labels[top:top + crop_h, left:left + crop_w]
    if rng.random() < 0.5:
        canvas = canvas[:, ::-1]
        label_canvas = None if label_canvas is None else label_canvas[:, ::-1]
    return np.ascontiguousarray(canvas), None if label_canvas is None else np.ascontiguousarray(label_canvas)


def resize_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a label map (labels are never blended)."""
    if labels.shape[:2] == (height, width):
        return labels
    return np.asarray(Image.fromarray(labels).resize((width, height), Image.Resampling.NEAREST))


def colour_jitter(rgb: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Random brightness, contrast and saturation, each a factor in [1 - strength, 1 + strength]:
    a small training set then cannot be told apart by its exact colours."""
    if strength <= 0:
        return rgb
    brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, size=3)
    # in place, in float64 (what float32 pixels times numpy's float64 factors give): the same
    # bytes as the out-of-place formula, in half the time of a loader worker's busiest step
    image = rgb.astype(np.float64)
    image *= brightness
    mean = image.mean()
    image -= mean
    image *= contrast
    image += mean
    grey = (image @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    image -= grey
    image *= saturation
    image += grey
    np.round(image, out=image)
    np.clip(image, 0, 255, out=image)
    return image.astype(np.uint8)


def resize_longer_side(rgb: np.ndarray, size: int) -> np.ndarray:
    """Scale so that the longer side is ``size``, keeping the aspect ratio (no padding)."""
    height, width = rgb.shape[:2]
    scale = size / max(height, width)
    return resize(rgb, max(1, round(height * scale)), max(1, round(width * scale)))


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> 3 x H x W float32 in [0, 1]."""
    rgb = np.ascontiguousarray(rgb)
    if not rgb.flags.writeable:  # Pillow's arrays are read-only, and torch warns about sharing them
        rgb = rgb.copy()
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)


def batch_tensor(images, device: str | torch.device = "cpu") -> torch.Tensor:
    """Equally sized H x W x 3 uint8 images -> an N x 3 x H x W float batch on ``device``."""
    return torch.stack([to_tensor(image) for image in images]).to(device)


def shrink(images: torch.Tensor, max_side: int | None) -> torch.Tensor:
    """[N, 3, H, W] images scaled (anti-aliased) so the longer side is at most ``max_side``."""
    height, width = images.shape[-2:]
    if max_side is None or max(height, width) <= max_side:
        return images
    factor = max_side / max(height, width)
    size = [max(1, round(height * factor)), max(1, round(width * factor))]
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


def grow(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """[N, K, h, w] (or [N, h, w]) maps bilinearly up-sampled to ``size``."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    flat = maps.dim() == 3
    grown = F.interpolate(maps.unsqueeze(1) if flat else maps, size=list(size), mode="bilinear", align_corners=False)
    return grown[:, 0] if flat else grown
