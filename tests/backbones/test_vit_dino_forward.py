"""The DINO ViTs give DINO's own forward (facebookresearch/dino ``vision_transformer.py``).

The reference below is written from DINO's description, not from the harness: ImageNet
normalisation, a stride-p patch conv, [CLS] first, DINO's position rule (stored table only for the
trained patch count on a square image; else a bicubic resize of the stored grid with scale factor
(n + 0.1) / sqrt(N), align_corners False, no antialias), pre-norm blocks with (q @ k^T) * scale
attention, and the final LayerNorm. Everything runs in float64 so "equal" means equal to ~1e-10.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from uss_bench.registry import BACKBONES

MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)


def dino_position_table(pos_embed: torch.Tensor, image_h: int, image_w: int, patch: int) -> torch.Tensor:
    """DINO: ``B, nc, w, h = x.shape`` (so its "w" is the row count), w0 = w // p, h0 = h // p."""
    n = pos_embed.shape[1] - 1
    w0, h0 = image_h // patch, image_w // patch
    if w0 * h0 == n and image_h == image_w:
        return pos_embed
    side = math.sqrt(n)
    grid = pos_embed[0, 1:].reshape(int(side), int(side), -1).permute(2, 0, 1)[None]
    grid = F.interpolate(grid, scale_factor=((w0 + 0.1) / side, (h0 + 0.1) / side), mode="bicubic",
                         align_corners=False, antialias=False)
    assert grid.shape[-2:] == (w0, h0)
    return torch.cat([pos_embed[:, :1], grid[0].permute(1, 2, 0).reshape(1, w0 * h0, -1)], dim=1)


def dino_prepare_tokens(vit, images: torch.Tensor, patch: int) -> torch.Tensor:
    x = (images - MEAN) / STD
    x = F.conv2d(x, vit.patch_embed.proj.weight, vit.patch_embed.proj.bias, stride=patch)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    return x + dino_position_table(vit.pos_embed, images.shape[-2], images.shape[-1], patch)


def dino_block(block, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One DINO block; also returns its pre-softmax attention (q @ k^T) * scale."""
    b, n, c = x.shape
    heads = block.attn.num_heads
    y = F.layer_norm(x, (c,), block.norm1.weight, block.norm1.bias, eps=1e-6)
    qkv = F.linear(y, block.attn.qkv.weight, block.attn.qkv.bias)
    q, k, v = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    logits = (q @ k.transpose(-2, -1)) * (c // heads) ** -0.5
    y = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
    x = x + F.linear(y, block.attn.proj.weight, block.attn.proj.bias)
    y = F.layer_norm(x, (c,), block.norm2.weight, block.norm2.bias, eps=1e-6)
    y = F.gelu(F.linear(y, block.mlp.fc1.weight, block.mlp.fc1.bias))
    y = F.linear(y, block.mlp.fc2.weight, block.mlp.fc2.bias)
    return x + y, logits


def dino_forward(vit, images: torch.Tensor, patch: int):
    x = dino_prepare_tokens(vit, images, patch)
    for block in vit.blocks[:-1]:
        x, _ = dino_block(block, x)
    penultimate = x
    x, attn = dino_block(vit.blocks[-1], x)
    x = F.layer_norm(x, (x.shape[-1],), vit.norm.weight, vit.norm.bias, eps=1e-6)
    return x[:, 1:], attn, penultimate


@functools.cache  # building a ViT-B with random init is the slow part
def _model(name: str, depth: int | None = None):
    torch.manual_seed(0)
    model = BACKBONES.get(name).build(random_init=True).double()
    if depth is not None:  # the position rule does not depend on depth; fewer blocks keep the test fast
        model.vit.blocks = model.vit.blocks[:depth]
    with torch.no_grad():  # a visibly non-constant table, so a wrong resize cannot hide
        model.vit.pos_embed.normal_(0, 1.0)
    return model


SIZES = [(224, 224), (320, 320), (448, 448), (224, 320), (320, 224)]


@pytest.mark.parametrize(("name", "depth", "size"), [
    ("vit-s16", None, (224, 320)),  # the whole 12-block stack once
    ("vit-s16", 1, (224, 224)),
    ("vit-s16", 1, (320, 320)),
    ("vit-s16", 1, (448, 448)),
    ("vit-s8", 1, (224, 320)),
    ("vit-s8", 1, (320, 320)),
    ("vit-b16", 1, (320, 224)),
    ("vit-b8", 1, (224, 224)),
])
def test_patch_tokens_attention_and_penultimate_equal_dino(name, depth, size):
    model = _model(name, depth)
    torch.manual_seed(1)
    images = torch.rand(1, 3, *size, dtype=torch.float64)
    feats = model(images, attn=True, penultimate=True)
    tokens, attn, penultimate = dino_forward(model.vit, images, model.patch_size)
    h, w = size[0] // model.patch_size, size[1] // model.patch_size
    assert feats.patch.shape == (1, model.dim, h, w)
    assert torch.allclose(feats.patch.flatten(2).transpose(1, 2), tokens, rtol=0, atol=1e-9)
    assert torch.allclose(feats.attn_logits, attn, rtol=0, atol=1e-9)
    assert torch.allclose(feats.penultimate, penultimate, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ["vit-s8", "vit-s16", "vit-b8", "vit-b16"])
@pytest.mark.parametrize("size", SIZES + [(224, 230), (330, 321)])
def test_input_tokens_equal_dino_for_every_arch_and_size(name, size):
    # (224, 230): DINO's patch count equals the trained one but the image is not square, so it
    # still resizes the table (with a scale factor of 1 + 0.1/sqrt(N), which is not the identity).
    model = _model(name, 1)
    torch.manual_seed(2)
    images = torch.rand(1, 3, *size, dtype=torch.float64)
    p = model.patch_size
    ours = model.tokens(((images - MEAN) / STD)[..., : size[0] // p * p, : size[1] // p * p],
                        square_input=size[0] == size[1])
    assert torch.allclose(ours, dino_prepare_tokens(model.vit, images, p), rtol=0, atol=1e-12)


def test_trained_size_uses_the_stored_table_and_other_sizes_do_not():
    model = _model("vit-s16", 1)
    pos = model.vit.pos_embed
    table = dino_position_table(pos, 224, 224, 16)
    assert table is pos
    nonsquare = dino_position_table(pos, 224, 230, 16)
    assert nonsquare.shape == pos.shape and not torch.allclose(nonsquare, pos, atol=1e-3)
    # the scale-factor resize is not timm's exact-size antialiased resample: 320 px differs visibly
    from timm.layers import resample_abs_pos_embed

    timm_table = resample_abs_pos_embed(pos, new_size=(20, 20), old_size=(14, 14), num_prefix_tokens=1)
    assert (dino_position_table(pos, 320, 320, 16) - timm_table).abs().max() > 1e-2
