"""The dense CRF of STEGO/HP/PPAP (reference §0.4), numpy + pydensecrf only.

Kept free of torch so it can run in light worker processes: payloads are a uint8 RGB image and
float32 class probabilities; the result is the argmax of the CRF marginals.

The image pydensecrf sees is built here, by :func:`crf_image`, for the in-loop CRF and the deferred
CRF stage alike. The official ``dense_crf`` (STEGO ``src/crf.py``, HP/PPAP ``utils/seg_utils.py``)
rebuilds it from the *normalised network input*: ``to_pil_image(unnorm(img))`` multiplies by 255 and
truncates, so float round-off drops some values by one level, and ``[:, :, ::-1]`` hands pydensecrf
the BGR copy. pydensecrf's permutohedral lattice is not symmetric in channel order, so both matter.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# The official loaders' T.Normalize constants and its UnNormalize; the same values as
# data/transforms.py IMAGENET_MEAN / IMAGENET_STD (a test checks), repeated to keep torch out.
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

CRF_IMAGE_RULES = ("official", "exact_rgb")


@dataclass(frozen=True)
class CRFParams:
    iterations: int = 10  # MAX_ITER
    gaussian_sxy: float = 1.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 67.0
    bilateral_srgb: float = 3.0
    bilateral_compat: float = 4.0
    # "official": the image the official dense_crf builds (round trip through the normalised input,
    # x255 truncated, BGR). "exact_rgb": the uint8 RGB image as loaded.
    image: str = "official"

    def __post_init__(self) -> None:
        if self.image not in CRF_IMAGE_RULES:
            raise ValueError(f"CRF image rule must be one of {CRF_IMAGE_RULES}, got {self.image!r}")

    def as_dict(self) -> dict:
        return asdict(self)


def crf_image(rgb: np.ndarray, rule: str = "official") -> np.ndarray:
    """uint8 RGB [H,W,3] (the loaded, resized, cropped image) -> the uint8 [H,W,3] image the CRF sees.

    ``official`` repeats the official float32 operations in their order: ToTensor (``/ 255``),
    Normalize (``- mean`` then ``/ std``), UnNormalize (``* std`` then ``+ mean``, each constant
    rounded to float32 as torch does with a Python scalar), ``to_pil_image`` (``* 255`` and a
    truncating cast to uint8), then the channels reversed. IEEE float32 makes this bit-identical to
    the official torch code on any CPU.
    """
    rgb = np.asarray(rgb)[..., :3]
    if rule == "exact_rgb":
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    if rule != "official":
        raise ValueError(f"CRF image rule must be one of {CRF_IMAGE_RULES}, got {rule!r}")
    x = rgb.astype(np.float32) / np.float32(255)
    x = (x - _MEAN) / _STD
    x = x * _STD + _MEAN
    x = x * np.float32(255)
    # float -> uint8 truncates towards zero; the round trip stays within (-1, 256), so 0..255
    out = np.trunc(x).clip(0, 255).astype(np.uint8)
    return np.ascontiguousarray(out[..., ::-1])


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams = CRFParams()) -> np.ndarray:
    """image uint8 RGB [H,W,3], probs float32 [C,H,W] (a softmax) -> int16 labels [H,W]."""
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
        rgbim=crf_image(image, params.image),
        compat=params.bilateral_compat,
    )
    q = np.asarray(crf.inference(params.iterations)).reshape(n_classes, h, w)
    return q.argmax(axis=0).astype(np.int16)


def _noop() -> int:
    return 0
