"""Fully-connected CRF (Kraehenbuehl & Koltun 2011) through pydensecrf2.

Defaults are psa/SEAM's (the family the authors' later PyTorch code used): Gaussian sxy=3,
compat=3; bilateral sxy=80, srgb=13, compat=10; 10 mean-field iterations. ``crf_from_labels``
is IRN's variant: a hard label map as unary with gt_prob=0.7 and bilateral sxy=50, srgb=5.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from wsseg.errors import WssegError
from wsseg.maps.resolution import grow, shrink, shrink_image


@dataclass(frozen=True)
class CRFParams:
    """Mean-field iterations and kernel parameters (spatial ones in pixels of a full-size image).

    ``max_side``: images larger than this are refined on a grid shrunk to it, with the spatial
    parameters shrunk alike, and the refined probabilities up-sampled (the CRF's time grows with
    the pixel count; None: always at full size)."""

    iterations: int = 10
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0
    max_side: int | None = None


PSA = CRFParams()
IRN = CRFParams(bilateral_sxy=50.0, bilateral_srgb=5.0)
# DeepLab's post-processing of a segmentation network's softmax (kazuto1011/deeplab-pytorch, voc12.yaml)
DEEPLAB = CRFParams(gaussian_sxy=1.0, gaussian_compat=3.0, bilateral_sxy=67.0, bilateral_srgb=3.0, bilateral_compat=4.0)


def _densecrf():
    try:
        import pydensecrf.densecrf as dcrf  # local: a compiled extension, reported clearly when it is missing
    except ImportError:  # pragma: no cover - installed by requirements.txt
        raise WssegError("the dense CRF needs pydensecrf2 (pip install pydensecrf2)") from None
    return dcrf


def dense_crf(image: np.ndarray, probabilities: np.ndarray, params: CRFParams = PSA) -> np.ndarray:
    """Mean-field inference: image H x W x 3 uint8, probabilities [L, H, W] -> refined [L, H, W]."""
    labels, height, width = probabilities.shape
    if image.shape[:2] != (height, width):
        raise ValueError(f"image {image.shape[:2]} and probabilities {(height, width)} differ in size")
    if params.max_side is not None and max(height, width) > params.max_side:
        return _dense_crf_shrunk(image, probabilities, params)
    dcrf = _densecrf()
    crf = dcrf.DenseCRF2D(width, height, labels)
    unary = -np.log(np.clip(probabilities, 1e-8, 1.0)).reshape(labels, -1)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    crf.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb,
                             rgbim=np.require(image, np.uint8, ["C", "W"]), compat=params.bilateral_compat)
    refined = np.asarray(crf.inference(params.iterations), dtype=np.float32)
    return refined.reshape(labels, height, width)


def crf_from_labels(image: np.ndarray, label_map: np.ndarray, num_labels: int, gt_prob: float = 0.7,
                    params: CRFParams = IRN) -> np.ndarray:
    """IRN's CRF on a hard label map (values 0..num_labels-1): returns the refined label map."""
    dcrf = _densecrf()
    from pydensecrf.utils import unary_from_labels  # local: imported after _densecrf() checked the install

    height, width = label_map.shape
    crf = dcrf.DenseCRF2D(width, height, num_labels)
    crf.setUnaryEnergy(unary_from_labels(label_map.astype(np.int32), num_labels, gt_prob=gt_prob, zero_unsure=False))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    crf.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb,
                             rgbim=np.require(image, np.uint8, ["C", "W"]), compat=params.bilateral_compat)
    refined = np.asarray(crf.inference(params.iterations)).reshape(num_labels, height, width)
    return np.argmax(refined, axis=0)


def _dense_crf_shrunk(image: np.ndarray, probabilities: np.ndarray, params: CRFParams) -> np.ndarray:
    """The CRF on the image and probabilities shrunk to ``params.max_side``, its spatial kernel
    widths shrunk by the same factor, the result up-sampled bilinearly to the image."""
    height, width = probabilities.shape[1:]
    factor = params.max_side / max(height, width)
    small_image = shrink_image(image, params.max_side)
    small_probabilities = shrink(torch.from_numpy(np.ascontiguousarray(probabilities, np.float32))[None],
                                 params.max_side)[0].numpy()
    small = dataclasses.replace(params, max_side=None, gaussian_sxy=params.gaussian_sxy * factor,
                                bilateral_sxy=params.bilateral_sxy * factor)
    refined = dense_crf(small_image, small_probabilities, small)
    return grow(torch.from_numpy(refined)[None], (height, width))[0].numpy()
