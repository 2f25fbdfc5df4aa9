"""Training: one loop, :func:`wsseg.training.loop.fit`, and one task object per network.

- ``options``: what each trainer is asked to do (torch-free, so ``wsseg --help`` shows the
  defaults fast): :class:`~wsseg.training.options.TrainerOptions` and its one ``check``.
- ``loop``: ``fit(task, options)`` (device and process group, resume, epochs, autocast, the
  divergence check, patience and the best epoch, checkpoint order) and the :class:`Task` it runs.
- ``steps``: the pieces of a step (precision, workers, the poly schedule, placing a model).
- ``pseudo``: the record of where pseudo-labels came from (``segment.json``).
- the tasks: ``classifier`` (``wsseg train``), ``segnet`` (stage 2, ``wsseg train-seg``) and
  ``affinity`` (``wsseg train-affinity``).

This module imports nothing, so that reading the options does not import torch.
"""
