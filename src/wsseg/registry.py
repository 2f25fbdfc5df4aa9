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


def method_info(name: str) -> MethodInfo:
    if name not in SEGMENT_METHODS:
        raise WssegError(f"unknown segmentation method {name!r}; choose from {', '.join(SEGMENT_METHODS)}")
    return SEGMENT_METHODS[name]
