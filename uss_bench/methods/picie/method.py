"""PiCIE: Pixel-level feature Clustering using Invariance and Equivariance (Cho et al., CVPR 2021;
janghyuncho/PiCIE).

1. Features. ResNet-18 + simplified FPN (``resnet18-fpn``): 128-d at stride 4, L2-normalised per pixel.
   View 1: z1 = f(G(P1 x)); view 2: z2 = G(f(P2 x)) (uss_bench/methods/picie/views.py).
2. Every epoch, mini-batch k-means (uss_bench/clustering/kmeans.py) on the pixel features of each view
   separately gives centroids mu1, mu2; every pixel's pseudo-label is its nearest centroid; the class
   weight of each view is its cluster frequency over the epoch (proportional, not inverse: issue #28).
3. Classifier: the frozen centroids as a 1x1 conv, logit_k = <z, mu_k>.
4. Loss: L = 1/2 (L_within + L_cross), L_within = 1/2 [CE_w1(z1; mu1, y1) + CE_w2(z2; mu2, y2)],
   L_cross = 1/2 [CE_w2(z1; mu2, y2) + CE_w1(z2; mu1, y1)]; gradients reach only the network.
Evaluation: ``cluster_logits`` uses centroids re-fitted on the train split with eval transforms when the
protocol says so (``picie``: ``before_eval``), else the last epoch's view-1 centroids (test_picie.sh).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from uss_bench.clustering.kmeans import MiniBatchKMeans, assign
from uss_bench.data.base import collate
from uss_bench.data.transforms import normalize, to_unit_float
from uss_bench.methods.base import MethodAdapter, MethodContext
from uss_bench.methods.picie.loss import class_weights, weighted_ce
from uss_bench.methods.picie.views import ViewSettings, geometric, geometric_params, photometric
from uss_bench.registry import BACKBONES, METHODS


@METHODS.register("picie")
class PiCIE(MethodAdapter):
    name = "picie"
    backbone_family = "own"
    supported_backbones = ("resnet18-fpn",)

    def __init__(self, backbone: nn.Module | None, n_classes: int, hparams: dict[str, Any],
                 context: MethodContext) -> None:
        super().__init__(None, n_classes, hparams, context)
        extra = context.extra
        dim = int(self.hparam("in_dim"))
        self.net = BACKBONES.get(context.backbone_name).build(
            extra.get("weights_dir"), random_init=bool(extra.get("random_init", True)), dim=dim)
        self.k = int(self.hparams.get("K_train") or n_classes)
        self.input_res = int(self.hparams.get("input_res") or context.train_res)
        self.views = ViewSettings(jitter=float(self.hparam("jitter")), hue=float(self.hparam("hue")),
                                  grayscale=not bool(self.hparam("grayscale_typo")),
                                  blur_rule=str(self.hparam("blur_rule")), min_scale=float(self.hparam("min_scale")))
        self.seed = int(extra.get("seed", 0))
        # All clustering state lives in buffers so a resumed run continues bit-identically.
        for name in ("centroids1", "centroids2", "eval_centroids"):
            self.register_buffer(name, torch.zeros(self.k, dim))
        self.register_buffer("weights1", torch.ones(self.k) / self.k)
        self.register_buffer("weights2", torch.ones(self.k) / self.k)
        label_dtype = torch.uint8 if self.k <= 255 else torch.int16
        self.register_buffer("labels1", torch.zeros(0, 0, 0, dtype=label_dtype))
        self.register_buffer("labels2", torch.zeros(0, 0, 0, dtype=label_dtype))
        self.kmeans_log: list[dict[str, float]] = []

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        # The pseudo-label tables are sized on the first epoch; take the saved size before copying.
        for name in ("labels1", "labels2"):
            if prefix + name in state_dict:
                saved = state_dict[prefix + name]
                setattr(self, name, torch.zeros(saved.shape, dtype=saved.dtype, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ---- features ---------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        return int(self.hparam("in_dim"))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """float [0, 1] images -> L2-normalised 128-d pixel features at stride 4."""
        return F.normalize(self.net(normalize(images[:, :3])), dim=1)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)

    def cluster_logits(self, code: torch.Tensor) -> torch.Tensor:
        # <z, mu_k> on the upsampled code = the official logits upsampled (a linear map commutes with it)
        return F.conv2d(code, self.eval_centroids[:, :, None, None])

    def _resize(self, images: torch.Tensor, size: int) -> torch.Tensor:
        if images.shape[-1] == size and images.shape[-2] == size:
            return images
        return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)

    def view_features(self, images: torch.Tensor, indices: list[int], epoch: int, view: int) -> torch.Tensor:
        """z1 = f(G(P1 x)) or z2 = G(f(P2 x)) for base images [B, 3, L, L] in [0, 1]."""
        augmented = torch.stack([photometric(im[:3], self.seed, epoch, i, view - 1, self.views)
                                 for im, i in zip(images, indices)])
        params = [geometric_params(self.seed, epoch, i, self.views) for i in indices]
        if view == 1:
            z = self.net(normalize(geometric(augmented, params, self.input_res)))
        else:
            z = self.net(normalize(self._resize(augmented, self.input_res)))
            z = geometric(z, params, z.shape[-1])
        return F.normalize(z, dim=1)

    # ---- per-epoch clustering ---------------------------------------------------------------
    def _kmeans(self, batches: Any, feats_of: Any, seed: int, res: int) -> torch.Tensor:
        """Official sizes are in batches of images (20 x 256 to initialise, then 1 x 256 per update)."""
        pixels = (res // 4) ** 2
        km = MiniBatchKMeans(self.k, int(self.hparam("kmeans_init_images")) * pixels,
                             int(self.hparam("kmeans_update_images")) * pixels, int(self.hparam("kmeans_n_iter")), seed)
        mode = self.training
        self.train(self.hparam("kmeans_bn") == "train")  # official: BN in train mode here (quirk Q7)
        with torch.no_grad():
            for batch in batches:
                z = feats_of(batch)
                km.add(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]))
        self.train(mode)
        centroids = km.finish()
        self.kmeans_log.append({"loss_first": km.losses[0], "loss_last": km.losses[-1]})
        return centroids

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _batches(self, loader_factory: Any) -> Any:
        device = self._device()
        for batch in loader_factory():
            yield to_unit_float(batch["image"].to(device)), batch["index"].tolist()

    def on_epoch_start(self, epoch: int, loader_factory: Any) -> None:
        seed = self.seed * 1000 + epoch
        for view in (1, 2):
            c = self._kmeans(self._batches(loader_factory),
                             lambda b, v=view: self.view_features(b[0], b[1], epoch, v), seed + view, self.input_res)
            getattr(self, f"centroids{view}").copy_(c)
        self.eval_centroids.copy_(self.centroids1)
        self._assign_labels(epoch, loader_factory)

    @torch.no_grad()
    def _assign_labels(self, epoch: int, loader_factory: Any) -> None:
        n = len(loader_factory().dataset)
        side = self.input_res // 4
        for view in (1, 2):
            table = getattr(self, f"labels{view}")
            if table.shape != (n, side, side):
                setattr(self, f"labels{view}", torch.zeros(n, side, side, dtype=table.dtype, device=table.device))
        counts = {1: torch.zeros(self.k, dtype=torch.float64), 2: torch.zeros(self.k, dtype=torch.float64)}
        mode = self.training
        self.eval()  # official compute_labels runs in eval mode
        for images, indices in self._batches(loader_factory):
            for view in (1, 2):
                z = self.view_features(images, indices, epoch, view)
                flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
                labels, _ = assign(flat, getattr(self, f"centroids{view}"))
                labels = labels.view(z.shape[0], *z.shape[-2:])
                getattr(self, f"labels{view}")[torch.tensor(indices)] = labels.to(getattr(self, f"labels{view}").dtype)
                counts[view] += torch.bincount(labels.flatten(), minlength=self.k).double().cpu()
        self.train(mode)
        rule = str(self.hparam("class_weights"))
        self.weights1.copy_(class_weights(counts[1], rule))
        self.weights2.copy_(class_weights(counts[2], rule))

    # ---- training ---------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        if self.labels1.numel() == 0:
            raise RuntimeError("picie: no pseudo-labels; on_epoch_start must run before the first step")
        epoch = step // max(1, self.context.steps_per_epoch)
        images, indices = batch["image"], batch["index"].tolist()
        z1 = self.view_features(images, indices, epoch, 1)
        z2 = self.view_features(images, indices, epoch, 2)
        idx = batch["index"].to(self.labels1.device)
        y1, y2 = self.labels1[idx].long(), self.labels2[idx].long()
        mu1, mu2 = self.centroids1[:, :, None, None], self.centroids2[:, :, None, None]
        s11, s12 = F.conv2d(z1, mu1), F.conv2d(z1, mu2)
        s21, s22 = F.conv2d(z2, mu1), F.conv2d(z2, mu2)
        within = (weighted_ce(s11, y1, self.weights1) + weighted_ce(s22, y2, self.weights2)) / 2
        cross = (weighted_ce(s12, y2, self.weights2) + weighted_ce(s21, y1, self.weights1)) / 2
        loss = (within + cross) / 2
        if self.hparam("mse"):
            loss = (loss + F.mse_loss(z1, z2)) / 2
        return {"loss": loss, "ce_within": within.detach(), "ce_cross": cross.detach(),
                "code": self._probe_code(images)}

    @torch.no_grad()
    def _probe_code(self, images: torch.Tensor) -> torch.Tensor:
        """The probes' input as at test time (eval-mode BN, network input size), without touching BN stats."""
        mode = self.training
        self.eval()
        try:
            return self.features(self._resize(images, self.input_res))
        finally:
            self.train(mode)

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"name": "picie", "params": list(self.net.parameters()), "optimizer": "adam",
                 "lr": float(self.hparam("lr")), "weight_decay": 0.0, "clip": True}]

    # ---- evaluation -------------------------------------------------------------------------
    def before_eval(self, train_set: Any, protocol: Any) -> None:
        """PiCIE's final protocol: re-fit k-means on the train images with eval transforms."""
        if not getattr(protocol, "kmeans_refit", False):
            return
        res = int(getattr(protocol, "eval_res", self.input_res))
        order = torch.Generator().manual_seed(self.seed)
        loader = DataLoader(train_set, batch_size=int(self.context.batch_size), shuffle=True, generator=order,
                            collate_fn=collate)
        device = self._device()

        def batches() -> Any:
            for batch in loader:
                yield self._resize(to_unit_float(batch["image"].to(device)), res)

        self.eval_centroids.copy_(self._kmeans(batches(), self.features, self.seed * 1000 + 999, res))
