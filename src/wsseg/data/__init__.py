"""Datasets in the PASCAL VOC layout and in COCO's (``open_dataset`` tells them apart), class lists,
label PNGs, the synthetic benchmarks and the VOC-shaped rehearsal dataset."""

from wsseg.data.classes import BACKGROUND, VOC_CLASSES, VOID, ClassList, load_class_list, read_class_file
from wsseg.data.images import read_image, read_label_png, voc_palette, write_image, write_label_png
from wsseg.data.synth import SHAPES, SynthConfig, write_synthetic_dataset
from wsseg.data.layout import is_coco, open_dataset
from wsseg.data.voc import Sample, VOCDataset, labels_from_mask, labels_to_vector, read_split_file
from wsseg.data.voc_shaped import write_voc_shaped

__all__ = [
    "BACKGROUND", "VOC_CLASSES", "VOID", "ClassList", "SHAPES", "Sample", "SynthConfig", "VOCDataset", "is_coco",
    "open_dataset",
    "labels_from_mask", "labels_to_vector", "load_class_list", "read_class_file", "read_image",
    "read_label_png", "read_split_file", "voc_palette", "write_image", "write_label_png",
    "write_synthetic_dataset", "write_voc_shaped",
]
