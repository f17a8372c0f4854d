"""RunSpec: everything that identifies a run (and nothing machine-local)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class RunSpec:
    method: str
    dataset: str
    backbone: str
    seed: int = 0
    protocol: str = "uss"
    preset: str = "default"
    random_init: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        return cls(**data)

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def run_id(self) -> str:
        return hashlib.sha1(self.canonical_json().encode()).hexdigest()[:12]

    def __hash__(self) -> int:  # overrides is a dict, so hash the canonical form
        return hash(self.canonical_json())

    def stage(self, preset: str) -> RunSpec:
        """The earlier training stage this run starts from (``train.init_stage``): the same method, data,
        backbone, seed and protocol under the stage's preset, without this run's ``--set`` overrides."""
        return replace(self, preset=preset, overrides={})

    def label(self) -> str:
        return f"{self.method}/{self.dataset}/{self.backbone}/seed{self.seed}/{self.protocol}/{self.preset}"
