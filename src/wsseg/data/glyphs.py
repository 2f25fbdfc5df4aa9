"""The glyphs benchmark: 20 classes whose silhouettes are real font glyphs, filled with textures
cut from photographs, on photographic backgrounds, at VOC-like sizes and aspect ratios.

Unlike the shapes benchmark (6 convex-ish shapes, one square size, 1-3 objects of similar size)
it has as many classes as PASCAL VOC, thin and concave parts, objects from 2 % to 40 % of the
image, 1-4 per image, and images of every aspect ratio from 0.6 to 1.6. Each class is drawn in
three typefaces (DejaVu Sans Bold, DejaVu Serif Bold, DejaVu Sans Mono Bold: the TrueType files
matplotlib ships in mpl-data/fonts/ttf), stretched and rotated, so a class is a family of
silhouettes rather than one template.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from wsseg.data.classes import ClassList
from wsseg.data.scene import Box, finish_scene, keeps_others_visible, photo_crop

# class name -> the character drawn; chosen to stay distinct under +-25 degree rotation and flips
GLYPHS: dict[str, str] = {
    "A": "A", "B": "B", "E": "E", "F": "F", "G": "G", "H": "H", "K": "K", "M": "M", "R": "R", "S": "S",
    "T": "T", "W": "W", "X": "X", "Y": "Y", "two": "2", "three": "3", "four": "4", "seven": "7",
    "ampersand": "&", "question": "?",
}
GLYPH_CLASSES = ClassList(tuple(GLYPHS))
GLYPH_FONTS = ("DejaVuSans-Bold.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansMono-Bold.ttf")
_FONT_PIXELS = 200  # glyphs are drawn once at this size and scaled from there
_OBJECT_COUNT_ODDS = (0.4, 0.3, 0.2, 0.1)  # 1, 2, 3, 4 objects: most VOC images show one or two
_AREA_RANGE = (0.02, 0.40)  # of the image, drawn log-uniformly
_MIN_VISIBLE = 0.008  # of the image: smaller visible remains make the layout try again


class GlyphAtlas:
    """Every class drawn in every font once, as antialiased 8-bit coverage cropped to its ink."""

    def __init__(self) -> None:
        folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        self.bitmaps: list[list[np.ndarray]] = []  # [font][class]
        for font_name in GLYPH_FONTS:
            font = ImageFont.truetype(str(folder / font_name), _FONT_PIXELS)
            row = []
            for character in GLYPHS.values():
                canvas = Image.new("L", (_FONT_PIXELS * 2, _FONT_PIXELS * 2), 0)
                ImageDraw.Draw(canvas).text((_FONT_PIXELS // 2, _FONT_PIXELS // 2), character, fill=255, font=font)
                coverage = np.asarray(canvas)
                rows, cols = np.nonzero(coverage > 127)
                row.append(np.ascontiguousarray(coverage[rows.min():rows.max() + 1, cols.min():cols.max() + 1]))
            self.bitmaps.append(row)

    def silhouette(self, rng: np.random.Generator, label: int, area: float, max_h: int, max_w: int) -> np.ndarray:
        """A boolean mask of class ``label`` (1-based) covering about ``area`` pixels, in a random
        font, stretched and rotated, at most ``max_h x max_w``."""
        coverage = self.bitmaps[int(rng.integers(len(GLYPH_FONTS)))][label - 1]
        ink = float((coverage > 127).sum())
        stretch = np.exp(rng.uniform(np.log(0.8), np.log(1.25)))
        scale = np.sqrt(area / ink)
        height, width = coverage.shape[0] * scale / np.sqrt(stretch), coverage.shape[1] * scale * np.sqrt(stretch)
        shrink = min(1.0, max_h / height, max_w / width)
        size = (max(2, round(width * shrink)), max(2, round(height * shrink)))
        glyph = Image.fromarray(coverage).resize(size, Image.Resampling.BILINEAR)
        glyph = glyph.rotate(rng.uniform(-25, 25), resample=Image.Resampling.BILINEAR, expand=True)
        mask = np.asarray(glyph) > 127
        if rng.random() < 0.5:
            mask = mask[:, ::-1]
        rows, cols = np.nonzero(mask)
        return mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1][:max_h, :max_w]


def image_size(rng: np.random.Generator, size: int) -> tuple[int, int]:
    """(height, width): aspect (width / height) 0.6-1.6, longer side 0.6-1 x ``size``, as in VOC."""
    aspect = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
    longer = int(round(rng.uniform(0.6, 1.0) * size))
    shorter = int(round(longer / max(aspect, 1 / aspect)))
    return (shorter, longer) if aspect >= 1 else (longer, shorter)


def _texture(rng: np.random.Generator, photos: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """A photograph crop with its colours scrambled and tinted: texture is real, colour says nothing."""
    crop = photo_crop(rng, photos, height, width, min_fraction=0.1)[:, :, rng.permutation(3)]
    tint = rng.uniform(0, 255, size=3).astype(np.float32)
    mix = rng.uniform(0.2, 0.6)
    return crop * rng.uniform(0.6, 1.4, size=3).astype(np.float32) * (1 - mix) + tint * mix


def render_glyph_image(rng: np.random.Generator, photos: list[np.ndarray], atlas: GlyphAtlas, size: int,
                       max_objects: int = 4) -> tuple[np.ndarray, np.ndarray, list[tuple[int, Box]]]:
    """One image of the glyphs benchmark, its label map (1-pixel void band) and (class, box) per object."""
    height, width = image_size(rng, size)
    image = photo_crop(rng, photos, height, width)
    owner = np.full((height, width), -1, dtype=np.int32)
    labels: list[int] = []
    full_masks: list[np.ndarray] = []
    count = min(max_objects, int(rng.choice(len(_OBJECT_COUNT_ODDS), p=_OBJECT_COUNT_ODDS)) + 1)
    for _ in range(count):
        for _attempt in range(20):
            label = int(rng.integers(len(GLYPHS))) + 1
            area = np.exp(rng.uniform(*np.log(_AREA_RANGE))) * height * width
            glyph = atlas.silhouette(rng, label, area, height, width)
            top = int(rng.integers(0, height - glyph.shape[0] + 1))
            left = int(rng.integers(0, width - glyph.shape[1] + 1))
            mask = np.zeros((height, width), dtype=bool)
            mask[top:top + glyph.shape[0], left:left + glyph.shape[1]] = glyph
            if not keeps_others_visible(owner, mask, full_masks, _MIN_VISIBLE * height * width):
                continue
            texture = _texture(rng, photos, *glyph.shape)
            image[top:top + glyph.shape[0], left:left + glyph.shape[1]][glyph] = texture[glyph]
            owner[mask] = len(labels)
            labels.append(label)
            full_masks.append(mask)
            break
    return finish_scene(image, owner, labels)
