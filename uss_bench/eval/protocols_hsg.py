"""The ``hsg-knn`` protocol: SegSort/HSG segment retrieval with a labelled memory bank (reference §3b).

A :class:`Protocol` subclass so its k-NN settings are named fields stored in every record; its
``evaluator`` field makes the runner add the ``knn`` and ``nfcovering`` metrics beside the engine's
cluster/linear probes (see uss_bench/eval/evaluators.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from uss_bench.eval.protocol import Protocol, register


@dataclass(frozen=True)
class SegmentKnnProtocol(Protocol):
    evaluator: str = "knn-segments"
    knn_k: int = 20  # top-20 neighbours, unweighted majority vote
    # None = the method's ``inference_kmeans_grid`` (per dataset in its card: VOC/COCO 6x6, Cityscapes
    # 12x24, as the official inference scripts), else VOC's 6x6; a value here overrides both.
    kmeans_grid: tuple[int, int] | None = None
    # "official": the method's inference_geometry (longer side -> image_size, pad to crop, sliding
    # windows; VOC 512, Cityscapes 2048 / 1024x2048) applied to each image file at its own size, one
    # image per batch, for the memory bank and the eval split; "harness": eval_res images.
    geometry: str = "official"
    kmeans_iterations: int = 15
    kmeans_location: bool = True  # append normalised (y, x) before clustering, as in training
    nfc_background: tuple[int, ...] = (0,)  # class ids that are not foreground for NFCovering
    nfc_regions: str = "class"  # "class" or "component" (our choice; the paper does not say)


register(
    SegmentKnnProtocol(
        name="hsg-knn",
        description="HSG/SegSort: per-image spherical k-means segments, top-20 cosine vote over labelled "
                    "train-segment prototypes; mIoU counts absent classes as 0; NFCovering per level",
        crf=False,
        miou_averaging="absent_as_zero",
        checkpoint_selection="last",
        notes=(
            "The memory bank is built from the train split with its ground truth, by design of the protocol.",
            "geometry official: each file is read at its own size (no eval_res resize/crop, one image per batch), "
            "resized so its longer side is the method's image_size (VOC 512 padded to 512x512, Cityscapes 2048 "
            "with 1024x2048 windows), as pyscripts/inference/{prototype,inference}.py; labels go to that size and "
            "predictions back to the file size with OpenCV's nearest rule. Where the method publishes no geometry "
            "(KITTI-STEP, COCO-stuff, Potsdam, synthetic) the harness eval_res images are used.",
            "cluster/linear metrics are the engine's probes; the protocol's own numbers are metrics.knn.",
            "NFCovering (HSG Eq. 10) has no official code; region definition and averaging are ours.",
        ),
    )
)
