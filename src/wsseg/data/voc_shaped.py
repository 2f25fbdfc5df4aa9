"""A dataset of PASCAL VOC 2012 + SBD's exact shape, to rehearse a full run before (or without)
downloading VOC: what ``benchmarks/voc_scale.py`` times, and what a user can point the CLI at.

The content is the glyphs benchmark (:mod:`wsseg.data.glyphs`, any content will do for timing
and for checking a pipeline), renamed and resized into VOC's shape: the 20 VOC class names and
no classes.txt; ids such as ``2008_000123``; JPEGs with a longer side of 500 and a shorter one
of 281-500, mostly 375 or 333, about a quarter portrait; XML annotations with VOC's fields
(filename, size, object name, pose, truncated, difficult, bndbox); ``SegmentationClass`` for
train and val, ``SegmentationClassAug`` for train_aug and val; ImageSets/Segmentation/
{train_aug, train, val}.txt, train a subset of train_aug as VOC's 1,464 are of SBD's 10,582.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from wsseg.data.classes import VOC_CLASS_LIST, VOID
from wsseg.data.images import read_label_png, write_image, write_label_png
from wsseg.data.scene import Box, annotation_xml
from wsseg.data.synth import SynthConfig, write_synthetic_dataset
from wsseg.errors import WssegError
from wsseg.io import write_text_atomic

# PASCAL VOC 2012 + SBD (IRN's split files): the sizes a full run works through
FULL_VOC = {"train_aug": 10582, "train": 1464, "val": 1449}
VOC_YEARS = (2007, 2008, 2009, 2010, 2011)


def voc_shape(rng: np.random.Generator) -> tuple[int, int]:
    """(height, width) as VOC's photos: longer side 500; shorter 375 or 333 most often, else 281-500;
    about a quarter of them portrait."""
    draw = rng.random()
    shorter = 375 if draw < 0.55 else 333 if draw < 0.8 else int(rng.integers(281, 501))
    return (500, shorter) if rng.random() < 0.25 else (shorter, 500)


def voc_ids(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct VOC-style ids (year_number), sorted as VOC's split files are."""
    if count > len(VOC_YEARS) * 7999:
        raise WssegError(f"{count} images: a VOC-shaped dataset holds at most {len(VOC_YEARS) * 7999}")
    ids: set[str] = set()
    while len(ids) < count:
        ids.add(f"{VOC_YEARS[int(rng.integers(len(VOC_YEARS)))]}_{int(rng.integers(1, 8000)):06d}")
    return sorted(ids)


def object_boxes(labels: np.ndarray) -> list[tuple[int, Box]]:
    """(class, VOC box) per class present in a label map: its pixels' extent, 1-based inclusive."""
    boxes = []
    for label in sorted(int(v) for v in np.unique(labels) if v not in (0, VOID)):
        rows, cols = np.nonzero(labels == label)
        boxes.append((label, (int(cols.min()) + 1, int(rows.min()) + 1, int(cols.max()) + 1, int(rows.max()) + 1)))
    return boxes


def write_voc_shaped(root: str | Path, train_aug: int, val: int, seed: int = 0,
                     progress: bool = True) -> dict[str, list[str]]:
    """Write the VOC-shaped dataset under ``root`` (a new or empty folder); returns split name -> ids.

    The same seed gives the same files. The glyphs are drawn into ``root``-glyphs first, then
    renamed and resized; that folder is removed at the end."""
    root = Path(root)
    if train_aug < 1 or val < 1:
        raise WssegError("a VOC-shaped dataset needs at least one train_aug and one val image")
    if root.is_dir() and any(root.iterdir()):
        raise WssegError(f"{root}: folder is not empty; choose a new folder")
    source = write_synthetic_dataset(root.with_name(root.name + "-glyphs"),
                                     SynthConfig(kind="glyphs", train=train_aug, val=val, size=500, seed=seed),
                                     progress=progress)
    rng = np.random.default_rng([seed, 2012])
    new_ids = voc_ids(rng, train_aug + val)
    order = rng.permutation(len(new_ids))  # VOC's val ids are interleaved with train_aug's
    aug_ids = sorted(new_ids[i] for i in order[:train_aug])
    splits = {"train_aug": aug_ids,
              "train": sorted(rng.choice(aug_ids, max(1, round(train_aug * FULL_VOC["train"] / FULL_VOC["train_aug"])),
                                         replace=False).tolist()),
              "val": sorted(new_ids[i] for i in order[train_aug:])}
    old_ids = [f"train_{i:06d}" for i in range(train_aug)] + [f"val_{i:06d}" for i in range(val)]
    with_plain_masks = set(splits["train"]) | set(splits["val"])
    for old, new in tqdm(list(zip(old_ids, splits["train_aug"] + splits["val"])), desc="VOC shapes", unit="img",
                         disable=not progress):
        height, width = voc_shape(rng)
        with Image.open(source / "JPEGImages" / f"{old}.jpg") as image:
            rgb = np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR))
        labels = read_label_png(source / "SegmentationClass" / f"{old}.png", VOC_CLASS_LIST.num_classes)
        labels = np.asarray(Image.fromarray(labels).resize((width, height), Image.Resampling.NEAREST))
        write_image(root / "JPEGImages" / f"{new}.jpg", rgb)
        write_label_png(root / "SegmentationClassAug" / f"{new}.png", labels)
        if new in with_plain_masks:
            write_label_png(root / "SegmentationClass" / f"{new}.png", labels)
        write_text_atomic(root / "Annotations" / f"{new}.xml",
                          annotation_xml(new, height, width, object_boxes(labels), VOC_CLASS_LIST, folder="VOC2012"))
    for name, ids in splits.items():
        write_text_atomic(root / "ImageSets" / "Segmentation" / f"{name}.txt", "".join(f"{i}\n" for i in ids))
    shutil.rmtree(source)
    return splits


