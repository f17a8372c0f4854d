from pathlib import Path

import numpy as np
import pytest
import torch

from uss_bench.eval.confusion import confusion_matrix
from uss_bench.eval.crf_inputs import crf_batch
from uss_bench.eval.crf_kernel import CRFParams, dense_crf
from uss_bench.eval.matching import match
from uss_bench.eval.metrics import segmentation_metrics
from uss_bench.launch import crf_stage
from uss_bench.results.records import load_record, write_record

CLASSES = ["sky", "grass", "road"]


def scene(rng: np.random.Generator, n: int = 5, size: int = 24):
    """Three horizontal bands, coloured, with noisy logits that favour the right band: CRF has work."""
    labels = np.zeros((n, size, size), dtype=np.int64)
    labels[:, size // 3 : 2 * size // 3] = 1
    labels[:, 2 * size // 3 :] = 2
    labels[:, 0, :4] = -1  # some ignore pixels
    colours = np.array([[40, 90, 220], [40, 180, 40], [120, 120, 120]], dtype=np.uint8)
    images = colours[labels.clip(0)].transpose(0, 3, 1, 2).copy()  # [n,3,H,W]
    onehot = np.eye(3, dtype=np.float32)[labels.clip(0)].transpose(0, 3, 1, 2)
    linear = 2.0 * onehot + rng.normal(0, 1.5, onehot.shape).astype(np.float32)
    cluster = np.concatenate([linear[:, [2, 0, 1]], rng.normal(0, 1, (n, 1, size, size))], 1).astype(np.float32)
    return images, cluster, linear, labels


def in_loop_metrics(images, cluster, linear, labels) -> dict:
    """What the engine computes when the CRF runs inside the evaluation loop."""
    out = {}
    for key, logits, rule in (("cluster_crf", cluster, "hungarian"), ("linear_crf", linear, "identity")):
        probs = torch.softmax(torch.from_numpy(logits).float(), dim=1).numpy()
        conf = torch.zeros(logits.shape[1], 3, dtype=torch.int64)
        for i in range(len(images)):
            refined = dense_crf(images[i].transpose(1, 2, 0).copy(), probs[i], CRFParams())
            conf += confusion_matrix(torch.from_numpy(refined.astype(np.int64)), torch.from_numpy(labels[i]),
                                     logits.shape[1], 3)
        assignment = match(conf, rule)
        out[key] = segmentation_metrics(conf, assignment, "skip_absent").as_dict(CLASSES)
    return out


def dump(results: Path, run_id: str, arrays, dtype: str = "float32", shard_size: int = 2) -> None:
    images, cluster, linear, labels = arrays
    writer = crf_stage.LogitsWriter(
        crf_stage.logits_dir(results, run_id),
        {"crf_params": CRFParams().as_dict(), "class_names": CLASSES, "matching": "hungarian",
         "miou_averaging": "skip_absent"},
        shard_size=shard_size, dtype=dtype)
    for lo in range(0, len(images), 3):  # batches of 3 across shards of 2
        writer(torch.from_numpy(images[lo:lo + 3]), torch.from_numpy(cluster[lo:lo + 3]),
               torch.from_numpy(linear[lo:lo + 3]), torch.from_numpy(labels[lo:lo + 3]))
    writer.close()
    write_record(results, {"run_id": run_id, "status": "completed", "spec": {},
                           "metrics": {"cluster": {"miou": 1.0}, "linear": {"miou": 2.0}}})


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_stage_equals_the_in_loop_crf(tmp_path: Path, executor: str):
    arrays = scene(np.random.default_rng(0))
    dump(tmp_path, "r1", arrays)
    meta = crf_stage.load_meta(tmp_path, "r1")
    assert (meta["n_shards"], meta["n_images"], meta["n_clusters"], meta["n_classes"]) == (3, 5, 4, 3)
    (record,) = crf_stage.run_stage(tmp_path, ["r1"], executor=executor, profile="local-ci", poll_s=0.2,
                                    timeout_s=120)
    expected = in_loop_metrics(*arrays)
    for key in ("cluster_crf", "linear_crf"):
        for metric in ("acc", "miou", "iou"):
            assert record["metrics"][key][metric] == expected[key][metric]
    assert record["metrics"]["cluster"] == {"miou": 1.0}  # the no-CRF columns are untouched
    assert record["crf"]["stage"] == "separate" and load_record(tmp_path, "r1") == record
    # the CRF did change predictions (otherwise this test could not tell the stage apart from a no-op)
    plain = segmentation_metrics(confusion_matrix(torch.from_numpy(arrays[2].argmax(1)),
                                                  torch.from_numpy(arrays[3]), 3, 3), np.arange(3))
    assert plain.acc != record["metrics"]["linear_crf"]["acc"]


def test_finished_shards_are_not_recomputed_and_incomplete_stages_are_refused(tmp_path: Path):
    dump(tmp_path, "r2", scene(np.random.default_rng(1)))
    with pytest.raises(FileNotFoundError, match=r"incomplete: shards \[0, 1, 2\] missing"):
        crf_stage.merge(tmp_path, "r2")
    crf_stage.run_stage(tmp_path, ["r2"])
    assert crf_stage.shard_jobs(tmp_path, "r2") == []
    first = crf_stage.crf_dir(tmp_path, "r2") / "shard-00000.npz"
    mtime = first.stat().st_mtime_ns
    crf_stage.run_stage(tmp_path, ["r2"])
    assert first.stat().st_mtime_ns == mtime


def test_float16_logits_stay_close(tmp_path: Path):
    arrays = scene(np.random.default_rng(2))
    dump(tmp_path, "r3", arrays, dtype="float16", shard_size=8)
    (record,) = crf_stage.run_stage(tmp_path, ["r3"])
    expected = in_loop_metrics(*arrays)
    assert abs(record["metrics"]["linear_crf"]["acc"] - expected["linear_crf"]["acc"]) < 1.0
    assert record["crf"]["logits_dtype"] == "float16"


def test_missing_logits_is_one_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"no saved logits for run nope: .*meta.json is missing"):
        crf_stage.run_stage(tmp_path, ["nope"])


@pytest.mark.slurm
def test_stage_as_a_slurm_cpu_array(slurm_env, tmp_path: Path):
    arrays = scene(np.random.default_rng(3))
    dump(tmp_path, "r4", arrays)
    (record,) = crf_stage.run_stage(tmp_path, ["r4"], executor="slurm", profile="local-ci", poll_s=1,
                                    timeout_s=180)
    assert record["metrics"]["linear_crf"]["miou"] == in_loop_metrics(*arrays)["linear_crf"]["miou"]
    assert len(list((tmp_path / "crf" / "_jobs").glob("*/*_submission.sh"))) == 1  # one array of 3 tasks


def test_writer_for_run_takes_the_protocol_settings(tmp_path: Path):
    from uss_bench.registry import PROTOCOLS

    protocol = PROTOCOLS.get("stego")
    writer = crf_stage.writer_for_run(tmp_path, "r5", protocol, CLASSES)
    assert writer.out_dir == tmp_path / "logits" / "r5"
    assert writer.meta == {"crf_params": protocol.crf_params, "matching": protocol.matching,
                           "miou_averaging": protocol.miou_averaging,
                           "extra_cluster_pixels": protocol.extra_cluster_pixels, "class_names": CLASSES}


def test_stage_stores_log_probs_and_applies_the_extra_cluster_rule(tmp_path: Path):
    # cluster 3 is an extra cluster (4 clusters, 3 classes); under drop_before_matching its pixels
    # leave the matrix before matching, as STEGO's UnsupervisedMetrics does
    images, cluster, linear, labels = scene(np.random.default_rng(4))
    cluster[:, 3] += 2.0  # make the extra cluster win somewhere
    writer = crf_stage.LogitsWriter(
        crf_stage.logits_dir(tmp_path, "r6"),
        {"crf_params": CRFParams().as_dict(), "class_names": CLASSES, "matching": "hungarian",
         "miou_averaging": "skip_absent", "extra_cluster_pixels": "drop_before_matching"}, dtype="float32")
    writer(torch.from_numpy(images), torch.from_numpy(cluster), torch.from_numpy(linear), torch.from_numpy(labels))
    writer.close()
    meta = crf_stage.load_meta(tmp_path, "r6")
    assert meta["stored"] == "log_softmax"
    with np.load(crf_stage.logits_dir(tmp_path, "r6") / "shard-00000.npz") as data:
        assert np.allclose(np.exp(data["cluster"]).sum(1), 1.0, atol=1e-5)
    write_record(tmp_path, {"run_id": "r6", "status": "completed", "spec": {}, "metrics": {}})
    (record,) = crf_stage.run_stage(tmp_path, ["r6"])
    conf = torch.zeros(4, 3, dtype=torch.int64)
    for i in range(len(images)):
        imgs, probs = crf_batch(torch.from_numpy(images[i : i + 1]), torch.from_numpy(cluster[i : i + 1]))
        refined = dense_crf(imgs[0], probs[0], CRFParams())
        conf += confusion_matrix(torch.from_numpy(refined.astype(np.int64)), torch.from_numpy(labels[i]), 4, 3)
    assert conf[3].sum() > 0  # the extra cluster did take pixels after the CRF
    kept = conf.clone()
    kept[3] = 0
    expected = segmentation_metrics(kept, match(kept, "hungarian"), "skip_absent")
    assert record["metrics"]["cluster_crf"]["acc"] == expected.acc
    assert record["metrics"]["cluster_crf"]["n_pixels"] == int(kept.sum())


def test_a_run_holding_its_lock_keeps_its_record(tmp_path: Path):
    """The stage writes the record under the run's lock: while the same run works, it refuses and
    changes nothing; once the lock is free, the finished shards are merged in."""
    from uss_bench.results.locks import RunLockedError, run_lock

    dump(tmp_path, "r7", scene(np.random.default_rng(7)))
    before = load_record(tmp_path, "r7")
    with run_lock(tmp_path, "r7"), pytest.raises(RunLockedError, match="run r7 is already running"):
        crf_stage.run_stage(tmp_path, ["r7"])
    assert load_record(tmp_path, "r7") == before
    (record,) = crf_stage.run_stage(tmp_path, ["r7"])
    assert "cluster_crf" in record["metrics"] and load_record(tmp_path, "r7") == record
