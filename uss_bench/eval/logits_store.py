"""Per-image logits saved during evaluation so the dense CRF can run later as a CPU stage.

The evaluation loop calls a :class:`LogitsWriter` as its ``logits_sink``
(``<results>/logits/<run_id>/shard-NNNNN.npz`` + ``meta.json``); ``launch/crf_stage.py`` reads them.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from uss_bench.eval.crf_inputs import crf_log_probs

HEADS = ("cluster", "linear")
STORED = "log_softmax"  # what the per-head arrays hold (dumps without the key hold raw logits)


def logits_dir(results_dir: str | Path, run_id: str) -> Path:
    return Path(results_dir) / "logits" / run_id


def crf_dir(results_dir: str | Path, run_id: str) -> Path:
    return Path(results_dir) / "crf" / run_id


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class LogitsWriter:
    """Per-batch sink for the evaluation loop: saves what the CRF needs, in shards of ``shard_size``.

    Call it with the batch's uint8 images [B,3,H,W], cluster and linear logits [B,K,H,W] and labels
    [B,H,W] (tensors or arrays). It stores the uint8 RGB images and, per head, the log-probabilities
    taken where the logits are (on the model's device), as the official evaluations hand them to
    their CRF (eval/crf_inputs.py); ``meta.json`` says so (``"stored": "log_softmax"``). ``dtype``
    float16 halves the disk (27 classes at 320x320 are ~5.5 MB per image and head); float32
    reproduces the in-loop CRF bit for bit.
    """

    def __init__(self, out_dir: str | Path, meta: dict[str, Any], shard_size: int = 64,
                 dtype: str = "float16") -> None:
        self.out_dir = Path(out_dir)
        self.meta = dict(meta)
        self.shard_size = shard_size
        self.dtype = np.dtype(dtype)
        self._buffer: dict[str, list[np.ndarray]] = {"image": [], "label": [], "cluster": [], "linear": []}
        self.n_images = 0
        self.n_shards = 0

    def __call__(self, images_u8: Any, cluster_logits: Any, linear_logits: Any, labels: Any) -> None:
        # head sizes come from the logits themselves (a method's own cluster head may add clusters)
        self.meta.setdefault("n_clusters", int(cluster_logits.shape[1]))
        self.meta.setdefault("n_classes", int(linear_logits.shape[1]))
        images = _numpy(images_u8)[:, :3].transpose(0, 2, 3, 1)  # H,W,3 as the CRF kernel wants
        cluster = _numpy(crf_log_probs(cluster_logits))
        linear = _numpy(crf_log_probs(linear_logits))
        for i in range(images.shape[0]):
            self._buffer["image"].append(np.ascontiguousarray(images[i], dtype=np.uint8))
            self._buffer["label"].append(_numpy(labels)[i].astype(np.int16))
            self._buffer["cluster"].append(cluster[i].astype(self.dtype))
            self._buffer["linear"].append(linear[i].astype(self.dtype))
            if len(self._buffer["image"]) == self.shard_size:
                self._flush()

    def _flush(self) -> None:
        if not self._buffer["image"]:
            return
        arrays = {k: np.stack(v) for k, v in self._buffer.items()}
        _atomic_savez(self.out_dir / f"shard-{self.n_shards:05d}.npz", **arrays)
        self.n_images += len(self._buffer["image"])
        self.n_shards += 1
        self._buffer = {k: [] for k in self._buffer}

    def close(self) -> Path:
        """Flush the last shard and write ``meta.json`` (its presence marks a complete dump)."""
        self._flush()
        meta = {**self.meta, "n_images": self.n_images, "n_shards": self.n_shards, "dtype": self.dtype.name,
                "stored": STORED}
        path = self.out_dir / "meta.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
        os.replace(tmp, path)
        return path


def writer_for_run(results_dir: str | Path, run_id: str, protocol: Any, class_names: list[str],
                   dtype: str = "float16", shard_size: int = 64) -> LogitsWriter:
    """The sink an evaluation loop needs to defer its CRF to this stage (``protocol``: eval.protocol.Protocol)."""
    meta = {"crf_params": dict(protocol.crf_params), "matching": protocol.matching,
            "miou_averaging": protocol.miou_averaging, "extra_cluster_pixels": protocol.extra_cluster_pixels,
            "class_names": list(class_names)}
    return LogitsWriter(logits_dir(results_dir, run_id), meta, shard_size=shard_size, dtype=dtype)


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def load_meta(results_dir: str | Path, run_id: str) -> dict[str, Any]:
    path = logits_dir(results_dir, run_id) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"no saved logits for run {run_id}: {path} is missing "
                                "(the run was evaluated without saving logits, or its dump is incomplete)")
    return json.loads(path.read_text())
