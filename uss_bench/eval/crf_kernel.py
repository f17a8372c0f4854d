"""The dense CRF of STEGO/HP/PPAP (reference §0.4), numpy + pydensecrf only.

Kept free of torch so it can run in light worker processes: payloads are a uint8 image and float32
class probabilities; the result is the argmax of the CRF marginals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class CRFParams:
    iterations: int = 10  # MAX_ITER
    gaussian_sxy: float = 1.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 67.0
    bilateral_srgb: float = 3.0
    bilateral_compat: float = 4.0

    def as_dict(self) -> dict:
        return asdict(self)


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams = CRFParams()) -> np.ndarray:
    """image uint8 [H,W,3], probs float32 [C,H,W] (a softmax) -> int16 labels [H,W]."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    n_classes, h, w = probs.shape
    if image.shape[:2] != (h, w):
        raise ValueError(f"CRF image {image.shape[:2]} and probabilities {(h, w)} differ in size")
    crf = dcrf.DenseCRF2D(w, h, n_classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs.astype(np.float32))))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=params.bilateral_sxy,
        srgb=params.bilateral_srgb,
        rgbim=np.ascontiguousarray(image[..., :3], dtype=np.uint8),
        compat=params.bilateral_compat,
    )
    q = np.asarray(crf.inference(params.iterations)).reshape(n_classes, h, w)
    return q.argmax(axis=0).astype(np.int16)


def _noop() -> int:
    return 0
