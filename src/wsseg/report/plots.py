"""Pictures for the report: the training curve (matplotlib, no pyplot state) and coloured maps."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wsseg.data.images import voc_palette
from wsseg.io import atomic_write


def colour_labels(label_map: np.ndarray) -> np.ndarray:
    """A label map in VOC colours (H x W x 3), as PASCAL's own masks are drawn."""
    return voc_palette()[np.asarray(label_map, dtype=np.uint8)]


def plot_training_curve(history: Sequence[dict], path: str | Path) -> None:
    """Loss and validation mAP/F1 per epoch, side by side, written atomically as a PNG.

    Uses ``matplotlib.figure.Figure`` directly so no pyplot global state or GUI backend is touched.
    """
    from matplotlib.figure import Figure  # local: matplotlib is only needed when a curve is drawn

    epochs = [record["epoch"] for record in history]
    figure = Figure(figsize=(8.0, 3.0), dpi=100, layout="constrained")
    loss_axes, score_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, [record["loss"] for record in history], marker="o", color="tab:red")
    loss_axes.set(title="training loss", xlabel="epoch", ylabel="binary cross-entropy")
    for key, label, colour in (("val_map", "val mAP", "tab:blue"), ("val_f1", "val F1", "tab:green")):
        points = [(record["epoch"], record[key]) for record in history if record.get(key) is not None]
        if points:
            score_axes.plot(*zip(*points), marker="o", label=label, color=colour)
    score_axes.set(title="validation classification", xlabel="epoch", ylim=(0.0, 1.0))
    if score_axes.lines:
        score_axes.legend(loc="lower right")
    for axes in (loss_axes, score_axes):
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())
