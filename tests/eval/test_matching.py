import itertools

import numpy as np
import pytest

from uss_bench.eval.matching import hungarian, identity, majority, match


def brute_force_best(conf: np.ndarray) -> int:
    n_pred, n_gt = conf.shape
    best = 0
    if n_pred >= n_gt:
        for rows in itertools.permutations(range(n_pred), n_gt):
            best = max(best, sum(conf[r, c] for c, r in enumerate(rows)))
    else:
        for cols in itertools.permutations(range(n_gt), n_pred):
            best = max(best, sum(conf[r, c] for r, c in enumerate(cols)))
    return best


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("extra", [0, 2])
def test_hungarian_equals_brute_force(k, extra):
    rng = np.random.default_rng(k * 10 + extra)
    for _ in range(5):
        conf = rng.integers(0, 1000, size=(k + extra, k))
        assignment = hungarian(conf)
        total = sum(conf[r, c] for r, c in enumerate(assignment) if c >= 0)
        assert total == brute_force_best(conf)
        matched = assignment[assignment >= 0]
        assert len(matched) == k and len(set(matched.tolist())) == k  # one-to-one
        assert (assignment == -1).sum() == extra


def test_fewer_clusters_than_classes_leaves_classes_unmatched():
    conf = np.array([[0, 9, 1], [8, 0, 0]])
    assert hungarian(conf).tolist() == [1, 0]


def test_majority_is_many_to_one_and_empty_clusters_claim_nothing():
    conf = np.array([[5, 1], [4, 0], [0, 0], [1, 7]])
    assert majority(conf).tolist() == [0, 0, -1, 1]


def test_identity_and_unknown_rule():
    assert identity(np.zeros((3, 2))).tolist() == [0, 1, -1]
    with pytest.raises(ValueError, match="unknown matching rule"):
        match(np.zeros((2, 2)), "greedy")
