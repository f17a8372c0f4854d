import fnmatch

import pytest
import yaml

from uss_bench.config import (
    LAYER_NAMES,
    PROBE_RULES,
    PROTOCOL_RULES,
    TRAIN_RULES,
    ConfigError,
    published_config,
    resolve,
    validate_specs,
)
from uss_bench.paths import cards_dir
from uss_bench.registry import DATASETS, METHODS, PROTOCOLS
from uss_bench.spec import RunSpec


def _card(kind: str, name: str) -> dict:
    return yaml.safe_load((cards_dir(kind) / f"{name}.yaml").read_text())


def _real_datasets() -> list[str]:
    return [d for d in DATASETS.names() if not _card("datasets", d).get("synthetic")]


def _layer(source: str) -> str:
    return source.split(" ", 1)[0]


def _leaves(tree: dict, prefix: str):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}.{key}")
        else:
            yield f"{prefix}.{key}", value


def test_preset_dataset_preset_and_overrides_in_order():
    spec = RunSpec("dino", "synthetic", "vit-s8", preset="smoke", overrides={"train.steps": 7, "protocol.crf": False})
    cfg = resolve(spec)
    assert cfg.train["steps"] == 7  # override beats the card's smoke preset (40)
    assert cfg.train["batch_size"] == 8  # from the card's smoke preset
    assert cfg.train["train_res"] == 64  # from the dataset card's smoke preset
    assert cfg.protocol.eval_res == 64 and cfg.protocol.crf is False
    assert cfg.protocol.name == "uss"
    assert cfg.value_sources["train.steps"] == "set"
    assert cfg.value_sources["train.batch_size"] == "preset (methods/dino.yaml presets.smoke)"
    assert cfg.value_sources["train.train_res"] == "preset (datasets/synthetic.yaml presets.smoke)"
    assert cfg.value_sources["protocol.crf"] == "set"
    assert cfg.value_sources["protocol.flip_tta"] == "protocol (uss)"


def test_bad_override_and_unknown_preset():
    with pytest.raises(ConfigError, match="keys look like"):
        resolve(RunSpec("dino", "synthetic", "vit-s8", overrides={"steps": 1}))
    with pytest.raises(ConfigError, match="unknown preset 'huge' for method dino; presets: default, smoke"):
        resolve(RunSpec("dino", "synthetic", "vit-s8", preset="huge"))
    with pytest.raises(ConfigError, match=r"unknown key protocol.crff .*did you mean: protocol.crf"):
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
    assert synthetic.train["train_res"] == 128 and synthetic.protocol.eval_res == 128  # synthetic's own sizes
    assert real.train["steps"] == 500 and real.train["train_res"] == 224  # card defaults
    assert real.protocol.eval_res == 320 and real.value_sources["protocol.eval_res"] == "protocol (uss)"


def test_every_card_resolves_on_synthetic_and_has_no_default_preset():
    for name in METHODS.names():
        card = _card("methods", name)
        assert "default" not in (card.get("presets") or {}), name
        for preset in ("default", "smoke"):
            cfg = resolve(RunSpec(name, "synthetic", card["default_backbone"], preset=preset))
            assert cfg.train["batch_size"] >= 1


def test_only_synthetic_dataset_cards_carry_a_default_preset():
    for name in DATASETS.names():
        card = _card("datasets", name)
        assert ("default" in (card.get("presets") or {})) == bool(card.get("synthetic")), name


def test_a_real_dataset_card_with_a_default_preset_is_refused(tmp_path, monkeypatch):
    for kind in ("methods", "datasets"):
        (tmp_path / kind).mkdir()
    (tmp_path / "methods" / "dino.yaml").write_text(yaml.safe_dump(_card("methods", "dino")))
    real = _card("datasets", "cocostuff27")
    real["presets"]["default"] = {"train_res": 224, "eval_res": 320}
    (tmp_path / "datasets" / "cocostuff27.yaml").write_text(yaml.safe_dump(real))
    monkeypatch.setenv("USS_BENCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="presets.default' is not allowed on a real dataset"):
        resolve(RunSpec("dino", "cocostuff27", "vit-s8"))


# The published settings, written by hand from the official commands and configs (reference docs of
# /work/shared/reference: IIC §2a/§2b/§2e, PiCIE §1e, STEGO §1e, HP-e, PPAP-e, HSG §3e) -- not read from the
# cards. Batch sizes are the per-GPU numbers where the card says so in its deviations (STEGO, HSG).
PUBLISHED = [
    ("iic", "cocostuff15", "vgg-iic", "iic", {
        "train.train_res": 160, "hparams.crop_size": 128, "train.batch_size": 60, "hparams.output_k_A": 45,
        "hparams.output_k_B": 15, "hparams.lamb_A": 1.0, "hparams.lamb_B": 1.0, "hparams.lr": 1e-4,
        "hparams.half_T_side_dense": 10, "hparams.input": "rgb_sobel", "hparams.num_sub_heads": 1,
        "protocol.eval_res": 128, "protocol.crop": "center", "protocol.crf": False,
        "protocol.eval_split": "train+val", "protocol.matching": "hungarian"}),  # IIC scores train2017 + val2017
    ("iic", "cocostuff3", "vgg-iic", "iic", {
        "train.train_res": 160, "hparams.crop_size": 128, "train.batch_size": 120, "hparams.output_k_A": 15,
        "hparams.output_k_B": 3, "hparams.lamb_B": 1.5, "hparams.lr": 1e-4, "hparams.half_T_side_dense": 10,
        "protocol.eval_res": 128, "protocol.crf": False}),
    ("iic", "potsdam", "vgg-iic", "iic", {
        "train.train_res": 200, "hparams.crop_size": None, "train.batch_size": 60, "hparams.output_k_A": 36,
        "hparams.output_k_B": 6, "hparams.lamb_B": 1.0, "hparams.lr": 1e-6, "hparams.half_T_side_dense": 5,
        "hparams.input": "rgbir", "hparams.jitter": [0.1, 0.1, 0.1, 0.1],
        "protocol.eval_res": 200, "protocol.crf": False}),
    ("iic", "potsdam3", "vgg-iic", "iic", {
        "train.train_res": 200, "hparams.crop_size": None, "train.batch_size": 75, "hparams.output_k_A": 24,
        "hparams.output_k_B": 3, "hparams.lamb_B": 1.5, "hparams.lr": 1e-5, "hparams.half_T_side_dense": 10,
        "hparams.input": "rgbir", "protocol.eval_res": 200, "protocol.crf": False}),
    ("picie", "cocostuff27", "resnet18-fpn", "picie", {
        "train.train_res": 640, "hparams.input_res": 320, "train.batch_size": 128, "train.epochs": 10,
        "hparams.lr": 1e-4, "hparams.K_train": 27, "hparams.kmeans_n_iter": 20, "hparams.min_scale": 0.5,
        "protocol.eval_res": 320, "protocol.image_interpolation": "bilinear", "protocol.crf": False}),
    ("picie", "cityscapes27", "resnet18-fpn", "picie", {
        "train.train_res": 640, "hparams.input_res": 320, "train.batch_size": 128, "train.epochs": 10,
        "hparams.lr": 1e-3, "hparams.K_train": 27, "protocol.eval_res": 320, "protocol.crf": False}),
    ("stego", "cocostuff27", "vit-s8", "stego", {
        "train.train_res": 224, "train.batch_size": 16, "train.steps": 5000, "hparams.lr": 5e-4,
        "hparams.rand_weight": 0.63, "hparams.knn_weight": 0.25, "hparams.self_weight": 0.67,
        "hparams.rand_shift": 0.66, "hparams.knn_shift": 0.02, "hparams.self_shift": 0.08,
        "hparams.num_neighbors": 7, "hparams.feature_samples": 11, "hparams.neg_samples": 5,
        "protocol.eval_res": 320, "protocol.flip_tta": True, "protocol.crf": True}),
    ("hp", "cocostuff27", "vit-s8", "hp", {
        "train.train_res": 224, "train.batch_size": 64, "train.epochs": 3, "train.val_every": 100,
        "train.clip_grad_norm": 10.0, "hparams.dim": 512, "hparams.tau": 0.8, "hparams.alpha": 0.05,
        "hparams.rho": 0.02, "hparams.pool_size": 2048, "hparams.ema_m": 0.99, "hparams.warmup": 1000,
        "hparams.renew_interval": 100, "hparams.lr": 5e-4, "hparams.weight_decay": 0.1,
        "probes.linear_lr": 1e-3, "probes.cluster_lr": 5e-3,
        "protocol.eval_res": 320, "protocol.flip_tta": False, "protocol.crf": True}),
    ("hp", "cityscapes27", "vit-s8", "hp", {
        "train.train_res": 224, "train.epochs": 30, "hparams.tau": 0.6, "hparams.ema_m": 0.999,
        "hparams.warmup": 50, "hparams.renew_interval": 20, "protocol.eval_res": 320}),
    ("ppap", "cocostuff27", "vit-s8", "ppap", {
        "train.train_res": 224, "train.batch_size": 64, "train.epochs": 5, "hparams.phi0": 0.55,
        "hparams.psi0": 0.2, "hparams.sigma_pos": 3, "hparams.sigma_amb": 3, "hparams.prop_steps": 2,
        "hparams.tau": 0.8, "hparams.patch_split": 16, "hparams.optimizer": "adamw", "hparams.lr": 1e-3,
        "hparams.weight_decay": 0.1, "probes.linear_lr": 1e-3, "probes.cluster_lr": 5e-3,
        "protocol.eval_res": 320, "protocol.crf": True}),
    ("ppap", "potsdam3", "vit-b8", "ppap", {
        "train.train_res": 224, "train.epochs": 40, "train.val_every": 20, "hparams.sigma_pos": 5,
        "hparams.prop_steps": 1, "hparams.tau": 0.07, "hparams.optimizer": "adam", "hparams.lr": 5e-4,
        "probes.cluster_lr": 1e-3, "protocol.eval_res": 320}),
    ("hsg", "cityscapes27", "fcn-resnet50", "hsg-knn", {
        "train.train_res": 448, "train.batch_size": 4, "train.steps": 38000, "hparams.optimizer.lr": 0.1,
        "hparams.optimizer.momentum": 0.9, "hparams.optimizer.weight_decay": 1e-4, "hparams.dmon_knn": 4,
        "hparams.loss_weights.dmon": 0.2, "hparams.loss_weights.centroid": 0.2, "protocol.crf": False}),
    ("hsg", "voc12", "fcn-resnet50", "hsg-knn", {  # COCO-trained stage 2 evaluated on VOC: crop 448
        "train.train_res": 448, "train.batch_size": 6, "train.steps": 20000, "protocol.crf": False}),
    ("san", "cocostuff27", "san-vit", "uss", {"train.train_res": 128}),  # the SAN paper's ViT trains at 128
    ("dino", "cocostuff27", "vit-s8", "stego", {"train.train_res": 224, "protocol.eval_res": 320}),
]


@pytest.mark.parametrize("method,dataset,backbone,protocol,expected", PUBLISHED,
                         ids=[f"{m}-{d}-{b}-{p}" for m, d, b, p, _ in PUBLISHED])
def test_published_settings_survive_resolution(method, dataset, backbone, protocol, expected):
    values = resolve(RunSpec(method, dataset, backbone, protocol=protocol)).values()
    assert {key: values[key] for key in expected} == expected


def _published_cases():
    """(method, real dataset, backbone, entry) for every card entry that is the first match of that pair."""
    cases = []
    for method in METHODS.names():
        card = _card("methods", method)
        for entry in card.get("configs") or []:
            for dataset in _real_datasets():
                if not fnmatch.fnmatchcase(dataset, str(entry.get("dataset", "*"))):
                    continue
                backbone = entry.get("backbone", "*")
                backbone = card["default_backbone"] if backbone == "*" else backbone
                if published_config(card, dataset, backbone) is entry:
                    cases.append((method, dataset, backbone, entry))
    return cases


@pytest.mark.parametrize("method,dataset,backbone,entry", _published_cases(),
                         ids=[f"{m}-{d}-{b}" for m, d, b, _ in _published_cases()])
def test_resolved_config_equals_the_cards_published_entry(method, dataset, backbone, entry):
    card = _card("methods", method)
    cfg = resolve(RunSpec(method, dataset, backbone, protocol=card.get("default_protocol", "uss")))
    values = cfg.values()
    for section in ("train", "probes", "hparams"):
        for key, value in _leaves(entry.get(section) or {}, section):
            assert values[key] == value, key
            assert _layer(cfg.value_sources[key]) == "published", key
    expected_res = (entry.get("train") or {}).get("train_res", (card.get("train") or {}).get("train_res"))
    assert cfg.train["train_res"] == expected_res


@pytest.mark.parametrize("method", METHODS.names())
def test_no_preset_value_on_a_real_dataset_at_the_default_preset(method):
    card = _card("methods", method)
    for dataset in _real_datasets():
        for protocol in ("uss", card.get("default_protocol", "uss")):
            cfg = resolve(RunSpec(method, dataset, card["default_backbone"], protocol=protocol))
            assert not [k for k, s in cfg.value_sources.items() if _layer(s) == "preset"], (dataset, protocol)
            registered = PROTOCOLS.get(protocol)
            geometry = (_card("datasets", dataset).get("protocols") or {}).get(protocol, {})
            assert cfg.protocol.eval_res == geometry.get("eval_res", registered.eval_res), (dataset, protocol)


def test_smoke_preset_shrinks_a_real_dataset_and_says_so():
    cfg = resolve(RunSpec("picie", "cocostuff27", "resnet18-fpn", protocol="picie", preset="smoke"))
    assert cfg.train["train_res"] == 64 and cfg.protocol.eval_res == 64
    assert cfg.value_sources["train.train_res"] == "preset (datasets/cocostuff27.yaml presets.smoke)"
    assert cfg.value_sources["hparams.input_res"] == "preset (methods/picie.yaml presets.smoke)"
    assert cfg.hparams["lr"] == 1e-3 and cfg.train["epochs"] is None


def test_every_value_has_a_known_layer_and_records_carry_them():
    cfg = resolve(RunSpec("iic", "potsdam", "vgg-iic", protocol="iic"))
    assert set(cfg.values()) == set(cfg.value_sources)
    assert {_layer(s) for s in cfg.value_sources.values()} <= set(LAYER_NAMES)
    assert cfg.value_sources["protocol.eval_res"] == "protocol (datasets/potsdam.yaml protocols.iic)"
    assert cfg.value_sources["protocol.crop"] == "protocol (iic)"
    assert cfg.value_sources["train.train_res"] == "published (methods/iic.yaml configs potsdam/vgg-iic)"
    assert cfg.value_sources["hparams.flip_p"] == "card (methods/iic.yaml)"
    assert cfg.value_sources["train.clip_grad_norm"] == "harness"
    record = cfg.as_dict()
    assert record["value_sources"]["train.train_res"].startswith("published")
    cited = "published: methods/iic.yaml configs potsdam/vgg-iic: xu-ji/IIC examples/commands.txt model 544"
    assert any(s.startswith(cited) for s in record["sources"])


# ---- --set: keys and values ----

@pytest.mark.parametrize("overrides,message", [
    ({"nosuch.key": 1}, "--set nosuch.key=1: keys look like <train|probes|hparams|protocol>.<key>"),
    ({"train.nosuch": 1}, "--set train.nosuch=1: unknown key train.nosuch for dino on synthetic"),
    ({"hparams.tau": 0.5}, "--set hparams.tau=0.5: unknown key hparams.tau for dino on synthetic (dino defines "
                           "no hparams keys)"),
    ({"train.stpes": 4}, "unknown key train.stpes for dino on synthetic (did you mean: train.steps"),
    ({"train.steps": "abc"}, "--set train.steps=abc: train.steps must be an integer >= 1, got 'abc'"),
    ({"train.batch_size": 0}, "train.batch_size must be an integer >= 1, got 0"),
    ({"train.steps": -5}, "train.steps must be an integer >= 1, got -5"),
    ({"train.steps": 2.5}, "train.steps must be an integer >= 1, got 2.5"),
    ({"train.amp": 1}, "train.amp must be true or false, got 1"),
    ({"protocol.crf": "maybe"}, "--set protocol.crf=maybe: protocol.crf must be true or false, got 'maybe'"),
    ({"protocol.eval_res": 0}, "protocol.eval_res must be an integer >= 1, got 0"),
    ({"protocol.crop": "corner"}, "protocol.crop must be one of center, none, got 'corner'"),
    ({"protocol.checkpoint_selection": "best"}, "protocol.checkpoint_selection must be one of last, "
                                                "val_cluster_miou, val_sum4, got 'best'"),
    ({"protocol.crf_params": 3}, "protocol.crf_params is a group; set its keys one by one"),
    ({"protocol.name": "stego"}, "unknown key protocol.name"),
    ({"probes.linear_lr": 0}, "probes.linear_lr must be a number > 0, got 0.0"),
    ({"probes.linear_lr": "fast"}, "probes.linear_lr must be a number > 0, got 'fast'"),
])
def test_bad_overrides_are_named_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as info:
        resolve(RunSpec("dino", "synthetic", "vit-s8", overrides=overrides))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_hparams_keys_are_checked_against_the_card():
    spec = RunSpec("hsg", "cityscapes27", "fcn-resnet50", protocol="hsg-knn",
                   overrides={"hparams.optimizer.lrr": 0.5})
    with pytest.raises(ConfigError, match=r"unknown key hparams.optimizer.lrr .*did you mean: hparams.optimizer.lr"):
        resolve(spec)
    with pytest.raises(ConfigError, match="hparams.kmeans_grid must be a list, got 3"):
        resolve(RunSpec("hsg", "cityscapes27", "fcn-resnet50", overrides={"hparams.kmeans_grid": 3}))
    with pytest.raises(ConfigError, match="hparams.tau must be a number, got 'warm'"):
        resolve(RunSpec("hp", "cocostuff27", "vit-s8", overrides={"hparams.tau": "warm"}))
    with pytest.raises(ConfigError, match="hparams.dim must be an integer, got 64.5"):
        resolve(RunSpec("hp", "cocostuff27", "vit-s8", overrides={"hparams.dim": 64.5}))
    # null by default: the type comes from the card's other entries (IIC's published K_A are integers)
    with pytest.raises(ConfigError, match="hparams.output_k_A must be an integer or null, got 'many'"):
        resolve(RunSpec("iic", "cocostuff27", "vgg-iic", overrides={"hparams.output_k_A": "many"}))
    assert resolve(RunSpec("iic", "cocostuff27", "vgg-iic", overrides={"hparams.output_k_A": 30})).hparams[
        "output_k_A"] == 30


def test_good_overrides_are_converted_and_tagged():
    cfg = resolve(RunSpec("hsg", "cityscapes27", "fcn-resnet50", protocol="hsg-knn", overrides={
        "hparams.optimizer.lr": 0.5, "hparams.loss_weights": {"dmon": 0.3}, "protocol.kmeans_grid": [3, 4],
        "protocol.crf_params.iterations": 5}))
    assert cfg.hparams["optimizer"] == {"lr": 0.5, "momentum": 0.9, "weight_decay": 1e-4, "transformer_lr_mult": 1}
    assert cfg.hparams["loss_weights"]["dmon"] == 0.3 and cfg.hparams["loss_weights"]["centroid"] == 0.2
    assert cfg.protocol.kmeans_grid == (3, 4) and cfg.protocol.crf_params["iterations"] == 5
    assert cfg.value_sources["hparams.optimizer.lr"] == "set"
    assert cfg.value_sources["hparams.optimizer.momentum"].startswith("published")
    # YAML 1.1 reads 1e-3 as a string; a number is expected, so it becomes one
    hp = resolve(RunSpec("hp", "cocostuff27", "vit-s8", overrides={"hparams.lr": "1e-3", "hparams.tau": 1}))
    assert hp.hparams["lr"] == 1e-3 and isinstance(hp.hparams["tau"], float)


def test_steps_without_epochs_replaces_the_epoch_count():
    cfg = resolve(RunSpec("picie", "cocostuff27", "resnet18-fpn", overrides={"train.steps": 7}))
    assert cfg.train["steps"] == 7 and cfg.train["epochs"] is None
    assert cfg.value_sources["train.epochs"] == "set (train.steps)"
    both = resolve(RunSpec("picie", "cocostuff27", "resnet18-fpn", overrides={"train.steps": 7, "train.epochs": 2}))
    assert both.train["epochs"] == 2


def test_validate_specs_reports_every_problem_once_in_one_line():
    specs = [RunSpec("dino", "synthetic", "vit-s8", seed=s, overrides={"train.steps": -1}) for s in (0, 1)]
    specs.append(RunSpec("dino", "synthetic", "vit-s8", preset="smok"))
    with pytest.raises(ConfigError) as info:
        validate_specs(specs)
    text = str(info.value)
    assert text.count("train.steps must be") == 1 and "unknown preset 'smok'" in text and "\n" not in text
    validate_specs([RunSpec("dino", "synthetic", "vit-s8")])  # nothing to say


def test_choices_agree_with_the_transform_and_the_engine():
    from uss_bench.data.transforms import SegTransform

    for crop in PROTOCOL_RULES["crop"].choices:
        SegTransform(8, crop, "nearest")
    for mode in PROTOCOL_RULES["image_interpolation"].choices:
        SegTransform(8, "center", mode)
    with pytest.raises(ValueError):
        SegTransform(8, "corner", "nearest")
    with pytest.raises(ValueError):
        SegTransform(8, "center", "lanczos")


def test_every_resolved_card_value_obeys_the_rules():
    for method in METHODS.names():
        card = _card("methods", method)
        datasets = ["synthetic", *sorted({d for m, d, _, _ in _published_cases() if m == method})]
        for dataset in datasets:
            values = resolve(RunSpec(method, dataset, card["default_backbone"],
                                     protocol=card.get("default_protocol", "uss"))).values()
            for section, rules in (("train", TRAIN_RULES), ("probes", PROBE_RULES), ("protocol", PROTOCOL_RULES)):
                for key, rule in rules.items():
                    path = f"{section}.{key}"
                    assert rule.check(values[path])[0], (method, dataset, path, values[path])
