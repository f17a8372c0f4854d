import pytest
import timm
import torch

from uss_bench.backbones.vit import MissingWeightsError
from uss_bench.data.transforms import normalize
from uss_bench.registry import BACKBONES


def _official_like_state(arch: str) -> dict:
    # The official DINO files are plain VisionTransformer state dicts with timm's key names and no head.
    torch.manual_seed(1)
    return timm.create_model(arch, pretrained=False, num_classes=0).state_dict()


def test_missing_weights_error_names_file_and_source(tmp_path):
    spec = BACKBONES.get("vit-s8")
    with pytest.raises(MissingWeightsError) as info:
        spec.build(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "dino_deitsmall8_300ep_pretrain.pth") in message
    url = "https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_300ep_pretrain/dino_deitsmall8_300ep_pretrain.pth"
    assert url in message


@pytest.mark.parametrize("wrap", [False, True])
def test_loads_official_file_and_dino_training_checkpoint(tmp_path, wrap):
    spec = BACKBONES.get("vit-s16")
    state = _official_like_state("vit_small_patch16_224")
    payload = {"teacher": {f"backbone.{k}": v for k, v in state.items()}} if wrap else state
    torch.save(payload, tmp_path / "dino_deitsmall16_pretrain.pth")
    model = spec.build(tmp_path)
    for key, value in state.items():
        assert torch.equal(model.vit.state_dict()[key], value)


def test_features_match_timm_and_expose_attention_and_penultimate():
    torch.manual_seed(0)
    model = BACKBONES.get("vit-s16").build(random_init=True)
    images = torch.rand(2, 3, 48, 64)
    feats = model(images, attn=True, penultimate=True)
    assert feats.patch.shape == (2, 384, 3, 4)
    assert feats.attn_logits.shape == (2, 6, 13, 13)
    assert feats.penultimate.shape == (2, 13, 384)
    # timm's own forward equals DINO's only at the trained size on a square image (timm resamples the
    # position table differently elsewhere; tests/backbones/test_vit_dino_forward.py checks DINO's rule)
    square = torch.rand(1, 3, 224, 224)
    tokens = model.vit.forward_features(normalize(square))[:, 1:]
    assert torch.allclose(model(square).patch.flatten(2).transpose(1, 2), tokens, atol=1e-5)
    # the attention logits are pre-softmax: the last block's attention = softmax of them
    assert not torch.allclose(feats.attn_logits.softmax(-1).sum(-1), feats.attn_logits.sum(-1))


def test_backbone_is_frozen_and_stays_in_eval_mode():
    model = BACKBONES.get("vit-s16").build(random_init=True)
    model.train()
    assert not model.training and not any(p.requires_grad for p in model.parameters())
