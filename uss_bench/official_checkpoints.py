"""Import the released STEGO / HP / PPAP checkpoints into uss-bench modules.

Official layouts (learned from the repositories, reference §0.5, §1e, §HP-b, §PPAP-b):
- STEGO: a Lightning ``.ckpt`` whose ``state_dict`` holds ``net.model.*`` (the DINO ViT),
  ``net.cluster1.0.*`` (linear branch), ``net.cluster2.{0,2}.*`` (1x1-ReLU-1x1 branch),
  ``linear_probe.{weight,bias}`` and ``cluster_probe.clusters``; plus ``train_cluster_probe.*`` and
  ``decoder.*``, which no evaluation uses.
- HP / PPAP: a ``.pth`` dict ``{net_model_state_dict, linear_model_state_dict, cluster_model_state_dict}``.
  HP's net: ``model.*``, ``cluster1.0.*``, ``cluster2.{0,2}.*``, ``ema_model1.0.*``, ``ema_model2.{0,2}.*``;
  PPAP's net: ``model.*``, ``decoder.*`` (the fine-tuned last block), ``project_head.*``.
  The probes: ``weight``/``bias`` (1x1 conv) and ``clusters``. PPAP's training writes ``best.pth`` but
  its eval.py reads ``ckpt.pth``; HP writes ``ckpt.pth``. A run directory is searched for both.
The DINO ViT keys are timm's, so ``model.*`` maps to ``backbone.vit.*`` unchanged.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_NAMES = ("ckpt.pth", "best.pth", "lastest.pth", "latest.pth")

# (official prefix, uss-bench prefix) per method and part; first match wins.
HEAD_KEYS = [("cluster1.0.", "head.linear_branch."), ("cluster2.", "head.nonlinear_branch.")]
NET_MAPS: dict[str, list[tuple[str, str]]] = {
    "stego": [("model.", "backbone.vit."), *HEAD_KEYS],
    "hp": [("model.", "backbone.vit."), *HEAD_KEYS,
           ("ema_model1.0.", "ema_head.linear_branch."), ("ema_model2.", "ema_head.nonlinear_branch.")],
    "ppap": [("model.", "backbone.vit."), ("decoder.", "block."), ("project_head.", "projection.")],
}
PROBE_MAP = {"linear_probe.weight": "linear.conv.weight", "linear_probe.bias": "linear.conv.bias",
             "cluster_probe.clusters": "cluster.centroids"}
# Official modules that no evaluation uses (STEGO's Lightning module).
IGNORED = re.compile(r"^(train_cluster_probe\.|decoder\.|cluster_probe[23]\.|linear_probe[23]\.|.*_metrics\.)")


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the model; the message lists missing and unexpected keys."""


@dataclass
class OfficialCheckpoint:
    path: Path
    method: str
    net: dict[str, torch.Tensor]  # official net keys (without STEGO's "net." prefix)
    probes: dict[str, torch.Tensor]  # official probe keys (linear_probe.*, cluster_probe.clusters)
    ignored: list[str] = field(default_factory=list)

    @property
    def has_backbone(self) -> bool:
        return any(k.startswith("model.") for k in self.net)


def find_checkpoint(path: str | Path) -> Path:
    """A file, or the first of ckpt.pth / best.pth / lastest.pth in a run directory."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for name in CHECKPOINT_NAMES:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"no checkpoint in {path}: looked for {', '.join(CHECKPOINT_NAMES)}")
    raise FileNotFoundError(f"checkpoint not found: {path}")


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class CheckpointReadError(ValueError):
    """A file that cannot be read as a checkpoint (not a torch file, truncated, refused by the safe loader)."""


class InertGlobal:
    """Stands in for every global a checkpoint names that is not on the allowlist (omegaconf, Lightning,
    ``os.system``, ...). Calling the class only stores the arguments and ``__setstate__`` only stores the
    state, so nothing from the file runs; instances are plain data (STEGO's config keeps its values)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {type(self).__module__}.{type(self).__qualname__}>"


# Plain containers and scalars, and what torch pickles around tensors; nothing here runs user code.
_ALLOWED_BUILTINS = frozenset({
    ("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool",
                              "str", "bytes", "bytearray", "slice")
} | {("collections", "OrderedDict"), ("_codecs", "encode"), ("__builtin__", "set")})
_TORCH_FUNCTIONS = frozenset({
    ("torch._utils", n) for n in (
        "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
        "_rebuild_parameter_with_state", "_rebuild_device_tensor_from_numpy",
        "_rebuild_device_tensor_from_cpu_tensor", "_rebuild_meta_tensor_no_storage", "_rebuild_qtensor",
        "_rebuild_sparse_tensor", "_rebuild_nested_tensor", "_rebuild_wrapper_subclass")
} | {("torch._tensor", "_rebuild_from_type_v2"), ("torch.serialization", "_get_layout"),
     ("torch.nn.parameter", "Parameter"), ("torch", "Size"), ("torch", "Tensor"), ("torch", "device"),
     ("torch.storage", "TypedStorage"), ("torch.storage", "UntypedStorage")})


def allowed_global(module: str, name: str) -> Any | None:
    """The object a checkpoint may name, or None (then it is stubbed by :class:`InertGlobal`)."""
    import builtins
    import codecs
    import collections

    if (module, name) in _ALLOWED_BUILTINS:
        owner = {"builtins": builtins, "__builtin__": builtins, "collections": collections, "_codecs": codecs}[module]
        return getattr(owner, name)
    if (module, name) in _TORCH_FUNCTIONS:
        import importlib

        return getattr(importlib.import_module(module), name, None)
    if module in ("torch", "torch.cuda") and "." not in name:
        obj = getattr(torch if module == "torch" else torch.cuda, name, None)
        # dtypes, layouts, memory formats, qschemes, and the legacy typed storage / tensor classes
        if isinstance(obj, (torch.dtype, torch.layout, torch.memory_format, torch.qscheme)):
            return obj
        if isinstance(obj, type) and (name.endswith("Storage") or name.endswith("Tensor")) and obj is not torch.Tensor:
            return obj
    return None


class SafeUnpickler(pickle.Unpickler):
    """An allowlist unpickler: every global (the only way a pickle reaches code: GLOBAL, STACK_GLOBAL,
    INST, OBJ, EXT all go through ``find_class``) is either on the allowlist or an inert stub class."""

    def find_class(self, module: str, name: str) -> Any:
        obj = allowed_global(module, name)
        if obj is not None:
            return obj
        return type(name.rpartition(".")[2] or "Inert", (InertGlobal,), {"__module__": module})


def _safe_load(file: Any, **kwargs: Any) -> Any:
    return SafeUnpickler(file, **kwargs).load()


def _safe_loads(data: bytes, **kwargs: Any) -> Any:
    import io

    return SafeUnpickler(io.BytesIO(data), **kwargs).load()


# torch.load(pickle_module=...) reads both ``Unpickler`` (zip files) and ``load`` (the legacy format's
# header pickles): both must be the safe ones, so this module exposes nothing of the plain pickle loader.
_safe_pickle = types.ModuleType("uss_bench_safe_pickle")
_safe_pickle.__dict__.update(
    Unpickler=SafeUnpickler, load=_safe_load, loads=_safe_loads, UnpicklingError=pickle.UnpicklingError,
    Pickler=pickle.Pickler, dump=pickle.dump, dumps=pickle.dumps, HIGHEST_PROTOCOL=pickle.HIGHEST_PROTOCOL,
    DEFAULT_PROTOCOL=pickle.DEFAULT_PROTOCOL, __name__="uss_bench_safe_pickle",
)


def read_raw(path: Path) -> Any:
    """Load a checkpoint without ever running code from it.

    torch's ``weights_only`` loader first; Lightning ``.ckpt`` files also pickle their config (omegaconf,
    Lightning classes), which it refuses, so they are read again with :class:`SafeUnpickler`, which
    returns inert stubs for those classes. Any failure is one :class:`CheckpointReadError` naming the file.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - weights_only refuses any non-tensor global
        pass
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_safe_pickle)
    except Exception as exc:  # noqa: BLE001 - any way a file fails to unpickle is the same user error
        raise CheckpointReadError(f"{path}: not a readable PyTorch checkpoint ({_short(exc)})") from exc


def _short(exc: BaseException) -> str:
    """The first line of an exception, without torch's multi-paragraph advice."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def parse_official(raw: dict[str, Any], method: str, path: Path) -> OfficialCheckpoint:
    """Split a loaded official file into net and probe state dicts with official key names."""
    expected = ("a STEGO Lightning .ckpt (state_dict with net.* keys) or an HP/PPAP .pth "
                "(net_model_state_dict, linear_model_state_dict, cluster_model_state_dict)")
    if not isinstance(raw, dict):
        raise CheckpointMismatchError(f"{path}: expected {expected}; the file holds a {type(raw).__name__}")
    if "net_model_state_dict" in raw:  # HP / PPAP
        missing = [k for k in ("linear_model_state_dict", "cluster_model_state_dict") if k not in raw]
        if missing:
            raise CheckpointMismatchError(f"{path}: HP/PPAP checkpoint lacks {missing}")
        probes = {f"linear_probe.{k}": v for k, v in raw["linear_model_state_dict"].items()}
        probes.update({f"cluster_probe.{k}": v for k, v in raw["cluster_model_state_dict"].items()})
        return OfficialCheckpoint(path, method, dict(raw["net_model_state_dict"]), probes)
    state = raw.get("state_dict", raw)  # STEGO (Lightning)
    if not isinstance(state, dict) or not any(k.startswith("net.") for k in map(str, state)):
        keys = ", ".join(list(map(str, state))[:5]) if isinstance(state, dict) else type(state).__name__
        raise CheckpointMismatchError(f"{path}: expected {expected}; found keys {keys or '(none)'}")
    net, probes, ignored = {}, {}, []
    for key, value in state.items():
        if key.startswith("net."):
            net[key[4:]] = value
        elif key in PROBE_MAP:
            probes[key] = value
        elif IGNORED.match(key):
            ignored.append(key)
        else:
            net[key] = value  # unexpected: reported by the key check
    return OfficialCheckpoint(path, method, net, probes, ignored)


def map_net_keys(net: dict[str, torch.Tensor], method: str) -> dict[str, torch.Tensor]:
    """Official net keys -> uss-bench method keys; unmapped keys keep an ``official:`` marker."""
    rules = NET_MAPS[method]
    out = {}
    for key, value in net.items():
        for old, new in rules:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            out[f"official:{key}"] = value
    return out


def infer_settings(ckpt: OfficialCheckpoint) -> dict[str, Any]:
    """What the checkpoint fixes: head dim, n_classes and (if the ViT is inside) the backbone name."""
    out: dict[str, Any] = {}
    if "cluster1.0.weight" in ckpt.net:
        out["dim"] = int(ckpt.net["cluster1.0.weight"].shape[0])
    if "linear_probe.weight" in ckpt.probes:
        out["n_classes"] = int(ckpt.probes["linear_probe.weight"].shape[0])
    proj = ckpt.net.get("model.patch_embed.proj.weight")
    if proj is not None:
        size = {384: "s", 768: "b"}.get(int(proj.shape[0]))
        if size:
            out["backbone"] = f"vit-{size}{int(proj.shape[-1])}"
    return out


def _load_checked(module: nn.Module, state: dict[str, torch.Tensor], what: str, path: Path,
                  required_prefixes: tuple[str, ...]) -> None:
    """Load ``state`` into the parameters under ``required_prefixes``; any missing or unexpected key
    (or a shape mismatch) is one error listing them all."""
    own = {k: v for k, v in module.state_dict().items() if k.startswith(required_prefixes)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        lines = [f"{path} does not fit {what}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            names = ", ".join(k.removeprefix("official:") for k in unexpected)
            lines.append(f"  unexpected keys ({len(unexpected)}): {names}")
        if shapes:
            lines.append(f"  shape mismatches: {'; '.join(shapes)}")
        raise CheckpointMismatchError("\n".join(lines))
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value)


def required_prefixes(method: nn.Module, with_backbone: bool) -> tuple[str, ...]:
    """The method's parameters a checkpoint must provide."""
    parts = {"stego": ("head.",), "hp": ("head.", "ema_head."), "ppap": ("block.", "projection.")}[method.name]
    return (*parts, "backbone.vit.") if with_backbone else parts


def import_checkpoint(
    method: nn.Module, probes: nn.Module | None, source: str | Path | OfficialCheckpoint
) -> dict[str, Any]:
    """Load an official file into ``method`` (and ``probes``); returns what was loaded, for the record."""
    ckpt = source if isinstance(source, OfficialCheckpoint) else read_official(source, method.name)
    path = ckpt.path
    net = map_net_keys(ckpt.net, method.name)
    if not ckpt.has_backbone:
        net = {k: v for k, v in net.items() if not k.startswith("backbone.")}
    _load_checked(method, net, f"method {method.name!r}", path, required_prefixes(method, ckpt.has_backbone))
    if probes is not None:
        mapped = {PROBE_MAP.get(k, f"official:{k}"): v for k, v in ckpt.probes.items()}
        _load_checked(probes, mapped, "the evaluation probes", path, ("linear.", "cluster."))
    return {"path": str(path), "sha256": sha256(path), "backbone_from_checkpoint": ckpt.has_backbone,
            "ignored_keys": ckpt.ignored, "probes_loaded": probes is not None}


def load_official(method: nn.Module, path: str | Path) -> dict[str, Any]:
    """The method part only (MethodAdapter.load_official_checkpoint)."""
    return import_checkpoint(method, None, path)


def read_official(path: str | Path, method: str) -> OfficialCheckpoint:
    path = find_checkpoint(path)
    return parse_official(read_raw(path), method, path)
