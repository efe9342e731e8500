"""Accuracy sources: ``train``, ``zero-cost[:proxy]``, ``python:module:function``, plus the fitted predictor.

``make_evaluator(spec, options)`` resolves a name; :func:`register_evaluator`
adds one without touching the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from latbench.errors import LatbenchError, UnknownNameError
from latbench.search.mnas.evaluators.base import ArchBatch, EvalResult, Evaluator, arch_dicts
from latbench.search.mnas.evaluators.supernet import SupernetEvaluator
from latbench.search.mnas.evaluators.surrogate import PredictorAssistedEvaluator
from latbench.search.mnas.evaluators.train import TrainEvaluator
from latbench.search.mnas.evaluators.user import CallableEvaluator, load_callable
from latbench.search.mnas.evaluators.zero_cost import PROXIES, ZeroCostEvaluator

__all__ = [
    "EVALUATORS",
    "ArchBatch",
    "CallableEvaluator",
    "EvalResult",
    "Evaluator",
    "PredictorAssistedEvaluator",
    "TrainEvaluator",
    "ZeroCostEvaluator",
    "arch_dicts",
    "load_callable",
    "make_evaluator",
    "register_evaluator",
]

#: name -> factory(**options) -> Evaluator
EVALUATORS: dict[str, Callable[..., Evaluator]] = {"train": TrainEvaluator, "zero-cost": ZeroCostEvaluator}
EVALUATORS["supernet"] = SupernetEvaluator


def register_evaluator(name: str, factory: Callable[..., Evaluator]) -> None:
    """Make ``--evaluator NAME`` build ``factory(**options)``; the engine needs no change."""
    EVALUATORS[name] = factory


def evaluator_names() -> list[str]:
    return [*EVALUATORS, *(f"zero-cost:{p}" for p in PROXIES), "python:module:function"]


def make_evaluator(
    spec: str | Evaluator,
    options: dict[str, Any] | None = None,
    *,
    acc_predictor: bool | dict[str, Any] = False,
) -> Evaluator:
    """An evaluator from its name (``train``, ``zero-cost``, ``zero-cost:synflow``, ``python:mod:fn``) or instance."""
    options = dict(options or {})
    if isinstance(spec, Evaluator):
        ev = spec
    elif spec.startswith("python:"):
        ev = CallableEvaluator(spec, **options)
    else:
        name, _, sub = spec.partition(":")
        factory = EVALUATORS.get(name)
        if factory is None:
            raise UnknownNameError(f"unknown evaluator {spec!r}; known: {', '.join(evaluator_names())}")
        if sub:
            if name != "zero-cost":
                raise UnknownNameError(f"unknown evaluator {spec!r}; known: {', '.join(evaluator_names())}")
            options["proxy"] = sub
        try:
            ev = factory(**options)
        except TypeError as exc:
            raise LatbenchError(f"bad options for evaluator {spec!r}: {exc}") from None
    if acc_predictor:
        ev = PredictorAssistedEvaluator(ev, **(acc_predictor if isinstance(acc_predictor, dict) else {}))
    return ev
