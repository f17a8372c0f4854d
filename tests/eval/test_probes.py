import torch

from uss_bench.eval.probes import ClusterProbe, LinearProbe


def _blobs(n_per=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    x = torch.cat([c + 0.05 * torch.randn(n_per, 3, generator=g) for c in centres])
    y = torch.arange(3).repeat_interleave(n_per)
    return x.T.reshape(1, 3, 3 * n_per, 1), y.reshape(1, 3 * n_per, 1)


def test_cluster_probe_loss_is_minus_mean_max_cosine_by_hand():
    probe = ClusterProbe(dim=2, n_clusters=2)
    with torch.no_grad():
        probe.centroids.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    code = torch.tensor([[[[3.0, 0.0]], [[4.0, 1.0]]]])  # two pixels: (3,4) and (0,1)
    # cos((3,4),(1,0)) = 0.6, cos((3,4),(0,1)) = 0.8 -> max 0.8; pixel (0,1): max 1.0
    assert torch.allclose(probe.loss(code), torch.tensor(-(0.8 + 1.0) / 2))


def test_cluster_probe_moves_winning_centroids_to_the_blob_means():
    torch.manual_seed(0)
    code, labels = _blobs()
    probe = ClusterProbe(3, 4)
    with torch.no_grad():  # three centroids start off-centre near a blob, the fourth far from all
        probe.centroids.copy_(torch.tensor([[1.0, 0.5, 0.4], [0.4, 1.0, 0.5], [0.5, 0.4, 1.0], [-1.0, -1.0, -1.0]]))
    start = probe.loss(code).item()
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2)
    for step in range(300):
        opt.zero_grad()
        probe.loss(code).backward()
        if step == 0:  # hard assignment: a centroid that wins no pixel gets no gradient
            assert torch.count_nonzero(probe.centroids.grad[3]) == 0
        opt.step()
    assert probe.loss(code).item() < start
    pred = probe.scores(code).argmax(1).flatten()
    assert torch.equal(pred, labels.flatten())
    means = torch.stack([code[0, :, labels[0, :, 0] == c, 0].mean(1) for c in range(3)])
    means = torch.nn.functional.normalize(means, dim=1)
    cos = (torch.nn.functional.normalize(probe.centroids[:3], dim=1) * means).sum(1)
    assert (cos > 0.999).all()


def test_linear_probe_fits_and_ignores_minus_one():
    torch.manual_seed(0)
    code, labels = _blobs()
    labels = labels.clone()
    labels[0, :10] = -1
    probe = LinearProbe(3, 3)
    opt = torch.optim.Adam(probe.parameters(), lr=5e-2)
    for _ in range(200):
        opt.zero_grad()
        probe.loss(code, labels).backward()
        opt.step()
    pred = probe(code).argmax(1)
    keep = labels >= 0
    assert (pred[keep] == labels[keep]).float().mean() == 1.0


def test_probe_losses_never_reach_the_code():
    code = torch.randn(1, 4, 3, 3, requires_grad=True)
    ClusterProbe(4, 2).loss(code).backward()
    LinearProbe(4, 2).loss(code, torch.zeros(1, 3, 3, dtype=torch.long)).backward()
    assert code.grad is None
