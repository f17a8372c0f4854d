"""What the dense CRF is handed, shared by the in-loop CRF (eval/engine.py) and the deferred stage.

The official evaluations (STEGO ``eval_segmentation.py``, HP/PPAP ``eval.py``) pass
``log_softmax(logits)`` computed on the model's device; ``dense_crf`` then takes a float32 softmax
of it on the CPU. softmax(log_softmax(x)) equals softmax(x) only up to round-off, and the CRF's
unary is -log of it, so the same two steps are taken here, on the same devices. The image is
built inside the kernel (``crf_kernel.crf_image``) from the uint8 RGB image.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def crf_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """[B,K,H,W] logits -> float32 log-probabilities on the logits' device (the official first step)."""
    return F.log_softmax(torch.as_tensor(logits).float(), dim=1)


def crf_probs_from_log_probs(log_probs: torch.Tensor | np.ndarray) -> list[np.ndarray]:
    """[B,K,H,W] log-probabilities -> per image a float32 [K,H,W] softmax, computed on the CPU as dense_crf does."""
    log_probs = torch.as_tensor(log_probs).detach().cpu().float()
    return [F.softmax(one, dim=0).numpy() for one in log_probs]


def crf_batch(images_u8: torch.Tensor, logits: torch.Tensor) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """uint8 [B,C,H,W] images and [B,K,H,W] logits -> (RGB [H,W,3] uint8 images, [K,H,W] float32 probs)."""
    probs = crf_probs_from_log_probs(crf_log_probs(logits))
    images = torch.as_tensor(images_u8)[:, :3].permute(0, 2, 3, 1).contiguous().cpu().numpy()
    return list(images), probs
