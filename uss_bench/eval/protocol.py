"""Evaluation protocols: every choice that moves a number, as named data stored in each record."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from uss_bench.eval.crf_kernel import CRFParams
from uss_bench.eval.protocol_choices import EXTRA_CLUSTER_PIXELS
from uss_bench.registry import PROTOCOLS

SELECTION_RULES = ("last", "val_cluster_miou", "val_sum4")


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    eval_split: str = "val"
    train_split: str | None = None  # None: the dataset card's train_split
    # Per dataset, the splits the method's own code trains on and scores where they differ from the
    # fields above: {dataset: {"train": split, "eval": split}}; applied by `for_dataset`.
    dataset_splits: dict[str, dict[str, str]] = field(default_factory=dict)
    eval_res: int = 320
    crop: str = "center"  # "center" (shorter side -> res, centre crop) or "none" (squash)
    image_interpolation: str = "nearest"  # STEGO/HP/PPAP resize images with NEAREST (reference §0.1)
    flip_tta: bool = False
    crf: bool = True
    crf_params: dict[str, Any] = field(default_factory=lambda: CRFParams().as_dict())
    matching: str = "hungarian"  # cluster probe: hungarian | majority
    extra_clusters: int = 0
    miou_averaging: str = "skip_absent"  # skip_absent | absent_as_zero
    # Pixels predicted as a cluster id >= n_classes (extra_clusters > 0): "error" keeps them (pixels of
    # clusters left unmatched count as errors); "drop_before_matching" is STEGO/HP/PPAP's
    # UnsupervisedMetrics.update, which drops them before the histogram and so before matching.
    extra_cluster_pixels: str = "error"
    checkpoint_selection: str = "last"  # last | val_cluster_miou | val_sum4 (selects ON the eval split)
    eval_autocast: bool = False  # HP/PPAP evaluate under CUDA autocast
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.checkpoint_selection not in SELECTION_RULES:
            raise ValueError(f"checkpoint_selection must be one of {SELECTION_RULES}")
        if self.extra_cluster_pixels not in EXTRA_CLUSTER_PIXELS:
            raise ValueError(f"extra_cluster_pixels must be one of {EXTRA_CLUSTER_PIXELS}")

    def for_dataset(self, dataset: str) -> Protocol:
        """This protocol with ``train_split``/``eval_split`` set for ``dataset`` from ``dataset_splits``."""
        splits = self.dataset_splits.get(dataset, {})
        unknown = set(splits) - {"train", "eval"}
        if unknown:
            raise ValueError(f"protocol {self.name}: dataset_splits[{dataset!r}] has unknown role(s) {sorted(unknown)}")
        return replace(self, train_split=splits.get("train", self.train_split),
                       eval_split=splits.get("eval", self.eval_split))

    def with_overrides(self, **changes: Any) -> Protocol:
        unknown = set(changes) - set(self.as_dict())
        if unknown:
            raise ValueError(f"unknown protocol option(s) {sorted(unknown)}; known: {sorted(self.as_dict())}")
        # YAML and --set give lists; a field declared as a tuple gets its tuple back
        tuple_fields = {f.name for f in fields(self) if str(f.type).startswith("tuple")}
        changes = {k: tuple(v) if k in tuple_fields and isinstance(v, list) else v for k, v in changes.items()}
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data


def register(protocol: Protocol) -> Protocol:
    return PROTOCOLS.add(protocol.name, protocol)


register(
    Protocol(
        name="uss",
        description="uss-bench default: one rule for every method; final weights, no selection on the eval split",
        checkpoint_selection="last",
        notes=(
            "Pixels of clusters left unmatched (extra clusters) count as errors; STEGO/HP/PPAP drop pixels "
            "predicted as a cluster id >= n_classes before matching (extra_cluster_pixels).",
            "The CRF sees the official image (crf_params.image = official): the CRF constants were tuned on "
            "it, and the exact RGB image is not more correct for pydensecrf's approximate filter.",
        ),
    )
)
register(
    Protocol(
        name="stego",
        description="STEGO eval_segmentation.py: 320 centre crop, flip TTA, CRF; checkpoint by val cluster mIoU",
        flip_tta=True,
        checkpoint_selection="val_cluster_miou",
        extra_cluster_pixels="drop_before_matching",
        notes=(
            "STEGO's ModelCheckpoint monitors test/cluster/mIoU on the val set (reference §0.3).",
            "As UnsupervisedMetrics.update: pixels predicted as a cluster id >= n_classes are dropped before "
            "matching (no effect with STEGO's extra_clusters = 0).",
        ),
    )
)
register(
    Protocol(
        name="hp",
        description="HP eval: 320 centre crop, no flip TTA, CRF; best of Cluster mIoU+Acc+Linear mIoU+Acc on val",
        checkpoint_selection="val_sum4",
        eval_autocast=True,
        extra_cluster_pixels="drop_before_matching",  # utils/seg_utils.py copies STEGO's metric
        notes=("HP keeps the checkpoint maximising the sum of the four val metrics (reference §0.3).",),
    )
)
register(
    Protocol(
        name="ppap",
        description="PPAP eval: as HP (no flip TTA, CRF, best sum of four val metrics)",
        checkpoint_selection="val_sum4",
        eval_autocast=True,
        extra_cluster_pixels="drop_before_matching",  # utils/seg_utils.py copies STEGO's metric
        notes=("Same selection as HP; PPAP saves best.pth but eval.py loads ckpt.pth (reference §PPAP-b).",),
    )
)
