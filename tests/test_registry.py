import pytest

from uss_bench.registry import BACKBONES, DATASETS, METHODS, PROTOCOLS, Registry, UnknownNameError


def test_every_required_name_is_registered():
    assert {"vit-s8", "vit-s16", "vit-b8", "vit-b16"} <= set(BACKBONES.names())
    assert "dino" in METHODS.names()
    assert "synthetic" in DATASETS.names()
    assert {"uss", "stego", "hp", "ppap"} <= set(PROTOCOLS.names())


def test_selection_grammar():
    reg = Registry("thing")
    for name in ["vit-s8", "vit-s16", "vit-b8"]:
        reg.add(name, object())
    assert reg.select("vit-b8,vit-s8") == ["vit-b8", "vit-s8"]
    assert reg.select("vit-s*") == ["vit-s16", "vit-s8"]
    assert reg.select("all") == ["vit-b8", "vit-s16", "vit-s8"]
    assert reg.select("vit-s8,vit-s*") == ["vit-s8", "vit-s16"]  # no duplicates


def test_unknown_names_are_all_reported_with_close_matches():
    with pytest.raises(UnknownNameError) as info:
        METHODS.select("dino,dnio,zzz*")
    message = str(info.value)
    assert "unknown method 'dnio' (did you mean: dino?)" in message
    assert "unknown method 'zzz*'" in message


def test_duplicate_registration_is_refused():
    reg = Registry("thing")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("a", 2)
