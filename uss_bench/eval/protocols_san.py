"""The ``san`` protocol: the evaluation the SAN paper describes (AAAI 2023; no code is public).

Quoted from the paper (/work/shared/papers/san_aaai2023.txt, Experiments): it follows "the standard
evaluation protocols for unsupervised segmentation used in" PiCIE and IIC, the "Hungarian matching
algorithm is used to align indices between predictions and the ground-truth labels over all the images
in the validation set", and "Pixel Accuracy (Acc) is reported". Its ViT takes 128 x 128 crops (patch 8).
Not stated, so chosen and named in the notes: the evaluation size (128, the crop the paper trains on,
as IIC scores its 128 px training crops) and the image interpolation (bilinear, as IIC and PiCIE).
No CRF and no flip averaging: the paper mentions neither. ``uss`` stays the harness-wide default.
"""

from __future__ import annotations

from uss_bench.eval.protocol import Protocol, register

register(
    Protocol(
        name="san",
        description="SAN paper: 128 px centre crop, no CRF, no flip TTA, one-to-one Hungarian over the "
                    "validation set, pixel accuracy reported (mIoU recorded too)",
        eval_split="val",
        eval_res=128,
        image_interpolation="bilinear",
        flip_tta=False,
        crf=False,
        matching="hungarian",
        checkpoint_selection="last",
        notes=(
            "Paper: Hungarian matching over all images of the validation set; pixel accuracy is the reported metric.",
            "Evaluation size not stated by the paper: 128 = its training crop (ViT patch 8, 16 x 16 tokens).",
            "Image interpolation not stated by the paper: bilinear, as in the IIC and PiCIE protocols it follows.",
            "No CRF and no flip averaging: the paper mentions neither.",
        ),
    )
)
