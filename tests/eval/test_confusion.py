import torch

from uss_bench.eval.confusion import ConfusionAccumulator, confusion_matrix


def test_counts_by_hand_with_ignore_and_out_of_range():
    pred = torch.tensor([0, 0, 1, 2, 1, 0, 5, -1])
    gt = torch.tensor([0, 1, 1, 1, -1, 3, 0, 0])
    # kept pairs (pred, gt): (0,0) (0,1) (1,1) (2,1); dropped: gt=-1, gt=3 (>= n_gt), pred=5 (>= n_pred), pred=-1
    expected = torch.tensor([[1, 1, 0], [0, 1, 0], [0, 1, 0]])
    assert torch.equal(confusion_matrix(pred, gt, n_pred=3, n_gt=3), expected)


def test_rectangular_extra_clusters():
    pred = torch.tensor([[3, 3], [0, 1]])
    gt = torch.tensor([[1, 1], [0, 0]])
    m = confusion_matrix(pred, gt, n_pred=4, n_gt=2)
    assert m.shape == (4, 2)
    assert m.tolist() == [[1, 0], [1, 0], [0, 0], [0, 2]]


def test_matches_masked_bincount_reference_on_random_data():
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(-2, 30, (10_000,), generator=g)
    gt = torch.randint(-1, 29, (10_000,), generator=g)
    k = 27
    keep = (gt >= 0) & (gt < k) & (pred >= 0) & (pred < k)
    ref = torch.bincount(pred[keep] * k + gt[keep], minlength=k * k).view(k, k)
    assert torch.equal(confusion_matrix(pred, gt, k, k), ref)


def test_large_class_counts_use_wide_index():
    pred = torch.tensor([918, 0, 500])
    gt = torch.tensor([918, 1000, 500])  # 1000 = ImageNet-S ignore, out of range for 919 + 1 classes
    m = confusion_matrix(pred, gt, 920, 920)
    assert m.sum() == 2 and m[918, 918] == 1 and m[500, 500] == 1


def test_accumulator_sums_batches():
    acc = ConfusionAccumulator(2, 2)
    acc.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    acc.update(torch.tensor([1]), torch.tensor([1]))
    assert acc.matrix.tolist() == [[1, 0], [1, 1]]
