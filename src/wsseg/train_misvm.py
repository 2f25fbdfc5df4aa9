"""Kept for earlier imports: this module is now :mod:`wsseg.segmentation.train_misvm`."""

from wsseg.segmentation.train_misvm import (MiSVMReport, train_misvm_from_run, train_misvm_on_split)

__all__ = ["MiSVMReport", "train_misvm_from_run", "train_misvm_on_split"]
