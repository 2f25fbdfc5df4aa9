"""Kept for earlier imports: this module is now :mod:`wsseg.segmentation.map_folders`."""

from wsseg.segmentation.map_folders import (MAPS, MAPS_RECORD, RECORD_FORMAT, MapsRecord, StoredMaps,
                                            compute_split_maps, export_maps, maps_record, maps_record_differs,
                                            method_options, model_digest)

__all__ = ["MAPS", "MAPS_RECORD", "RECORD_FORMAT", "MapsRecord", "StoredMaps", "compute_split_maps", "export_maps",
           "maps_record", "maps_record_differs", "method_options", "model_digest"]
