"""Pipeline B's fusion: an integer linear program over superpixels (scipy.optimize.milp, HiGHS).

Variables x[p, l] in {0, 1}: superpixel p takes label l, l in {background} + present classes.
  * every superpixel takes exactly one label: sum_l x[p, l] = 1;
  * every present class covers at least ``min_area`` of the image: sum_p area_p x[p, c] >= min_area * A;
  * objective: maximise sum_p area_p (score[p, l] x[p, l]) with the background's score the
    threshold itself, so a superpixel goes to a class only where that class's score beats the
    threshold (thresholding decides background), unless a class would otherwise vanish.
If the area constraints cannot all hold (tiny images, many classes), they are dropped.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp


def solve_labels(scores: np.ndarray, areas: np.ndarray, threshold: float, min_area: float = 0.01) -> np.ndarray:
    """scores [P, K] (present classes), areas [P] -> label index per superpixel (0 bg, 1..K class)."""
    count, classes = scores.shape
    labels = classes + 1
    gain = np.concatenate([np.full((count, 1), threshold), scores], axis=1) * areas[:, None]  # [P, L]
    cost = -gain.ravel()
    one_label = np.zeros((count, count * labels))
    for p in range(count):
        one_label[p, p * labels:(p + 1) * labels] = 1
    constraints = [LinearConstraint(one_label, 1, 1)]
    total = areas.sum()
    if classes and min_area > 0 and classes * min_area * total <= total:
        coverage = np.zeros((classes, count * labels))
        for c in range(classes):
            coverage[c, np.arange(count) * labels + c + 1] = areas
        constraints.append(LinearConstraint(coverage, min_area * total, np.inf))
    result = milp(cost, constraints=constraints, integrality=np.ones(count * labels), bounds=Bounds(0, 1))
    if result.x is None:  # infeasible: fall back to the unconstrained choice
        return np.argmax(gain, axis=1)
    return np.argmax(result.x.reshape(count, labels), axis=1)
