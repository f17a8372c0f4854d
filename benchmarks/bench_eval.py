"""Evaluation with the CRF: does the embedding overlap the CRF workers?

Side by side in one process, on the same images and model (dino, random-init ViT-S/16, 27 classes):
- E: evaluation without the CRF (embedding, heads, confusion);
- C: the CRF of every image and head (cluster + linear), run back to back by one CRF worker;
- for W = 1, 2 CRF workers: the wall time of the evaluation with the CRF, waiting for each batch's CRF
  (``crf_in_flight=0``, the engine before issue 15) and overlapped (``crf_in_flight=2``, the default).
Target (issue 15): overlapped wall <= 1.15 x max(E, C / W). The machine's load is printed beside each
figure: on a shared machine the W workers compete with the embedding for the same cores.
How busy the W workers were (inside the CRF kernel) over the wall is printed: near 100 % the
evaluation runs as fast as the workers can go, whatever the embedding does. The machine's floor is
printed too: no schedule can finish before (CPU seconds of E + of C) / cores.
Where the W workers and the embedding need more cores than the machine has (W = 2 on 2 cores), that
floor lies above max(E, C / W), and ``floor / bound`` says how far the target is out of reach there.
C_W, the W-worker pool running the CRF alone, is what W workers deliver on this machine;
wall / max(E, C_W) is the overlap's own cost, free of how well the machine scales to W processes.

    PYTHONPATH=$PWD python benchmarks/bench_eval.py
    pytest benchmarks/bench_eval.py --benchmark-enable -s
    USS_BENCH_EVAL_IMAGES=16 USS_BENCH_EVAL_RES=320 ...
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from uss_bench.config import resolve
from uss_bench.eval.crf import CRFRunner
from uss_bench.eval.engine import _crf_inputs, evaluate
from uss_bench.eval.probes import Probes
from uss_bench.pipeline import RunEnv, build_method
from uss_bench.registry import PROTOCOLS
from uss_bench.spec import RunSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crf_timing import LOG_ENV, busy_fraction, timed_dense_crf  # noqa: E402

N_IMAGES = int(os.environ.get("USS_BENCH_EVAL_IMAGES", 12))
RES = int(os.environ.get("USS_BENCH_EVAL_RES", 128))
BATCH = int(os.environ.get("USS_BENCH_EVAL_BATCH", 2))
CLASSES = 27
TARGET = 1.15


class ImageSet(torch.utils.data.Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (N_IMAGES, 3, RES, RES), generator=g, dtype=torch.uint8)
        self.labels = torch.randint(0, CLASSES, (N_IMAGES, RES, RES), generator=g)

    def __len__(self) -> int:
        return N_IMAGES

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i], "id": str(i), "index": i}


def _setup():
    torch.manual_seed(0)
    config = resolve(RunSpec("dino", "synthetic", "vit-s16", random_init=True,
                             overrides={"train.batch_size": BATCH, "train.train_res": RES}))
    method = build_method(config, RunEnv(device="cpu"), CLASSES, 1)
    probes = Probes(method.embed_dim, CLASSES)
    protocol = PROTOCOLS.get("uss").with_overrides(crf=True)
    return method, probes, protocol


def _load() -> str:
    return "load " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def measure() -> dict:
    os.environ.setdefault(LOG_ENV, os.path.join(tempfile.mkdtemp(prefix="uss-bench-crf-"), "timing.log"))
    method, probes, protocol = _setup()
    data = ImageSet()
    names = [f"c{i}" for i in range(CLASSES)]

    def run(**kwargs) -> tuple[float, dict]:
        start = time.perf_counter()
        out = evaluate(method, probes, data, protocol, names, torch.device("cpu"), batch_size=BATCH, **kwargs)
        return time.perf_counter() - start, out

    run(use_crf=False)  # warm-up
    crf_jobs: list[tuple] = []
    run(use_crf=False, logits_sink=lambda images, cl, li, labels: crf_jobs.extend(
        [_crf_inputs(images, cl), _crf_inputs(images, li)]))

    def crf_alone(runner: CRFRunner) -> float:
        """Wall time of ``runner`` running every CRF job alone, all submitted at once."""
        start = time.perf_counter()
        for job in [runner.submit(images, probs) for images, probs in crf_jobs]:
            job.result()
        return time.perf_counter() - start

    result = {"images": N_IMAGES, "res": RES, "batch": BATCH, "load_start": _load(), "runs": {}}
    threads = torch.get_num_threads()
    for workers in (1, 2):
        # E and C are measured next to the walls they bound (the load of a shared machine drifts).
        # C is one CRF worker running every job alone: the same process set-up as the pool's workers
        # (in this process the same calls drifted 5.5-8.9 s between blocks; one worker: 6.8-7.1 s)
        e, _ = run(use_crf=False)
        with CRFRunner(workers=1) as one:
            crf_alone(one)  # warm-up: a process's first CRF calls run slower
            c = crf_alone(one)
        result["E", workers], result["C", workers] = e, c
        # the W workers take W cores: the embedding gets the rest, so its OpenMP threads never wait for
        # a peer descheduled by a CRF worker (USS_BENCH_EVAL_SPLIT=0 keeps every thread)
        if os.environ.get("USS_BENCH_EVAL_SPLIT", "1") != "0":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) - workers))
        cpu = time.process_time()  # the embedding's CPU seconds at the thread count it runs with below
        run(use_crf=False)
        e_cpu = time.process_time() - cpu
        # a worker alone keeps one core busy: C is also its CPU seconds
        result["floor", workers] = max(max(e, c / workers), (e_cpu + c) / (os.cpu_count() or 1))
        with CRFRunner(workers=workers, kernel=timed_dense_crf) as runner:
            crf_alone(runner)  # warm-up
            # C_W: what W workers really deliver on this machine (C / W assumes they scale perfectly)
            result["C_pool", workers] = c_pool = crf_alone(runner)
            for label, in_flight in (("before", 0), ("after", 2)):
                log = Path(os.environ[LOG_ENV])
                log.write_text("")
                start = time.time()
                wall, out = run(crf_runner=runner, use_crf=True, crf_in_flight=in_flight)
                busy = busy_fraction(log, workers, start, time.time())
                bound = max(e, c / workers)
                result["runs"][(workers, label)] = {"wall": wall, "ratio": wall / bound, "load": _load(),
                                                    "floor_ratio": result["floor", workers] / bound,
                                                    "wall_over_floor": wall / result["floor", workers],
                                                    "workers_busy": busy,
                                                    "pool_ratio": wall / max(e, c_pool),
                                                    "cluster_crf_acc": out["cluster_crf"]["acc"],
                                                    "threads": torch.get_num_threads()}
                print(f"E {e:.2f} s, C {c:.2f} s, W={workers} {label}: {wall:.2f} s", flush=True)
            assert runner.mode == f"pool[{workers}]"
        torch.set_num_threads(threads)
    return result


def report(r: dict) -> str:
    lines = [f"eval {r['images']} images {r['res']}px, batch {r['batch']}, dino ViT-S/16 random init, "
             f"{CLASSES} classes, CPU ({os.cpu_count()} cores); {r['load_start']}"]
    for (workers, label), v in r["runs"].items():
        lines.append(f"  W={workers} {label:6s}: E {r['E', workers]:.2f} s (no CRF), C {r['C', workers]:.2f} s "
                     f"(1 worker alone, both heads), wall {v['wall']:.2f} s = {v['ratio']:.2f} x max(E, C/W); "
                     f"machine floor {v['floor_ratio']:.2f} x max(E, C/W), wall {v['wall_over_floor']:.2f} x floor; "
                     f"CRF workers busy {100 * v['workers_busy']:.0f} % of the wall; the pool alone (C_W) "
                     f"{r['C_pool', workers]:.2f} s: wall {v['pool_ratio']:.2f} x max(E, C_W) "
                     f"[{v['load']}; model threads {v['threads']}]")
    return "\n".join(lines)


def test_eval_overlaps_the_crf(benchmark):
    result = benchmark.pedantic(measure, rounds=1, iterations=1)
    text = report(result)
    print("\n" + text)
    accs = {v["cluster_crf_acc"] for v in result["runs"].values()}
    assert len(accs) == 1  # waiting or overlapping, the same numbers
    for workers in (1, 2):
        run = result["runs"][(workers, "after")]
        if (os.cpu_count() or 1) > workers:  # a core left for the embedding: the target as stated
            assert run["ratio"] <= TARGET, text
        else:  # W workers on W cores: no schedule beats the floor (CPU seconds / cores), hold to that
            assert run["wall_over_floor"] <= TARGET, text


if __name__ == "__main__":
    print(report(measure()))
