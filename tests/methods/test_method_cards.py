"""Method cards against the official sources (issue 11 §8). Expected values are copied by hand from
the official files named in each test, not read from the cards."""

import pytest
import torch
import yaml

from uss_bench.config import resolve
from uss_bench.methods.hp.loss import neighbourhood_mask
from uss_bench.paths import PROJECT_ROOT
from uss_bench.registry import PROTOCOLS, load_all
from uss_bench.spec import RunSpec


def _card(name):
    return yaml.safe_load((PROJECT_ROOT / "methods" / f"{name}.yaml").read_text())


# mhamilton723/STEGO src/configs/train_config.yml, commented blocks (neg_inter, pos_inter, pos_intra
# weight then shift = rand, knn, self), exactly as written there
STEGO_BLOCKS = {
    ("cocostuff27", "vit-b8"): dict(rand_weight=0.1538476246415498, knn_weight=1, self_weight=0.1,
                                    rand_shift=1, knn_shift=0.2, self_shift=0.12),  # "## Cocostuff27 10/3 vit_base"
    ("cityscapes27", "vit-b8"): dict(rand_weight=0.9058762625226623, knn_weight=0.577453483136995, self_weight=1,
                                     rand_shift=0.31361241889448443, knn_shift=0.1754346515479633,
                                     self_shift=0.45828472207),  # "# Cityscapes 10/3"
}


@pytest.mark.parametrize("dataset, backbone", sorted(STEGO_BLOCKS))
def test_stego_published_blocks_are_exact(dataset, backbone):
    hparams = resolve(RunSpec("stego", dataset, backbone, protocol="stego")).hparams
    for key, value in STEGO_BLOCKS[(dataset, backbone)].items():
        assert hparams[key] == value, key  # exact, not rounded


def test_stego_alternative_blocks():
    alternatives = {entry["name"]: entry for entry in _card("stego")["alternative_configs"]}
    plain = alternatives["Cocostuff27"]  # "## Cocostuff27": .72 .80 .29 / .86 .04 .34
    assert [plain[k] for k in ("rand_weight", "knn_weight", "self_weight", "rand_shift", "knn_shift", "self_shift")] \
        == [0.72, 0.80, 0.29, 0.86, 0.04, 0.34]
    moco = alternatives["Cocostuff27 10/3 moco"]  # weights .63 .25 .67, shifts .26 .36 .32
    assert [moco[k] for k in ("rand_weight", "knn_weight", "self_weight", "rand_shift", "knn_shift", "self_shift")] \
        == [0.63, 0.25, 0.67, 0.26, 0.36, 0.32]


def official_hp_index_mask(sz: int) -> torch.Tensor:
    """HP DinoFeaturizer's mask from spatial_size sz: per flat index, the listed in-grid 3x3 neighbours."""
    mask = torch.zeros(sz * sz, sz * sz, dtype=torch.bool)
    for i in range(sz * sz):
        top, bottom, left, right = i < sz, i >= sz * sz - sz, i % sz == 0, (i + 1) % sz == 0
        rows = [r for r, skip in ((-sz, top), (0, False), (sz, bottom)) if not skip]
        cols = [c for c, skip in ((-1, left), (0, False), (1, right)) if not skip]
        for r in rows:
            for c in cols:
                mask[i, i + r + c] = True
    return mask


@pytest.mark.parametrize("sz", [2, 5, 14, 28])
def test_hp_local_term_mask_equals_the_official_one_on_any_square_grid(sz):
    official = official_hp_index_mask(sz)
    assert torch.equal(neighbourhood_mask(sz, sz), official)
    if sz > 2:  # corner 4, edge 6, inner 9 neighbours (the official divide_num)
        assert sorted(official.sum(1).unique().tolist()) == [4, 6, 9]


def test_hp_card_names_the_fp16_weights_and_the_grid_rule():
    text = yaml.safe_dump(_card("hp")["deviations"])
    assert "spatial_size" in text and "any square" in text and "28x28 grids" not in text
    assert "float16" in text and "weighted_mask.sum(1)" in text


def test_san_has_the_papers_protocol_and_uss_is_unchanged():
    load_all()
    card = _card("san")
    assert card["default_protocol"] == "san"
    san = PROTOCOLS.get("san")
    got = (san.eval_split, san.eval_res, san.crf, san.flip_tta, san.matching)
    assert got == ("val", 128, False, False, "hungarian")
    assert card["train"]["train_res"] == 128  # the paper's crop, the size the protocol scores at
    uss = PROTOCOLS.get("uss")
    assert (uss.eval_res, uss.crf, uss.flip_tta) == (320, True, False)
