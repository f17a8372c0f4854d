"""Loader throughput (images/s) with the 320 eval transform, for 0, 1 and 2 DataLoader workers.

Data: 64 COCO-size images (640x480 JPEG + stuffthingmap PNG) in the real cocostuff27 layout, and 64
Cityscapes-size images (2048x1024 PNG + labelIds PNG), written once per session. Decoding, label
mapping, nearest resize to 320 and the centre crop are all measured; batches of 16; worker start-up
is excluded (persistent workers, one warm-up round).
Run: pytest benchmarks/bench_loaders.py --benchmark-enable -s
"""

import numpy as np
import pytest
import torch
from PIL import Image

from uss_bench.data.base import collate
from uss_bench.data.build import build_dataset
from uss_bench.data.fixtures import _image_for, _label_map, _rng
from uss_bench.data.transforms import SegTransform

N_IMAGES = 64


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("loaders")
    coco = root / "cocostuff"
    ids = [f"{i:012d}" for i in range(N_IMAGES)]
    for sub in ("images/val2017", "annotations/val2017", "curated/val2017"):
        (coco / sub).mkdir(parents=True)
    for image_id in ids:
        rng = _rng("bench", image_id)
        label = _label_map(rng, 480, 640, [0, 156, 123, 148, 171, 255])
        label = np.roll(label, rng.integers(0, 640), axis=1)  # vary the layout per image
        Image.fromarray(_image_for(label, rng)).save(coco / "images/val2017" / f"{image_id}.jpg", quality=90)
        Image.fromarray(label.astype(np.uint8)).save(coco / "annotations/val2017" / f"{image_id}.png")
    (coco / "curated/val2017/Coco164kFull_Stuff_Coarse_7.txt").write_text("\n".join(ids) + "\n")
    city = root / "cityscapes"
    for i in range(N_IMAGES):
        stem = f"frankfurt_000000_{i:06d}"
        rng = _rng("bench-city", stem)
        label = _label_map(rng, 1024, 2048, [0, 7, 11, 21, 23, 26, 33])
        for sub, name, array in (("leftImg8bit", "_leftImg8bit", _image_for(label, rng)),
                                 ("gtFine", "_gtFine_labelIds", label.astype(np.uint8))):
            path = city / sub / "val" / "frankfurt" / f"{stem}{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    return root


@pytest.mark.parametrize("dataset", ["cocostuff27", "cityscapes27"])
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_eval_loader_throughput(benchmark, data_root, dataset, workers):
    torch.set_num_threads(1)
    ds = build_dataset(dataset, data_root, "val", SegTransform(320, "center", "nearest"))
    assert len(ds) == N_IMAGES

    # Persistent workers: the warm-up round starts them, the timed rounds measure steady-state throughput.
    loader = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=workers, collate_fn=collate,
                                         persistent_workers=workers > 0)

    def run():
        return sum(batch["image"].shape[0] for batch in loader)

    n = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    rate = n / benchmark.stats.stats.mean
    benchmark.extra_info["images_per_s"] = round(rate, 1)
    print(f"\n{dataset} eval loader (320 centre crop), {workers} worker(s): {rate:.1f} images/s")
    assert n == N_IMAGES
