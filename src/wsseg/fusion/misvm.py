"""mi-SVM (Andrews, Tsochantaridis & Hofmann, NIPS 2002) with scikit-learn linear SVMs.

Bags are images, instances their superpixels. For class c, instances of images without c are
negative; those of images with c start positive, and each round relabels them by the SVM's
sign while keeping at least one positive (the highest-scoring) in every positive bag, until
the labels stop changing. Scores become probabilities by Platt scaling.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import expit
from tqdm import tqdm

from wsseg.errors import WssegError
from wsseg.io import atomic_write
from wsseg.maps.resolution import MIN_MAP_SIDE
from wsseg.registry import MISVM

MISVM_FILE = MISVM.file  # the registry names the trained files its methods read
# the instances' size: pipeline A must cut its superpixels as the mi-SVM was trained on them
PIXELS_PER_SUPERPIXEL = 200
# pipeline A works on images shrunk to at most this side (the dense CRF's grid, DEFAULT_CRF): at a
# photo's full size a 640x480 image is 1,536 superpixels of 472 x 4 zoom-out features computed from
# a 580 MB up-sampled feature stack, and the mi-SVM on 81 such photos did not finish in 30 minutes.
# The side the mi-SVM was trained at is saved with it, and pipeline A uses that one.
MISVM_MAX_SIDE = 320


@dataclass
class MiSVM:
    """Linear scorers for C classes on standardised zoom-out features, with Platt scaling."""

    mean: np.ndarray  # [D]
    scale: np.ndarray  # [D]
    weights: np.ndarray  # [C, D]
    bias: np.ndarray  # [C]
    platt: np.ndarray  # [C, 2]: probability = sigmoid(a * score + b)
    classes: tuple[str, ...] = ()  # the class list it was trained for (the run's)
    # the side its images were shrunk to (None: full size, and what files that do not record one had)
    max_side: int | None = None

    def scores(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.scale) @ self.weights.T + self.bias

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """[P, D] -> [P, C] calibrated class probabilities."""
        return expit(self.scores(features) * self.platt[:, 0] + self.platt[:, 1])

    def save(self, path: str | Path) -> None:
        with atomic_write(path) as handle:
            np.savez(handle, mean=self.mean, scale=self.scale, weights=self.weights, bias=self.bias, platt=self.platt,
                     classes=np.array(self.classes, dtype=str),
                     max_side=np.array(-1 if self.max_side is None else self.max_side, dtype=np.int64))

    @classmethod
    def load(cls, path: str | Path, classes: Sequence[str] | None = None) -> MiSVM:
        """Read ``misvm.npz``; with ``classes`` (the run's), one trained for another class list, or
        by a version that did not record it, is refused: its columns would score the wrong classes."""
        path = Path(path)
        if not path.is_file():
            raise WssegError(f"{path}: no mi-SVM here; train one with `wsseg train-misvm --run RUN --data ROOT`")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = [data[key] for key in ("mean", "scale", "weights", "bias", "platt")]
                stored = tuple(str(name) for name in data["classes"]) if "classes" in data.files else None
                side = data["max_side"] if "max_side" in data.files else np.array(-1)
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise WssegError(f"{path}: unreadable mi-SVM ({exc.__class__.__name__}); train it again with "
                             "`wsseg train-misvm`") from None
        mean, scale, weights, bias, platt = arrays
        if weights.ndim != 2 or weights.shape[1] != mean.shape[0] or len(bias) != len(weights) \
                or platt.shape != (len(weights), 2) or scale.shape != mean.shape:
            raise WssegError(f"{path}: damaged mi-SVM (its arrays do not fit together); train it again")
        if side.shape != () or side.dtype.kind != "i" or not (int(side) == -1 or int(side) >= MIN_MAP_SIDE):
            raise WssegError(f"{path}: damaged mi-SVM (max_side {side!r} is not a side in pixels); train it again")
        max_side = None if int(side) == -1 else int(side)
        if classes is not None:
            if stored is None:
                raise WssegError(f"{path}: this mi-SVM does not record its class list (an older wsseg); retrain it "
                                 "with `wsseg train-misvm`")
            if stored != tuple(classes) or len(weights) != len(stored):
                raise WssegError(f"{path}: this mi-SVM was trained for other classes than the run's model; "
                                 "retrain it with `wsseg train-misvm`")
        return cls(mean, scale, weights, bias, platt, stored or (), max_side)


def _linear_svm(features: np.ndarray, labels: np.ndarray, seed: int):
    # scikit-learn is imported when a mi-SVM is trained, not whenever pipelines load (it takes ~1 s)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import SGDClassifier

    # hinge loss = a linear SVM; SGD keeps tens of thousands of instances x thousands of features fast.
    # The epoch cap is deliberate (the mi-SVM loop refits anyway), so its warning is noise.
    svm = SGDClassifier(loss="hinge", alpha=1e-2, max_iter=30, tol=1e-3, class_weight="balanced",
                        random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return svm.fit(features, labels)


def train_class(features: np.ndarray, bags: np.ndarray, positive_bags: np.ndarray, max_rounds: int = 8,
                seed: int = 0, seeds: np.ndarray | None = None) -> tuple[np.ndarray, float, np.ndarray]:
    """mi-SVM for one class: returns (weights, bias, final instance labels).

    ``seeds`` [I] in [0, 1] (e.g. the class's CAM on each superpixel) start the positive bags'
    labels: instances at >= 0.5 positive (and each bag's best), instead of every instance.
    """
    in_positive = np.isin(bags, positive_bags)
    labels = np.where(in_positive, 1, -1)
    if seeds is not None:
        labels = np.where(in_positive & (seeds >= 0.5), 1, -1)
        for bag in positive_bags:
            members = np.nonzero(bags == bag)[0]
            if members.size:
                labels[members[np.argmax(seeds[members])]] = 1
    svm = None
    for _ in range(max_rounds):
        svm = _linear_svm(features, labels, seed)
        scores = svm.decision_function(features)
        new = np.where(in_positive, np.where(scores > 0, 1, -1), -1)
        for bag in positive_bags:  # every positive bag keeps its best instance positive
            members = np.nonzero(bags == bag)[0]
            if members.size and not (new[members] > 0).any():
                new[members[np.argmax(scores[members])]] = 1
        if np.array_equal(new, labels):
            break
        labels = new
    assert svm is not None
    return svm.coef_.ravel().astype(np.float32), float(svm.intercept_[0]), labels


def train_misvm(features: np.ndarray, bags: np.ndarray, bag_labels: Sequence[Sequence[int]], num_classes: int,
                seed: int = 0, progress: bool = False, seeds: np.ndarray | None = None) -> MiSVM:
    """features [I, D] of all instances, bags [I] bag index per instance, bag_labels: 0-based classes per bag;
    ``seeds`` [I, C] optional initial instance scores in [0, 1] per class."""
    from sklearn.linear_model import LogisticRegression  # local: see _linear_svm

    mean = features.mean(0)
    scale = features.std(0) + 1e-6
    standard = (features - mean) / scale
    weights = np.zeros((num_classes, features.shape[1]), np.float32)
    bias = np.zeros(num_classes, np.float32)
    platt = np.tile(np.array([1.0, 0.0], np.float32), (num_classes, 1))
    for c in tqdm(range(num_classes), desc="mi-SVM", unit="class", disable=not progress):
        positive = np.array([b for b, labels in enumerate(bag_labels) if c in labels])
        if positive.size == 0 or positive.size == len(bag_labels):
            continue  # nothing to tell apart; the class keeps a zero scorer
        w, b, labels = train_class(standard, bags, positive, seed=seed,
                                   seeds=None if seeds is None else seeds[:, c])
        # scale the scorer to unit spread first: hinge-loss SGD leaves margins in the hundreds, and
        # Platt scaling on such scores saturates every probability at 0 or 1
        spread = float(np.std(standard @ w + b)) or 1.0
        w, b = w / spread, b / spread
        weights[c], bias[c] = w, b
        scores = (standard @ w + b).reshape(-1, 1)
        calibration = LogisticRegression().fit(scores, labels > 0)
        platt[c] = (calibration.coef_[0, 0], calibration.intercept_[0])
    return MiSVM(mean.astype(np.float32), scale.astype(np.float32), weights, bias, platt)
