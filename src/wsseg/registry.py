"""The methods by name, one row each: the one table of segmentation methods, and the class-map
methods' names.

A segmentation method is declared once, here: its name, one-line description, default background
threshold, the map methods it reads, its fusion kind (the segmenter class that implements it, in
:mod:`wsseg.segmentation`) and the trained artefacts it reads (pipeline A's mi-SVM, the random
walk's affinity network; ``seg`` reads a stage-2 run instead of a classifier's). Everything else is
derived from the rows: the CLI's ``--method`` choices, the demo's and the report's lists, which
files ``segment.json`` records the digests of, and the README's method table
(:func:`method_table`, checked by a test). This module imports nothing heavy (no torch), so that
``wsseg --help`` stays fast; :mod:`wsseg.segmentation.methods` refuses to import while a row names
a fusion kind no segmenter implements.
"""

from __future__ import annotations

from dataclasses import dataclass

from wsseg.errors import WssegError


# wsseg.maps.MAP_METHODS' names (the class-map methods of `wsseg maps`; it checks they agree)
MAP_METHOD_NAMES = ("gradient", "guided", "layers", "dcsm", "cam", "gradcam")


@dataclass(frozen=True)
class Artefact:
    """A trained file a segmentation method reads from its run folder."""

    file: str  # its name in the run folder
    record_key: str  # segment.json's key for its SHA-256: a retrained file makes other segmentations
    made_by: str  # the command that trains it (named when it is missing)


MISVM = Artefact("misvm.npz", "misvm_sha256", "`wsseg train-misvm --run RUN --data ROOT`")
AFFINITY = Artefact("affinity.pt", "affinity_sha256", "`wsseg train-affinity --run RUN --data ROOT --pseudo PSEUDO`")
ARTEFACTS = (MISVM, AFFINITY)

# the kinds of run a method reads: a classifier's (`wsseg train`) or a stage-2 network's (`wsseg train-seg`)
CLASSIFIER_RUN = "classifier"
STAGE2_RUN = "stage-2"


@dataclass(frozen=True)
class MethodInfo:
    """One segmentation method: everything that names, builds and records it."""

    name: str
    description: str
    threshold: float | None  # default background threshold on the normalised maps (in [0, 1]); None: none
    maps: tuple[str, ...]  # the class-map methods whose maps it fuses (MAP_METHOD_NAMES)
    fusion: str  # the kind of segmenter that fuses them (a wsseg.segmentation class's `fusions`)
    artefacts: tuple[Artefact, ...] = ()  # trained files it reads from the run, besides the run's weights
    run: str = CLASSIFIER_RUN  # the kind of run folder it reads

    @property
    def uses_labels(self) -> bool:
        """Whether it segments the classes an image is labelled with (a classifier's maps do; a
        stage-2 network labels every pixel by itself, with no image labels, maps or threshold)."""
        return self.run == CLASSIFIER_RUN


_RW = "spread by a random walk over learnt pixel affinities"
METHODS: dict[str, MethodInfo] = {info.name: info for info in (
    # thresholds chosen on the train splits of both synthetic benchmarks (docs/method.md, 3.1)
    MethodInfo("cam", "class activation maps, background below 0.55 of each map's maximum", 0.55, ("cam",),
               "threshold"),
    MethodInfo("cam-crf", "CAM as soft unaries of the dense CRF", 0.55, ("cam",), "crf"),
    MethodInfo("gradcam", "Grad-CAM baseline", 0.55, ("gradcam",), "threshold"),
    MethodInfo("gradient", "input-gradient saliency baseline (Simonyan et al.)", 0.05, ("gradient",), "threshold"),
    MethodInfo("guided", "guided back-propagation saliency baseline", 0.05, ("guided",), "threshold"),
    MethodInfo("dcsm", "distinct class-specific saliency maps, background below 0.75 (each map centred on its "
                       "Otsu cut)", 0.75, ("dcsm",), "threshold"),
    MethodInfo("dcsm-crf", "DCSM as unary potentials of the dense CRF (the ECCV paper)", 0.65, ("dcsm",), "crf"),
    MethodInfo("pipeline-a", "DCSM weighted by a mi-SVM on zoom-out superpixel features, refined by a superpixel "
                             "CRF (the poster's A)", 0.75, ("dcsm",), "pipeline-a", (MISVM,)),
    MethodInfo("pipeline-b", "CAM x objectness and DCSM averaged per superpixel, labelled by an ILP (the poster's B)",
               0.55, ("cam", "dcsm"), "pipeline-b"),
    MethodInfo("cam-rw", f"CAM {_RW} (psa's AffinityNet; needs wsseg train-affinity)", 0.55, ("cam",),
               "random-walk", (AFFINITY,)),
    MethodInfo("dcsm-rw", f"DCSM {_RW} (needs wsseg train-affinity)", 0.65, ("dcsm",), "random-walk", (AFFINITY,)),
    MethodInfo("cam-rw-crf", "cam-rw's walked scores as unaries of the dense CRF", 0.45, ("cam",), "random-walk-crf",
               (AFFINITY,)),
    MethodInfo("dcsm-rw-crf", "dcsm-rw's walked scores as unaries of the dense CRF", 0.55, ("dcsm",),
               "random-walk-crf", (AFFINITY,)),
    # stage 2 (`wsseg train-seg`): reads a segmentation network's run, not a classifier's
    MethodInfo("seg", "stage-2 segmentation network (wsseg train-seg): one forward pass, no maps or threshold; "
               "--labels restricts its classes",
               None, (), "network", run=STAGE2_RUN),
)}
# the methods that fuse a classifier's maps on an image's labels (what tune-background, the demo's
# val rows and pseudo-labels choose from), and the stage-2 networks
SEGMENT_METHODS: dict[str, MethodInfo] = {name: info for name, info in METHODS.items() if info.uses_labels}
NETWORK_METHODS: dict[str, MethodInfo] = {name: info for name, info in METHODS.items() if not info.uses_labels}


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


def method_row(name: str) -> MethodInfo:
    """The row of any method, stage 2's network included."""
    if name not in METHODS:
        raise WssegError(f"unknown segmentation method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def method_info(name: str) -> MethodInfo:
    """The row of a method that fuses a classifier's maps (the ones with a background threshold)."""
    if name not in SEGMENT_METHODS:
        raise WssegError(f"unknown segmentation method {name!r}; choose from {', '.join(SEGMENT_METHODS)}")
    return SEGMENT_METHODS[name]


def method_table() -> str:
    """The README's method table (Markdown), from the rows: tests/test_registry.py checks that the
    README holds it as written here."""
    lines = ["| method | what it does | maps read | fusion | default threshold | trained files it reads |",
             "|---|---|---|---|---|---|"]
    for info in METHODS.values():
        reads = [f"`{artefact.file}` ({artefact.made_by})" for artefact in info.artefacts]
        if not info.uses_labels:
            reads.append("a stage-2 run's `model.pt` (`wsseg train-seg`), instead of the classifier's")
        lines.append(f"| `{info.name}` | {info.description} | {', '.join(info.maps) or '-'} | {info.fusion} | "
                     f"{'-' if info.threshold is None else info.threshold} | {'; '.join(reads) or '-'} |")
    return "\n".join(lines) + "\n"
