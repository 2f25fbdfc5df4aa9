"""The segmentation floor: from a classifier's maps (or a stage-2 network) to label maps, split by split.

- the segmenters, one module per kind: ``threshold``, ``crf`` (dense CRF), ``pipeline_a``,
  ``pipeline_b``, ``random_walk``, ``network`` (stage 2), ``confident`` (IRN's confident
  pseudo-labels of any of them), on the contract of ``base``; ``methods`` names them;
- ``runner``, the one split runner, and its clients: ``segment`` (``wsseg segment``),
  ``map_folders`` (``wsseg maps`` and ``--maps``), ``tune`` (``wsseg tune-background``) and
  ``train_misvm`` (pipeline A's mi-SVM).

This ``__init__`` imports nothing, so that importing one module does not import them all.
"""
