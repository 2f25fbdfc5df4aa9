"""The methods by name: segmentation methods' one-line descriptions and default background thresholds,
and the class-map methods' names.

This table is the one list of method names. It imports nothing heavy (no torch), so that
``wsseg --help`` stays fast; the CLI's ``--method`` choices, the demo's method list and the
report's descriptions read it, and :mod:`wsseg.pipelines` gives every name a builder (it refuses
to import when a name has none).
"""

from __future__ import annotations

from dataclasses import dataclass

from wsseg.errors import WssegError


# wsseg.maps.MAP_METHODS' names (the class-map methods of `wsseg maps`; it checks they agree)
MAP_METHOD_NAMES = ("gradient", "guided", "layers", "dcsm", "cam", "gradcam")


@dataclass(frozen=True)
class MethodInfo:
    name: str
    description: str
    threshold: float  # default background threshold on the method's normalised maps (in [0, 1])


SEGMENT_METHODS: dict[str, MethodInfo] = {info.name: info for info in (
    # thresholds chosen on the train splits of both synthetic benchmarks (docs/method.md, 3.1)
    MethodInfo("cam", "class activation maps, background below 0.55 of each map's maximum", 0.55),
    MethodInfo("cam-crf", "CAM as soft unaries of the dense CRF", 0.55),
    MethodInfo("gradcam", "Grad-CAM baseline", 0.55),
    MethodInfo("gradient", "input-gradient saliency baseline (Simonyan et al.)", 0.05),
    MethodInfo("guided", "guided back-propagation saliency baseline", 0.05),
    MethodInfo("dcsm", "distinct class-specific saliency maps, background below 0.75 of their range", 0.75),
    MethodInfo("dcsm-crf", "DCSM as unary potentials of the dense CRF (the ECCV paper)", 0.65),
    MethodInfo("pipeline-a", "DCSM weighted by a mi-SVM on zoom-out superpixel features, refined by a superpixel "
                             "CRF (the poster's A)", 0.75),
    MethodInfo("pipeline-b", "CAM x objectness and DCSM averaged per superpixel, labelled by an ILP (the poster's B)",
               0.55),
    MethodInfo("cam-rw", "CAM spread by a random walk over learnt pixel affinities (psa's AffinityNet; "
                         "needs wsseg train-affinity)", 0.55),
    MethodInfo("dcsm-rw", "DCSM spread by a random walk over learnt pixel affinities (needs wsseg train-affinity)",
               0.65),
    MethodInfo("cam-rw-crf", "cam-rw's walked scores as unaries of the dense CRF", 0.45),
    MethodInfo("dcsm-rw-crf", "dcsm-rw's walked scores as unaries of the dense CRF", 0.55),
)}


# Stage 2 (`wsseg train-seg`): read a segmentation network's run, not a classifier's, and need
# no image labels, maps or background threshold.
NETWORK_METHODS: dict[str, str] = {
    "seg": "stage-2 segmentation network (wsseg train-seg): one forward pass, no labels, maps or threshold",
}

# Rows of a results table (folders of predictions/ and scores/) for stage 2: the network trained
# on a method's pseudo-labels, and the same network trained on the ground-truth masks.
STAGE2_BOUND_ROW = "seg-ground-truth"
_STAGE2_FROM = "seg-from-"


def stage2_row(pseudo_method: str) -> str:
    """The results row of the stage-2 network trained on ``pseudo_method``'s pseudo-labels."""
    return f"{_STAGE2_FROM}{pseudo_method}"


def row_title(row: str) -> str:
    """How a results table shows a row: the stage-2 rows as the issue tracker and papers name them."""
    if row == STAGE2_BOUND_ROW:
        return "seg (ground-truth masks: upper bound)"
    if row.startswith(_STAGE2_FROM):
        return f"seg (from {row[len(_STAGE2_FROM):]})"
    return row


def row_description(row: str) -> str:
    if row in SEGMENT_METHODS:
        return SEGMENT_METHODS[row].description
    if row == STAGE2_BOUND_ROW:
        return "the stage-2 network trained on the ground-truth masks: the fully supervised bound"
    if row.startswith(_STAGE2_FROM):
        return (f"the stage-2 network trained on {row[len(_STAGE2_FROM):]}'s confident pseudo-labels of the train "
                "split; segments with no labels")
    return ""


def is_stage2_row(row: str) -> bool:
    return row == STAGE2_BOUND_ROW or row.startswith(_STAGE2_FROM)


def method_info(name: str) -> MethodInfo:
    if name not in SEGMENT_METHODS:
        raise WssegError(f"unknown segmentation method {name!r}; choose from {', '.join(SEGMENT_METHODS)}")
    return SEGMENT_METHODS[name]
