"""STEGO's CRF step, re-stated from its official code for the equality tests (not the harness's code).

``eval_segmentation.py:batched_crf`` hands ``src/crf.py:dense_crf`` the *normalised network input*;
``dense_crf`` rebuilds the image with ``to_pil_image(unnorm(img))`` (x255, truncated), passes its BGR
copy to pydensecrf with the constants of ``src/crf.py`` and takes the argmax of Q.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as VF

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def network_input(rgb: np.ndarray) -> torch.Tensor:
    """The loader's normalised input for an H x W x 3 uint8 image."""
    return T.Normalize(MEAN, STD)(T.ToTensor()(Image.fromarray(rgb)))


def crf_image(img: torch.Tensor) -> np.ndarray:
    """The image pydensecrf sees: unnormalised in place, to_pil_image (x255, truncated), BGR."""
    unnorm = torch.clone(img)
    for t, m, s in zip(unnorm, MEAN, STD):
        t.mul_(s).add_(m)
    return np.ascontiguousarray(np.array(VF.to_pil_image(unnorm))[:, :, ::-1])


def dense_crf(img: torch.Tensor, log_probs: torch.Tensor) -> np.ndarray:
    """The official dense_crf on one image (network input ``img``, [C,H,W] log-probabilities): labels."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    image = crf_image(img)
    probs = torch.softmax(log_probs, dim=0).numpy()
    c, h, w = probs.shape
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    d.addPairwiseGaussian(sxy=1, compat=3)
    d.addPairwiseBilateral(sxy=67, srgb=3, rgbim=image, compat=4)
    return np.array(d.inference(10)).reshape(c, h, w).argmax(0)
