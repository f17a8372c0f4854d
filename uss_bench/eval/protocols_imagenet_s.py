"""The ``imagenet-s`` protocol (PASS / LUSSeg evaluation); its evaluator lives in ``eval/imagenet_s.py``.

Kept apart from the evaluator so protocols can be listed without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from uss_bench.eval.protocol import Protocol, register

KNN_K = 10  # PASS distance matching: k nearest labelled prototypes
KNN_TEMPERATURE = 0.07  # weights exp(cos / 0.07)


@dataclass(frozen=True)
class ImageNetSProtocol(Protocol):
    evaluator: str = "imagenet-s"
    distance_split: str = "train-semi"  # labelled images the class prototypes come from
    distance_k: int = KNN_K
    distance_temperature: float = KNN_TEMPERATURE
    distance_res: int = 256  # PASS: shorter side 256, no crop


IMAGENET_S = register(
    ImageNetSProtocol(
        name="imagenet-s",
        description="ImageNet-S (PASS): image-level Hungarian matching / distance matching, full-resolution "
                    "mIoU over K+1 classes incl. background",
        eval_split="val",
        crf=False,
        flip_tta=False,
        image_interpolation="bilinear",
        matching="hungarian",
        miou_averaging="absent_as_zero",
        checkpoint_selection="last",
        notes=(
            "The protocol's own numbers are metrics.imagenet_s_*; cluster/linear are the engine's pixel-Hungarian "
            "probes at eval_res (centre crop), kept for comparison with the other protocols.",
            "imagenet_s_*: scored at full GT resolution (image resized to eval_res / distance_res, shorter side, "
            "no crop; predictions upsampled to the label size); GT 1000 ignored; mIoU over K+1 classes incl. "
            "background, absent classes count 0; image-level Hungarian on per-image id sets; also Acc, mBIoU "
            "(dilation ratio 0.03), F-measure (beta 0.3) and mIoU/mBIoU per object-size bucket S/MS/ML/L.",
            "Distance matching: prototypes = masked means of the method's embed() features over train-semi "
            "(PASS uses ResNet features upsampled x4), k = 10, weight exp(cos / 0.07), then image-level matching.",
            "Cluster probe: the cluster overlapping GT background most is renamed background before matching "
            "(PASS's methods predict background themselves).",
            "Ties in the assignment may resolve differently from munkres (same cost).",
        ),
    )
)
