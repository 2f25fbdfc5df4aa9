"""Reading images and label PNGs robustly: every failure becomes a DataError naming the file."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from wsseg.data.classes import VOID
from wsseg.errors import DataError
from wsseg.io import atomic_write

_DECODE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: ``n`` x 3 uint8 (index 255, void, is cream)."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for index in range(n):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[index] = (r, g, b)
    return palette


_VOC_PALETTE = voc_palette()


# Longest image side accepted by default (``--max-side``): larger than any camera frame in VOC or
# COCO, small enough that decoding one image cannot exhaust memory.
DEFAULT_MAX_SIDE = 8192


# Largest image or mask file read by default (``--max-file-size``, MiB): VOC's JPEGs are ~100 KiB;
# the bound stops a padded or runaway file from being read into memory at all.
DEFAULT_MAX_FILE_SIZE = 512 * 2 ** 20


def _open(path: Path, what: str, max_side: int | None = None,
          max_file_size: int | None = DEFAULT_MAX_FILE_SIZE) -> Image.Image:
    """Open and decode an image file; its size on disk and its header are checked first, from
    the open file, so a refused file is never read whole."""
    if not path.is_file():
        raise DataError(path, f"{what} file is missing")
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise DataError(path, f"{what} file is empty (0 bytes)")
            if max_file_size is not None and size > max_file_size:
                raise DataError(path, f"{what} file is {size / 2 ** 20:.0f} MiB, larger than --max-file-size "
                                f"{max_file_size / 2 ** 20:.0f} MiB (refused unread; raise --max-file-size to accept it)")
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(handle)  # reads the header only: the size is known before decoding
                if max_side is not None and max(image.size) > max_side:
                    raise DataError(path, f"{what} is {image.width}x{image.height}, larger than --max-side "
                                    f"{max_side} (refused before decoding; raise --max-side to accept it)")
                image.load()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        # Pillow's own pixel-count guard fires while reading the header, before --max-side is looked at
        raise DataError(path, f"{what} is too large to decode safely, refused before decoding ({exc})") from None
    except _DECODE_ERRORS as exc:
        reason = f"{exc.__class__.__name__}: {exc}" if not isinstance(exc, UnidentifiedImageError) \
            else "not an image format Pillow reads"
        raise DataError(path, f"cannot decode {what} ({reason})") from None
    return image


# EXIF orientations (tag 0x0112) that swap width and height when applied (transposes and 90-degree turns)
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)


def exif_orientation(path: str | Path) -> int:
    """The EXIF orientation of an image file from its header (1, as stored, when it has none)."""
    try:
        with Image.open(path) as image:
            if image.format == "PNG" and "exif" not in image.info:
                return 1  # no eXIf chunk before the pixels: finding one after them would decode the image
            value = image.getexif().get(0x0112, 1)
    except _DECODE_ERRORS:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def mask_orientation(mask_path: Path, mask_shape: tuple[int, ...], image_path: Path,
                     drawn_on_stored: bool = False) -> int:
    """The rule for EXIF-rotated images (docs/design.md): the image is read as shown (orientation
    applied), so its mask must follow it as shown. Returns the orientation still to apply to the mask
    (1: none). A mask whose size fits only the stored, unrotated pixels is refused -- unless
    ``drawn_on_stored`` (COCO's masks are drawn on the stored pixels): then the image's orientation is
    returned. Always refused: a mask of an image whose orientation does not change its size (a square,
    a half turn, a mirror), where the size cannot tell which it follows, and one fitting neither. With
    ``drawn_on_stored`` the size of an image without orientation is compared too (from its header)."""
    orientation = exif_orientation(image_path)
    if orientation == 1 and not drawn_on_stored:
        return 1  # the size is compared when the image is decoded
    stored = read_image_size(image_path)
    shown = stored[::-1] if orientation in _SWAPPING_ORIENTATIONS else stored
    shape = tuple(mask_shape)
    if orientation == 1 and shape == stored or shape == shown != stored:
        return 1
    if shape == stored != shown and drawn_on_stored:
        return orientation
    if orientation == 1:
        raise DataError(mask_path, f"mask is {shape[1]}x{shape[0]} but the image {image_path.name} is "
                                   f"{stored[1]}x{stored[0]}")
    if shape == stored != shown:
        why = "fits only the image as stored, not as its EXIF orientation shows it"
    elif shape not in (stored, shown):
        why = f"is {shape[1]}x{shape[0]}, fitting the image neither as stored nor as its EXIF orientation shows it"
    else:
        why = "cannot be told to follow the image as its EXIF orientation shows it (same size either way)"
    raise DataError(mask_path, f"mask {why}; the image {image_path.name} has EXIF orientation {orientation}, "
                    "applied when it is read: write the image with its pixels turned (no orientation tag), or the "
                    "mask as the image is shown")


def read_image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image from its header alone, without decoding the pixels."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except _DECODE_ERRORS as exc:
        raise DataError(path, f"cannot read image header ({exc.__class__.__name__}: {exc})") from None


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL image as an H x W x 3 uint8 RGB array (grey, alpha, CMYK, 16-bit, palette)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max(initial=0) > 255 else 255.0
        grey = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        grey = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def read_image(path: str | Path, max_side: int | None = DEFAULT_MAX_SIDE,
               max_file_size: int | None = DEFAULT_MAX_FILE_SIZE) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 RGB, converting any colour mode.

    Files larger than ``max_file_size`` bytes are refused unread, images whose longer side
    exceeds ``max_side`` from their header, before decoding.
    """
    path = Path(path)
    image = _open(path, "image", max_side, max_file_size)
    if image.width < 1 or image.height < 1:
        raise DataError(path, "image has no pixels")
    try:
        # the image as viewers show it: its EXIF orientation applied (masks must follow it, see
        # check_mask_orientation)
        return to_rgb(ImageOps.exif_transpose(image))
    except _DECODE_ERRORS as exc:
        raise DataError(path, f"cannot convert image to RGB ({exc})") from None


def read_label_png(path: str | Path, num_classes: int, what: str = "mask",
                   max_file_size: int | None = DEFAULT_MAX_FILE_SIZE) -> np.ndarray:
    """Read a label map (palette or 8-bit index PNG; RGB in VOC colours) as H x W uint8.

    Values must be 0 (background), 1..num_classes, or 255 (void).
    """
    path = Path(path)
    image = _open(path, what, max_file_size=max_file_size)
    if image.mode in ("P", "L"):
        labels = np.asarray(image, dtype=np.uint8)
    elif image.mode in ("I", "I;16", "I;16B", "I;16L"):
        values = np.asarray(image)
        if values.max(initial=0) > 255 or values.min(initial=0) < 0:
            raise DataError(path, f"{what} values must fit in 0..255 (found {values.min()}..{values.max()})")
        labels = values.astype(np.uint8)
    elif image.mode in ("RGB", "RGBA"):
        labels = _colours_to_labels(path, np.asarray(image.convert("RGB")), num_classes, what)
    else:
        raise DataError(path, f"{what} must be a palette or 8-bit index PNG, not mode {image.mode}")
    bad = (labels > num_classes) & (labels != VOID)
    if bad.any():
        values = sorted(int(v) for v in np.unique(labels[bad]))[:5]
        raise DataError(path, f"{what} has values {values} outside 0..{num_classes} and {VOID} (void)")
    return np.ascontiguousarray(labels)


def _colours_to_labels(path: Path, rgb: np.ndarray, num_classes: int, what: str) -> np.ndarray:
    """Map an RGB colour mask back to indices through the VOC palette."""
    allowed = list(range(num_classes + 1)) + [VOID]
    codes = {int(c[0]) << 16 | int(c[1]) << 8 | int(c[2]): index for index, c in
             ((i, _VOC_PALETTE[i]) for i in allowed)}
    packed = rgb[..., 0].astype(np.int64) << 16 | rgb[..., 1].astype(np.int64) << 8 | rgb[..., 2]
    uniques, inverse = np.unique(packed, return_inverse=True)
    lookup = np.empty(len(uniques), dtype=np.uint8)
    for position, code in enumerate(uniques):
        if int(code) not in codes:
            colour = ((code >> 16) & 255, (code >> 8) & 255, code & 255)
            raise DataError(path, f"RGB {what} has colour {colour}, which is not a VOC palette class colour")
        lookup[position] = codes[int(code)]
    return lookup[inverse].reshape(packed.shape)


def write_label_png(path: str | Path, labels: np.ndarray) -> None:
    """Write a label map as a VOC palette PNG, atomically."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"label map must be 2-D, got shape {labels.shape}")
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    image = Image.frombytes("P", (labels.shape[1], labels.shape[0]), labels.tobytes())
    image.putpalette(_VOC_PALETTE.tobytes())
    with atomic_write(path) as handle:
        image.save(handle, format="PNG", optimize=False)


def write_image(path: str | Path, rgb: np.ndarray, quality: int = 90) -> None:
    """Write an RGB array as JPEG or PNG (by suffix), atomically."""
    path = Path(path)
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    if image.mode != "RGB":
        raise ValueError(f"expected an H x W x 3 array, got shape {np.shape(rgb)}")
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    with atomic_write(path) as handle:
        if fmt == "JPEG":
            image.save(handle, format=fmt, quality=quality)
        else:
            image.save(handle, format=fmt)
