import pytest

from uss_bench.config import published_config, resolve
from uss_bench.spec import RunSpec


def test_preset_dataset_preset_and_overrides_in_order():
    spec = RunSpec("dino", "synthetic", "vit-s8", preset="smoke", overrides={"train.steps": 7, "protocol.crf": False})
    cfg = resolve(spec)
    assert cfg.train["steps"] == 7  # override beats the card's smoke preset (40)
    assert cfg.train["batch_size"] == 8  # from the card's smoke preset
    assert cfg.train["train_res"] == 64  # from the dataset card's smoke preset
    assert cfg.protocol.eval_res == 64 and cfg.protocol.crf is False
    assert cfg.protocol.name == "uss"


def test_bad_override_and_unknown_preset():
    with pytest.raises(ValueError, match="must look like"):
        resolve(RunSpec("dino", "synthetic", "vit-s8", overrides={"steps": 1}))
    with pytest.raises(ValueError, match="no preset 'huge'"):
        resolve(RunSpec("dino", "synthetic", "vit-s8", preset="huge"))
    with pytest.raises(ValueError, match="unknown protocol option"):
        resolve(RunSpec("dino", "synthetic", "vit-s8", overrides={"protocol.crff": 1}))


def test_published_config_matching_with_wildcards():
    card = {"configs": [{"dataset": "cocostuff27", "backbone": "vit-s8", "hparams": {"a": 1}},
                        {"dataset": "cocostuff*", "backbone": "*", "hparams": {"a": 2}}]}
    assert published_config(card, "cocostuff27", "vit-s8")["hparams"]["a"] == 1
    assert published_config(card, "cocostuff15", "vit-b8")["hparams"]["a"] == 2
    assert published_config(card, "potsdam3", "vit-b8") is None


def test_synthetic_sizes_never_leak_into_real_datasets():
    synthetic = resolve(RunSpec("dino", "synthetic", "vit-s8"))
    real = resolve(RunSpec("dino", "cocostuff27", "vit-s8"))
    assert synthetic.train["steps"] == 300  # the card's `dataset: synthetic` config entry
    assert real.train["steps"] == 500 and real.train["train_res"] == 224  # card defaults


def test_every_card_resolves_on_synthetic_and_has_no_default_preset():
    import yaml

    from uss_bench.paths import cards_dir
    from uss_bench.registry import METHODS

    for name in METHODS.names():
        card = yaml.safe_load((cards_dir("methods") / f"{name}.yaml").read_text())
        assert "default" not in (card.get("presets") or {}), name
        for preset in ("default", "smoke"):
            cfg = resolve(RunSpec(name, "synthetic", card["default_backbone"], preset=preset))
            assert cfg.train["batch_size"] >= 1
