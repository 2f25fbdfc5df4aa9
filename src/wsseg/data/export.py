"""``wsseg export-voc``: a VOC-layout copy of a COCO split, for tools that want one (wsseg does not).

OUT/JPEGImages/<id>.<ext>              the image, hard-linked when OUT is on the same file system, else copied
                                       (.jpg/.jpeg/.png; any other suffix, e.g. .webp, .bmp, .tif, is
                                       converted to <id>.png as wsseg reads it, EXIF orientation applied)
OUT/SegmentationClass/<id>.png         the rendered mask (VOC palette; 255 void)
OUT/Annotations/<id>.xml               the image-level labels (<object><name>)
OUT/ImageSets/Segmentation/<split>.txt the split's ids, written last
OUT/classes.txt                        the categories in the file's order
OUT/export.json                        what was exported from where (the folder's record)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from tqdm import tqdm

from wsseg.data.classes import read_class_file, write_class_file
from wsseg.data.coco import COCODataset
from wsseg.data.images import DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_SIDE, write_image, write_label_png
from wsseg.data.layout import open_dataset
from wsseg.data.voc import IMAGE_SUFFIXES, excerpt, read_split_file
from wsseg.errors import DataError, WssegError
from wsseg.io import TEMPORARY_SUFFIX, read_json, resolves_inside, write_json_atomic, write_text_atomic
from wsseg.outputs import check_may_write

EXPORT_RECORD = "export.json"
# the image suffixes the VOC reader opens, kept as they are (hard-linked or copied); others become PNGs
VOC_SUFFIXES = tuple(dict.fromkeys(suffix.lower() for suffix in IMAGE_SUFFIXES))


@dataclass(frozen=True)
class Exported:
    images: int
    unannotated: int
    linked: int  # images hard-linked rather than copied
    converted: int = 0  # images of a suffix the VOC reader does not open (.webp, .bmp, .tif), written as PNG
    skipped: int = 0  # bad images skipped (--skip-bad)


def _place(source: Path, target: Path) -> bool:
    """Put ``source`` at ``target`` by a hard link (True) or a copy (False), through a temporary name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMPORARY_SUFFIX, dir=target.parent)
    os.close(fd)
    os.unlink(temporary)
    try:
        try:
            os.link(source, temporary)
            linked = True
        except OSError:
            shutil.copyfile(source, temporary)
            linked = False
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return linked


def _annotation_xml(names: list[str]) -> str:
    body = "".join(f"<object><name>{escape(name)}</name></object>" for name in names)
    return f"<annotation>{body}</annotation>\n"


def export_voc(data: str | Path, split: str, out: str | Path, max_side: int | None = DEFAULT_MAX_SIDE,
               max_file_size: int | None = DEFAULT_MAX_FILE_SIZE, progress: bool = True,
               skip_bad: bool = False) -> Exported:
    """Write the VOC-layout copy of a COCO split into ``out`` (a new or empty folder, or one an earlier
    export-voc of the same categories wrote). ``skip_bad``: bad images are counted and left out (of
    the split file too), as every command does; otherwise the first stops the export."""
    dataset = open_dataset(data, split, max_side=max_side, max_file_size=max_file_size)
    if not isinstance(dataset, COCODataset):
        raise WssegError(f"{data}: is a VOC-layout dataset already; export-voc reads a COCO one")
    out = Path(out)
    for folder in (*dataset.image_folders[:-1], dataset.annotations.parent):  # [-1]: the root
        if resolves_inside(out, folder):
            raise WssegError(f"{out}: lies inside the COCO dataset's {folder}; choose another --out")
    check_may_write(out, dataset_root=dataset.root, records=[EXPORT_RECORD])
    classes = list(dataset.classes.foreground)
    record = {"tool": "wsseg export-voc", "classes": classes, "splits": {}}
    if (out / EXPORT_RECORD).is_file():
        try:
            earlier = read_json(out / EXPORT_RECORD)
        except (OSError, ValueError):
            raise WssegError(f"{out / EXPORT_RECORD}: damaged; choose another --out") from None
        if not isinstance(earlier, dict) or earlier.get("classes") != classes:
            raise WssegError(f"{out}: holds an export of other categories; choose another --out")
        record["splits"] = dict(earlier.get("splits") or {})
    problems = _unexportable(dataset, out)
    if problems and not skip_bad:
        raise next(iter(problems.values()))
    out.mkdir(parents=True, exist_ok=True)
    record["splits"][dataset.split] = str(dataset.annotations.resolve())
    write_json_atomic(out / EXPORT_RECORD, record)
    write_class_file(out / "classes.txt", dataset.classes)
    if read_class_file(out / "classes.txt") != dataset.classes:  # the VOC reader must see these categories
        raise WssegError(f"{out / 'classes.txt'}: does not read back as the categories written; choose another --out")
    linked = converted = 0
    exported: list[str] = []
    names = dataset.classes.names
    for image_id in tqdm(dataset.ids, desc="export-voc", unit="img", disable=not progress):
        try:
            if image_id in problems:
                raise problems[image_id]
            source = dataset.image_path(image_id)
            mask = dataset.load_mask(image_id)  # its size checked against the image's header
            if source.suffix.lower() in VOC_SUFFIXES:
                linked += _place(source, out / "JPEGImages" / f"{image_id}{source.suffix.lower()}")
            else:  # as it is read (EXIF orientation applied, as the mask is)
                write_image(out / "JPEGImages" / f"{image_id}.png", dataset.load_image(image_id))
                converted += 1
        except DataError:
            if not skip_bad:
                raise
            continue
        write_label_png(out / "SegmentationClass" / f"{image_id}.png", mask)
        write_text_atomic(out / "Annotations" / f"{image_id}.xml",
                          _annotation_xml([names[value] for value in dataset.load_labels(image_id)]))
        exported.append(image_id)
    skipped = len(dataset.ids) - len(exported)
    dataset.require_used(skipped, len(exported))
    write_text_atomic(out / "ImageSets" / "Segmentation" / f"{dataset.split}.txt",
                      "".join(f"{image_id}\n" for image_id in exported))
    unannotated = sum(not dataset.annotated(image_id) for image_id in exported)
    return Exported(len(exported), unannotated, linked, converted, skipped)


def _unexportable(dataset: COCODataset, out: Path) -> dict[str, DataError]:
    """The images a VOC copy cannot hold, found before anything is written: an id with a space (a VOC
    split file cannot list it), and an id another split's file in ``out`` lists (its image and mask
    would be replaced)."""
    problems: dict[str, DataError] = {}
    for image_id in dataset.ids:
        if any(character.isspace() for character in image_id):
            problems[image_id] = DataError(dataset.annotations, f"image id {excerpt(image_id)} has a space; a VOC "
                                           "split file cannot list it (rename the image file)")
    lists = out / "ImageSets" / "Segmentation"
    ours = set(dataset.ids)
    for other in sorted(lists.glob("*.txt")) if lists.is_dir() else []:
        if other.stem == dataset.split:
            continue
        for image_id in read_split_file(other):
            if image_id in ours and image_id not in problems:
                problems[image_id] = DataError(other, f"already lists image {excerpt(image_id)}: exporting split "
                                               f"{dataset.split!r} here would replace its image and mask; choose "
                                               "another --out")
    return problems
