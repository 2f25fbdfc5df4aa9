"""wsseg: weakly-supervised semantic segmentation from image-level labels.

Data flows one way: ``wsseg.data`` (datasets) -> ``wsseg.models`` (the classifier) ->
``wsseg.maps`` (saliency and class maps) -> ``wsseg.fusion`` (segmentations) ->
``wsseg.evaluate`` (VOC mIoU) -> ``wsseg.report``. Each stage is usable alone.
"""

from wsseg.errors import DataError, WssegError

__version__ = "0.1.0"
__all__ = ["DataError", "WssegError", "__version__"]
