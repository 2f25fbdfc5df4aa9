"""A low-level objectness map from the background prior (Wei et al., ECCV 2012; Zhu et al., CVPR 2014).

Regions whose colour matches something along the image border are probably background; regions
unlike every border colour are probably objects. Per superpixel: the mean Lab distance to the
closest quarter of the border superpixels, stretched to [0, 1]. Chosen for pipeline B because it
needs no training and no download, costs milliseconds on superpixels we compute anyway, and
(unlike spectral-residual saliency, which we tried first) covers whole large objects instead
of their edges.
"""

from __future__ import annotations

import numpy as np

from wsseg.fusion.superpixels import superpixel_means


def border_contrast(image: np.ndarray, superpixels: np.ndarray, closest: float = 0.25) -> np.ndarray:
    """H x W objectness in [0, 1] for an RGB uint8 image and its superpixels."""
    from skimage.color import rgb2lab  # local: scikit-image takes about a second to import

    lab = rgb2lab(image).transpose(2, 0, 1)
    colours = superpixel_means(lab, superpixels)  # [P, 3]
    border = np.unique(np.concatenate([superpixels[0], superpixels[-1], superpixels[:, 0], superpixels[:, -1]]))
    distances = np.linalg.norm(colours[:, None, :] - colours[None, border, :], axis=2)  # [P, B]
    keep = max(1, int(round(closest * len(border))))
    score = np.sort(distances, axis=1)[:, :keep].mean(axis=1)
    score = (score - score.min()) / max(float(np.ptp(score)), 1e-12)
    return score[superpixels].astype(np.float32)
