"""Before/after figures for issue 11 §1, §2 and §2b: how far the old inputs were from the official ones.

Not a pytest-benchmark suite: a measurement script whose output the closing note quotes.

    PYTHONPATH=$PWD python benchmarks/fidelity_inputs.py vit      # §1 DINO position embeddings
    PYTHONPATH=$PWD python benchmarks/fidelity_inputs.py resize   # §2 nearest resize vs PIL
    PYTHONPATH=$PWD python benchmarks/fidelity_inputs.py crf      # §2b the image the CRF sees
    PYTHONPATH=$PWD python benchmarks/fidelity_inputs.py resize_speed  # gather vs PIL, ms per image+label

"Before" re-creates the previous code path (timm's resample_abs_pos_embed, torch NEAREST_EXACT,
the exact uint8 RGB image); "after" is the harness as it is now; "official" is the rule of the
official code, computed with PIL / torchvision as the official repos do.
"""

from __future__ import annotations

import sys

import numpy as np
import torch


def vit() -> None:
    from tests.backbones.test_vit_dino_forward import dino_forward
    from uss_bench.data.transforms import normalize
    from uss_bench.registry import BACKBONES

    for name in ("vit-s8", "vit-s16"):
        torch.manual_seed(0)
        model = BACKBONES.get(name).build(random_init=True).double()  # float64: "after" shows only round-off
        vit = model.vit
        for size in ((224, 320), (320, 320)):
            torch.manual_seed(1)
            images = torch.rand(1, 3, *size, dtype=torch.float64)
            with torch.no_grad():
                tokens, attn, pen = dino_forward(vit, images, model.patch_size)
                after = model(images, attn=True, penultimate=True)
                # before: timm's own dynamic-size path (resample_abs_pos_embed, antialiased, exact size)
                x = vit.norm_pre(vit._pos_embed(vit.patch_embed(normalize(images))))
                for block in vit.blocks[:-1]:
                    x = block(x)
                b_pen = x
                b_attn = model.attention_logits(vit.blocks[-1], x)
                b_tokens = vit.norm(vit.blocks[-1](x))[:, 1:]
            a_tokens = after.patch.flatten(2).transpose(1, 2)
            print(f"{name} {size[0]}x{size[1]}: max |diff| vs DINO  before/after  "
                  f"patch {(b_tokens - tokens).abs().max():.2e}/{(a_tokens - tokens).abs().max():.2e}  "
                  f"attn {(b_attn - attn).abs().max():.2e}/{(after.attn_logits - attn).abs().max():.2e}  "
                  f"penultimate {(b_pen - pen).abs().max():.2e}/{(after.penultimate - pen).abs().max():.2e}")


def _pil_resize_crop(image: np.ndarray, res: int) -> np.ndarray:
    from PIL import Image
    from torchvision import transforms as T

    pipeline = T.Compose([T.Resize(res, T.InterpolationMode.NEAREST), T.CenterCrop(res)])
    return np.asarray(pipeline(Image.fromarray(image)))


def resize() -> None:
    from torchvision.transforms.v2 import functional as TF

    from uss_bench.data.transforms import SegTransform

    rng = np.random.default_rng(0)
    for h, w in ((480, 640), (1024, 2048)):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        official = _pil_resize_crop(image, 320)
        chw = torch.from_numpy(image).permute(2, 0, 1)
        before = TF.resize(chw, 320, interpolation=TF.InterpolationMode.NEAREST_EXACT, antialias=True)
        before = TF.center_crop(before, [320, 320]).permute(1, 2, 0).numpy()
        after = SegTransform(320)(chw, torch.zeros(h, w, dtype=torch.int64))[0].permute(1, 2, 0).numpy()
        before_n = int((before != official).any(-1).sum())
        print(f"{w}x{h} -> 320 + centre crop: pixels differing from PIL  before {before_n}"
              f"  after {int((after != official).any(-1).sum())}  (of {320 * 320})")


def resize_speed() -> None:
    import time

    from PIL import Image
    from torchvision import transforms as T

    from uss_bench.data.transforms import SegTransform

    def ms(fn, n: int = 30) -> float:
        fn()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) / n * 1e3

    rng = np.random.default_rng(0)
    pipeline = T.Compose([T.Resize(320, T.InterpolationMode.NEAREST), T.CenterCrop(320)])
    for h, w in ((480, 640), (1024, 2048)):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        label = rng.integers(0, 27, (h, w)).astype(np.int64)
        chw, lab = torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(label)

        def pil_from_arrays(chw=chw, lab=lab) -> None:
            np.asarray(pipeline(Image.fromarray(chw.permute(1, 2, 0).numpy())))
            np.asarray(pipeline(Image.fromarray(lab.numpy().astype(np.int32), mode="I")))

        def gather(chw=chw, lab=lab) -> None:
            SegTransform(320)(chw, lab)

        print(f"{w}x{h} -> 320: SegTransform gather {ms(gather):.2f} ms, "
              f"PIL from the arrays {ms(pil_from_arrays):.2f} ms")


def crf() -> None:
    import pydensecrf.densecrf as dcrf
    from PIL import Image
    from pydensecrf.utils import unary_from_softmax
    from torchvision import transforms as T
    from torchvision.transforms import functional as VF

    from uss_bench.eval.crf_inputs import crf_batch
    from uss_bench.eval.crf_kernel import CRFParams, crf_image, dense_crf

    def pydensecrf_on(image: np.ndarray, probs: np.ndarray) -> np.ndarray:
        d = dcrf.DenseCRF2D(320, 320, probs.shape[0])
        d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
        d.addPairwiseGaussian(sxy=1, compat=3)
        d.addPairwiseBilateral(sxy=67, srgb=3, rgbim=np.ascontiguousarray(image), compat=4)
        return np.array(d.inference(10)).reshape(probs.shape[0], 320, 320).argmax(0)

    rng = np.random.default_rng(0)
    totals = {"before": 0, "after": 0, "bgr_exact_values": 0, "truncated_rgb": 0, "values": 0}
    n_images = 3
    for _ in range(n_images):
        # gradients + noise + a few flat blocks, so the bilateral term has edges to follow
        yy, xx = np.mgrid[0:320, 0:320]
        base = np.stack([xx * 0.6, yy * 0.5, (xx + yy) * 0.3], -1) + rng.normal(0, 25, (320, 320, 3))
        for _ in range(6):
            y, x = rng.integers(0, 260, 2)
            base[y : y + 60, x : x + 60] = rng.integers(0, 256, 3)
        image = np.clip(base, 0, 255).astype(np.uint8)
        logits = torch.from_numpy(rng.normal(size=(1, 27, 40, 40)).astype(np.float32) * 3)
        logits = torch.nn.functional.interpolate(logits, size=(320, 320), mode="bilinear", align_corners=False)
        # official: ToTensor + Normalize in the loader, then dense_crf's UnNormalize, to_pil_image, [:, :, ::-1]
        tensor = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])(T.ToTensor()(Image.fromarray(image)))
        unnorm = tensor.clone()
        for t, m, s in zip(unnorm, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]):
            t.mul_(s).add_(m)
        official_img = np.ascontiguousarray(np.array(VF.to_pil_image(unnorm))[:, :, ::-1])
        official_probs = torch.softmax(torch.log_softmax(logits, 1)[0], 0).numpy()
        official = pydensecrf_on(official_img, official_probs)
        old_probs = torch.softmax(logits, 1)[0].numpy()  # the previous engine: softmax of the raw logits
        before = dense_crf(image, old_probs, CRFParams(image="exact_rgb"))
        images, probs = crf_batch(torch.from_numpy(image).permute(2, 0, 1)[None], logits)
        after = dense_crf(images[0], probs[0], CRFParams())
        totals["values"] += int((crf_image(image) != official_img).sum())
        totals["before"] += int((before != official).sum())
        totals["after"] += int((after != official).sum())
        totals["bgr_exact_values"] += int((pydensecrf_on(image[..., ::-1], official_probs) != official).sum())
        totals["truncated_rgb"] += int((pydensecrf_on(official_img[..., ::-1], official_probs) != official).sum())
        print(f"truncated channel values (official vs exact): {int((official_img[..., ::-1] != image).sum())}"
              f" of {image.size}")
    print(f"320x320 CRF, pixels differing from the official per image (mean of {n_images}): "
          + ", ".join(f"{k} {v / n_images:.1f}" for k, v in totals.items() if k != "values")
          + f"; CRF image values differing after: {totals['values']}")


if __name__ == "__main__":
    {"vit": vit, "resize": resize, "resize_speed": resize_speed, "crf": crf}[sys.argv[1]]()
