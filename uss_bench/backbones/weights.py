"""The one rule for local weights files: present, or one clear error naming the file and its source."""

from __future__ import annotations

from pathlib import Path


def missing_weights(
    kind: str, name: str, weights_dir: Path | None, weights_file: str, url: str, alternative: str
) -> str | None:
    """None when ``weights_dir/weights_file`` exists, else the message to show the user."""
    path = None if weights_dir is None else Path(weights_dir) / weights_file
    if path is not None and path.is_file():
        return None
    where = path if path is not None else f"<weights-dir>/{weights_file} (no --weights-dir set)"
    return (f"missing {kind} weights for {name}: {where}; download {url} into --weights-dir "
            f"(or USS_BENCH_WEIGHTS), {alternative}")
