"""SAN: Semantic Attention Network, "Rethinking Alignment and Uniformity in Unsupervised Image
Semantic Segmentation" (Zhang et al., AAAI 2023). No public code: implemented from the paper
(reference §4); every size the paper leaves open is ours and listed in methods/san.yaml.

1. Pixel-wise encoder F_Q: a shallow conv net (3x3 conv -> P/2, 1x1 conv -> P) gives the pixel
   embeddings Q_n [P, H, W] (P = 1024).
2. Semantic-wise generator F_S: a randomly initialised 6-block ViT (patch 8) reads the batch; a
   multi-head generator turns the batch-wise information into N semantic embeddings S [N, P]; a
   token matcher gives each image class probabilities p_n, and Gamma_n = p_n x S.
3. SEAT (Eq. 3): Theta_n = softmax(Q_n Gamma_n^T / sqrt(P)) Gamma_n.
4. Consistency sustainer (Eq. 9): one shared 1x1-conv decoder reconstructs the image from Q_n
   (L_Rec) and from Theta_n (L_Con), L2; plus the uniformity term on S (Eq. 6).
Cluster predictions: argmax over the attention map softmax(Q Gamma^T / sqrt(P)) (N = n_classes).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from uss_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from uss_bench.methods.base import MethodAdapter, MethodContext
from uss_bench.methods.san.loss import attention_logits, orthogonality_loss, reconstruction_losses, seat
from uss_bench.methods.san.networks import PixelEncoder, ReconstructionDecoder, SemanticGenerator
from uss_bench.registry import BACKBONES, METHODS


@METHODS.register("san")
class SAN(MethodAdapter):
    name = "san"
    backbone_family = "own"
    supported_backbones = ("san-vit",)

    def __init__(self, backbone: nn.Module | None, n_classes: int, hparams: dict[str, Any],
                 context: MethodContext) -> None:
        super().__init__(None, n_classes, hparams, context)
        dim = int(self.hparam("embedding_dim"))
        self.n_semantics = int(self.hparams.get("n_semantics") or n_classes)
        v = dict(self.hparam("vit"))
        vit = BACKBONES.get(context.backbone_name).build(
            context.extra.get("weights_dir"), True, dim=int(v["dim"]), depth=int(v["depth"]), heads=int(v["heads"]),
            patch_size=int(v["patch_size"]), img_size=int(v["img_size"]))
        self.encoder = PixelEncoder(dim)
        self.generator = SemanticGenerator(vit, dim, self.n_semantics, int(self.hparam("generator_hidden")),
                                           batch_wise=bool(self.hparam("batch_wise")),
                                           token_matcher=bool(self.hparam("token_matcher")))
        self.decoder = ReconstructionDecoder(dim, int(self.hparam("decoder_hidden")))
        self._gamma: torch.Tensor | None = None  # the last embedded batch's semantics, for cluster_logits

    @property
    def embed_dim(self) -> int:
        return int(self.hparam("embedding_dim"))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Pixel embeddings Q [B, P, H, W]; also keeps the batch's Gamma for :meth:`cluster_logits`."""
        _, self._gamma = self.generator(images)
        return self.encoder(images)

    def cluster_logits(self, code: torch.Tensor) -> torch.Tensor | None:
        """Attention logits Q Gamma^T / sqrt(P) [B, N, H, W]; argmax = SAN's cluster prediction."""
        if self._gamma is None or self._gamma.shape[0] != code.shape[0]:
            raise RuntimeError("san: cluster_logits needs the semantics of the same batch; call embed() first")
        b, p, h, w = code.shape
        logits = attention_logits(code.flatten(2).transpose(1, 2), self._gamma.to(code.dtype))
        return logits.transpose(1, 2).reshape(b, -1, h, w)

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        images = batch["image"]
        semantics, gamma = self.generator(images)
        q_map = self.encoder(images)
        b, p, h, w = q_map.shape
        q = q_map.flatten(2).transpose(1, 2)  # [B, HW, P]
        theta, _ = seat(q, gamma)
        theta_map = theta.transpose(1, 2).reshape(b, p, h, w)
        target = normalize(images[:, :3], IMAGENET_MEAN, IMAGENET_STD)
        rec, con = reconstruction_losses(self.decoder, q_map, theta_map, target)
        ortho = orthogonality_loss(semantics)
        weights = self.hparam("loss_weights")
        align = (theta - q).pow(2).mean()
        loss = (float(weights["rec"]) * rec + float(weights["con"]) * con + float(weights["ortho"]) * ortho
                + float(weights["align"]) * align)
        self._gamma = gamma.detach()
        return {"loss": loss, "rec": rec, "con": con, "ortho": ortho, "align": align, "code": q_map}

    def param_groups(self) -> list[dict[str, Any]]:
        opt = self.hparam("optimizer")
        return [{"name": "san", "params": list(self.parameters()), "optimizer": "adam", "lr": float(opt["lr"]),
                 "weight_decay": float(opt.get("weight_decay", 0.0)), "clip": True}]
