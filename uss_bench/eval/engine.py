"""The shared evaluation engine: one loop, one set of rules, for every method.

Per batch: embed (with flip TTA if the protocol says so), upsample the code bilinearly to the
label size, predict with the cluster head (the method's own or the cluster probe) and the linear
probe, optionally refine with the CRF, and accumulate confusion matrices over the whole split.
Matching happens once at the end. The CRF of a batch runs in the pool while the next batches embed
(at most ``crf_in_flight`` batches outstanding); confusion counts are sums, so the order in which
batches finish cannot change a number. The method never sees a metric; the engine never sees a loss.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from uss_bench.data.base import collate
from uss_bench.data.transforms import to_unit_float, upsample
from uss_bench.eval.confusion import ConfusionAccumulator
from uss_bench.eval.crf import CRFJob, CRFRunner
from uss_bench.eval.crf_inputs import crf_batch
from uss_bench.eval.matching import match
from uss_bench.eval.metrics import prepare_cluster_confusion, segmentation_metrics
from uss_bench.eval.probes import Probes
from uss_bench.eval.protocol import Protocol
from uss_bench.methods.base import MethodAdapter


@dataclass
class Heads:
    """What produces predictions from an upsampled code."""

    method: MethodAdapter
    probes: Probes

    def cluster_logits(self, code_up: torch.Tensor) -> torch.Tensor:
        own = self.method.cluster_logits(code_up)
        return own if own is not None else 2.0 * self.probes.cluster.scores(code_up)

    def linear_logits(self, code_up: torch.Tensor) -> torch.Tensor:
        return self.probes.linear(code_up)


def embed_with_tta(method: MethodAdapter, images: torch.Tensor, flip: bool) -> torch.Tensor:
    code = method.embed(images)
    if flip:  # STEGO: code = (head(x) + flip(head(flip(x)))) / 2
        code = 0.5 * (code + method.embed(images.flip(-1)).flip(-1))
    return code


def _crf_inputs(images_u8: torch.Tensor, logits: torch.Tensor) -> tuple[list[np.ndarray], list[np.ndarray]]:
    # the official steps (eval/crf_inputs.py): log_softmax on the device, softmax on the CPU; the
    # kernel builds the official CRF image from the uint8 RGB one (crf_kernel.crf_image)
    return crf_batch(images_u8, logits)


@torch.no_grad()
def evaluate(
    method: MethodAdapter,
    probes: Probes,
    dataset: Dataset,
    protocol: Protocol,
    class_names: list[str],
    device: torch.device,
    batch_size: int = 16,
    num_workers: int = 0,
    crf_runner: CRFRunner | None = None,
    use_crf: bool | None = None,
    logits_sink: Callable[..., None] | None = None,
    predictions_out: dict[str, np.ndarray] | None = None,
    crf_in_flight: int = 2,
) -> dict[str, Any]:
    """Metrics dict with keys cluster, linear (and cluster_crf, linear_crf when the CRF ran).

    ``logits_sink(images_u8, cluster_logits, linear_logits, labels)`` receives every batch's upsampled
    logits, e.g. to run the CRF later as a separate CPU stage (uss_bench/launch/crf_stage.py).
    ``predictions_out``: a dict whose keys are image ids to keep; it is filled with their matched
    cluster predictions (uint8 class ids, 255 = unmatched cluster) for qualitative figures.
    ``crf_in_flight``: how many batches' CRF may still run while later batches embed (bounds the
    memory held for them); 0 waits for each batch's CRF before the next batch.
    """
    use_crf = protocol.crf if use_crf is None else use_crf
    was_training = method.training
    method.eval()
    probes.eval()
    heads = Heads(method, probes)
    n_classes = len(class_names)
    n_clusters = None
    acc: dict[str, ConfusionAccumulator] = {}
    # Own generator: evaluating must not consume the global RNG that training's dropout uses.
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate,
        generator=torch.Generator().manual_seed(0),
    )
    autocast = (
        torch.autocast("cuda", dtype=torch.float16)
        if protocol.eval_autocast and device.type == "cuda"
        else contextlib.nullcontext()
    )
    runner = crf_runner if use_crf else None
    if use_crf and runner is None:
        runner = CRFRunner(workers=0)
    pending: deque[tuple[str, CRFJob, torch.Tensor]] = deque()  # (accumulator, job, labels), oldest first

    def settle(key: str, job: CRFJob, labels: torch.Tensor) -> None:
        acc[key].update(torch.from_numpy(np.stack(job.result()).astype(np.int64)), labels)
    for batch in loader:
        images_u8 = batch["image"].to(device)
        labels = batch["label"]
        with autocast:
            code = embed_with_tta(method, to_unit_float(images_u8), protocol.flip_tta)
            code_up = upsample(code.float(), tuple(labels.shape[-2:]))
            cluster_logits = heads.cluster_logits(code_up).float()
            linear_logits = heads.linear_logits(code_up).float()
        if n_clusters is None:
            n_clusters = cluster_logits.shape[1]
            acc["cluster"] = ConfusionAccumulator(n_clusters, n_classes)
            acc["linear"] = ConfusionAccumulator(n_classes, n_classes)
            if runner is not None:
                acc["cluster_crf"] = ConfusionAccumulator(n_clusters, n_classes)
                acc["linear_crf"] = ConfusionAccumulator(n_classes, n_classes)
        acc["cluster"].update(cluster_logits.argmax(1), labels)
        acc["linear"].update(linear_logits.argmax(1), labels)
        if predictions_out is not None:
            for image_id, pred in zip(batch["id"], cluster_logits.argmax(1)):
                if image_id in predictions_out:
                    predictions_out[image_id] = pred.cpu().numpy()
        if logits_sink is not None:
            logits_sink(images_u8, cluster_logits, linear_logits, labels)
        if runner is not None:
            for key, logits in (("cluster_crf", cluster_logits), ("linear_crf", linear_logits)):
                pending.append((key, runner.submit(*_crf_inputs(images_u8, logits)), labels))
            while len(pending) > 2 * max(0, crf_in_flight):  # two jobs (cluster, linear) per batch
                settle(*pending.popleft())
    while pending:
        settle(*pending.popleft())
    method.train(was_training)
    probes.train(was_training)
    if not acc:
        raise ValueError("evaluation split is empty")
    results: dict[str, Any] = {}
    for key, accumulator in acc.items():
        rule = protocol.matching if key.startswith("cluster") else "identity"
        matrix = accumulator.matrix
        if key.startswith("cluster"):
            matrix = prepare_cluster_confusion(matrix, protocol.extra_cluster_pixels)
        assignment = match(matrix, rule)
        metrics = segmentation_metrics(matrix, assignment, protocol.miou_averaging)
        results[key] = metrics.as_dict(class_names)
        results[key]["n_pixels"] = int(matrix.sum())
        if key.startswith("cluster"):
            results[key]["assignment"] = assignment.tolist()
        if key == "cluster" and predictions_out is not None:
            lookup = np.where(assignment >= 0, assignment, 255).astype(np.uint8)
            for image_id, raw in list(predictions_out.items()):
                if raw is not None:
                    predictions_out[image_id] = lookup[raw]
    return results
