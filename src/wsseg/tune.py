"""Kept for earlier imports: this module is now :mod:`wsseg.segmentation.tune`."""

from wsseg.segmentation.tune import (BACKGROUND_FILE, load_choices, map_settings, store_choice, tune_background,
                                     tune_background_on_split, tuned_for_other_maps)

__all__ = ["BACKGROUND_FILE", "load_choices", "map_settings", "store_choice", "tune_background",
           "tune_background_on_split", "tuned_for_other_maps"]
