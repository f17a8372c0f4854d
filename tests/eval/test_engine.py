import pytest
import torch

from uss_bench.eval.engine import evaluate
from uss_bench.eval.probes import Probes
from uss_bench.methods.base import MethodAdapter, MethodContext
from uss_bench.registry import PROTOCOLS


class OracleColumns(MethodAdapter):
    """Embeds each pixel as a one-hot of its column's class; lets us predict metrics by hand."""

    name = "oracle"

    def __init__(self, mapping):
        super().__init__(None, 2, {}, MethodContext("t", "none", 2, 1, 1, 1, 4))
        self.mapping = mapping  # column -> embedding index
        self.calls = 0

    @property
    def embed_dim(self):
        return 3

    def embed(self, images):
        self.calls += 1
        b, _, h, w = images.shape
        code = torch.zeros(b, 3, h, w)
        for col in range(w):
            code[:, self.mapping[col], :, col] = 1.0
        return code


class TinySet(torch.utils.data.Dataset):
    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        lab = self.labels[i]
        return {"image": torch.zeros(3, *lab.shape, dtype=torch.uint8), "label": lab, "id": str(i), "index": i}


def _probes(centroids, linear_weight):
    probes = Probes(3, 2, extra_clusters=1)
    with torch.no_grad():
        probes.cluster.centroids.copy_(torch.tensor(centroids))
        probes.linear.conv.weight.copy_(torch.tensor(linear_weight).view(2, 3, 1, 1))
        probes.linear.conv.bias.zero_()
    return probes


def test_engine_metrics_by_hand_with_extra_cluster_and_ignore():
    # one 2x4 image: columns 0,1 are class 0, columns 2,3 class 1; column 3's top pixel is ignored
    labels = [torch.tensor([[0, 0, 1, -1], [0, 0, 1, 1]])]
    method = OracleColumns(mapping=[0, 0, 1, 2])  # column 3 lands in a third (extra) cluster
    probes = _probes(centroids=[[1, 0, 0], [0, 1, 0], [0, 0, 1]], linear_weight=[[1, 0, 0], [0, 1, 1]])
    protocol = PROTOCOLS.get("uss").with_overrides(crf=False, extra_clusters=1)
    out = evaluate(method, probes, TinySet(labels), protocol, ["a", "b"], torch.device("cpu"), batch_size=1)
    # cluster: 7 valid pixels; clusters 0->a (4 px), 1->b (2 px), cluster 2 unmatched holds 1 px of b -> error
    assert out["cluster"]["assignment"] == [0, 1, -1]
    assert out["cluster"]["acc"] == pytest.approx(100 * 6 / 7)
    assert out["cluster"]["iou"] == pytest.approx({"a": 100.0, "b": 100 * 2 / 3})
    assert out["linear"]["acc"] == pytest.approx(100.0)
    assert out["cluster"]["n_pixels"] == 7
    assert "cluster_crf" not in out


def test_flip_tta_averages_the_flipped_embedding():
    labels = [torch.tensor([[0, 0, 1, 1]])]
    method = OracleColumns(mapping=[0, 0, 1, 1])
    probes = _probes(centroids=[[1, 0, 0], [0, 1, 0], [0, 0, 1]], linear_weight=[[1, 0, 0], [0, 1, 0]])
    protocol = PROTOCOLS.get("stego").with_overrides(crf=False)
    out = evaluate(method, probes, TinySet(labels), protocol, ["a", "b"], torch.device("cpu"), batch_size=1)
    # the oracle is not flip-equivariant: averaging with its flipped output gives 0.5/0.5 codes everywhere
    assert method.calls == 2
    assert out["linear"]["acc"] == pytest.approx(50.0)


def test_engine_with_crf_adds_crf_metrics():
    labels = [torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]])]
    method = OracleColumns(mapping=[0, 0, 1, 1])
    probes = _probes(centroids=[[1, 0, 0], [0, 1, 0], [0, 0, 1]], linear_weight=[[5, 0, 0], [0, 5, 0]])
    protocol = PROTOCOLS.get("uss").with_overrides(extra_clusters=1)
    out = evaluate(method, probes, TinySet(labels), protocol, ["a", "b"], torch.device("cpu"), batch_size=1)
    assert set(out) == {"cluster", "linear", "cluster_crf", "linear_crf"}
    assert out["linear_crf"]["n_pixels"] == 8


class ImageColours(MethodAdapter):
    """Embeds each pixel as its own RGB values: a deterministic code that differs from pixel to pixel."""

    name = "colours"

    def __init__(self):
        super().__init__(None, 2, {}, MethodContext("t", "none", 2, 1, 1, 1, 4))

    @property
    def embed_dim(self):
        return 3

    def embed(self, images):
        return images[:, :3]


class NoisySet(torch.utils.data.Dataset):
    def __init__(self, n=7, size=24):
        g = torch.Generator().manual_seed(3)
        self.images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
        self.labels = torch.randint(-1, 2, (n, size, size), generator=g)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": self.labels[i], "id": str(i), "index": i}


def test_crf_batches_in_flight_give_exactly_the_serial_results():
    from uss_bench.eval.crf import CRFRunner

    torch.manual_seed(0)
    probes = Probes(3, 2, extra_clusters=1)
    protocol = PROTOCOLS.get("uss").with_overrides(extra_clusters=1)

    def run(runner, in_flight):
        return evaluate(ImageColours(), probes, NoisySet(), protocol, ["a", "b"], torch.device("cpu"), batch_size=2,
                        crf_runner=runner, use_crf=True, crf_in_flight=in_flight)

    serial = run(CRFRunner(workers=0), 0)
    with CRFRunner(workers=2) as pooled:
        overlapped = run(pooled, 2)
        assert pooled.mode == "pool[2]"
        unbounded = run(pooled, 100)  # every batch submitted before the first result is read
    # the CRF changed some pixels, so the comparison covers refined maps, not copies of the argmax
    assert serial["cluster_crf"]["acc"] != serial["cluster"]["acc"]
    assert overlapped == serial and unbounded == serial
