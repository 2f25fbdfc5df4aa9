"""``wsseg export-voc``: a VOC-layout copy of a COCO split, for tools that want one (wsseg does not).

OUT/JPEGImages/<id>.<ext>              the image, hard-linked when OUT is on the same file system, else copied
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

from wsseg.data.classes import write_class_file
from wsseg.data.coco import COCODataset
from wsseg.data.images import DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_SIDE, write_label_png
from wsseg.data.layout import open_dataset
from wsseg.errors import DataError, WssegError
from wsseg.io import TEMPORARY_SUFFIX, read_json, resolves_inside, write_json_atomic, write_text_atomic
from wsseg.outputs import check_may_write

EXPORT_RECORD = "export.json"


@dataclass(frozen=True)
class Exported:
    images: int
    unannotated: int
    linked: int  # images hard-linked rather than copied


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
               max_file_size: int | None = DEFAULT_MAX_FILE_SIZE, progress: bool = True) -> Exported:
    """Write the VOC-layout copy of a COCO split into ``out`` (a new or empty folder, or one an earlier
    export-voc of the same categories wrote)."""
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
    out.mkdir(parents=True, exist_ok=True)
    record["splits"][dataset.split] = str(dataset.annotations.resolve())
    write_json_atomic(out / EXPORT_RECORD, record)
    write_class_file(out / "classes.txt", dataset.classes)
    linked = 0
    names = dataset.classes.names
    for image_id in tqdm(dataset.ids, desc="export-voc", unit="img", disable=not progress):
        source = dataset.image_path(image_id)
        mask = dataset.load_mask(image_id)  # its size checked against the image's header
        linked += _place(source, out / "JPEGImages" / f"{image_id}{source.suffix.lower()}")
        write_label_png(out / "SegmentationClass" / f"{image_id}.png", mask)
        write_text_atomic(out / "Annotations" / f"{image_id}.xml",
                          _annotation_xml([names[value] for value in dataset.load_labels(image_id)]))
    write_text_atomic(out / "ImageSets" / "Segmentation" / f"{dataset.split}.txt",
                      "".join(f"{image_id}\n" for image_id in dataset.ids))
    unannotated = sum(not dataset.annotated(image_id) for image_id in dataset.ids)
    return Exported(len(dataset.ids), unannotated, linked)
