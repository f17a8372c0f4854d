import torch

from uss_bench.data.transforms import SegTransform, normalize


def test_shorter_side_resize_then_center_crop():
    image = torch.arange(4 * 8, dtype=torch.uint8).view(1, 4, 8).repeat(3, 1, 1)
    label = torch.arange(8).repeat(4, 1)  # column index as label
    img, lab = SegTransform(2, "center", "nearest")(image, label)
    assert img.shape == (3, 2, 2) and lab.shape == (2, 2)
    # 4x8 -> 2x4 by nearest (columns 1,3,5,7), centre crop keeps columns 3 and 5
    assert lab.tolist() == [[3, 5], [3, 5]]


def test_squash_without_crop():
    img, lab = SegTransform(4, "none")(torch.zeros(3, 2, 8, dtype=torch.uint8), torch.zeros(2, 8, dtype=torch.long))
    assert img.shape == (3, 4, 4) and lab.shape == (4, 4)


def test_normalize_imagenet():
    x = torch.full((1, 3, 1, 1), 0.485)
    assert torch.allclose(normalize(x)[0, 0], torch.zeros(1, 1))
