"""The one rule for local weights files: present, readable and holding the expected tensors, or one clear
error naming the file, what was expected and where the file comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# key -> expected shape (None: any shape); a few keys that say "this is the right network"
Expected = dict[str, tuple[int, ...] | None]


class WeightsFileError(ValueError):
    """A weights file that exists but cannot be used (unreadable, or not the expected network)."""


def missing_weights(
    kind: str, name: str, weights_dir: Path | None, weights_file: str, url: str, alternative: str
) -> str | None:
    """None when ``weights_dir/weights_file`` exists, else the message to show the user."""
    path = None if weights_dir is None else Path(weights_dir) / weights_file
    if path is not None and path.is_file():
        return None
    where = path if path is not None else f"<weights-dir>/{weights_file} (no --weights-dir set)"
    alternative = f", {alternative}" if alternative else ""
    return (f"missing {kind} weights for {name}: {where}; download {url} into --weights-dir "
            f"(or USS_BENCH_WEIGHTS){alternative}")


def load_weights_file(path: Path, what: str, mmap: bool = False) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a state dict; any failure is one line naming the file.

    ``mmap`` maps the tensors instead of reading them (zip files only): cheap enough for a preflight check.
    """
    import torch

    def load(use_mmap: bool) -> Any:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)

    try:
        try:
            state = load(mmap)
        except Exception:  # noqa: BLE001 - legacy (non-zip) files cannot be mapped; read them instead
            if not mmap:
                raise
            state = load(False)
    except Exception as exc:  # noqa: BLE001 - random bytes, truncation, a pickle with code: all the same error
        first = (str(exc).strip().splitlines() or [""])[0][:120]
        raise WeightsFileError(f"{path}: not a readable {what} weights file ({type(exc).__name__}: {first})") from exc
    if not isinstance(state, dict):
        raise WeightsFileError(f"{path}: expected a {what} state dict, the file holds a {type(state).__name__}")
    return state


def expected_problem(state: dict[str, Any], expected: Expected, path: Path, what: str) -> str | None:
    """None when ``state`` has every expected key with the expected shape, else one line saying what differs."""
    missing = [k for k in expected if k not in state]
    if missing:
        return (f"{path}: not {what} weights: missing key(s) {', '.join(missing[:4])} "
                f"(the file has {len(state)} keys, e.g. {', '.join(list(map(str, state))[:3]) or 'none'})")
    for key, shape in expected.items():
        value = state[key]
        got = tuple(getattr(value, "shape", ()))
        if shape is not None and got != shape:
            return f"{path}: not {what} weights: {key} has shape {got}, expected {shape}"
    return None


def weights_file_problem(path: Path, what: str, expected: Expected,
                         prepare: Any = None) -> str | None:
    """Open ``path`` (memory-mapped) and check its keys; the message to show, or None when usable."""
    try:
        state = load_weights_file(path, what, mmap=True)
        if prepare is not None:
            state = prepare(state)
    except WeightsFileError as exc:
        text = str(exc)
        return text if str(path) in text else f"{path}: {text}"
    return expected_problem(state, expected, path, what)
