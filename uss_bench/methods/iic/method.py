"""IIC: Invariant Information Clustering for segmentation (Ji, Henriques, Vedaldi, ICCV 2019; xu-ji/IIC).

1. Input stage. COCO: the colour channels plus two Sobel channels of the grey image (5 channels; the
   official code reads images with OpenCV, so the colour channels are BGR and the grey image is
   OpenCV's RGB2GRAY applied to the BGR array, option ``bgr``). Training pairs are uint8 arrays in the
   official code, so their grey image is cv2's fixed-point uint8 grey (option ``grey``); evaluation
   images are float32 there, so their grey stays a float. Potsdam: RGB + IR, no Sobel.
2. Paired views. img2 = horizontal-flip(colour-jitter(img1)); both from the same random crop. The
   official jitter runs on the BGR array as if it were RGB (option ``jitter_bgr_as_rgb``).
3. Network. SegmentationNet10a trunk (``vgg-iic``) and two heads of 1x1 convs (padding 1, no bias) +
   softmax, bilinearly upsampled to the input size: head A over-clusters (K_A), head B has K_B =
   number of classes. Each head may have several sub-heads; the loss averages over them.
4. Objective. The uncollapsed IID loss over a (2d+1)^2 window of displacements between phi(img1) and
   the un-flipped phi(img2) (uss_bench/methods/iic/loss.py), with a lambda weighting of the marginals.
5. Schedule. Heads alternate per pass over the data: A then B, as segmentation_twohead.py does
   (B then A with ``head_B_first``).
Evaluation: argmax of head B (sub-head ``eval_sub_head``) via the ``cluster_logits`` hook; the probes
see the trunk features.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from uss_bench.methods.base import MethodAdapter, MethodContext
from uss_bench.methods.iic.loss import iid_segmentation_loss
from uss_bench.registry import BACKBONES, METHODS

SOBEL_X = ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0))
SOBEL_Y = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # OpenCV RGB2GRAY on float32 images (first channel weighted as R)
# cv2.cvtColor(uint8, RGB2GRAY) in fixed point: (weights, shift), grey = (w . rgb + 2^(shift-1)) >> shift.
# OpenCV 3.x (IIC's environment, opencv 3.4) uses Q14; OpenCV >= 4.0 uses Q15 (opencv PR #13440).
GREY_FIXED_POINT = {"opencv3": ((4899, 9617, 1868), 14), "opencv4": ((9798, 19235, 3735), 15)}
GREY_RULES = (*GREY_FIXED_POINT, "float")
INPUTS = {"rgb_sobel": (3, 5), "rgbir": (4, 4)}  # mode -> (channels in the sample, channels into the net)


def grey_uint8(colour: torch.Tensor, rule: str) -> torch.Tensor:
    """cv2 RGB2GRAY of a uint8 image: ``colour`` holds integer levels 0..255 [B, 3, H, W] (any dtype)."""
    (w0, w1, w2), shift = GREY_FIXED_POINT[rule]
    c = colour.to(torch.int64)
    return (w0 * c[:, 0:1] + w1 * c[:, 1:2] + w2 * c[:, 2:3] + (1 << (shift - 1))) >> shift


class InputStage(nn.Module):
    """Sample channels -> network channels (colour [+ IR] [+ Sobel x, y]); values stay in [0, 1] scale."""

    def __init__(self, mode: str, bgr: bool, grey: str = "opencv3") -> None:
        super().__init__()
        if mode not in INPUTS:
            raise ValueError(f"iic: input must be one of {sorted(INPUTS)}, got {mode!r}")
        if grey not in GREY_RULES:
            raise ValueError(f"iic: grey must be one of {list(GREY_RULES)}, got {grey!r}")
        self.mode, self.bgr, self.grey = mode, bgr, grey
        self.register_buffer("sobel", torch.tensor([[SOBEL_X], [SOBEL_Y]]), persistent=False)

    @property
    def out_channels(self) -> int:
        return INPUTS[self.mode][1]

    def forward(self, images: torch.Tensor, uint8_pair: bool = False) -> torch.Tensor:
        """``uint8_pair``: a training pair, whose grey the official code rounds to uint8 (cv2) first."""
        want = INPUTS[self.mode][0]
        if images.shape[1] != want:
            hint = " (build Potsdam with channels=rgbir)" if self.mode == "rgbir" else ""
            raise ValueError(f"iic: input {self.mode!r} needs {want}-channel images, got {images.shape[1]}{hint}")
        colour = images[:, [2, 1, 0]] if self.bgr else images[:, :3]
        if self.mode == "rgbir":
            return torch.cat([colour, images[:, 3:4]], 1)
        # grey from channel order as stored (OpenCV's RGB2GRAY on a BGR array when bgr=True)
        if uint8_pair and self.grey != "float":
            levels = (colour * 255.0).round().clamp(0, 255)
            grey = grey_uint8(levels, self.grey).to(colour.dtype) / 255.0
        else:
            grey = sum(w * colour[:, i : i + 1] for i, w in enumerate(GREY_WEIGHTS))
        return torch.cat([colour, F.conv2d(grey, self.sobel, padding=1)], 1)


class ClusterHead(nn.Module):
    """Sub-heads of 1x1 conv (padding 1 as in IIC: a zero-logit border) + softmax."""

    def __init__(self, in_dim: int, k: int, sub_heads: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(in_dim, k, 1, padding=1, bias=False) for _ in range(sub_heads))
        for conv in self.convs:
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, feats: torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor]:
        return [F.interpolate(F.softmax(conv(feats), dim=1), size=size, mode="bilinear", align_corners=False)
                for conv in self.convs]


@METHODS.register("iic")
class IIC(MethodAdapter):
    name = "iic"
    backbone_family = "own"
    supported_backbones = ("vgg-iic",)

    def __init__(self, backbone: nn.Module | None, n_classes: int, hparams: dict[str, Any],
                 context: MethodContext) -> None:
        super().__init__(None, n_classes, hparams, context)
        self.inputs = InputStage(str(self.hparam("input")), bool(self.hparam("bgr")), str(self.hparam("grey")))
        self.trunk = BACKBONES.get(context.backbone_name).build(
            in_channels=self.inputs.out_channels, width=float(self.hparam("width")),
            batchnorm_track=bool(self.hparam("batchnorm_track")))
        k_b = self.hparams.get("output_k_B") or n_classes
        if int(k_b) != n_classes:
            raise ValueError(f"iic: output_k_B ({k_b}) must equal the number of classes ({n_classes}), as IIC asserts")
        k_a = self.hparams.get("output_k_A") or int(self.hparam("overcluster_factor")) * n_classes
        subs = int(self.hparam("num_sub_heads"))
        self.head_a = ClusterHead(self.trunk.dim, int(k_a), subs)
        self.head_b = ClusterHead(self.trunk.dim, int(k_b), subs)
        self.jitter = v2.ColorJitter(*[float(v) for v in self.hparam("jitter")])  # brightness, contrast, sat., hue

    @classmethod
    def dataset_options(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        # Potsdam's 4th (IR) channel is part of IIC's input there
        return {"channels": "rgbir"} if hparams.get("input") == "rgbir" else {}

    # ---- features ---------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        return self.trunk.dim

    def _trunk(self, images: torch.Tensor, uint8_pair: bool = False) -> torch.Tensor:
        return self.trunk(self.inputs(images, uint8_pair))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        # The zero border the heads' padding=1 adds, so head logits on the upsampled code are the
        # official logits upsampled (1x1 conv without bias commutes with bilinear resizing).
        return F.pad(self._trunk(images), (1, 1, 1, 1))

    def cluster_logits(self, code: torch.Tensor) -> torch.Tensor:
        conv = self.head_b.convs[int(self.hparam("eval_sub_head"))]
        return F.conv2d(code, conv.weight)

    # ---- training ---------------------------------------------------------------------------
    def head_for_step(self, step: int) -> str:
        """Heads alternate per pass over the data; official order A, B unless head_B_first."""
        order = ("B", "A") if self.hparam("head_B_first") else ("A", "B")
        return order[(step // max(1, self.context.steps_per_epoch)) % 2]

    def make_pair(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(img1, img2, flipped): a shared random crop; img2 = flip(jitter(img1)) per image."""
        if self.crops(images):
            c = int(self.hparams["crop_size"])
            h, w = images.shape[-2:]
            tops = torch.randint(0, h - c + 1, (images.shape[0],))
            lefts = torch.randint(0, w - c + 1, (images.shape[0],))
            images = torch.stack([im[:, t : t + c, l : l + c] for im, t, l in zip(images, tops, lefts)])
        img1 = images
        # jitter colour only (Potsdam: the IR channel is not jittered). The official code jitters the
        # OpenCV BGR array as a PIL RGB image: jitter the reversed channels, then restore the order.
        swap = self.inputs.bgr and bool(self.hparam("jitter_bgr_as_rgb"))
        order = [2, 1, 0] if swap else [0, 1, 2]
        jittered = torch.stack([self.jitter(im[order])[order] for im in img1])
        jittered = (jittered * 255.0).round() / 255.0  # the official jitter returns a uint8 image
        img2 = torch.cat([jittered, img1[:, 3:]], 1)
        flipped = torch.rand(images.shape[0]) < float(self.hparam("flip_p"))
        img2 = torch.where(flipped.to(img2.device)[:, None, None, None], img2.flip(-1), img2)
        return img1, img2, flipped

    def crops(self, images: torch.Tensor) -> bool:
        crop = self.hparams.get("crop_size")
        return bool(crop) and int(crop) < min(images.shape[-2:])

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        img1, img2, flipped = self.make_pair(batch["image"])
        head_name = self.head_for_step(step)
        head = self.head_a if head_name == "A" else self.head_b
        lamb = float(self.hparam("lamb_A" if head_name == "A" else "lamb_B"))
        feats1 = self._trunk(img1, uint8_pair=True)
        size = tuple(img1.shape[-2:])
        outs1 = head(feats1, size)
        outs2 = head(self._trunk(img2, uint8_pair=True), size)
        losses, no_lamb = [], []
        flip = flipped.to(img1.device)[:, None, None, None]
        for x1, x2 in zip(outs1, outs2):
            x2_inv = torch.where(flip, x2.flip(-1), x2)  # inverse of the flip: exact for grid_sample too
            loss, loss_nl = iid_segmentation_loss(x1, x2_inv, lamb, int(self.hparam("half_T_side_dense")),
                                                  collapsed=not bool(self.hparam("uncollapsed")))
            losses.append(loss)
            no_lamb.append(loss_nl)
        total = torch.stack(losses).mean()
        out = {"loss": total, f"iid_{head_name}": total.detach(), "iid_no_lamb": torch.stack(no_lamb).mean().detach()}
        if not self.crops(batch["image"]):  # a cropped code would not line up with the probes' labels
            out["code"] = F.pad(feats1.detach(), (1, 1, 1, 1))
        return out

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"name": "iic", "params": list(self.parameters()), "optimizer": "adam",
                 "lr": float(self.hparam("lr")), "weight_decay": 0.0, "clip": True}]
