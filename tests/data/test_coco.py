"""COCO-Stuff: the class mappings against the reference notes, and the loaders on the fixture."""

import numpy as np
import yaml
from PIL import Image

from uss_bench.data.build import build_dataset
from uss_bench.data.coco import FINE_TO_COARSE
from uss_bench.data.fixtures import write_fixture
from uss_bench.paths import cards_dir

# The table of reference/stego_hp_ppap.md §1a, transcribed as written there (coarse | name | fine ids).
REFERENCE_TABLE = """
|0|electronic|71–76|
|1|appliance|77–82|
|2|food (thing)|51–60|
|3|furniture (thing)|61–70|
|4|indoor|83–90|
|5|kitchen|43–50|
|6|accessory|25–32|
|7|animal|15–24|
|8|outdoor|9–14|
|9|person|0|
|10|sports|33–42|
|11|vehicle|1–8|
|12|ceiling|101–102|
|13|floor|100, 113–117|
|14|food (stuff)|120–121, 152, 169|
|15|furniture (stuff)|97, 106–107, 109, 111, 122, 129, 132, 155, 160, 164|
|16|rawmaterial|99, 131, 138, 142|
|17|textile|91–92, 103–104, 108, 130, 136, 140, 151, 166–167|
|18|wall|170–176|
|19|window|179–180|
|20|building|94–95, 127, 150, 157, 165|
|21|ground|110, 124–125, 135, 139, 143–144, 146, 148, 153, 158|
|22|plant|93, 96, 118, 123, 128, 133, 141, 162, 168|
|23|sky|105, 156|
|24|solid|126, 134, 149, 159, 161, 181|
|25|structural|98, 112, 137, 145, 163|
|26|water|119, 147, 154, 177–178|
"""


def _parse_reference():
    table, names = {}, []
    for row in REFERENCE_TABLE.strip().splitlines():
        coarse, name, ids = row.strip("|").split("|")
        names.append(name)
        for part in ids.split(","):
            lo, _, hi = part.strip().partition("–")
            for fine in range(int(lo), int(hi or lo) + 1):
                table[fine] = int(coarse)
    return table, names


def test_fine_to_coarse_matches_the_reference_table():
    table, _ = _parse_reference()
    assert sorted(table) == list(range(182))  # every fine id exactly once
    assert [table[f] for f in range(182)] == FINE_TO_COARSE.tolist()


def test_card_classes_and_mapping_match_the_reference():
    card = yaml.safe_load((cards_dir("datasets") / "cocostuff27.yaml").read_text())
    _, names = _parse_reference()
    simplified = [n.replace(" (thing)", "-things").replace(" (stuff)", "-stuff") for n in names]
    assert card["classes"] == simplified
    table, _ = _parse_reference()
    assert {int(k): v for k, v in card["fine_to_coarse"].items()} == {
        c: sorted(f for f, cc in table.items() if cc == c) for c in range(27)
    }


def _label(tmp_path, name, split, index):
    return build_dataset(name, tmp_path, split, None)[index]["label"].numpy()


def test_loaders_map_the_stuffthingmap_ids(tmp_path):
    write_fixture("cocostuff27", tmp_path)
    raw = np.array(Image.open(tmp_path / "cocostuff" / "annotations" / "val2017" / "000000000139.png"))
    # fixture values: person 0, sky-other 156, grass 123, road 148, wall-concrete 171, unlabelled 255
    expect27 = {0: 9, 156: 23, 123: 22, 148: 21, 171: 18, 255: -1}
    expect15 = {0: -1, 156: 11, 123: 10, 148: 9, 171: 6, 255: -1}
    expect3 = {0: -1, 156: 0, 123: 1, 148: 2, 171: -1, 255: -1}  # sky, plant, ground
    for name, expect in (("cocostuff27", expect27), ("cocostuff15", expect15), ("cocostuff3", expect3)):
        label = _label(tmp_path, name, "val", 0)
        for value, cls in expect.items():
            assert (label[raw == value] == cls).all(), (name, value)


def test_lists_follow_stego(tmp_path):
    write_fixture("cocostuff27", tmp_path)
    # cocostuff27 trains on the full list (4 ids) and scores the _7 list; cocostuff15 uses _7 on both; 3 uses Few_6
    assert len(build_dataset("cocostuff27", tmp_path, "train", None)) == 4
    assert len(build_dataset("cocostuff15", tmp_path, "train", None)) == 3
    assert [s["id"] for s in build_dataset("cocostuff3", tmp_path, "train", None)] == ["000000000025", "000000000030"]


def test_piCIE_directory_name_is_accepted(tmp_path):
    write_fixture("cocostuff27", tmp_path)
    (tmp_path / "cocostuff").rename(tmp_path / "coco")
    assert len(build_dataset("cocostuff27", tmp_path, "val", None)) == 2
