import numpy as np
import torch

from uss_bench.data.build import build_dataset, dataset_problems
from uss_bench.data.synthetic import ensure_generated, generate_scene
from uss_bench.data.transforms import SegTransform


def test_scenes_are_deterministic_and_use_all_classes():
    a_img, a_lab = generate_scene(0, "train", 3, 64)
    b_img, b_lab = generate_scene(0, "train", 3, 64)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    labels = np.concatenate([generate_scene(0, "train", i, 64)[1].ravel() for i in range(20)])
    assert set(np.unique(labels)) == {-1, 0, 1, 2, 3, 4, 5}
    assert 0 < (labels == -1).mean() < 0.1


def test_pairs_share_colour_but_differ_in_texture():
    colour, roughness = {}, {}
    for i in range(40):
        img, lab = generate_scene(0, "train", i, 128)
        grey = img.astype(float).mean(-1)
        # local high-frequency energy: mean absolute difference to the right and lower neighbours
        energy = np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1, :]
        inner = lab[:-1, :-1]
        same = (lab[1:, :-1] == inner) & (lab[:-1, 1:] == inner)
        for c in range(6):
            m = lab == c
            if m.sum() > 200:
                colour.setdefault(c, []).append(img[m].mean(0))
                roughness.setdefault(c, []).append(energy[(inner == c) & same].mean())
    mean = {c: np.mean(v, 0) for c, v in colour.items()}
    rough = {c: np.mean(v) for c, v in roughness.items()}
    for a, b in ((0, 1), (2, 3), (4, 5)):
        assert np.abs(mean[a] - mean[b]).max() < 15  # colour alone does not separate the pair
        assert abs(rough[a] - rough[b]) > 10  # texture does


def test_dataset_reads_generated_files(tmp_path):
    ds = build_dataset("synthetic", tmp_path, "val", SegTransform(32, "center", "nearest"), preset="smoke")
    assert len(ds) == 16 and ds.n_classes == 6
    sample = ds[0]
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 32, 32)
    assert sample["label"].dtype == torch.int64 and sample["label"].shape == (32, 32)
    raw = generate_scene(0, "val", 0, 64)[1]
    assert np.array_equal(build_dataset("synthetic", tmp_path, "val", None, "smoke")[0]["label"].numpy(), raw)
    assert dataset_problems("synthetic", tmp_path, ("train", "val"), "smoke") == []
    assert (ensure_generated(tmp_path, "smoke") / "meta.json").is_file()
