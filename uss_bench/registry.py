"""Name -> object registries for methods, datasets, backbones, protocols and tables.

Each registry imports every module of the packages that define its kind (methods: ``uss_bench.methods``,
tables: ``uss_bench.results.tables``, ...) the first time it is asked, so an object registered at import
time can never be "missing from the registry" because nobody imported its module, and a command that
only needs table layouts never imports torch. :func:`load_all` imports the whole package.
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
    def __init__(self, kind: str, packages: tuple[str, ...] = (),
                 catalog: Callable[[], list[str]] | None = None) -> None:
        self.kind = kind
        self.packages = packages  # where this kind is defined; empty: the whole package
        # names known without importing (cards, a static list): enough to check and select names, so
        # `table`, `check` and `run`'s name checks import no torch; tests keep it equal to the registry
        self.catalog = catalog
        self._items: dict[str, Any] = {}
        self._loaded = False

    def _known(self) -> dict[str, Any]:
        if self.catalog is not None and not self._loaded:
            return {**dict.fromkeys(self.catalog()), **self._items}
        self.load()
        return self._items

    def load(self) -> None:
        """Import every module of this kind's packages once (eager registration, per kind)."""
        if self._loaded:
            return
        self._loaded = True
        if not self.packages:
            load_all()
            return
        for package in self.packages:
            _import_tree(package)

    def add(self, name: str, obj: Any) -> Any:
        if name in self._items and self._items[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj
        return obj

    def register(self, name: str) -> Callable[[Any], Any]:
        def decorator(obj: Any) -> Any:
            return self.add(name, obj)

        return decorator

    def registered(self) -> dict[str, Any]:
        """What is registered so far, without importing the rest of this kind's modules."""
        return dict(self._items)

    def names(self) -> list[str]:
        return sorted(self._known())

    def __contains__(self, name: str) -> bool:
        return name in self._known()

    def get(self, name: str) -> Any:
        self.load()
        if name not in self._items:
            raise UnknownNameError(self._unknown_message([name]))
        return self._items[name]

    def select(self, selection: str | Iterable[str]) -> list[str]:
        """Resolve ``a,b``, ``all`` and shell wildcards (``vit-s*``) to registered names.

        All unknown parts are reported together so a sweep never fails later on a typo.
        """
        known = self._known()
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
                matches = [part] if part in known else []
            if not matches:
                unknown.append(part)
            chosen.extend(m for m in matches if m not in chosen)
        if unknown:
            raise UnknownNameError(self._unknown_message(unknown))
        return chosen

    def _unknown_message(self, unknown: list[str]) -> str:
        lines = []
        for name in unknown:
            close = difflib.get_close_matches(name, list(self._known()), n=3, cutoff=0.5)
            hint = f" (did you mean: {', '.join(close)}?)" if close else ""
            lines.append(f"unknown {self.kind} {name!r}{hint}")
        lines.append(f"known {self.kind}s: {', '.join(sorted(self._known())) or '(none)'}")
        return "; ".join(lines)


def _card_names(kind: str) -> Callable[[], list[str]]:
    def names() -> list[str]:
        from uss_bench.paths import cards_dir

        return [p.stem for p in cards_dir(kind).glob("*.yaml")]

    return names


def _backbone_names() -> list[str]:
    from uss_bench.backbones.catalog import BACKBONE_CATALOG

    return list(BACKBONE_CATALOG)


METHODS = Registry("method", ("uss_bench.methods",), catalog=_card_names("methods"))
DATASETS = Registry("dataset", ("uss_bench.data",), catalog=_card_names("datasets"))
BACKBONES = Registry("backbone", ("uss_bench.backbones",), catalog=_backbone_names)
PROTOCOLS = Registry("protocol", ("uss_bench.eval",))
TABLES = Registry("table", ("uss_bench.results.tables",))

_loaded = False


def load_all() -> None:
    """Import every module of ``uss_bench`` once (eager registration)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    _import_tree("uss_bench")


def _import_tree(package: str) -> None:
    """Import ``package`` and, when it is a package, every module below it."""
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), prefix=f"{package}."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
