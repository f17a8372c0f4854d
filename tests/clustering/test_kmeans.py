import pytest
import torch
from scipy.cluster.vq import kmeans2

from uss_bench.clustering.kmeans import MiniBatchKMeans, assign, lloyd, sq_distances

CENTRES = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]], dtype=torch.float64)


def blobs(n_per: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([c + 0.3 * torch.randn(n_per, 2, generator=g, dtype=torch.float64) for c in CENTRES])
    return x, torch.arange(4).repeat_interleave(n_per)


def _same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    # a relabelling: every cluster of a maps to exactly one cluster of b
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_sq_distances_by_hand():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    c = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    assert sq_distances(x, c).tolist() == [[0.0, 9.0], [25.0, 16.0]]
    labels, d = assign(x, c, chunk=1)
    assert labels.tolist() == [0, 1] and d.tolist() == [0.0, 16.0]


def test_lloyd_matches_scipy_from_the_same_start_on_separable_blobs():
    x, truth = blobs()
    start = CENTRES + torch.tensor([[4.0, 4.0], [-4.0, 3.0], [3.0, -4.0], [-3.0, -3.0]], dtype=torch.float64)
    centroids = lloyd(x, 4, niter=20, init=start)
    labels, _ = assign(x, centroids)
    assert _same_partition(labels, truth)
    ref_centroids, ref_labels = kmeans2(x.numpy(), start.numpy(), minit="matrix", iter=20)
    assert _same_partition(labels, torch.from_numpy(ref_labels))
    # the same centroids up to order, and both equal to the blob means
    order = assign(torch.from_numpy(ref_centroids), centroids)[0]
    assert torch.allclose(centroids[order], torch.from_numpy(ref_centroids), atol=1e-9)
    means = torch.stack([x[truth == k].mean(0) for k in range(4)])
    assert torch.allclose(centroids[assign(means, centroids)[0]], means, atol=1e-9)


def test_random_start_ends_at_a_lloyd_fixed_point():
    # FAISS-style random init can land two seeds in one blob (no k-means++); the result is still a fixed point
    x, _ = blobs(seed=2)
    centroids = lloyd(x, 4, niter=30, seed=5)
    labels, _ = assign(x, centroids)
    means = torch.stack([x[labels == k].mean(0) for k in range(4)])
    assert torch.allclose(centroids, means, atol=1e-9)


def test_lloyd_is_deterministic_per_seed_and_rejects_too_few_points():
    x, _ = blobs(seed=1)
    assert torch.equal(lloyd(x, 4, 5, seed=7), lloyd(x, 4, 5, seed=7))
    with pytest.raises(ValueError, match="cannot make"):
        lloyd(x[:3], 4)


def test_empty_clusters_are_split_from_large_ones():
    # 3 identical far points + a blob: with all 4 seeds on the blob, nothing stays empty
    x, _ = blobs(n_per=30)
    centroids = lloyd(x, 6, niter=10, seed=0)
    counts = torch.bincount(assign(x, centroids)[0], minlength=6)
    assert (counts > 0).sum() >= 5


def test_minibatch_update_rule_by_hand():
    # init on 4 points of two pairs -> centroids (0,0) and (10,0) with counts 2 and 2;
    # one update chunk with 2 points at (1,0) for cluster 0: N_0 = 4, eta = 2/4, mu_0 = .5*0 + .5*1 = .5
    km = MiniBatchKMeans(2, init_points=4, update_points=2, niter=5, seed=0)
    km.add(torch.tensor([[0.0, 0.0], [0.0, 0.0], [10.0, 0.0], [10.0, 0.0]], dtype=torch.float64))
    km.add(torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64))
    c = km.finish()
    c = c[c[:, 0].argsort()]
    assert c[0].tolist() == pytest.approx([0.5, 0.0], abs=1e-6)
    assert c[1].tolist() == [10.0, 0.0]
    assert sorted(km.counts.tolist()) == [2.0, 4.0]


def test_minibatch_fits_on_fewer_points_than_the_init_size():
    x, truth = blobs()
    km = MiniBatchKMeans(4, init_points=10_000, update_points=100, niter=20, seed=1)
    for chunk in x.split(37):
        km.add(chunk)
    assert _same_partition(assign(x.float(), km.finish())[0], truth)
