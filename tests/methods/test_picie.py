import json
import math

import pytest
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

from uss_bench.data.base import collate
from uss_bench.methods.base import MethodContext
from uss_bench.methods.picie.loss import class_weights, weighted_ce
from uss_bench.methods.picie.method import PiCIE
from uss_bench.methods.picie.views import ViewSettings, geometric, geometric_params, photometric
from uss_bench.paths import PROJECT_ROOT
from uss_bench.registry import BACKBONES, PROTOCOLS, load_all

load_all()
LN2 = math.log(2.0)


def test_weighted_ce_by_hand():
    # pixel 1: logits (0, 0), label 0 -> nll ln2; pixel 2: logits (ln3, 0), label 1 -> nll ln4
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]]).view(1, 2, 1, 2)  # [B, K, H, W]
    labels = torch.tensor([[[0, 1]]])
    w = class_weights(torch.tensor([1.0, 3.0]), "proportional")
    assert w.tolist() == pytest.approx([0.25, 0.75])  # official: proportional to counts (issue #28)
    # (0.25 ln2 + 0.75 ln4) / (0.25 + 0.75) = 1.75 ln2
    assert weighted_ce(logits, labels, w).item() == pytest.approx(1.75 * LN2, abs=1e-6)
    inv = class_weights(torch.tensor([1.0, 3.0]), "inverse")
    assert inv.tolist() == pytest.approx([0.75, 0.25])
    assert weighted_ce(logits, labels, inv).item() == pytest.approx(1.25 * LN2, abs=1e-6)
    assert weighted_ce(logits, labels, class_weights(torch.tensor([1.0, 3.0]), "none")).item() == pytest.approx(
        1.5 * LN2, abs=1e-6)
    assert class_weights(torch.tensor([0.0, 2.0]), "inverse").tolist() == [0.0, 1.0]  # empty clusters get 0


def test_geometric_transform_crops_resizes_and_flips():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # scale .5 -> side 2, offsets round(2 * 1) = 2 rows, round(2 * 0) = 0 columns, then flip
    out = geometric(x, [(0.5, 1.0, 0.0, True)], size=2)
    assert out[0, 0].tolist() == [[9.0, 8.0], [13.0, 12.0]]
    same = geometric(x, [(1.0, 0.3, 0.7, False)], size=4)
    assert torch.equal(same, x)


def test_view_parameters_are_a_function_of_seed_epoch_and_image():
    s = ViewSettings()
    assert geometric_params(0, 1, 5, s) == geometric_params(0, 1, 5, s)
    assert geometric_params(0, 2, 5, s) != geometric_params(0, 1, 5, s)
    scale = geometric_params(0, 1, 5, s)[0]
    assert 0.5 <= scale <= 1.0
    img = torch.rand(3, 8, 8)
    assert torch.equal(photometric(img, 0, 1, 5, 0, s), photometric(img, 0, 1, 5, 0, s))


def test_grayscale_typo_option_reproduces_q1():
    img = torch.rand(3, 8, 8)
    typo = ViewSettings(grayscale=False, jitter=0.0, hue=0.0, blur_rule="uniform")
    fixed = ViewSettings(grayscale=True, jitter=0.0, hue=0.0, blur_rule="uniform")
    grey_hits = 0
    for index in range(60):
        a, b = photometric(img, 0, 0, index, 0, typo), photometric(img, 0, 0, index, 0, fixed)
        if not torch.equal(a, b):
            grey_hits += 1
            assert torch.allclose(b[0], b[1]) and torch.allclose(b[1], b[2])  # grayscale: equal channels
        assert not torch.allclose(a[0], a[1])  # with the typo grayscale never happens
    assert 3 <= grey_hits <= 25  # p = 0.2 of 60


class Tiny(Dataset):
    def __init__(self, n: int = 8, side: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = (torch.rand(n, 3, side, side, generator=g) * 255).to(torch.uint8)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": torch.zeros(32, 32, dtype=torch.long), "id": str(i), "index": i}


def _picie(**over) -> PiCIE:
    card = yaml.safe_load((PROJECT_ROOT / "methods" / "picie.yaml").read_text())
    hparams = {**card["hparams"], "input_res": 32, "kmeans_init_images": 4, "kmeans_update_images": 2,
               "kmeans_n_iter": 5, **over}
    ctx = MethodContext("synthetic", "resnet18-fpn", 3, 4, 4, 2, 32, extra={"random_init": True, "seed": 0})
    return PiCIE(None, 3, hparams, ctx)


def test_epoch_clustering_labels_and_loss():
    torch.manual_seed(0)
    m = _picie()
    ds = Tiny()
    m.on_epoch_start(0, lambda: DataLoader(ds, batch_size=4, collate_fn=collate))
    assert m.labels1.shape == (8, 8, 8) and m.labels2.shape == (8, 8, 8)
    assert m.weights1.sum().item() == pytest.approx(1.0) and (m.weights1 >= 0).all()
    # label = nearest centroid of the eval-mode view-1 features
    m.eval()
    with torch.no_grad():
        z = m.view_features(ds.images[:2].float() / 255, [0, 1], 0, 1)
    d = ((z[:, None] - m.centroids1[None, :, :, None, None]) ** 2).sum(2)
    assert torch.equal(d.argmin(1), m.labels1[:2].long())
    m.train()
    batch = collate([ds[i] for i in range(4)])
    batch["image"] = batch["image"].float() / 255
    out = m.training_step(batch, step=1)
    assert torch.isfinite(out["loss"]) and out["code"].shape == (4, 128, 8, 8)
    assert out["loss"].item() == pytest.approx((out["ce_within"] + out["ce_cross"]).item() / 2, rel=1e-6)
    out["loss"].backward()
    assert m.centroids1.grad is None  # frozen classifier
    state = m.state_dict()
    fresh = _picie()
    fresh.load_state_dict(state)  # label tables are resized on load (resume)
    assert torch.equal(fresh.labels2, m.labels2)


def test_refit_before_eval_follows_the_protocol():
    torch.manual_seed(0)
    m = _picie(kmeans_bn="eval")
    m.eval_centroids.zero_()
    m.before_eval(Tiny(), PROTOCOLS.get("uss"))
    assert m.eval_centroids.abs().sum() == 0  # uss: no refit
    m.before_eval(Tiny(), PROTOCOLS.get("picie").with_overrides(eval_res=32))
    assert m.eval_centroids.abs().sum() > 0
    m.eval()
    code = m.embed(torch.rand(1, 3, 32, 32))
    assert m.cluster_logits(code).shape == (1, 3, 8, 8)


def test_missing_imagenet_weights_name_the_file(tmp_path):
    spec = BACKBONES.get("resnet18-fpn")
    message = spec.missing_weights(tmp_path)
    assert "resnet18-f37072fd.pth" in message and str(tmp_path) in message and "--random-init" in message
    from uss_bench.backbones.vit import MissingWeightsError

    with pytest.raises(MissingWeightsError):
        spec.build(tmp_path, random_init=False)


@pytest.mark.slow
def test_smoke_run_through_the_cli(tmp_path):
    from uss_bench.cli import main

    args = ["run", "--methods", "picie", "--datasets", "synthetic", "--preset", "smoke", "--protocol", "picie",
            "--results", str(tmp_path / "r"), "--data-root", str(tmp_path / "d"), "--set", "train.steps=2"]
    assert main(args) == 0
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "r" / "runs").glob("*.json")]
    assert record["status"] == "completed" and record["protocol"]["kmeans_refit"] is True
    assert math.isfinite(record["train"]["last_losses"]["loss"])


def test_torchvision_weights_file_loads_into_the_trunk(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18-f37072fd.pth")
    model = BACKBONES.get("resnet18-fpn").build(tmp_path, random_init=False)
    assert torch.equal(model.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 128, 16, 16)  # 128-d at stride 4
