"""ImageNet-S protocols (PASS): image-level matching, distance matching and the K+1 mIoU, on hand-built cases."""

import math

import numpy as np
import pytest
import torch

from uss_bench.eval.imagenet_s import (
    ImageNetSAccumulator,
    PrototypeBank,
    image_level_matching,
    knn_vote,
    resize_labels_nearest,
)
from uss_bench.registry import PROTOCOLS


def test_image_level_matching_uses_per_image_co_occurrence_not_pixels():
    # K = 3. Predicted id 1 co-occurs with class 2 in images 0, 1, 2; id 2 with class 1 in images 1, 3;
    # id 3 with class 3 only in image 4.
    pred_sets = [{1}, {1, 2}, {1}, {2}, {3}]
    gt_sets = [{2}, {2, 1}, {2}, {1}, {3}]
    mapping = image_level_matching(pred_sets, gt_sets, 3)
    assert mapping.tolist() == [0, 2, 1, 3]


def test_image_level_matching_prefers_more_images():
    # id 1 occurs with class 2 in two images and with class 1 in one; id 2 with class 1 in one image.
    # Costs (1 - co/N, N=4): [[3/4, 2/4], [3/4, 1]] -> 1->2, 2->1 (total 5/4) beats identity (7/4).
    mapping = image_level_matching([{1}, {1}, {1}, {2}], [{2}, {2}, {1}, {1}], 2)
    assert mapping.tolist() == [0, 2, 1]


def test_metric_counts_background_and_absent_classes_as_zero():
    k = 3
    acc = ImageNetSAccumulator(k)
    # image 1: GT [0 0 1 1 | ignore], prediction uses cluster id 2 for class 1
    acc.update(torch.tensor([[0, 0, 2, 2, 3]]), torch.tensor([[0, 0, 1, 1, -1]]))
    # image 2: GT class 2 everywhere, prediction id 1 on 3 of 4 pixels, background on one
    acc.update(torch.tensor([[1, 1, 1, 0]]), torch.tensor([[2, 2, 2, 2]]))
    out = acc.result("image-level")
    # sets: pred {2},{1}; gt {1},{2} -> 2->1, 1->2, 3->3 (no co-occurrence)
    assert out["mapping"] == [0, 2, 1, 3]
    # background: TP 2, pred 3 (incl. the miss in image 2), gt 2 -> 2/3; class 1: 2/2; class 2: 3/4; class 3: 0
    expected = [2 / 3, 1.0, 3 / 4, 0.0]
    assert out["iou"] == pytest.approx({str(i): 100 * v for i, v in enumerate(expected)})
    assert out["miou"] == pytest.approx(100 * sum(expected) / 4)
    assert out["acc"] == pytest.approx(100.0)  # largest foreground class is right in both images
    assert out["pixel_acc"] == pytest.approx(100 * 7 / 8)  # the ignored pixel is gone
    identity = acc.result("identity")
    assert identity["iou"]["1"] == 0.0 and identity["acc"] == 0.0


def test_prototypes_are_masked_means_over_all_positions():
    feats = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [2.0, 2.0]]])  # D=2, 2x2
    labels = torch.tensor([[5, 5], [0, -1]])
    bank = PrototypeBank.empty()
    bank.add(feats, labels)
    protos, ids = bank.tensors()
    assert ids.tolist() == [0, 5]
    # class 0: one pixel (0, 2) -> sum/4 = (0, 0.5) -> normalised (0, 1); class 5: (1,0)+(1,0) -> (1, 0)
    assert protos.tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_knn_vote_weights_by_exp_similarity_over_temperature():
    bank = PrototypeBank.empty()
    # two prototypes of class 1 near the x axis, one of class 2 exactly on it
    for vec, cls in (([1.0, 0.2], 1), ([1.0, -0.2], 1), ([1.0, 0.0], 2)):
        bank.embeddings.append(torch.nn.functional.normalize(torch.tensor(vec), dim=0))
        bank.labels.append(cls)
    pixel = torch.tensor([1.0, 0.0]).view(2, 1, 1)
    cos = 1 / math.sqrt(1.04)
    # class 1: 2 exp(cos/T); class 2: exp(1/T); with T = 0.07, exp((1 - cos)/0.07) = 1.31 < 2 -> class 1 wins
    assert knn_vote(pixel, bank, n_classes=3, k=10, temperature=0.07).item() == 1
    # a sharper temperature lets the exact match outvote the two neighbours
    assert 2 * math.exp(cos / 0.02) < math.exp(1 / 0.02)
    assert knn_vote(pixel, bank, n_classes=3, k=10, temperature=0.02).item() == 2
    # k = 1 keeps only the nearest prototype
    assert knn_vote(pixel, bank, n_classes=3, k=1).item() == 2


def test_label_resize_is_nearest():
    lab = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 0, 0], [3, 3, 0, 0]])
    assert resize_labels_nearest(lab, (2, 2)).tolist() == [[1, 2], [3, 0]]


def test_protocol_is_registered_with_its_evaluator():
    protocol = PROTOCOLS.get("imagenet-s")
    assert protocol.miou_averaging == "absent_as_zero" and protocol.evaluator == "imagenet-s"
    assert (protocol.distance_k, protocol.distance_temperature, protocol.distance_split) == (10, 0.07, "train-semi")
    assert protocol.crf is False and np.isfinite(protocol.eval_res)
    assert protocol.as_dict()["distance_res"] == 256  # recorded with every run


def test_full_resolution_loop_renames_background_and_matches_images():
    """Images encode their labels; the fake predictor returns permuted cluster ids and exact linear ids."""
    from uss_bench.eval.imagenet_s import evaluate_imagenet_s

    k = 4
    labels = [torch.tensor([[0, 0, 1, 1, 1, -1]]), torch.tensor([[0, 3, 3, 3, 0, 0], [0, 0, 0, 0, 0, 0]])]
    dataset = [{"image": (lab.clamp(min=0) * 10).to(torch.uint8).expand(3, *lab.shape), "label": lab}
               for lab in labels]
    cluster_of = torch.tensor([2, 4, 0, 1, 3])  # GT id -> cluster index; background lands on cluster 2

    def predict(image, size):
        ids = (image[0, 0] * 255 / 10).round().long()
        assert tuple(ids.shape) == size
        return {"cluster": cluster_of[ids], "linear": ids}

    out = evaluate_imagenet_s(predict, dataset, k, class_names=["bg", "a", "b", "c", "d"])
    # background cluster 2 -> id 0 (cluster 0 takes id 2); then images: {4}->{1}, {1}->{3}: 4->1, 1->3;
    # ids 2 and 3 never occur, so they take classes 2 and 4 in either order (a tie)
    mapping = out["cluster"]["mapping"]
    assert mapping[0] == 0 and mapping[4] == 1 and mapping[1] == 3 and {mapping[2], mapping[3]} == {2, 4}
    # perfect on present classes; classes b and d are absent everywhere and count 0 in the mean over K+1 = 5
    assert out["cluster"]["miou"] == pytest.approx(100 * 3 / 5)
    assert out["linear"]["miou"] == pytest.approx(100 * 3 / 5) and out["linear"]["acc"] == pytest.approx(100)
    assert out["cluster"]["pixel_acc"] == pytest.approx(100)


def test_distance_matching_end_to_end_on_colour_features():
    """Features = the pixel colour; train-semi has one image per class: predictions recover the labels."""
    from uss_bench.eval.imagenet_s import (
        DISTANCE_OUTPUTS,
        build_prototype_bank,
        distance_predictor,
        evaluate_imagenet_s,
    )

    colours = torch.tensor([[0.1, 0.1, 0.9], [0.9, 0.1, 0.1], [0.1, 0.9, 0.1]])  # background, class 1, class 2

    def sample(lab):
        img = (colours[lab.clamp(min=0)].permute(2, 0, 1) * 255).round().to(torch.uint8)
        return {"image": img, "label": lab}

    def features(images):  # [1,3,h,w] -> itself (a 3-d "feature" per pixel)
        return images

    semi = [sample(torch.tensor([[0, 0, 1, 1]] * 4)), sample(torch.tensor([[2, 2, 0, 0]] * 4))]
    bank = build_prototype_bank(features, semi, res=4)
    assert sorted(bank.labels) == [0, 0, 1, 2]
    val = [sample(torch.tensor([[1, 1, 0, -1]] * 4)), sample(torch.tensor([[0, 2, 2, 2]] * 4))]
    out = evaluate_imagenet_s(distance_predictor(features, bank, n_classes=3, k=2), val, 2, eval_res=4,
                              outputs=DISTANCE_OUTPUTS)["distance"]
    assert out["mapping"] == [0, 1, 2] and out["miou"] == pytest.approx(100.0) and out["background"] == "predicted"


def test_engine_predictor_with_probes():
    from uss_bench.eval.imagenet_s import engine_predictor, evaluate_imagenet_s
    from uss_bench.eval.probes import Probes

    class Method(torch.nn.Module):
        def embed(self, images):
            return torch.nn.functional.avg_pool2d(images, 2)

        def cluster_logits(self, code):
            return None

    probes = Probes(3, 3)
    predict = engine_predictor(Method(), probes, PROTOCOLS.get("imagenet-s"), torch.device("cpu"), rows=3)
    data = [{"image": torch.randint(0, 255, (3, 8, 10), dtype=torch.uint8), "label": torch.zeros(7, 9).long()}]
    out = evaluate_imagenet_s(predict, data, 2, eval_res=8)
    assert out["cluster"]["n_images"] == 1 and 0 <= out["linear"]["miou"] <= 100


def test_runner_evaluator_on_the_fixture(tmp_path):
    """extra_metrics(...) as the runner calls it, on the ImageNet-S-50 fixture with a colour 'method'."""
    from uss_bench.data.build import build_dataset
    from uss_bench.data.fixtures import write_fixture
    from uss_bench.data.transforms import SegTransform
    from uss_bench.eval.evaluators import extra_metrics
    from uss_bench.eval.probes import Probes

    class Method(torch.nn.Module):
        def embed(self, images):
            return images

        def cluster_logits(self, code):
            return None

    write_fixture("imagenet-s50", tmp_path)
    protocol = PROTOCOLS.get("imagenet-s")
    eval_set = build_dataset("imagenet-s50", tmp_path, "val", SegTransform(16))
    out = extra_metrics(Method(), protocol, None, eval_set, class_names=eval_set.classes, device=torch.device("cpu"),
                        probes=Probes(3, 51))
    assert set(out) == {"imagenet_s_distance", "imagenet_s_cluster", "imagenet_s_linear"}
    assert out["imagenet_s_distance"]["n_images"] == 2 and len(out["imagenet_s_distance"]["iou"]) == 51
    assert all(0 <= m["miou"] <= 100 for m in out.values())
