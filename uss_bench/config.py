"""Resolve a RunSpec into concrete settings, layer after layer (later wins), each value tagged with its layer.

The precedence is the table :data:`LAYERS` (the README shows the same table; ``uss-bench config``
prints every resolved value with its layer). Two rules matter most:

- a real dataset keeps the published settings: the preset layer touches it only for a non-default
  preset (``smoke``), and a dataset card may hold ``presets.default`` only when it is synthetic;
- ``--set`` keys must exist in what the card, the protocol or the training settings define, and values
  must have the right type and range; :func:`validate_specs` reports every problem in one line before
  anything runs.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from uss_bench.eval.matching import MATCHERS
from uss_bench.eval.metrics import AVERAGING, EXTRA_CLUSTER_PIXELS
from uss_bench.eval.protocol import SELECTION_RULES, Protocol
from uss_bench.paths import cards_dir, load_card
from uss_bench.registry import PROTOCOLS
from uss_bench.spec import RunSpec

TRAIN_DEFAULTS: dict[str, Any] = {
    "batch_size": 16,
    "steps": 1000,
    "epochs": None,  # when set, steps = epochs * steps_per_epoch
    "train_res": 224,
    "amp": False,
    "clip_grad_norm": None,
    "val_every": 100,
    "eval_batch_size": 16,
    # a method preset trained first, whose final weights this run starts from (hparams.init_from);
    # the pipeline runs it as its own run (pipeline/execute.py)
    "init_stage": None,
}
PROBE_DEFAULTS: dict[str, Any] = {"linear_lr": 5e-3, "cluster_lr": 5e-3}
SECTIONS = ("train", "probes", "hparams", "protocol")


@dataclass(frozen=True)
class Layer:
    name: str
    reads: str
    applies: str


# The precedence, lowest first. Each resolved value records the name of the layer that set it last.
LAYERS: tuple[Layer, ...] = (
    Layer("harness", "TRAIN_DEFAULTS / PROBE_DEFAULTS in uss_bench/config.py", "a training setting no card sets"),
    Layer("card", "methods/<method>.yaml: train, probes, hparams", "always"),
    Layer("published", "methods/<method>.yaml: the first `configs` entry matching (dataset, backbone)",
          "when an entry matches"),
    Layer("protocol", "the registered protocol (`uss-bench list protocols`), then "
          "datasets/<dataset>.yaml: protocols.<protocol> (its published geometry on that dataset)", "always"),
    Layer("preset", "methods/<method>.yaml: presets.<preset>, then datasets/<dataset>.yaml: presets.<preset> "
          "(train_res, eval_res)", "synthetic data, or a non-default preset (smoke); never the default preset "
          "on a real dataset"),
    Layer("set", "--set SECTION.KEY=VALUE", "always; keys and values are checked"),
)
LAYER_NAMES = tuple(layer.name for layer in LAYERS)

# Dataset-card preset sizes -> the setting they fill. image_size sizes the generated synthetic images only.
DATASET_PRESET_KEYS = {"train_res": "train.train_res", "eval_res": "protocol.eval_res"}
DATASET_PRESET_IGNORED = ("image_size",)
# Protocol fields that describe it rather than set it.
PROTOCOL_FIXED = ("name", "description", "notes")


class ConfigError(ValueError):
    """A request that cannot be resolved; the message is one line saying what and where."""


@dataclass(frozen=True)
class Rule:
    """Type and range of one setting; ``choices`` for named options."""

    kind: type
    minimum: float | None = None
    exclusive: bool = False  # minimum itself excluded (learning rates)
    optional: bool = False  # null allowed
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.choices:
            text = f"one of {', '.join(self.choices)}"
        else:
            text = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
                    list: "a list", dict: "a mapping"}.get(self.kind, self.kind.__name__)
            if self.minimum is not None:
                text += f" {'>' if self.exclusive else '>='} {self.minimum:g}"
        return text + (" or null" if self.optional else "")

    def check(self, value: Any) -> tuple[bool, Any]:
        """(ok, value converted to the rule's type)."""
        if value is None:
            return self.optional, value
        if self.kind is bool:
            return isinstance(value, bool), value
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                return False, value
        elif self.kind is float:
            if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
                try:
                    value = float(value)
                except ValueError:
                    return False, value
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return False, value
            value = float(value)
        elif not isinstance(value, self.kind):
            return False, value
        if self.choices and value not in self.choices:
            return False, value
        if self.minimum is not None and (value <= self.minimum if self.exclusive else value < self.minimum):
            return False, value
        return True, value


_POSITIVE_INT = Rule(int, minimum=1)
_LR = Rule(float, minimum=0, exclusive=True)
TRAIN_RULES: dict[str, Rule] = {
    "batch_size": _POSITIVE_INT,
    "steps": _POSITIVE_INT,
    "epochs": Rule(int, minimum=1, optional=True),
    "train_res": _POSITIVE_INT,
    "amp": Rule(bool),
    "clip_grad_norm": Rule(float, minimum=0, exclusive=True, optional=True),
    "val_every": _POSITIVE_INT,
    "eval_batch_size": _POSITIVE_INT,
    "init_stage": Rule(str, optional=True),
}
PROBE_RULES: dict[str, Rule] = {"linear_lr": _LR, "cluster_lr": _LR}
PROTOCOL_RULES: dict[str, Rule] = {
    "eval_res": _POSITIVE_INT,
    "crop": Rule(str, choices=("center", "none")),  # SegTransform's crops
    "image_interpolation": Rule(str, choices=("bicubic", "bilinear", "nearest")),  # SegTransform's modes
    "matching": Rule(str, choices=tuple(MATCHERS)),
    "miou_averaging": Rule(str, choices=AVERAGING),
    "checkpoint_selection": Rule(str, choices=SELECTION_RULES),
    "extra_clusters": Rule(int, minimum=0),
    "extra_cluster_pixels": Rule(str, choices=EXTRA_CLUSTER_PIXELS),
    "crf_params.iterations": _POSITIVE_INT,
}


@dataclass
class RunConfig:
    spec: RunSpec
    card: dict[str, Any]
    dataset_card: dict[str, Any]
    train: dict[str, Any]
    probes: dict[str, Any]
    hparams: dict[str, Any]
    protocol: Protocol
    sources: list[str] = field(default_factory=list)  # the layers that set something, with what they read
    value_sources: dict[str, str] = field(default_factory=dict)  # "train.steps" -> "layer (where)"

    def as_dict(self) -> dict[str, Any]:
        return {"train": self.train, "probes": self.probes, "hparams": self.hparams, "sources": self.sources,
                "value_sources": self.value_sources}

    def values(self) -> dict[str, Any]:
        """Every resolved leaf as ``section.key`` -> value (nested mappings flattened with dots)."""
        protocol = {k: v for k, v in self.protocol.as_dict().items() if k not in PROTOCOL_FIXED}
        sections = {"train": self.train, "probes": self.probes, "hparams": self.hparams, "protocol": protocol}
        return {path: value for name in SECTIONS for path, value in _leaves(sections[name], name)}


def _leaves(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every non-mapping value; an empty mapping has no leaves."""
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _leaves(sub, f"{prefix}.{key}")
    else:
        yield prefix, value


class _Resolution:
    """The four sections being built and the layer of each leaf."""

    def __init__(self) -> None:
        self.sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        self.value_sources: dict[str, str] = {}
        self.sources: list[str] = []

    def apply(self, layer: str, section: str, update: dict[str, Any] | None, origin: str = "",
              note: str | None = None) -> None:
        """Merge ``update`` into ``section``; each leaf it sets is tagged ``layer (origin)``."""
        if not update:
            return
        assert layer in LAYER_NAMES, layer
        self._merge(self.sections[section], update, section, f"{layer} ({origin})" if origin else layer)
        note = note or (f"{layer}: {origin}" if origin else "")
        if note and note not in self.sources:
            self.sources.append(note)

    def _merge(self, target: dict[str, Any], update: dict[str, Any], prefix: str, source: str) -> None:
        for key, value in update.items():
            path = f"{prefix}.{key}"
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                self._merge(target[key], value, path, source)
                continue
            for old in [p for p in self.value_sources if p == path or p.startswith(path + ".")]:
                del self.value_sources[old]
            target[key] = copy.deepcopy(value)
            for leaf, _ in _leaves(value, path):
                self.value_sources[leaf] = source

    def lookup(self, path: str) -> tuple[bool, Any]:
        node: Any = self.sections
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return False, None
            node = node[part]
        return True, node


_CARDS: dict[tuple[str, int], dict[str, Any]] = {}


def _load(kind: str, name: str) -> dict[str, Any]:
    """load_card, parsed once per file version (a sweep resolves the same cards hundreds of times)."""
    path = cards_dir(kind) / f"{name}.yaml"
    try:
        key = (str(path), path.stat().st_mtime_ns)
    except OSError:
        return load_card(kind, name)  # its error names the missing card
    if key not in _CARDS:
        _CARDS[key] = load_card(kind, name)
    return copy.deepcopy(_CARDS[key])


def published_config(card: dict[str, Any], dataset: str, backbone: str) -> dict[str, Any] | None:
    """The card's ``configs`` entry for (dataset, backbone); wildcards allowed; first match wins."""
    for entry in card.get("configs", []) or []:
        if fnmatch.fnmatchcase(dataset, str(entry.get("dataset", "*"))) and fnmatch.fnmatchcase(
            backbone, str(entry.get("backbone", "*"))
        ):
            return entry
    return None


def is_synthetic(dataset_card: dict[str, Any]) -> bool:
    return bool(dataset_card.get("synthetic", False))


def known_presets(card: dict[str, Any]) -> list[str]:
    return ["default", *sorted(card.get("presets") or {})]


def resolve(spec: RunSpec) -> RunConfig:
    """Apply :data:`LAYERS` in order; raise :class:`ConfigError` (one line) for a bad request."""
    card = _load("methods", spec.method)
    dataset_card = _load("datasets", spec.dataset)
    protocol = PROTOCOLS.get(spec.protocol).for_dataset(spec.dataset)
    res = _Resolution()

    res.apply("harness", "train", TRAIN_DEFAULTS)
    res.apply("harness", "probes", PROBE_DEFAULTS)
    for name in ("train", "probes", "hparams"):
        res.apply("card", name, card.get(name), f"methods/{spec.method}.yaml")

    entry = published_config(card, spec.dataset, spec.backbone)
    if entry is not None:
        origin = f"methods/{spec.method}.yaml configs {entry.get('dataset')}/{entry.get('backbone')}"
        for name in ("train", "probes", "hparams"):
            res.apply("published", name, entry.get(name), origin, f"published: {origin}: {entry.get('source', '?')}")

    res.apply("protocol", "protocol", {k: v for k, v in protocol.as_dict().items() if k not in PROTOCOL_FIXED},
              protocol.name)
    geometry = (dataset_card.get("protocols") or {}).get(protocol.name)
    res.apply("protocol", "protocol", geometry, f"datasets/{spec.dataset}.yaml protocols.{protocol.name}")

    for name, values, origin in _preset_layer(spec, card, dataset_card):
        res.apply("preset", name, values, origin)

    _apply_overrides(res, spec, card)
    return RunConfig(
        spec=spec,
        card=card,
        dataset_card=dataset_card,
        train=res.sections["train"],
        probes=res.sections["probes"],
        hparams=res.sections["hparams"],
        protocol=protocol.with_overrides(**res.sections["protocol"]),
        sources=res.sources,
        value_sources=res.value_sources,
    )


def _preset_layer(spec: RunSpec, card: dict[str, Any], dataset_card: dict[str, Any]
                  ) -> list[tuple[str, dict[str, Any] | None, str]]:
    presets = card.get("presets") or {}
    if "default" in presets:  # it would change published settings on real datasets
        raise ConfigError(f"methods/{spec.method}.yaml: 'presets.default' is not allowed; put per-dataset "
                          "sizes in a 'configs' entry (e.g. dataset: synthetic)")
    data_presets = dataset_card.get("presets") or {}
    if "default" in data_presets and not is_synthetic(dataset_card):
        raise ConfigError(f"datasets/{spec.dataset}.yaml: 'presets.default' is not allowed on a real dataset "
                          "(it would replace published resolutions)")
    if spec.preset != "default" and spec.preset not in presets:
        close = difflib.get_close_matches(spec.preset, list(presets), n=3, cutoff=0.5)
        hint = f" (did you mean: {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown preset {spec.preset!r} for method {spec.method}{hint}; presets: "
                          f"{', '.join(known_presets(card))}")
    if spec.preset == "default" and not is_synthetic(dataset_card):
        return []  # a real dataset at the default preset keeps its published settings
    method_preset = presets.get(spec.preset) or {}
    unknown = set(method_preset) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"methods/{spec.method}.yaml presets.{spec.preset}: unknown section(s) {sorted(unknown)}")
    sizes: dict[str, dict[str, Any]] = {"train": {}, "protocol": {}}
    for key, value in (data_presets.get(spec.preset) or {}).items():
        if key in DATASET_PRESET_IGNORED:
            continue
        if key not in DATASET_PRESET_KEYS:
            raise ConfigError(f"datasets/{spec.dataset}.yaml presets.{spec.preset}: unknown size {key!r}; "
                              f"known: {', '.join([*DATASET_PRESET_KEYS, *DATASET_PRESET_IGNORED])}")
        section, _, name = DATASET_PRESET_KEYS[key].partition(".")
        sizes[section][name] = value
    method_origin = f"methods/{spec.method}.yaml presets.{spec.preset}"
    data_origin = f"datasets/{spec.dataset}.yaml presets.{spec.preset}"
    return [*((name, method_preset.get(name), method_origin) for name in SECTIONS),
            *((name, values, data_origin) for name, values in sizes.items())]


def _card_values(res: _Resolution, card: dict[str, Any]) -> dict[str, list[Any]]:
    """Every settable dotted key -> the values the layers and any card entry or preset give it."""
    values: dict[str, list[Any]] = {}
    sources = [res.sections, *(card.get("configs") or []), *(card.get("presets") or {}).values()]
    for source in sources:
        for name in SECTIONS:
            for path, value in _leaves(source.get(name) or {}, name):
                values.setdefault(path, []).append(value)
    return values


def _rule_for(path: str, seen: list[Any]) -> Rule | None:
    """The rule table's entry, else the type of the first non-null value the card gives (null stays allowed)."""
    section, _, key = path.partition(".")
    table = {"train": TRAIN_RULES, "probes": PROBE_RULES, "protocol": PROTOCOL_RULES}.get(section, {})
    if key in table:
        return table[key]
    example = next((v for v in seen if v is not None), None)
    if example is None:
        return None  # only nulls: nothing says what the type is
    optional = any(v is None for v in seen)
    if isinstance(example, bool):
        return Rule(bool, optional=optional)
    if isinstance(example, (int, float)):
        # an int that another entry gives as a float (1 vs 1.0e-4) is a number
        kind = int if all(isinstance(v, int) and not isinstance(v, bool) for v in seen if v is not None) else float
        return Rule(kind, optional=optional)
    if isinstance(example, (list, tuple)):
        return Rule(list, optional=optional)  # YAML gives lists; a tuple field gets its tuple back
    return Rule(type(example), optional=optional)


def _apply_overrides(res: _Resolution, spec: RunSpec, card: dict[str, Any]) -> None:
    if not spec.overrides:
        return
    card_values = _card_values(res, card)
    known = sorted(card_values)
    for dotted, raw in spec.overrides.items():
        where = f"--set {dotted}={raw}"
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or not key:
            raise ConfigError(f"{where}: keys look like <{'|'.join(SECTIONS)}>.<key>, not {dotted!r}"
                              f"{_hint(dotted, known)}")
        for path, value in _leaves(raw, dotted) if isinstance(raw, dict) else [(dotted, raw)]:
            exists, current = res.lookup(path)
            if not exists and path not in known:
                if any(k.startswith(section + ".") for k in known):
                    why = _hint(path, known) or f" (`uss-bench config {spec.method} {spec.dataset}` lists them)"
                else:
                    why = f" ({spec.method} defines no {section} keys)"
                raise ConfigError(f"{where}: unknown key {path} for {spec.method} on {spec.dataset}{why}")
            if isinstance(current, dict):
                example = next(iter(_leaves(current, path)), (f"{path}.<key>",))[0]
                raise ConfigError(f"{where}: {path} is a group; set its keys one by one, e.g. {example}=...")
            rule = _rule_for(path, card_values.get(path, []))
            if rule is not None:
                ok, value = rule.check(value)
                if not ok:
                    raise ConfigError(f"{where}: {path} must be {rule.describe()}, got {value!r}")
            if isinstance(current, tuple) and isinstance(value, list):
                value = tuple(value)
            res.apply("set", section, _nest(path.split(".")[1:], value), note=f"set: {sorted(spec.overrides)}")
    # steps given without epochs: the step count is what the user asked for
    if "train.steps" in spec.overrides and "train.epochs" not in spec.overrides and res.sections["train"].get("epochs"):
        res.apply("set", "train", {"epochs": None}, "train.steps")


def _nest(parts: list[str], value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(parts):
        out = {part: out}
    return out


def _hint(key: str, known: Iterable[str]) -> str:
    """Close matches: within the key's section when it names one, else among all keys."""
    section, _, rest = key.partition(".")
    if section in SECTIONS:
        same = {k.partition(".")[2]: k for k in known if k.startswith(section + ".")}
        close = [same[k] for k in difflib.get_close_matches(rest, list(same), n=3, cutoff=0.6)]
    else:
        close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
    return f" (did you mean: {', '.join(close)}?)" if close else ""


def validate_specs(specs: Iterable[RunSpec]) -> None:
    """Resolve every spec (cards only, no data); raise one :class:`ConfigError` naming every problem."""
    problems: list[str] = []
    seen: set[str] = set()
    for spec in specs:
        key = replace(spec, seed=0, random_init=False).canonical_json()  # seeds resolve alike
        if key in seen:
            continue
        seen.add(key)
        try:
            _check_init_stage(spec, resolve(spec))
        except ConfigError as exc:
            if str(exc) not in problems:
                problems.append(str(exc))
    if problems:
        raise ConfigError("; ".join(problems))


def _check_init_stage(spec: RunSpec, config: RunConfig) -> None:
    """``train.init_stage`` names a preset of the method whose own run starts from nothing."""
    stage = config.train.get("init_stage")
    if not stage:
        return
    presets = _load("methods", spec.method).get("presets") or {}
    if stage not in presets:
        raise ConfigError(f"{spec.label()}: train.init_stage {stage!r} is not a preset of methods/{spec.method}.yaml "
                          f"(presets: {', '.join(sorted(presets)) or 'none'})")
    first = resolve(spec.stage(stage))
    if first.train.get("init_stage") or first.hparams.get("init_from"):
        raise ConfigError(f"{spec.label()}: its init_stage {stage!r} must start from scratch (set its "
                          "train.init_stage and hparams.init_from to null)")
