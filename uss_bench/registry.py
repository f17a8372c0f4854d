"""Name -> object registries for methods, datasets, backbones, protocols and tables.

Every module of the package is imported by :func:`load_all`, so an object registered at import
time can never be "missing from the registry" because nobody imported its module.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from collections.abc import Callable, Iterable
from typing import Any


class UnknownNameError(KeyError):
    """A name that is not registered; the message lists the close matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Any] = {}

    def add(self, name: str, obj: Any) -> Any:
        if name in self._items and self._items[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj
        return obj

    def register(self, name: str) -> Callable[[Any], Any]:
        def decorator(obj: Any) -> Any:
            return self.add(name, obj)

        return decorator

    def names(self) -> list[str]:
        load_all()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        load_all()
        return name in self._items

    def get(self, name: str) -> Any:
        load_all()
        if name not in self._items:
            raise UnknownNameError(self._unknown_message([name]))
        return self._items[name]

    def select(self, selection: str | Iterable[str]) -> list[str]:
        """Resolve ``a,b``, ``all`` and shell wildcards (``vit-s*``) to registered names.

        All unknown parts are reported together so a sweep never fails later on a typo.
        """
        load_all()
        parts = selection.split(",") if isinstance(selection, str) else list(selection)
        parts = [p.strip() for p in parts if p.strip()]
        if not parts:
            raise UnknownNameError(f"empty {self.kind} selection; choose from: {', '.join(self.names())}")
        chosen: list[str] = []
        unknown: list[str] = []
        for part in parts:
            if part == "all":
                matches = self.names()
            elif any(ch in part for ch in "*?["):
                matches = [n for n in self.names() if fnmatch.fnmatchcase(n, part)]
            else:
                matches = [part] if part in self._items else []
            if not matches:
                unknown.append(part)
            chosen.extend(m for m in matches if m not in chosen)
        if unknown:
            raise UnknownNameError(self._unknown_message(unknown))
        return chosen

    def _unknown_message(self, unknown: list[str]) -> str:
        lines = []
        for name in unknown:
            close = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.5)
            hint = f" (did you mean: {', '.join(close)}?)" if close else ""
            lines.append(f"unknown {self.kind} {name!r}{hint}")
        lines.append(f"known {self.kind}s: {', '.join(sorted(self._items)) or '(none)'}")
        return "; ".join(lines)


METHODS = Registry("method")
DATASETS = Registry("dataset")
BACKBONES = Registry("backbone")
PROTOCOLS = Registry("protocol")
TABLES = Registry("table")

_loaded = False


def load_all() -> None:
    """Import every module of ``uss_bench`` once (eager registration)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import uss_bench

    for info in pkgutil.walk_packages(uss_bench.__path__, prefix="uss_bench."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
