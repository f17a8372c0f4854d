"""ImageNet-S evaluation as LUSSeg/ImageNet-S and PASS define it (reference §5.b).

Two ways to turn predictions into ImageNet-S ids, then one metric:

- **fully unsupervised** (``evaluation/match.py``): image-level Hungarian matching. For every image take the
  *set* of predicted ids and the set of ground-truth ids (background 0 removed); the cost of pairing
  predicted id i with class j is 1 - (#images where both occur) / N_images; background maps to background.
- **distance matching** (PASS ``distance_matching/``): class prototypes are masked means of features over
  the labelled train-semi images (one per image and class present, background included, mean over *all*
  grid positions, L2-normalised); each test pixel takes a k = 10 nearest-prototype vote weighted by
  exp(cos / 0.07). PASS's evaluator still runs the image-level matching on those outputs.
- **metric** (``evaluation/evaluator.py``): ignore (1000, here -1) removed first; IoU over K + 1 classes
  including background; mIoU = plain mean over all K + 1 (a class with empty union counts 0);
  image accuracy = the largest predicted non-background class is present in both GT and prediction.
  Also as the evaluator: F-measure (foreground vs background per image, beta = 0.3, mean over images);
  mBIoU (boundary IoU: per class, the band a 3x3 erosion repeated round(0.03 x image diagonal) times
  removes, the image border counting as outside; mean over all K + 1); and mIoU / mBIoU per object-size
  bucket S/MS/ML/L (a GT class covering ceil(100 x share) <= 5, <= 25, <= 50, > 50 % of the image's
  scored pixels; each bucket scores background + its classes; mean over classes present in the bucket).

In a run, protocol ``imagenet-s`` names the evaluator ``imagenet-s`` (uss_bench/eval/evaluators.py): the runner
adds ``imagenet_s_distance`` (and, when it passes ``probes``, ``imagenet_s_cluster`` / ``imagenet_s_linear``)
beside the engine's pixel-Hungarian ``cluster``/``linear`` metrics.

Deviation: PASS solves the assignment with ``munkres``; scipy's ``linear_sum_assignment`` finds an
assignment of the same (minimal) cost, but may pick a different one when several tie.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import binary_erosion
from scipy.optimize import linear_sum_assignment

from uss_bench.eval.confusion import confusion_matrix
from uss_bench.eval.evaluators import register_evaluator
from uss_bench.eval.protocol import Protocol
from uss_bench.eval.protocols_imagenet_s import IMAGENET_S, KNN_K, KNN_TEMPERATURE, ImageNetSProtocol  # noqa: F401

BOUNDARY_DILATION_RATIO = 0.03  # evaluator.py: get_boundary_mask -> mask_to_boundary(dilation_ratio=0.03)
F_BETA = 0.3
SIZE_BUCKETS = ("S", "MS", "ML", "L")  # ceil(100 x share) <= 5, <= 25, <= 50, > 50
SIZE_LIMITS = (5, 25, 50)


def boundary_ids(ids: np.ndarray, dilation_ratio: float = BOUNDARY_DILATION_RATIO) -> np.ndarray:
    """[H,W] ids -> [H,W] boundary map: v + 1 on the boundary band of class v, 0 elsewhere (Boundary IoU's
    mask_to_boundary per class: the mask minus its erosion by a 3x3 square repeated d times, d =
    max(1, round(ratio x diagonal)), with the image border as background)."""
    h, w = ids.shape
    d = max(1, int(round(dilation_ratio * float(np.sqrt(h**2 + w**2)))))
    out = np.zeros((h, w), dtype=np.int64)
    square = np.ones((3, 3), dtype=bool)
    for v in np.unique(ids):
        mask = ids == v
        band = mask & ~binary_erosion(mask, structure=square, iterations=d, border_value=0)
        out[band] = int(v) + 1
    return out


def size_bucket(count: int, total: int) -> int:
    """Bucket index of a GT class covering ``count`` of ``total`` scored pixels, computed as the official
    evaluator does (float32: ceil(100.0 * count / total))."""
    share = (100.0 * torch.tensor(count, dtype=torch.int64)) / torch.tensor(total, dtype=torch.int64)
    v = int(np.ceil(share.item()))
    return next((i for i, limit in enumerate(SIZE_LIMITS) if v <= limit), len(SIZE_LIMITS))


# ---- fully unsupervised: image-level matching ---------------------------------------------------------
def image_level_matching(pred_sets: list[set[int]], gt_sets: list[set[int]], n_categories: int) -> np.ndarray:
    """mapping[predicted id] = ImageNet-S id for ids 0..K (0 -> 0), from per-image id sets."""
    k = n_categories
    co = np.zeros((k, k), dtype=np.float64)
    for pred, gt in zip(pred_sets, gt_sets):
        p = np.array(sorted(i - 1 for i in pred if 1 <= i <= k), dtype=np.int64)
        g = np.array(sorted(j - 1 for j in gt if 1 <= j <= k), dtype=np.int64)
        if p.size and g.size:
            co[np.ix_(p, g)] += 1
    cost = 1.0 - co / max(len(gt_sets), 1)
    rows, cols = linear_sum_assignment(cost)
    mapping = np.zeros(k + 1, dtype=np.int64)
    mapping[rows + 1] = cols + 1
    return mapping


# ---- distance matching ---------------------------------------------------------------------------------
def resize_labels_nearest(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """int labels [H,W] -> [h,w] by nearest neighbour (what PASS does to the masks)."""
    return F.interpolate(labels[None, None].float(), size=size, mode="nearest")[0, 0].long()


@dataclass
class PrototypeBank:
    """Class "instances" from labelled images: one L2-normalised masked mean per (image, class present)."""

    embeddings: list[torch.Tensor]
    labels: list[int]

    @classmethod
    def empty(cls) -> PrototypeBank:
        return cls([], [])

    def add(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """features [D,h,w]; labels [h,w] ids on the same grid, -1 = ignore (skipped); background 0 kept."""
        d, h, w = features.shape
        flat = features.reshape(d, h * w).float()
        lab = labels.reshape(-1)
        for value in torch.unique(lab).tolist():
            if value < 0:
                continue
            mask = (lab == value).float()
            mean = (flat * mask).sum(dim=1) / (h * w)  # mean over all positions, as PASS
            self.embeddings.append(F.normalize(mean, dim=0))
            self.labels.append(int(value))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.embeddings:
            raise ValueError("the prototype bank is empty: no labelled train-semi image was added")
        return torch.stack(self.embeddings), torch.tensor(self.labels, dtype=torch.long)


def knn_vote(
    features: torch.Tensor,
    bank: PrototypeBank,
    n_classes: int,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
) -> torch.Tensor:
    """features [D,h,w] -> ids [h,w]: weighted vote of the k most similar prototypes, weight exp(cos / T)."""
    protos, proto_labels = bank.tensors()
    d, h, w = features.shape
    x = F.normalize(features.reshape(d, h * w).T.float(), dim=1)
    sims = x @ protos.T
    top_sims, top_idx = sims.topk(min(k, protos.shape[0]), dim=1)
    votes = torch.zeros(x.shape[0], n_classes, dtype=torch.float64)
    votes.scatter_add_(1, proto_labels[top_idx], torch.exp(top_sims.double() / temperature))
    return votes.argmax(dim=1).reshape(h, w)


# ---- metric ----------------------------------------------------------------------------------------------
class ImageNetSAccumulator:
    """Streams (prediction, ground truth) pairs of whole images; matches and scores once at the end.

    Predictions are ids 0..K (0 = background); ground truth uses -1 for ignore (1000 on disk).
    """

    def __init__(self, n_categories: int) -> None:
        self.k = n_categories
        self.confusion = torch.zeros(self.k + 1, self.k + 1, dtype=torch.int64)  # rows: predicted id
        self.pred_sets: list[set[int]] = []
        self.gt_sets: list[set[int]] = []
        self.pred_areas: list[dict[int, int]] = []
        self.fg_areas: list[dict[int, int]] = []  # predicted id -> pixels on GT foreground (F-measure)
        self.gt_fg: list[int] = []
        n, nb = self.k + 1, self.k + 2
        # boundary confusions: rows = predicted id + 1, cols = GT id + 1, 0 = not on a boundary band
        self.boundary = torch.zeros(nb, nb, dtype=torch.int64)
        self.size_confusion = torch.zeros(len(SIZE_BUCKETS), n, n, dtype=torch.int64)
        self.size_boundary = torch.zeros(len(SIZE_BUCKETS), nb, nb, dtype=torch.int64)

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """One image [H,W] or a batch [B,H,W]."""
        if pred.dim() == 3:
            for p, g in zip(pred, gt):
                self.update(p, g)
            return
        keep = gt >= 0  # ignore removed before everything
        p, g = pred[keep].long(), gt[keep].long()
        self.confusion += confusion_matrix(p, g, self.k + 1, self.k + 1)
        ids, counts = torch.unique(p, return_counts=True)
        self.pred_areas.append(dict(zip(ids.tolist(), counts.tolist())))
        fg_ids, fg_counts = torch.unique(p[g > 0], return_counts=True)
        self.fg_areas.append(dict(zip(fg_ids.tolist(), fg_counts.tolist())))
        self.gt_fg.append(int((g > 0).sum()))
        # boundaries on the whole image (the ignore region is a class of its own there), then ignore removed
        flat_keep = keep.reshape(-1).cpu().numpy()
        bp = torch.from_numpy(boundary_ids(pred.cpu().numpy()).reshape(-1)[flat_keep])
        bg = torch.from_numpy(boundary_ids(gt.cpu().numpy()).reshape(-1)[flat_keep])
        nb = self.k + 2
        self.boundary += confusion_matrix(bp, bg, nb, nb)
        classes, class_counts = torch.unique(g, return_counts=True)
        total = int(class_counts.sum())
        bucket_of = {int(c): size_bucket(int(n), total) for c, n in zip(classes, class_counts) if c > 0}
        for b in range(len(SIZE_BUCKETS)):
            members = [c for c, bb in bucket_of.items() if bb == b]
            if not members:
                continue
            sel = (g == 0) | torch.isin(g, torch.tensor(members, dtype=g.dtype))
            self.size_confusion[b] += confusion_matrix(p[sel], g[sel], self.k + 1, self.k + 1)
            self.size_boundary[b] += confusion_matrix(bp[sel.cpu()], bg[sel.cpu()], nb, nb)
        self.pred_sets.append({i for i in ids.tolist() if i > 0})
        self.gt_sets.append({j for j in torch.unique(g).tolist() if j > 0})

    def background_cluster(self) -> int:
        """The predicted id whose pixels overlap ground-truth background most."""
        return int(self.confusion[:, 0].argmax())

    def relabel(self, perm: np.ndarray) -> None:
        """Rename predicted ids: id i becomes perm[i] (a permutation of 0..K)."""
        perm = np.asarray(perm, dtype=np.int64)
        conf = torch.zeros_like(self.confusion)
        conf[torch.from_numpy(perm)] = self.confusion
        self.confusion = conf
        self.pred_sets = [{int(perm[i]) for i in areas if perm[i] > 0} for areas in self.pred_areas]
        self.pred_areas = [{int(perm[i]): n for i, n in areas.items()} for areas in self.pred_areas]
        self.fg_areas = [{int(perm[i]): n for i, n in areas.items()} for areas in self.fg_areas]
        rows = torch.from_numpy(np.concatenate([[0], perm + 1]))
        self.boundary = _move_rows(self.boundary, rows)
        self.size_confusion = torch.stack([_move_rows(c, torch.from_numpy(perm)) for c in self.size_confusion])
        self.size_boundary = torch.stack([_move_rows(c, rows) for c in self.size_boundary])

    def mapping(self, rule: str = "image-level") -> np.ndarray:
        if rule == "image-level":
            return image_level_matching(self.pred_sets, self.gt_sets, self.k)
        if rule == "identity":
            return np.arange(self.k + 1, dtype=np.int64)
        raise ValueError(f"unknown ImageNet-S matching {rule!r}; known: image-level, identity")

    def result(self, rule: str = "image-level", class_names: list[str] | None = None) -> dict:
        mapping = self.mapping(rule)
        conf = self.confusion.numpy()
        matched = np.zeros_like(conf)
        np.add.at(matched, mapping, conf)  # row of predicted id i goes to class mapping[i]
        tp = np.diag(matched).astype(np.float64)
        union = matched.sum(1) + matched.sum(0) - tp
        iou = np.where(union > 0, tp / np.maximum(union, 1), 0.0)  # empty union counts 0, as the evaluator
        correct = 0
        for areas, gt_set in zip(self.pred_areas, self.gt_sets):
            fg = {}
            for i, n in areas.items():
                cls = int(mapping[i])
                if cls > 0:
                    fg[cls] = fg.get(cls, 0) + n
            if fg:
                top = max(sorted(fg), key=fg.get)  # largest predicted foreground class
                correct += top in gt_set
        names = class_names or [str(i) for i in range(self.k + 1)]
        boundary_rows = np.concatenate([[0], mapping + 1])
        biou = _iou(_matched(self.boundary.numpy(), boundary_rows))[0][1:]  # index 0 = off every band
        size_miou, size_mbiou = {}, {}
        for b, name in enumerate(SIZE_BUCKETS):
            bucket_iou, present = _iou(_matched(self.size_confusion[b].numpy(), mapping))
            size_miou[name] = _mean_or_none(bucket_iou[present])
            bucket_biou, present_b = _iou(_matched(self.size_boundary[b].numpy(), boundary_rows))
            size_mbiou[name] = _mean_or_none(bucket_biou[1:][present_b[1:]])
        return {
            "miou": 100.0 * float(iou.mean()),
            "mbiou": 100.0 * float(biou.mean()),
            "fmeasure": 100.0 * self.fmeasure(mapping),
            "miou_size": size_miou,
            "mbiou_size": size_mbiou,
            "acc": 100.0 * correct / max(len(self.gt_sets), 1),
            "pixel_acc": 100.0 * float(tp.sum() / max(conf.sum(), 1)),
            "iou": {name: 100.0 * float(v) for name, v in zip(names, iou)},
            "mapping": mapping.tolist(),
            "matching": rule,
            "n_images": len(self.gt_sets),
        }


    def fmeasure(self, mapping: np.ndarray) -> float:
        """Mean over images of (1 + b) P R / (b P + R) for foreground vs background, b = 0.3 (eps 1e-20)."""
        eps, total = 1e-20, 0.0
        for areas, fg_areas, t in zip(self.pred_areas, self.fg_areas, self.gt_fg):
            p = sum(n for i, n in areas.items() if mapping[i] > 0)
            tp = sum(n for i, n in fg_areas.items() if mapping[i] > 0)
            recall, precision = tp / (t + eps), tp / (p + eps)
            total += (1 + F_BETA) * precision * recall / (F_BETA * precision + recall + eps)
        return total / max(len(self.gt_fg), 1)


def _move_rows(conf: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(conf)
    out[rows] = conf
    return out


def _matched(conf: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows (predicted ids) summed into the classes they map to."""
    out = np.zeros_like(conf)
    np.add.at(out, rows, conf)
    return out


def _iou(matched: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class IoU (0 where the union is empty) and whether the class occurs in the ground truth."""
    tp = np.diag(matched).astype(np.float64)
    gt = matched.sum(0)
    union = matched.sum(1) + gt - tp
    return np.where(union > 0, tp / np.maximum(union, 1), 0.0), gt > 0


def _mean_or_none(values: np.ndarray) -> float | None:
    return 100.0 * float(values.mean()) if values.size else None


# ---- the evaluation loop (full ground-truth resolution, one image at a time) -------------------------------
Predictor = Callable[[torch.Tensor, tuple[int, int]], dict[str, torch.Tensor]]


def engine_predictor(method, probes, protocol: Protocol, device: torch.device, rows: int = 64) -> Predictor:
    """Cluster and linear ids from a method + probes: code upsampled bilinearly to the label size, as the engine."""
    from uss_bench.eval.engine import Heads, embed_with_tta

    heads = Heads(method, probes)

    def predict(image: torch.Tensor, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        code = embed_with_tta(method, image.to(device), protocol.flip_tta).float()
        code_up = F.interpolate(code, size=size, mode="bilinear", align_corners=False)
        out: dict[str, list[torch.Tensor]] = {"cluster": [], "linear": []}
        for r in range(0, size[0], rows):  # row chunks: K+1 = 920 logits at full size would not fit
            chunk = code_up[..., r : r + rows, :]
            out["cluster"].append(heads.cluster_logits(chunk).argmax(1)[0].cpu())
            out["linear"].append(heads.linear_logits(chunk).argmax(1)[0].cpu())
        return {key: torch.cat(parts) for key, parts in out.items()}

    return predict


# output name -> (matching rule, rename the cluster overlapping GT background most to id 0)
ENGINE_OUTPUTS = {"cluster": ("image-level", True), "linear": ("identity", False)}
DISTANCE_OUTPUTS = {"distance": ("image-level", False)}  # PASS re-matches distance-matching ids as they are


@torch.no_grad()
def evaluate_imagenet_s(
    predict: Predictor,
    dataset,
    n_categories: int,
    eval_res: int | None = None,
    class_names: list[str] | None = None,
    outputs: dict[str, tuple[str, bool]] | None = None,
) -> dict[str, dict]:
    """Score ``predict`` on raw samples (``transform=None``) at full ground-truth resolution.

    The image is resized (shorter side -> ``eval_res``, bilinear, no crop) before ``predict``, which returns
    ids at the label size for each output (default: ``cluster`` indices and ``linear`` class ids). PASS's
    methods predict background themselves; a cluster probe has no background, so for ``cluster`` the cluster
    that overlaps GT background most is first renamed to id 0 (a harness choice, recorded in the result).
    """
    from torchvision.transforms.v2 import functional as TF

    outputs = outputs or ENGINE_OUTPUTS
    accs = {name: ImageNetSAccumulator(n_categories) for name in outputs}
    for index in range(len(dataset)):
        sample = dataset[index]
        image, label = sample["image"], sample["label"]
        if eval_res is not None:
            image = TF.resize(image, eval_res, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        ids = predict(image[None].float().div(255.0), tuple(label.shape))
        for name, acc in accs.items():
            acc.update(ids[name], label)
    results = {}
    for name, (rule, rename_background) in outputs.items():
        acc = accs[name]
        if rename_background:
            bg = acc.background_cluster()
            perm = np.arange(n_categories + 1)
            perm[[0, bg]] = perm[[bg, 0]]
            acc.relabel(perm)
        results[name] = acc.result(rule, class_names)
        results[name]["background"] = "renamed by pixel overlap" if rename_background else "predicted"
    return results


def build_prototype_bank(features_fn, dataset, res: int = 256) -> PrototypeBank:
    """PASS step 2 over the labelled train-semi split (raw samples): features at shorter side ``res``."""
    from torchvision.transforms.v2 import functional as TF

    bank = PrototypeBank.empty()
    for index in range(len(dataset)):
        sample = dataset[index]
        image = TF.resize(sample["image"], res, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        feats = features_fn(image[None].float().div(255.0))[0].float().cpu()
        bank.add(feats, resize_labels_nearest(sample["label"], tuple(feats.shape[-2:])))
    return bank


def distance_predictor(features_fn, bank: PrototypeBank, n_classes: int, k: int = KNN_K,
                       temperature: float = KNN_TEMPERATURE) -> Predictor:
    """PASS step 3: per-pixel kNN vote on the feature grid, nearest-upsampled to the label size."""

    def predict(image: torch.Tensor, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        feats = features_fn(image)[0].float().cpu()
        ids = knn_vote(feats, bank, n_classes, k, temperature)
        return {"distance": F.interpolate(ids[None, None].float(), size=size, mode="nearest")[0, 0].long()}

    return predict


def raw_copy(dataset, split: str | None = None):
    """The same dataset (and options) without a transform, i.e. at full ground-truth resolution."""
    return type(dataset)(dataset.root, split or dataset.split, transform=None, preset=dataset.preset,
                         **getattr(dataset, "options", {}))


@register_evaluator("imagenet-s")
@torch.no_grad()
def evaluate_imagenet_s_protocol(method, protocol, train_set, eval_set, class_names: list[str],
                                 device: torch.device, probes=None, **_) -> dict[str, dict]:
    """The runner's extra metrics for ``imagenet-s``: distance matching always; with ``probes`` (when the
    runner passes them) also the image-level-matched cluster probe and the linear probe, at full resolution."""
    was_training = method.training
    method.eval()
    k = len(class_names) - 1
    full = raw_copy(eval_set)
    out: dict[str, dict] = {}
    try:
        def features(images: torch.Tensor) -> torch.Tensor:
            return method.embed(images.to(device)).float()

        bank = build_prototype_bank(features, raw_copy(eval_set, protocol.distance_split), protocol.distance_res)
        predict = distance_predictor(features, bank, k + 1, protocol.distance_k, protocol.distance_temperature)
        out["imagenet_s_distance"] = evaluate_imagenet_s(predict, full, k, protocol.distance_res, class_names,
                                                         DISTANCE_OUTPUTS)["distance"]
        if probes is not None:
            probes.eval()
            both = evaluate_imagenet_s(engine_predictor(method, probes, protocol, device), full, k,
                                       protocol.eval_res, class_names, ENGINE_OUTPUTS)
            out["imagenet_s_cluster"], out["imagenet_s_linear"] = both["cluster"], both["linear"]
    finally:
        method.train(was_training)
    return out


