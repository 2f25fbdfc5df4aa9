"""A CRF over the superpixel adjacency graph, solved by mean-field inference.

Unary: -log of per-superpixel label probabilities. Pairwise: Potts, weighted by colour
similarity of touching superpixels, w_pq = weight * exp(-|Lab_p - Lab_q|^2 / (2 sigma^2)).
Mean field: Q_p(l) proportional to exp(-U_p(l) + sum_q w_pq Q_q(l)).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from wsseg.fusion.superpixels import superpixel_means
from wsseg.fusion.zoomout import adjacency


def contrast_weights(image: np.ndarray, superpixels: np.ndarray, weight: float = 1.0,
                     sigma: float = 10.0) -> sparse.csr_matrix:
    from skimage.color import rgb2lab  # local: scikit-image takes about a second to import

    colours = superpixel_means(rgb2lab(image).transpose(2, 0, 1), superpixels)
    graph = adjacency(superpixels).tocoo()
    distance = np.sum((colours[graph.row] - colours[graph.col]) ** 2, axis=1)
    values = weight * np.exp(-distance / (2 * sigma ** 2))
    return sparse.csr_matrix((values, (graph.row, graph.col)), shape=graph.shape)


def mean_field(probabilities: np.ndarray, weights: sparse.csr_matrix, iterations: int = 10) -> np.ndarray:
    """probabilities [P, L] (unaries), weights [P, P] -> refined [P, L]."""
    unary = np.log(np.clip(probabilities, 1e-8, 1.0))
    q = probabilities / probabilities.sum(axis=1, keepdims=True)
    for _ in range(iterations):
        logits = unary + weights @ q
        logits -= logits.max(axis=1, keepdims=True)
        q = np.exp(logits)
        q /= q.sum(axis=1, keepdims=True)
    return q
