"""Resolve a RunSpec into concrete settings: method card + published config + preset + overrides.

Precedence (later wins): card ``train``/``probes``/``hparams`` defaults, the card's published
config for (dataset, backbone), the card's preset, the dataset card's preset (data sizes), then the
spec's ``overrides`` (dotted keys such as ``train.steps`` or ``hparams.tau``).
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field
from typing import Any

from uss_bench.eval.protocol import Protocol
from uss_bench.paths import load_card
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
}
PROBE_DEFAULTS: dict[str, Any] = {"linear_lr": 5e-3, "cluster_lr": 5e-3}
SECTIONS = ("train", "probes", "hparams", "protocol")


@dataclass
class RunConfig:
    spec: RunSpec
    card: dict[str, Any]
    dataset_card: dict[str, Any]
    train: dict[str, Any]
    probes: dict[str, Any]
    hparams: dict[str, Any]
    protocol: Protocol
    sources: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"train": self.train, "probes": self.probes, "hparams": self.hparams, "sources": self.sources}


def _merge(base: dict[str, Any], update: dict[str, Any] | None) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _apply_overrides(sections: dict[str, dict[str, Any]], overrides: dict[str, Any]) -> None:
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or not key:
            raise ValueError(f"override {dotted!r} must look like <{'|'.join(SECTIONS)}>.<key>")
        sections[section][key] = value


def published_config(card: dict[str, Any], dataset: str, backbone: str) -> dict[str, Any] | None:
    """The card's ``configs`` entry for (dataset, backbone); wildcards allowed; first match wins."""
    for entry in card.get("configs", []) or []:
        if fnmatch.fnmatchcase(dataset, str(entry.get("dataset", "*"))) and fnmatch.fnmatchcase(
            backbone, str(entry.get("backbone", "*"))
        ):
            return entry
    return None


def resolve(spec: RunSpec) -> RunConfig:
    card = load_card("methods", spec.method)
    dataset_card = load_card("datasets", spec.dataset)
    sections = {
        "train": _merge(TRAIN_DEFAULTS, card.get("train")),
        "probes": _merge(PROBE_DEFAULTS, card.get("probes")),
        "hparams": _merge({}, card.get("hparams")),
        "protocol": {},
    }
    sources = [f"methods/{spec.method}.yaml defaults"]
    entry = published_config(card, spec.dataset, spec.backbone)
    if entry is not None:
        for name in ("train", "probes", "hparams"):
            sections[name] = _merge(sections[name], entry.get(name))
        sources.append(f"published config {entry.get('dataset')}/{entry.get('backbone')}: {entry.get('source', '?')}")
    presets = card.get("presets") or {}
    if "default" in presets:  # it would silently change published settings on real datasets
        raise ValueError(f"methods/{spec.method}.yaml: 'presets.default' is not allowed; put per-dataset sizes "
                         "in a 'configs' entry (e.g. dataset: synthetic)")
    preset = presets.get(spec.preset)
    if preset is None and spec.preset != "default":
        known = ", ".join(["default", *sorted(presets)])
        raise ValueError(f"method {spec.method!r} has no preset {spec.preset!r}; known: {known}")
    for name in ("train", "probes", "hparams", "protocol"):
        sections[name] = _merge(sections[name], (preset or {}).get(name))
    data_preset = (dataset_card.get("presets") or {}).get(spec.preset) or (dataset_card.get("presets") or {}).get(
        "default", {}
    )
    if "train_res" in data_preset:
        sections["train"]["train_res"] = data_preset["train_res"]
    if "eval_res" in data_preset:
        sections["protocol"].setdefault("eval_res", data_preset["eval_res"])
    if spec.preset != "default":
        sources.append(f"preset {spec.preset}")
    _apply_overrides(sections, spec.overrides)
    if spec.overrides:
        sources.append(f"overrides {sorted(spec.overrides)}")
    protocol = PROTOCOLS.get(spec.protocol).for_dataset(spec.dataset).with_overrides(**sections["protocol"])
    return RunConfig(
        spec=spec,
        card=card,
        dataset_card=dataset_card,
        train=sections["train"],
        probes=sections["probes"],
        hparams=sections["hparams"],
        protocol=protocol,
        sources=sources,
    )
