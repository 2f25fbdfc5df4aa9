"""wsseg: weakly-supervised semantic segmentation from image-level labels.

Data flows one way: dataset -> classifier -> class maps -> fusion -> label maps -> evaluation
and report. The package is layered in that order: a module imports only from its own layer and
the layers listed before it (tests/test_layering.py parses every import and enforces it):

    wsseg wsseg.errors wsseg.io wsseg.outputs wsseg.registry wsseg.distributed
    wsseg.data
    wsseg.evaluate
    wsseg.models
    wsseg.train wsseg.training wsseg.train_options wsseg.train_seg wsseg.train_affinity
    wsseg.maps
    wsseg.fusion
    wsseg.pipelines wsseg.segmentation wsseg.runner wsseg.map_folders wsseg.tune wsseg.segment wsseg.train_misvm
    wsseg.report
    wsseg.demo
    wsseg.cli wsseg.__main__

The first line is the bottom of the house, usable from every layer: errors, atomic file output,
the output-folder rules (``outputs``: where a command may write, claiming a folder, and the one
protocol of a folder with a record -- compare, replace, write -- with ``segment.json``'s name,
reader and keys), the torch-free table of method names (so ``wsseg --help`` lists them without
torch) and the process group. Then datasets; scoring (and ``wsseg evaluate``'s entry); the
networks; their training (the ``training`` package: one loop, ``training.loop.fit``, that runs the
classifier's, stage 2's and the affinity network's task objects, and ``training.options``, the
torch-free options with their defaults, which sits here because it reads a data default;
``train``, ``train_seg``, ``train_affinity`` and ``train_options`` are thin modules kept for
earlier imports); class maps; fusion from maps to labels, per image, no split loops; the
segmentation floor (the ``segmentation`` package: the typed segmenters, one module per kind, the
one split runner and its clients ``segment``, ``map_folders``, ``tune`` and ``train_misvm``;
``pipelines``, ``runner``, ``map_folders``, ``tune``, ``segment`` and ``train_misvm`` at the root
are thin modules kept for earlier imports); the HTML report; the demo; the command line, which
alone may import lazily (to keep ``wsseg --help`` fast).
"""

from wsseg.errors import DataError, WssegError

__version__ = "0.1.0"
__all__ = ["DataError", "WssegError", "__version__"]
