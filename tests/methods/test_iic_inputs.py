"""IIC's input stage against the official rules (issue 11 §6).

- Training pairs are uint8 arrays in the official code (cocostuff.py ``_prepare_train``), so the grey
  channel is ``cv2.cvtColor(uint8 BGR array, COLOR_RGB2GRAY)``: OpenCV 3.x computes it through three
  lookup tables of Q14 weights (4899, 9617, 1868) with 2^13 added to the third table, then >> 14.
  Evaluation arrays are float32 (``_prepare_test``), so that grey is the float weighted sum.
- Sobel: ``sobel_process`` = cross-correlation of grey/255 with [[1,0,-1],[2,0,-2],[1,0,-1]] and
  [[1,2,1],[0,0,0],[-1,-2,-1]], zero padding 1.
- Jitter: torchvision ColorJitter on ``Image.fromarray(bgr_uint8)``, i.e. the BGR array taken as RGB.
"""

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance
from scipy.ndimage import correlate
from torchvision.transforms import v2

from uss_bench.data.build import build_dataset
from uss_bench.data.fixtures import write_fixture
from uss_bench.methods.base import MethodContext
from uss_bench.methods.iic.method import IIC, InputStage, grey_uint8

SOBEL_X = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=np.float64)
SOBEL_Y = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float64)


def opencv3_grey_tables(array_u8: np.ndarray) -> np.ndarray:
    """OpenCV 3.x RGB2Gray<uchar> as its source describes it: per-channel tables, rounding term in one."""
    first, second, third = (np.arange(256, dtype=np.int64) * w for w in (4899, 9617, 1868))
    third = third + (1 << 13)
    a = array_u8.astype(np.int64)
    return (first[a[..., 0]] + second[a[..., 1]] + third[a[..., 2]]) >> 14


def official_sobel(grey_0_255: np.ndarray) -> np.ndarray:
    g = grey_0_255.astype(np.float64) / 255.0
    return np.stack([correlate(g, k, mode="constant", cval=0.0) for k in (SOBEL_X, SOBEL_Y)])


def _image(seed=0, h=24, w=20):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _to_input(rgb_u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb_u8.transpose(2, 0, 1).copy())[None].double() / 255.0


def test_grey_by_hand():
    # stored RGB (R, G, B); the official array is BGR, and RGB2GRAY weights its first channel as R:
    # grey = (4899 B + 9617 G + 1868 R + 8192) >> 14
    # (255, 0, 0): (1868 * 255 + 8192) >> 14 = 484532 >> 14 = 29   (float rule: 0.114 * 255 = 29.07)
    # (0, 0, 255): (4899 * 255 + 8192) >> 14 = 1257437 >> 14 = 76  (float: 76.245)
    # (10, 200, 3): (14697 + 1923400 + 18680 + 8192) >> 14 = 1964969 >> 14 = 119  (float: 119.99 -> 120 rounded)
    stage = InputStage("rgb_sobel", bgr=True, grey="opencv3").double()
    for rgb, want in [((255, 0, 0), 29), ((0, 0, 255), 76), ((10, 200, 3), 119)]:
        x = torch.tensor(rgb, dtype=torch.float64).view(1, 3, 1, 1).expand(1, 3, 3, 3) / 255.0
        out = stage(x, uint8_pair=True)
        # constant image, zero padding: at the top-left pixel the y-kernel's top row sees padding and its
        # bottom row (-1, -2, -1) sees padding, g, g -> -3 g
        assert out[0, 4, 0, 0].item() == pytest.approx(-3 * want / 255.0, abs=1e-12)


def test_grey_and_sobel_equal_the_official_rule_on_a_fixture(tmp_path):
    write_fixture("cocostuff15", tmp_path)
    data = build_dataset("cocostuff15", tmp_path, "train", None)
    for k in range(len(data)):
        rgb = data[k]["image"].numpy().transpose(1, 2, 0)
        bgr = rgb[..., ::-1]
        stage = InputStage("rgb_sobel", bgr=True, grey="opencv3").double()
        out = stage(_to_input(rgb), uint8_pair=True)[0].numpy()
        assert np.array_equal(out[:3], bgr.transpose(2, 0, 1) / 255.0)
        np.testing.assert_allclose(out[3:], official_sobel(opencv3_grey_tables(bgr)), rtol=0, atol=1e-12)
        # evaluation: float grey, no rounding (official _prepare_test converts float32 arrays)
        float_grey = bgr.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        np.testing.assert_allclose(stage(_to_input(rgb))[0, 3:].numpy(), official_sobel(float_grey), atol=1e-12)


def test_rounding_matters_and_is_bounded():
    rgb = _image(1, 64, 64)
    stage = InputStage("rgb_sobel", bgr=True, grey="opencv3").double()
    rounded = stage(_to_input(rgb), uint8_pair=True)[0, 3:]
    unrounded = InputStage("rgb_sobel", bgr=True, grey="float").double()(_to_input(rgb), uint8_pair=True)[0, 3:]
    diff = (rounded - unrounded).abs().max().item()
    # each grey moves by at most half a level (+ Q14 weight error), the kernels' |weights| sum to 8
    assert 0.005 < diff <= 8 * 0.51 / 255


def test_opencv4_rule_equals_cv2_exhaustively():
    cv2 = pytest.importorskip("cv2")
    if int(cv2.__version__.split(".")[0]) < 4:
        pytest.skip("Q15 weights are OpenCV >= 4")
    v = np.arange(256, dtype=np.uint8)
    grid = np.stack(np.meshgrid(v, v, v, indexing="ij"), -1).reshape(4096, 4096, 3)
    want = cv2.cvtColor(grid, cv2.COLOR_RGB2GRAY).astype(np.int64)
    got = grey_uint8(torch.from_numpy(grid.transpose(2, 0, 1).copy())[None], "opencv4")[0, 0].numpy()
    assert np.array_equal(got, want)


def _iic(**over):
    hparams = dict(input="rgb_sobel", bgr=True, width=0.125, batchnorm_track=True, output_k_A=None,
                   overcluster_factor=3, output_k_B=None, num_sub_heads=1, eval_sub_head=0, lamb_A=1.0, lamb_B=1.0,
                   lr=1e-4, half_T_side_dense=2, uncollapsed=True, head_B_first=False, crop_size=None,
                   jitter=[0.0, 0.0, 0.0, 0.0], flip_p=0.0, grey="opencv3", jitter_bgr_as_rgb=True)
    hparams.update(over)
    return IIC(None, 4, hparams, MethodContext("synthetic", "vgg-iic", 4, 2, 8, 4, 32))


@pytest.mark.parametrize("factor", [0.6, 1.4])
def test_jitter_runs_on_the_bgr_array_as_if_rgb(factor):
    """Saturation blends with PIL's L = (299 R + 587 G + 114 B) / 1000 of the array it is given."""
    rgb = _image(2, 16, 16)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    official = np.asarray(ImageEnhance.Color(Image.fromarray(bgr)).enhance(factor)).astype(np.float64)  # BGR
    for as_rgb, close in ((True, True), (False, False)):
        m = _iic(jitter_bgr_as_rgb=as_rgb)
        m.jitter = v2.ColorJitter(saturation=(factor, factor))
        _, img2, _ = m.make_pair(_to_input(rgb).float())
        net_bgr = m.inputs(img2)[0, :3].permute(1, 2, 0).double().numpy() * 255  # what the network sees
        err = np.abs(net_bgr - official).max()
        assert (err <= 1.0 + 1e-3) == close, err  # PIL rounds per operation: at most one level apart
