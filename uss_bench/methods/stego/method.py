"""STEGO: Unsupervised Semantic Segmentation by Distilling Feature Correspondences (Hamilton et al., ICLR 2022).

A frozen DINO ViT gives features f. A small head (a linear 1x1 branch plus a 1x1-ReLU-1x1 branch on
Dropout2d(0.1) features, dim 70) gives the code s. The head is trained so that code correlations
follow feature correlations: for self pairs, kNN pairs (one of the 7 nearest images, never itself)
and random pairs, -max(S, 0) * (F - b), with the official pointwise centring of F
(:mod:`uss_bench.methods.stego.loss`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from uss_bench.data.knn import MissingKnnError, compute_knn, knn_path, load_knn
from uss_bench.data.layout import crop_split
from uss_bench.data.transforms import to_unit_float
from uss_bench.methods.base import MethodAdapter
from uss_bench.methods.stego.head import SegmentationHead
from uss_bench.methods.stego.loss import PairWeights, correspondence_loss
from uss_bench.paths import load_card
from uss_bench.registry import METHODS

SYNTHETIC = "synthetic"


def knn_table_path(data_root: Path, dataset: str, train_split: str, backbone: str, res: int) -> Path:
    """The kNN file STEGO trains with; a five-crop split maps to STEGO's ``<split>_five`` naming."""
    parsed = crop_split(train_split)
    split, crop_type = (parsed[0], parsed[1]) if parsed else (train_split, None)
    return knn_path(data_root, dataset, split, backbone, crop_type, res)


@METHODS.register("stego")
class Stego(MethodAdapter):
    """STEGO (ICLR 2022): frozen DINO + head trained by correspondence distillation."""

    name = "stego"

    def __init__(self, backbone, n_classes, hparams, context) -> None:
        super().__init__(backbone, n_classes, hparams, context)
        self.head = SegmentationHead(backbone.dim, int(self.hparam("dim")), float(self.hparams.get("dropout", 0.1)))
        self.feature_dropout = torch.nn.Dropout2d(float(self.hparams.get("dropout", 0.1)))
        self.weights = PairWeights(**{k: float(self.hparam(k)) for k in PairWeights.__dataclass_fields__})
        # The kNN table lives in a buffer so a resumed run needs no recomputation.
        self.register_buffer("nns", torch.zeros(0, 0, dtype=torch.long), persistent=True)
        self.train_set = None
        self.knn_file: Path | None = None
        if context.dataset != SYNTHETIC and context.data_root is not None and not context.extra.get("eval_only"):
            split = load_card("datasets", context.dataset).get("train_split", "train")
            self.knn_file = knn_table_path(context.data_root, context.dataset, split, context.backbone_name,
                                           context.train_res)
            # Fail up front, before any training, with the file and the command that writes it.
            if not self.knn_file.is_file():
                raise MissingKnnError(
                    f"stego needs the kNN table {self.knn_file}; create it with `uss-bench datasets prepare "
                    f"{context.dataset} --what knn --splits {split} --backbone {context.backbone_name} "
                    f"--res {context.train_res} --data-root {context.data_root}`"
                )
            self.nns = torch.from_numpy(load_knn(self.knn_file))

    @property
    def embed_dim(self) -> int:
        return self.head.linear_branch.out_channels

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images).patch)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if "nns" in state_dict:  # a resumed run restores the table whatever its size
            self.nns = torch.empty_like(state_dict["nns"])
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def on_train_start(self, train_set: torch.utils.data.Dataset) -> None:
        self.train_set = train_set
        if self.nns.numel() == 0:  # synthetic: computed here from the frozen backbone (cheap)
            table = compute_knn(self.backbone, train_set, device=self.context.device)
            self.nns = torch.from_numpy(table).to(self.nns.device)
        if self.nns.shape[0] != len(train_set):
            raise ValueError(
                f"stego: kNN table {self.knn_file or '(computed)'} has {self.nns.shape[0]} rows but the train "
                f"split has {len(train_set)} images; re-create it with `uss-bench datasets prepare`"
            )

    def positive_images(self, index: torch.Tensor) -> torch.Tensor:
        """One of the ``num_neighbors`` nearest images of each anchor (positions 1..k: never itself)."""
        k = min(int(self.hparams.get("num_neighbors", 7)), self.nns.shape[1] - 1)
        picks = []
        for i in index.tolist():
            r = int(torch.randint(1, k + 1, ()).item())
            # Only the image is used; the sample's label is dropped here and never reaches the loss.
            picks.append(self.train_set[int(self.nns[i, r])]["image"])
        return to_unit_float(torch.stack(picks).to(self.nns.device))

    def features_and_code(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(drop(f), head(f)): the dropped-out features are the correspondence signal (reference §1c)."""
        with torch.no_grad():
            f = self.backbone(images).patch
        return self.feature_dropout(f), self.head(f)

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        images = batch["image"]
        feats, code = self.features_and_code(images)
        feats_pos, code_pos = self.features_and_code(self.positive_images(batch["index"]))
        out = correspondence_loss(
            feats, feats_pos, code, code_pos, self.weights,
            feature_samples=int(self.hparams.get("feature_samples", 11)),
            neg_samples=int(self.hparams.get("neg_samples", 5)),
            centering=str(self.hparams.get("centering", "official")),
            zero_clamp=bool(self.hparams.get("zero_clamp", True)),
        )
        return {"loss": out["loss"], "loss_self": out["self"].detach(), "loss_knn": out["knn"].detach(),
                "loss_rand": out["rand"].detach(), "code": code}

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"name": "head", "params": list(self.head.parameters()), "optimizer": "adam",
                 "lr": float(self.hparams.get("lr", 5e-4)), "weight_decay": 0.0, "clip": True}]

    def load_official_checkpoint(self, path: Path) -> dict[str, Any]:
        from uss_bench.official_checkpoints import load_official

        return load_official(self, path)


