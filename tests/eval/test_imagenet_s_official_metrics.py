"""ImageNet-S metrics against an independent re-statement of LUSSeg/ImageNet-S ``evaluation/`` (match.py,
hungarian.py, evaluator.py, metric.py, data/data.py, data/utils.py), written here from their description:

- EvalDataset drops GT == 1000 pixels from GT, prediction and both boundary maps (boundary maps are
  computed on the whole image first, per value v, as mask_v minus its erosion, stored as v + 1);
- match.py: per image the sets of ids - 1 (background removed); cost[i][j] = 1 - #(i in pred and j in GT)
  / N; Munkres (here: brute force over permutations, the optimum is checked to be unique);
- evaluator.py: IoU over K + 1 with 1e-10, mean over all; Acc from the largest predicted foreground id;
  F-measure per image with beta 0.3, eps 1e-20
  boundary IoU over K + 1 from histograms of the boundary
  maps (K + 2 bins, first dropped)
  size buckets by ceil(100 * count / total) <= 5 / 25 / 50 / else, each
  bucket = background pixels + its classes' pixels, bucket mean over classes with GT pixels.
- mask_to_boundary: pad by one zero pixel, erode with a 3x3 square ``round(0.03 * diagonal)`` times (at
  least 1), crop
  a pixel of the padded image erodes when any 3x3 neighbour is 0.
"""

import itertools
import math

import numpy as np
import pytest
import torch

from uss_bench.eval.imagenet_s import ImageNetSAccumulator, boundary_ids, size_bucket

IGNORE = 1000


def official_boundary(mask01: np.ndarray) -> np.ndarray:
    h, w = mask01.shape
    d = max(1, int(round(0.03 * math.sqrt(h * h + w * w))))
    m = np.pad(mask01.astype(np.uint8), 1)
    for _ in range(d):
        padded = np.pad(m, 1, constant_values=1)  # outside the padded image: cv2's default erode border
        m = np.min([padded[dy : dy + m.shape[0], dx : dx + m.shape[1]] for dy in range(3) for dx in range(3)], axis=0)
    return mask01.astype(np.uint8) - m[1 : h + 1, 1 : w + 1]


def official_boundary_map(ids: np.ndarray) -> np.ndarray:
    out = np.zeros(ids.shape, dtype=np.int64)
    for v in np.unique(ids + 1):
        out += (official_boundary((ids + 1) == v) > 0) * v
    return out


def hist(values: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(values.astype(np.int64), minlength=k)[:k].astype(np.float64)


def official_metrics(preds, gts, k):
    # match.py
    gt_sets = [sorted(set(np.unique(g[g != IGNORE]).tolist()) - {0}) for g in gts]
    pr_sets = [sorted(set(np.unique(p[g != IGNORE]).tolist()) - {0}) for p, g in zip(preds, gts)]
    cost = np.array([[1.0 - sum((i in p) and (j in g) for p, g in zip(pr_sets, gt_sets)) / len(gts)
                      for j in range(1, k + 1)] for i in range(1, k + 1)], dtype=np.float32)
    totals = sorted((float(sum(cost[i, perm[i]] for i in range(k))), perm) for perm in itertools.permutations(range(k)))
    assert totals[0][0] < totals[1][0], "ambiguous optimum: pick other data"
    match = {0: 0, **{i + 1: totals[0][1][i] + 1 for i in range(k)}}
    n = k + 1
    T, P, TP, BT, BP, BTP = (np.zeros(n) for _ in range(6))
    Ts, Ps, TPs, BTs, BPs, BTPs = ([np.zeros(n) for _ in range(4)] for _ in range(6))
    fm = acc = 0.0
    for p2, g2 in zip(preds, gts):
        bg_map, bp_map = official_boundary_map(g2), official_boundary_map(p2)
        keep = g2 != IGNORE
        g, p, bgt, bpr = g2[keep], p2[keep], bg_map[keep], bp_map[keep]
        p = np.vectorize(match.get)(p)
        bpr = np.where(bpr > 0, np.vectorize(lambda v: match.get(v - 1, -2) + 1)(bpr), 0)
        inter = hist(p[p == g], n)
        out, tgt = hist(p, n), hist(g, n)
        T += out
        P += tgt
        TP += inter
        binter = hist(bpr[bpr == bgt], n + 1)[1:]
        BT += hist(bpr, n + 1)[1:]
        BP += hist(bgt, n + 1)[1:]
        BTP += binter
        t, pp = (g > 0).sum(), (p > 0).sum()
        tp = ((g > 0) & (p > 0)).sum()
        rec, prec = tp / (t + 1e-20), tp / (pp + 1e-20)
        fm += 1.3 * prec * rec / (0.3 * prec + rec + 1e-20)
        top = int(np.argmax(out[1:])) + 1
        acc += (tgt[top] > 0) * (out[top] > 0)
        counts = np.bincount(g)
        buckets = [[], [], [], []]
        for c in np.unique(g):
            if c == 0:
                continue
            v = math.ceil(np.float32(np.float32(100.0 * counts[c]) / np.float32(counts.sum())))
            buckets[0 if v <= 5 else 1 if v <= 25 else 2 if v <= 50 else 3].append(c)
        for b, members in enumerate(buckets):
            if members:
                sel = (g == 0) | np.isin(g, members)
                Ts[b] += hist(p[sel], n)
                Ps[b] += hist(g[sel], n)
                TPs[b] += hist(p[sel][p[sel] == g[sel]], n)
                bs, gs = bpr[sel], bgt[sel]
                BTs[b] += hist(bs, n + 1)[1:]
                BPs[b] += hist(gs, n + 1)[1:]
                BTPs[b] += hist(bs[bs == gs], n + 1)[1:]
    iou = TP / (T + P - TP + 1e-10)
    biou = BTP / (BT + BP - BTP + 1e-10)
    sizes = [float(np.mean((TPs[b] / (Ts[b] + Ps[b] - TPs[b] + 1e-10))[Ps[b] > 0])) * 100 if (Ps[b] > 0).any()
             else None for b in range(4)]
    bsizes = [float(np.mean((BTPs[b] / (BTs[b] + BPs[b] - BTPs[b] + 1e-10))[BPs[b] > 0])) * 100 if (BPs[b] > 0).any()
              else None for b in range(4)]
    return dict(miou=iou.mean() * 100, mbiou=biou.mean() * 100, fmeasure=fm / len(gts) * 100, acc=acc / len(gts) * 100,
                sizes=sizes, bsizes=bsizes, match=match)


def _blocky(rng, h, w, values, cells=4):
    small = rng.choice(values, size=(cells, cells))
    return np.kron(small, np.ones((math.ceil(h / cells), math.ceil(w / cells)), dtype=np.int64))[:h, :w]


def test_boundary_band_equals_mask_to_boundary():
    rng = np.random.default_rng(0)
    for h, w in [(7, 9), (30, 40), (64, 33)]:
        ids = _blocky(rng, h, w, [0, 1, 2, 3], cells=5)
        assert np.array_equal(boundary_ids(ids), official_boundary_map(ids))
    # by hand: a 5x5 square of ones, diagonal 7.07 -> d = round(0.21) = 0 -> 1 erosion: the outer ring
    ring = np.ones((5, 5), dtype=np.int64)
    want = np.full((5, 5), 2)
    want[1:4, 1:4] = 0
    assert np.array_equal(boundary_ids(ring - 1 + 1), want)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_all_metrics_equal_the_official_evaluator(seed):
    rng = np.random.default_rng(seed)
    k = 3
    for _ in range(200):
        gts, preds = [], []
        for _ in range(8):
            h, w = int(rng.integers(20, 40)), int(rng.integers(20, 40))
            values = [0, 0, int(rng.integers(1, k + 1)), int(rng.integers(1, k + 1))]
            g = _blocky(rng, h, w, values, cells=int(rng.integers(2, 7)))
            absent = sorted(set(range(1, k + 1)) - set(np.unique(g).tolist()))
            if absent:  # a small object (about 0.3-1 % of the image): the S bucket
                y, x = int(rng.integers(0, h - 2)), int(rng.integers(0, w - 2))
                g[y : y + 2, x : x + 2] = absent[0]
            g[rng.random((h, w)) < 0.05] = IGNORE
            p = _blocky(rng, h, w, [0, 1, 2, 3], cells=int(rng.integers(2, 7)))
            gts.append(g)
            preds.append(p)
        try:
            want = official_metrics(preds, gts, k)
        except AssertionError:
            continue  # tie in the matching: another draw
        break
    else:
        pytest.fail("no draw with a unique optimal matching")
    acc = ImageNetSAccumulator(k)
    for p, g in zip(preds, gts):
        acc.update(torch.from_numpy(p), torch.from_numpy(np.where(g == IGNORE, -1, g)))
    got = acc.result("image-level")
    assert got["mapping"] == [want["match"][i] for i in range(k + 1)]
    for key in ("miou", "mbiou", "fmeasure", "acc"):
        assert got[key] == pytest.approx(want[key], abs=1e-6), key
    for name, a, b in zip(("S", "MS", "ML", "L"), want["sizes"], want["bsizes"]):
        assert (got["miou_size"][name] is None) == (a is None) and (got["mbiou_size"][name] is None) == (b is None)
        if a is not None:
            assert got["miou_size"][name] == pytest.approx(a, abs=1e-6), name
        if b is not None:
            assert got["mbiou_size"][name] == pytest.approx(b, abs=1e-6), name


def test_size_bucket_by_hand():
    # ceil(100 * count / total): 5 -> S (<= 5), 6 -> MS, 25 -> MS, 25.1 -> 26 -> ML, 51 -> L
    assert [size_bucket(c, t) for c, t in [(5, 100), (6, 100), (25, 100), (251, 1000), (51, 100)]] == [0, 1, 1, 2, 3]
    assert size_bucket(1, 1000) == 0  # 0.1 % -> ceil 1
