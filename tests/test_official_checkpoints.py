import json
import sys
import types

import pytest
import torch

from uss_bench.eval.probes import Probes
from uss_bench.methods.base import MethodContext
from uss_bench.official_checkpoints import (
    CheckpointMismatchError,
    CheckpointReadError,
    InertGlobal,
    find_checkpoint,
    import_checkpoint,
    infer_settings,
    read_official,
    read_raw,
    sha256,
)
from uss_bench.registry import BACKBONES, METHODS

HPARAMS = {
    "stego": {"dim": 5, "self_shift": 0.1, "knn_shift": 0.1, "rand_shift": 0.1, "self_weight": 1, "knn_weight": 1,
              "rand_weight": 1},
    "hp": {"dim": 5, "pool_size": 4},
    "ppap": {"phi0": 0.5, "psi0": 0.2, "sigma_pos": 3, "sigma_amb": 3, "prop_steps": 1, "tau": 0.8, "patch_split": 4,
             "lr": 1e-3},
}


def build(method, n_classes=6):
    ctx = MethodContext(dataset="synthetic", backbone_name="vit-s8", n_classes=n_classes, batch_size=2,
                        total_steps=1, steps_per_epoch=1, train_res=32)
    model = METHODS.get(method)(BACKBONES.get("vit-s8").build(random_init=True), n_classes, HPARAMS[method], ctx)
    return model, Probes(model.embed_dim, n_classes)


def vit_state(seed):
    torch.manual_seed(seed)
    vit = BACKBONES.get("vit-s8").build(random_init=True).vit
    return {k: v.clone() for k, v in vit.state_dict().items()}


def conv(o, i, seed):
    g = torch.Generator().manual_seed(seed)
    return {"weight": torch.randn(o, i, 1, 1, generator=g), "bias": torch.randn(o, generator=g)}


def official_head(prefix1, prefix2, dim, seed):
    """STEGO/HP DinoFeaturizer names: clusterX.0 = linear branch, clusterX.{0,2} = 1x1-ReLU-1x1 branch."""
    out = {f"{prefix1}.0.{k}": v for k, v in conv(dim, 384, seed).items()}
    out.update({f"{prefix2}.0.{k}": v for k, v in conv(384, 384, seed + 1).items()})
    out.update({f"{prefix2}.2.{k}": v for k, v in conv(dim, 384, seed + 2).items()})
    return out


def probes_state(dim, n_classes=6):
    return ({"weight": torch.randn(n_classes, dim, 1, 1), "bias": torch.randn(n_classes)},
            {"clusters": torch.randn(n_classes, dim)})


def test_stego_lightning_checkpoint_with_unknown_pickled_config(tmp_path):
    net = {f"model.{k}": v for k, v in vit_state(3).items()}
    net.update(official_head("cluster1", "cluster2", 5, 10))
    linear, cluster = probes_state(5)
    state = {f"net.{k}": v for k, v in net.items()}
    state.update({"linear_probe.weight": linear["weight"], "linear_probe.bias": linear["bias"],
                  "cluster_probe.clusters": cluster["clusters"], "train_cluster_probe.clusters": torch.randn(6, 5),
                  "decoder.weight": torch.randn(384, 5, 1, 1), "decoder.bias": torch.randn(384)})
    # Lightning pickles the hydra/omegaconf config; emulate a class whose package is not installed.
    fake = types.ModuleType("fake_omegaconf")

    class DictConfig:
        def __init__(self, content):
            self.content = content

    DictConfig.__module__ = "fake_omegaconf"
    DictConfig.__qualname__ = "DictConfig"
    fake.DictConfig = DictConfig
    sys.modules["fake_omegaconf"] = fake
    try:
        torch.save({"state_dict": state, "hyper_parameters": {"cfg": DictConfig({"dim": 5})}}, tmp_path / "s.ckpt")
    finally:
        del sys.modules["fake_omegaconf"]
    ckpt = read_official(tmp_path / "s.ckpt", "stego")
    assert infer_settings(ckpt) == {"dim": 5, "n_classes": 6, "backbone": "vit-s8"}
    assert sorted(ckpt.ignored) == ["decoder.bias", "decoder.weight", "train_cluster_probe.clusters"]
    model, probes = build("stego")
    info = import_checkpoint(model, probes, ckpt)
    assert info["backbone_from_checkpoint"] and info["sha256"] == sha256(tmp_path / "s.ckpt")
    assert torch.equal(model.head.linear_branch.weight, net["cluster1.0.weight"])
    assert torch.equal(model.head.nonlinear_branch[2].bias, net["cluster2.2.bias"])
    assert torch.equal(model.backbone.vit.blocks[3].attn.qkv.weight, net["model.blocks.3.attn.qkv.weight"])
    assert torch.equal(probes.linear.conv.weight, linear["weight"])
    assert torch.equal(probes.cluster.centroids, cluster["clusters"])


def test_hp_pth_checkpoint(tmp_path):
    net = {f"model.{k}": v for k, v in vit_state(4).items()}
    net.update(official_head("cluster1", "cluster2", 5, 20))
    net.update(official_head("ema_model1", "ema_model2", 5, 30))
    linear, cluster = probes_state(5)
    torch.save({"net_model_state_dict": net, "linear_model_state_dict": linear, "cluster_model_state_dict": cluster,
                "epoch": 2}, tmp_path / "ckpt.pth")
    model, probes = build("hp")
    import_checkpoint(model, probes, tmp_path)  # a run directory: ckpt.pth is found
    assert torch.equal(model.ema_head.nonlinear_branch[0].weight, net["ema_model2.0.weight"])
    assert torch.equal(model.head.linear_branch.bias, net["cluster1.0.bias"])
    assert torch.equal(probes.linear.conv.bias, linear["bias"])


def ppap_net(seed=5):
    vit = vit_state(seed)
    net = {f"model.{k}": v for k, v in vit.items()}
    net.update({f"decoder.{k[len('blocks.11.'):]}": v + 1 for k, v in vit.items() if k.startswith("blocks.11.")})
    net.update({"project_head.weight": torch.randn(384, 384), "project_head.bias": torch.randn(384)})
    return net


def test_ppap_best_pth_is_found_when_ckpt_pth_is_absent(tmp_path):
    net = ppap_net()
    linear, cluster = probes_state(384)
    torch.save({"net_model_state_dict": net, "linear_model_state_dict": linear, "cluster_model_state_dict": cluster},
               tmp_path / "best.pth")
    assert find_checkpoint(tmp_path).name == "best.pth"
    model, probes = build("ppap")
    import_checkpoint(model, probes, tmp_path)
    assert torch.equal(model.block.mlp.fc1.weight, net["decoder.mlp.fc1.weight"])
    assert torch.equal(model.projection.weight, net["project_head.weight"])
    assert not torch.equal(model.block.mlp.fc1.weight, model.backbone.vit.blocks[11].mlp.fc1.weight)


def test_a_checkpoint_that_does_not_fit_lists_missing_and_unexpected_keys(tmp_path):
    net = ppap_net()
    del net["decoder.attn.proj.bias"]
    net["decoder.extra_layer.weight"] = torch.zeros(3)
    linear, cluster = probes_state(384)
    torch.save({"net_model_state_dict": net, "linear_model_state_dict": linear, "cluster_model_state_dict": cluster},
               tmp_path / "bad.pth")
    model, probes = build("ppap")
    with pytest.raises(CheckpointMismatchError) as err:
        import_checkpoint(model, probes, tmp_path / "bad.pth")
    message = str(err.value)
    assert "missing keys (1): block.attn.proj.bias" in message
    assert "unexpected keys (1): block.extra_layer.weight" in message
    # an HP file given to STEGO: the EMA keys are unexpected
    hp_net = {f"model.{k}": v for k, v in vit_state(6).items()}
    hp_net.update(official_head("cluster1", "cluster2", 5, 1))
    hp_net.update(official_head("ema_model1", "ema_model2", 5, 2))
    torch.save({"net_model_state_dict": hp_net, "linear_model_state_dict": linear,
                "cluster_model_state_dict": cluster}, tmp_path / "hp.pth")
    model, _ = build("stego")
    with pytest.raises(CheckpointMismatchError, match=r"unexpected keys \(6\): ema_model1.0.bias"):
        import_checkpoint(model, None, tmp_path / "hp.pth")


def test_eval_command_writes_a_record_with_the_checkpoint_and_its_hash(tmp_path):
    from uss_bench.cli import main

    net = {f"model.{k}": v for k, v in vit_state(7).items()}
    net.update(official_head("cluster1", "cluster2", 5, 40))
    linear, cluster = probes_state(5)
    state = {f"net.{k}": v for k, v in net.items()}
    state.update({"linear_probe.weight": linear["weight"], "linear_probe.bias": linear["bias"],
                  "cluster_probe.clusters": cluster["clusters"]})
    path = tmp_path / "stego.ckpt"
    torch.save({"state_dict": state}, path)
    args = ["eval", "--method", "stego", "--checkpoint", str(path), "--dataset", "synthetic", "--preset", "smoke",
            "--results", str(tmp_path / "r"), "--data-root", str(tmp_path / "d"), "--set", "protocol.crf=false"]
    assert main(args) == 0
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "r" / "runs").glob("*.json")]
    assert record["status"] == "completed"
    assert record["spec"]["overrides"]["checkpoint.sha256"] == sha256(path)
    assert record["spec"]["overrides"]["checkpoint.path"] == str(path.resolve())
    assert record["spec"]["overrides"]["hparams.dim"] == 5 and record["spec"]["backbone"] == "vit-s8"
    assert record["protocol"]["name"] == "stego" and record["protocol"]["flip_tta"] is True
    assert 0 <= record["metrics"]["cluster"]["acc"] <= 100 and record["train"]["steps"] == 0
    # a 27-class checkpoint on a 6-class dataset is refused
    state["linear_probe.weight"] = torch.randn(27, 5, 1, 1)
    torch.save({"state_dict": state}, path)
    assert main(args) == 2


# ---- a checkpoint is untrusted input: loading never runs code from the file ----------------------------


class _TouchMarker:
    """Pickles as a call ``os.system("touch <marker>")`` (a REDUCE of os.system)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


class _SetStateMarker:
    """An importable class whose ``__setstate__`` would write the marker if the loader resolved it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __getstate__(self):
        return {"marker": self.marker}

    def __setstate__(self, state):
        with open(state["marker"], "w") as fh:
            fh.write("ran")


class _EvalCall:
    """A REDUCE of builtins.eval with code that imports os and writes the marker."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"__import__('os').system('touch {self.marker}')",))


def stego_state(seed=8):
    net = {f"model.{k}": v for k, v in vit_state(seed).items()}
    net.update(official_head("cluster1", "cluster2", 5, 50))
    linear, cluster = probes_state(5)
    state = {f"net.{k}": v for k, v in net.items()}
    state.update({"linear_probe.weight": linear["weight"], "linear_probe.bias": linear["bias"],
                  "cluster_probe.clusters": cluster["clusters"]})
    return state


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("payload", [_TouchMarker, _SetStateMarker, _EvalCall])
def test_a_crafted_checkpoint_runs_no_code_and_still_loads_its_state_dict(tmp_path, payload, legacy):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": stego_state(), "hyper_parameters": {"cfg": payload(marker)}}, path,
               _use_new_zipfile_serialization=not legacy)
    ckpt = read_official(path, "stego")
    assert not marker.exists()
    assert infer_settings(ckpt) == {"dim": 5, "n_classes": 6, "backbone": "vit-s8"}


@pytest.mark.parametrize("payload", [_TouchMarker, _SetStateMarker])
def test_a_file_that_is_only_a_payload_is_refused_naming_the_file(tmp_path, payload):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save(payload(marker), path)
    with pytest.raises(CheckpointMismatchError, match=r"evil\.pth: expected a STEGO Lightning \.ckpt"):
        read_official(path, "stego")
    assert not marker.exists()


def test_the_legacy_header_pickle_is_read_by_the_safe_loader_too(tmp_path):
    """The legacy format starts with plain pickles (magic number, ...) that torch reads with pickle_module.load."""
    import pickle

    marker = tmp_path / "marker"
    path = tmp_path / "header.pt"
    path.write_bytes(pickle.dumps(_TouchMarker(marker)) + b"\x00" * 64)
    with pytest.raises(CheckpointReadError, match=r"header\.pt: not a readable PyTorch checkpoint"):
        read_official(path, "stego")
    assert not marker.exists()


def test_random_bytes_are_one_error_naming_the_file(tmp_path):
    path = tmp_path / "noise.ckpt"
    path.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(CheckpointReadError) as err:
        read_official(path, "stego")
    assert str(err.value).startswith(f"{path}: not a readable PyTorch checkpoint (")
    assert "\n" not in str(err.value)


def test_omegaconf_like_config_keeps_its_values_as_inert_data(tmp_path):
    """An importable config class (here an OrderedDict subclass from this module) is stubbed, its state kept."""
    path = tmp_path / "cfg.ckpt"
    cfg = _SetStateMarker(tmp_path / "never")
    torch.save({"state_dict": stego_state(), "hyper_parameters": cfg}, path)
    raw = read_raw(path)
    stub = raw["hyper_parameters"]
    assert isinstance(stub, InertGlobal) and stub.state == {"marker": str(tmp_path / "never")}
    assert not (tmp_path / "never").exists()
    assert torch.equal(raw["state_dict"]["linear_probe.bias"], stego_state()["linear_probe.bias"])
