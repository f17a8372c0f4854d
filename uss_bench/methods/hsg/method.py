"""HSG: Unsupervised Hierarchical Semantic Segmentation with Multiview Cosegmentation and
Clustering Transformers (Ke et al., CVPR 2022; code twke18/HSG; reference §3).

1. Pixel features. An FCN-ResNet50 (output stride 16 in training, 8 at test) and a head
   (1x1 conv 2048-2048, BN, ReLU, 1x1 conv -> 128) give unit-length pixel embeddings v_i (Eq. 1).
2. Multiview co-segmentation. Two augmented views per image; in each view, per-image spherical
   k-means on [v_i; position] (4x4 grid init, 15 iterations) gives G_0, split by the image's
   over-segmentation regions (OWT-UCM, or a scikit-image substitute) into segments u_s (Eq. 2).
3. L_f(G_e) (Eq. 3): each pixel is attracted to the other segments of its region in either view
   and repelled from all other segments of the batch, concentration kappa = 16.
4. Clustering transformers map the segments of an image (both views) to 8 fine and then 4 coarse
   clusters: P_1 = softmax(.), P_2 = P_1 . C_1^2 (Eq. 7); L_f(G_1), L_f(G_2) use the groups as keys.
5. Goodness of grouping (Eq. 8): DMoN modularity + collapse on a kNN graph of the segments at both
   levels, and centroid contrast between all clusters of the batch.
Total (Eq. 9): lambda_E L_f(G_e) + lambda_F sum_l L_f(G_l) + lambda_G (DMoN) + w_c (centroid contrast).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from uss_bench.data.transforms import upsample
from uss_bench.methods.base import MethodAdapter, MethodContext
from uss_bench.methods.hsg.loss import centroid_contrast, dmon_losses, knn_adjacency, segsort_contrastive
from uss_bench.methods.hsg.oversegment import OverSegmenter, ucm_problems
from uss_bench.methods.hsg.schedule import lr_factor
from uss_bench.methods.hsg.segments import Segments, build_segments, per_image_nodes
from uss_bench.methods.hsg.transformer import ClusteringTransformer, ClusterOutput, group_means, propagate
from uss_bench.methods.hsg.views import ViewAugment
from uss_bench.registry import BACKBONES, METHODS


class EmbeddingHead(nn.Sequential):
    """1x1 conv (no bias) + BN + ReLU + 1x1 conv -> embedding_dim (paper §4)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__(nn.Conv2d(in_dim, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                         nn.Conv2d(hidden, out_dim, 1))


class SegmentPositions(nn.Module):
    """Learned positional embedding (official ``PositionEmbeddingLearned``) averaged over each segment.

    Two tables of ``size`` x d/2, initialised U[0, 1); a pixel at (row y, col x) of the feature map
    gets [col_table[x]; row_table[y]] (column half first, as the official code concatenates them).
    """

    def __init__(self, d: int, size: int = 50) -> None:
        super().__init__()
        self.rows = nn.Embedding(size, d // 2)
        self.cols = nn.Embedding(size, d // 2)
        nn.init.uniform_(self.rows.weight)
        nn.init.uniform_(self.cols.weight)
        self.size = size

    def pixel_table(self, h: int, w: int, scale: float = 1.0) -> torch.Tensor:
        """[h, w, d] embedding of every pixel; ``scale`` maps pixel indices to feature-map cells."""
        device = self.rows.weight.device
        rows = (torch.arange(h, device=device).float() * scale).long().clamp(max=self.size - 1)
        cols = (torch.arange(w, device=device).float() * scale).long().clamp(max=self.size - 1)
        return torch.cat([self.cols(cols)[None].expand(h, w, -1), self.rows(rows)[:, None].expand(h, w, -1)], -1)

    def forward(self, pixel_segment: torch.Tensor, n_segments: int, shape: tuple[int, int, int],
                scale: float = 1.0) -> torch.Tensor:
        v, h, w = shape
        table = self.pixel_table(h, w, scale)
        pixel_pos = table.expand(v, h, w, -1).reshape(-1, table.shape[-1])
        keep = pixel_segment >= 0
        sums = pixel_pos.new_zeros(n_segments, pixel_pos.shape[1]).index_add_(0, pixel_segment[keep], pixel_pos[keep])
        counts = torch.bincount(pixel_segment[keep], minlength=n_segments).clamp(min=1)
        return sums / counts[:, None]


@contextmanager
def batch_statistics(module: nn.Module) -> Iterator[None]:
    """Normalise with the batch's own statistics in eval mode, leaving the running statistics as they are.

    ``eval_bn: batch`` (ours) for short CPU runs, whose running statistics are far from the batch ones.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
        m.train()
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)
            m.eval()


@METHODS.register("hsg")
class HSG(MethodAdapter):
    name = "hsg"
    backbone_family = "own"
    supported_backbones = ("fcn-resnet50", "fcn-resnet50-in1k")

    def __init__(self, backbone: nn.Module | None, n_classes: int, hparams: dict[str, Any],
                 context: MethodContext) -> None:
        super().__init__(None, n_classes, hparams, context)
        extra = context.extra
        self.trunk = BACKBONES.get(context.backbone_name).build(
            extra.get("weights_dir"), random_init=bool(extra.get("random_init", True)),
            output_stride=int(self.hparam("output_stride")), test_output_stride=int(self.hparam("test_output_stride")))
        d = int(self.hparam("embedding_dim"))
        self.head = EmbeddingHead(self.trunk.dim, int(self.hparam("head_hidden")), d)
        self.hierarchy = bool(self.hparam("hierarchy"))
        t = dict(self.hparam("transformer"))
        if self.hierarchy:
            if int(t["d_model"]) != d:
                raise ValueError(f"hsg: transformer.d_model ({t['d_model']}) must equal embedding_dim ({d})")
            kwargs = dict(d=d, heads=int(t["heads"]), encoder_layers=int(t["encoder_layers"]),
                          decoder_layers=int(t["decoder_layers"]), ffn=int(t["ffn"]), dropout=float(t["dropout"]))
            self.fine = ClusteringTransformer(int(self.hparam("fine_clusters")), **kwargs)
            self.coarse = ClusteringTransformer(int(self.hparam("coarse_clusters")), **kwargs)
            self.positions = SegmentPositions(d, int(t.get("position_table", 50)))
        self.augment = ViewAugment(size=context.train_res, n_views=int(self.hparam("views")),
                                   scale=tuple(self.hparam("scale_range")))
        self.oversegmenter = OverSegmenter(dict(self.hparam("oversegmentation")), context.data_root, context.train_res)
        self.lr_factor(0, 1)  # an unknown lr_schedule.policy fails here, before any training
        if self.hparams.get("init_from"):
            self._load_stage1(Path(self.hparams["init_from"]))
        momentum = self.hparams.get("bn_momentum", 0.1)  # None = cumulative average (short CPU runs)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = momentum

    # ---- checks and stages ---------------------------------------------------------------------
    @classmethod
    def preflight_problems(cls, config: Any, env: Any) -> list[str]:
        """Before any work: the OWT-UCM maps (where they come from if missing) and the stage-1 weights."""
        hparams = config.hparams
        problems = ucm_problems(dict(hparams.get("oversegmentation") or {}), env.data_root, config.spec.dataset)
        init_from = hparams.get("init_from")
        if init_from and not Path(init_from).is_file():
            problems.append(f"hsg: hparams.init_from (stage-1 weights for stage 2) not found: {init_from}")
        return problems

    def _load_stage1(self, path: Path) -> None:
        """Stage 2 starts from stage 1's network (trunk + embedding head), as the official PRETRAINED."""
        state = torch.load(path, map_location="cpu", weights_only=False)
        state = state.get("method", state)  # a uss-bench checkpoint, or weights written by export_to
        wanted = {k: v for k, v in state.items() if k.startswith(("trunk.", "head."))}
        own = {k for k in self.state_dict() if k.startswith(("trunk.", "head."))}
        if set(wanted) != own:
            raise ValueError(f"hsg: {path} does not hold this network's trunk and head "
                             f"({len(own - set(wanted))} missing, {len(set(wanted) - own)} unexpected tensors)")
        self.load_state_dict(wanted, strict=False)

    def before_eval(self, train_set: Any, protocol: Any) -> None:
        """``export_to``: write the trained trunk + head for a later stage (``init_from``)."""
        target = self.hparams.get("export_to")
        if target:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            torch.save({k: v for k, v in self.state_dict().items() if k.startswith(("trunk.", "head."))}, target)

    # ---- features ---------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        return int(self.hparam("embedding_dim"))

    def pixel_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        if self.training or self.hparams.get("eval_bn", "running") == "running":
            return F.normalize(self.head(self.trunk(images)), dim=1)
        with batch_statistics(self):
            return F.normalize(self.head(self.trunk(images)), dim=1)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.pixel_embeddings(images)

    # ---- training ---------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        images = batch["image"]
        regions = self.oversegmenter((images * 255).round().to(torch.uint8).cpu(), list(batch["id"]))
        views = self.augment(images, regions.to(images.device))
        emb = self.pixel_embeddings(views.images)  # [V, D, h, w]
        v, d, h, w = emb.shape
        small = F.interpolate(views.regions[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
        segs = build_segments(emb, small, views.source, tuple(self.hparam("kmeans_grid")),
                              int(self.hparam("kmeans_iterations")), bool(self.hparam("kmeans_location")))
        pixels = emb.permute(0, 2, 3, 1).reshape(-1, d)
        kappa = float(self.hparam("concentration"))
        w_ = self.hparam("loss_weights")
        out: dict[str, Any] = {"img_sim": segsort_contrastive(pixels, segs.pixel_segment, segs.prototypes,
                                                              segs.region_key, kappa)}
        total = float(w_["img_sim"]) * out["img_sim"]
        if self.hierarchy and segs.count > 0:
            levels = self._hierarchy_losses(pixels, segs, images.shape[0], (v, h, w))
            out.update(levels)
            total = (total + float(w_["hierarchy"]) * (levels["fine"] + levels["coarse"])
                     + float(w_["dmon"]) * (levels["dmon_modularity"] + levels["dmon_collapse"])
                     + float(w_["centroid"]) * levels["centroid"])
        out["loss"] = total
        out["code"] = self._probe_code(images)
        return out

    @torch.no_grad()
    def _probe_code(self, images: torch.Tensor) -> torch.Tensor:
        """The probes' input, computed as at test time (eval-mode BN, test output stride)."""
        self.eval()
        try:
            return self.pixel_embeddings(images)
        finally:
            self.train()

    def node_slots(self, source: torch.Tensor, n_images: int) -> int:
        """Node slots per image: a fixed number (COCO's 256) or ``batch``, the largest segment count
        of an image in this batch (the official Cityscapes variant)."""
        setting = self.hparam("max_nodes")
        if str(setting) == "batch":
            return max(1, int(torch.bincount(source, minlength=n_images).max()))
        return int(setting)

    def _cluster(self, prototypes: torch.Tensor, positions: torch.Tensor, source: torch.Tensor, n_images: int
                 ) -> tuple[ClusterOutput, ClusterOutput, torch.Tensor, torch.Tensor, torch.Tensor]:
        slots = self.node_slots(source, n_images)
        nodes, pad, slot = per_image_nodes(prototypes, source, n_images, slots)
        pos, _, _ = per_image_nodes(positions, source, n_images, slots)
        fine = self.fine(nodes, pad, pos)
        # The coarse level's positional input: the mean positional embedding of each fine cluster.
        coarse_pos = group_means(pos, fine.logits.argmax(-1), pad, fine.centroids.shape[1])
        coarse = self.coarse(fine.features, None, coarse_pos)
        return fine, coarse, nodes, pad, slot

    def _hierarchy_losses(self, pixels: torch.Tensor, segs: Segments, n_images: int,
                          shape: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        kappa = float(self.hparam("concentration"))
        positions = self.positions(segs.pixel_segment, segs.count, shape)
        fine, coarse, nodes, pad, slot = self._cluster(segs.prototypes, positions, segs.source, n_images)
        p_fine = fine.transition(pad)  # [B, n, 8], rows of padded nodes are 0
        c_coarse = coarse.transition()  # [B, 8, 4]
        p_coarse = propagate(p_fine, c_coarse)  # [B, n, 4]
        out: dict[str, torch.Tensor] = {}
        for name, probs in (("fine", p_fine), ("coarse", p_coarse)):
            k = probs.shape[-1]
            group = probs.detach().argmax(-1).reshape(-1)  # winner-take-all G_l per node slot
            fits = slot >= 0
            key = -1 - torch.arange(segs.count, device=slot.device)  # overflowed segments: own key
            key = torch.where(fits, segs.source * k + group[slot.clamp(min=0)], key)
            out[name] = segsort_contrastive(pixels, segs.pixel_segment, segs.prototypes, key, kappa)
        view_of_node, _, _ = per_image_nodes(segs.view, segs.source, n_images, nodes.shape[1])
        per_view = view_of_node if bool(self.hparam("dmon_knn_per_view")) else None
        adjacency = knn_adjacency(nodes.detach(), pad, int(self.hparam("dmon_knn")), per_view)
        normalizer = str(self.hparam("dmon_normalizer"))
        # Both levels on the segment graph, as the official training loss (DMonLoss on the fine and
        # the propagated coarse assignments); the collapse term divides by the node slots.
        mod_f, col_f = dmon_losses(adjacency, p_fine, ~pad, normalizer)
        mod_c, col_c = dmon_losses(adjacency, p_coarse, ~pad, normalizer)
        out["dmon_modularity"] = mod_f + mod_c
        out["dmon_collapse"] = col_f + col_c
        out["centroid"] = (centroid_contrast(fine.centroids.reshape(-1, fine.centroids.shape[-1]), kappa)
                           + centroid_contrast(coarse.centroids.reshape(-1, coarse.centroids.shape[-1]), kappa))
        return out

    # ---- hierarchical segmentation (NFCovering) -------------------------------------------------
    @torch.no_grad()
    def hierarchical_segments(self, images: torch.Tensor, segments: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """G_0 (the given k-means segments [B, H, W]) and the fine / coarse groupings of its segments."""
        if not self.hierarchy:
            return [("segments", segments)]
        b, h, w = segments.shape
        emb = self.pixel_embeddings(images)
        feat_h = emb.shape[-2]
        emb = F.normalize(upsample(emb, (h, w)), dim=1)
        n_local = int(segments.max()) + 1
        pixel_segment = torch.where(segments >= 0, segments + n_local * torch.arange(b, device=segments.device
                                                                                    ).view(b, 1, 1), -1).reshape(-1)
        keep = pixel_segment >= 0
        uniq, inverse = torch.unique(pixel_segment[keep], return_inverse=True)
        compact = torch.full_like(pixel_segment, -1)
        compact[keep] = inverse
        flat = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1])
        protos = F.normalize(torch.zeros(uniq.numel(), flat.shape[1], device=flat.device)
                             .index_add_(0, compact[keep], flat[keep]), dim=-1)
        positions = self.positions(compact, uniq.numel(), (b, h, w), scale=feat_h / h)
        source = uniq // n_local
        fine, coarse, _, pad, slot = self._cluster(protos, positions, source, b)
        p_fine = fine.transition(pad)
        levels = [("segments", segments)]
        for name, probs in (("fine", p_fine), ("coarse", propagate(p_fine, coarse.transition()))):
            group = probs.argmax(-1).reshape(-1)[slot.clamp(min=0)]
            group = torch.where(slot >= 0, group, torch.zeros_like(group))
            labels = torch.full_like(compact, -1)
            labels[keep] = group[compact[keep]]
            levels.append((name, labels.view(b, h, w)))
        return levels

    # ---- optimisation -----------------------------------------------------------------------------
    def lr_factor(self, step: int, total_steps: int) -> float:
        """The shared training loop's opt-in schedule hook: the official ``lr_policy`` (schedule.py)."""
        schedule = dict(self.hparams.get("lr_schedule") or {"policy": "constant"})
        return lr_factor(str(schedule["policy"]), step, total_steps, int(schedule.get("warmup", 100)))

    def param_groups(self) -> list[dict[str, Any]]:
        """SGD; biases x2 lr and no weight decay; transformer parts x``transformer_lr_mult`` (reference §3c/e)."""
        opt = self.hparam("optimizer")
        lr, wd, momentum = float(opt["lr"]), float(opt["weight_decay"]), float(opt["momentum"])
        mult = float(opt["transformer_lr_mult"])
        groups: dict[str, list[nn.Parameter]] = {"net_w": [], "net_b": [], "tf_w": [], "tf_b": []}
        for name, p in self.named_parameters():
            part = "tf" if name.startswith(("fine.", "coarse.", "positions.")) else "net"
            groups[f"{part}_{'b' if name.endswith('.bias') else 'w'}"].append(p)
        settings = {"net_w": (lr, wd), "net_b": (2 * lr, 0.0), "tf_w": (mult * lr, wd), "tf_b": (2 * mult * lr, 0.0)}
        return [{"name": f"hsg_{k}", "params": v, "optimizer": "sgd", "lr": settings[k][0],
                 "weight_decay": settings[k][1], "momentum": momentum, "clip": True}
                for k, v in groups.items() if v]

    def load_official_checkpoint(self, path: Path) -> None:
        raise NotImplementedError("hsg: importing twke18/HSG checkpoints is not implemented (key mapping unverified)")
