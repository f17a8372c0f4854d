"""Extra evaluators a protocol can ask for beside the engine's pixel evaluation.

A protocol with an ``evaluator`` attribute (a field of a :class:`Protocol` subclass, so it is
stored in every record) names one entry of ``EVALUATORS``; the runner calls :func:`extra_metrics`
after :func:`uss_bench.eval.engine.evaluate` and merges what it returns into the record's metrics.
Protocols without the attribute get nothing extra. Example: ``hsg-knn`` -> ``knn-segments``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

EVALUATORS: dict[str, Callable[..., dict[str, Any]]] = {}


def register_evaluator(name: str) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]:
    def decorator(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        if name in EVALUATORS and EVALUATORS[name] is not fn:
            raise ValueError(f"evaluator {name!r} is registered twice")
        EVALUATORS[name] = fn
        return fn

    return decorator


def extra_metrics(method: Any, protocol: Any, train_set: Any, eval_set: Any, **kwargs: Any) -> dict[str, Any]:
    """Metrics of the protocol's extra evaluator ({} when it names none)."""
    name = getattr(protocol, "evaluator", None)
    if not name:
        return {}
    from uss_bench.registry import load_all

    load_all()  # evaluators register at import, like everything else
    if name not in EVALUATORS:
        known = ", ".join(sorted(EVALUATORS))
        raise KeyError(f"protocol {protocol.name!r} asks for evaluator {name!r}; known: {known}")
    return EVALUATORS[name](method, protocol, train_set, eval_set, **kwargs)
