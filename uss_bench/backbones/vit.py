"""DINO ViTs through timm, loaded from the official DINO checkpoint files.

The official files hold plain ``VisionTransformer`` state dicts whose key names are timm's, so
they load with ``strict=True``. Weights are read from ``--weights-dir`` / ``USS_BENCH_WEIGHTS``;
nothing is downloaded.

Position embeddings follow DINO's own ``VisionTransformer.interpolate_pos_encoding``
(facebookresearch/dino ``vision_transformer.py``, vendored unchanged by STEGO, HP and PPAP), not
timm's ``resample_abs_pos_embed`` (exact target size, antialiased): see :func:`dino_pos_embed`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from uss_bench.backbones.weights import (
    Expected,
    WeightsFileError,
    expected_problem,
    load_weights_file,
    missing_weights,
    weights_file_problem,
)
from uss_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from uss_bench.registry import BACKBONES

DINO_URL = "https://dl.fbaipublicfiles.com/dino/"


class MissingWeightsError(FileNotFoundError):
    """A weights file is not where it should be; the message says where it comes from."""


@dataclass(frozen=True)
class ViTSpec:
    name: str
    timm_arch: str
    patch_size: int
    dim: int
    weights_file: str  # official DINO file name (reference §0.6: S/8 is the 300-epoch file)

    @property
    def weights_url(self) -> str:
        stem = self.weights_file.removesuffix(".pth")
        return f"{DINO_URL}{stem}/{self.weights_file}"

    def weights_path(self, weights_dir: Path | None) -> Path | None:
        return None if weights_dir is None else Path(weights_dir) / self.weights_file

    def missing_weights(self, weights_dir: Path | None,
                        alternative: str = "or pass --random-init for a smoke run") -> str | None:
        return missing_weights("DINO", self.name, weights_dir, self.weights_file, self.weights_url, alternative)

    def expected_keys(self) -> Expected:
        """Tensors that identify this ViT in an official DINO file (depth 12 for S and B)."""
        d, p = self.dim, self.patch_size
        return {"cls_token": None, "pos_embed": None, "patch_embed.proj.weight": (d, 3, p, p),
                "blocks.11.attn.qkv.weight": (3 * d, d), "norm.weight": (d,)}

    def weights_problem(self, weights_dir: Path | None,
                        alternative: str = "or pass --random-init for a smoke run") -> str | None:
        """Missing, unreadable or not this ViT: the one line to show before anything starts; None if usable."""
        missing = self.missing_weights(weights_dir, alternative)
        if missing:
            return missing
        return weights_file_problem(self.weights_path(weights_dir), f"DINO {self.name}", self.expected_keys(),
                                    prepare=plain_dino_state)

    def build(self, weights_dir: Path | None = None, random_init: bool = False) -> DinoViT:
        return DinoViT(self, weights_dir=weights_dir, random_init=random_init)


@dataclass
class Features:
    patch: torch.Tensor  # [B, D, h, w] last block output after the final norm, CLS dropped
    attn_logits: torch.Tensor | None = None  # [B, heads, 1+hw, 1+hw] last block q.k^T*scale, pre-softmax
    penultimate: torch.Tensor | None = None  # [B, 1+hw, D] block L-1 output tokens (before the last block)


def plain_dino_state(state: dict) -> dict:
    """Official file contents -> plain backbone state dict; a DINO *training* checkpoint gives its teacher."""
    if "teacher" in state:
        state = state["teacher"]
        if not isinstance(state, dict):
            raise WeightsFileError(f"the DINO checkpoint's 'teacher' entry is a {type(state).__name__}, not a dict")
    state = {str(k).removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    return {k: v for k, v in state.items() if not k.startswith("head.")}


def dino_pos_embed(pos_embed: torch.Tensor, rows: int, cols: int, square_input: bool) -> torch.Tensor:
    """DINO's position embedding for a ``rows`` x ``cols`` patch grid: [1, 1+N, D] -> [1, 1+rows*cols, D].

    The stored embedding is used as it is only when the patch count equals the trained one *and* the
    input image is square (``square_input``: pixel height == pixel width, before the patch conv drops
    any remainder). Otherwise the stored [1, D, sqrt(N), sqrt(N)] grid is resized bicubically
    (align_corners False, no antialias) with ``scale_factor = ((rows + 0.1) / sqrt(N), (cols + 0.1) /
    sqrt(N))``: the +0.1 makes the output size floor to rows x cols, and because a scale factor is
    given the kernel samples at (i + 0.5) / scale - 0.5, not at the exact in/out ratio. Recomputed
    on every call, as DINO does on every forward.
    """
    n_trained = pos_embed.shape[1] - 1
    if rows * cols == n_trained and square_input:
        return pos_embed
    side = math.sqrt(n_trained)
    grid = pos_embed[:, 1:].reshape(1, int(side), int(side), -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((rows + 0.1) / side, (cols + 0.1) / side), mode="bicubic")
    if grid.shape[-2:] != (rows, cols):  # DINO asserts the same
        raise RuntimeError(f"position grid resized to {tuple(grid.shape[-2:])}, expected {(rows, cols)}")
    patch_pos = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
    return torch.cat((pos_embed[:, :1], patch_pos), dim=1)


def load_dino_state_dict(path: Path, spec: ViTSpec | None = None) -> dict[str, torch.Tensor]:
    """Official file -> plain backbone state dict; unreadable or foreign files are one WeightsFileError."""
    what = f"DINO {spec.name}" if spec else "DINO"
    try:
        state = plain_dino_state(load_weights_file(path, what))
    except WeightsFileError as exc:
        raise WeightsFileError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from exc
    if spec is not None:
        problem = expected_problem(state, spec.expected_keys(), path, what)
        if problem:
            raise WeightsFileError(problem)
    return state


class DinoViT(nn.Module):
    """A frozen-by-default DINO ViT exposing patch features, last-block attention and penultimate tokens."""

    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, spec: ViTSpec, weights_dir: Path | None = None, random_init: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.patch_size = spec.patch_size
        self.dim = spec.dim
        self.random_init = random_init
        self.vit = timm.create_model(spec.timm_arch, pretrained=False, num_classes=0, dynamic_img_size=True)
        if self.vit.no_embed_class or self.vit.num_reg_tokens or self.vit.cls_token is None:
            raise ValueError(f"{spec.timm_arch} is not a DINO-layout ViT ([CLS] + patches, one position table)")
        if not random_init:
            problem = spec.missing_weights(weights_dir)
            if problem:
                raise MissingWeightsError(problem)
            state = load_dino_state_dict(spec.weights_path(weights_dir), spec)
            self.vit.load_state_dict(state, strict=True)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> DinoViT:
        # The backbone stays in eval mode whatever its parent does (reference §1c).
        return super().train(False)

    def forward(self, images: torch.Tensor, attn: bool = False, penultimate: bool = False) -> Features:
        """images: float [B,3,H,W] in [0,1]; H and W are cropped down to multiples of the patch size."""
        p = self.patch_size
        h, w = images.shape[-2] // p, images.shape[-1] // p
        x = normalize(images[..., : h * p, : w * p], self.mean, self.std)
        x = self.tokens(x, square_input=images.shape[-2] == images.shape[-1])
        vit = self.vit
        for block in vit.blocks[:-1]:
            x = block(x)
        before_last = x
        last = vit.blocks[-1]
        attn_logits = self.attention_logits(last, before_last) if attn else None
        x = vit.norm(last(before_last))
        tokens = x[:, vit.num_prefix_tokens :]
        patch = tokens.transpose(1, 2).reshape(x.shape[0], self.dim, h, w)
        return Features(patch=patch, attn_logits=attn_logits, penultimate=before_last if penultimate else None)

    def tokens(self, x: torch.Tensor, square_input: bool) -> torch.Tensor:
        """DINO's ``prepare_tokens``: patch embedding, [CLS] first, then its position embedding added."""
        vit = self.vit
        patches = vit.patch_embed(x)  # [B, rows, cols, D] (timm's dynamic-size NHWC output)
        b, rows, cols, dim = patches.shape
        x = torch.cat((vit.cls_token.expand(b, -1, -1), patches.reshape(b, rows * cols, dim)), dim=1)
        x = x + dino_pos_embed(vit.pos_embed, rows, cols, square_input)
        return vit.norm_pre(vit.pos_drop(x))

    @staticmethod
    def attention_logits(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        a = block.attn
        b, n, _ = x.shape
        qkv = a.qkv(block.norm1(x)).reshape(b, n, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
        q, k = a.q_norm(qkv[0]), a.k_norm(qkv[1])
        return (q * a.scale) @ k.transpose(-2, -1)

    def prefix_tokens(self) -> int:
        return self.vit.num_prefix_tokens


VIT_SPECS = [
    ViTSpec("vit-s8", "vit_small_patch8_224", 8, 384, "dino_deitsmall8_300ep_pretrain.pth"),
    ViTSpec("vit-s16", "vit_small_patch16_224", 16, 384, "dino_deitsmall16_pretrain.pth"),
    ViTSpec("vit-b8", "vit_base_patch8_224", 8, 768, "dino_vitbase8_pretrain.pth"),
    ViTSpec("vit-b16", "vit_base_patch16_224", 16, 768, "dino_vitbase16_pretrain.pth"),
]
for _spec in VIT_SPECS:
    BACKBONES.add(_spec.name, _spec)
