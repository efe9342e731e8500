"""`python:module:function`: a user's accuracy source, called with a batch of archs.

The function gets an :class:`~latbench.search.mnas.evaluators.base.ArchBatch`
(a ``list`` of arch dicts; it also carries ``.indices``, the option-index
vectors, for predictors that want them) and returns one number per arch. So an
accuracy predictor (Once-for-All's MLP, say) runs once per batch, not once per
arch. ``module`` may also be a path to a ``.py`` file.

A broken callable (not importable, not callable, returning the wrong number of
values or non-numbers, or failing on every arch of the first batch) is one
clear :class:`LatbenchError`. When a batch raises, each arch of it is retried
on its own so only the archs that crash are recorded as failed.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from latbench.errors import LatbenchError
from latbench.search.mnas.evaluators.base import ArchBatch, EvalResult, Evaluator, short_error


def load_callable(spec: str) -> Callable[..., Any]:
    """``module:function`` or ``path/to/file.py:function`` -> the function (one-line errors)."""
    if ":" not in spec:
        raise LatbenchError(f"bad callable {spec!r}; write python:module:function")
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise LatbenchError(f"bad callable {spec!r}; write python:module:function")
    try:
        if module_name.endswith(".py") or "/" in module_name:
            path = Path(module_name)
            if not path.exists():
                raise LatbenchError(f"python file not found: {path}")
            mspec = importlib.util.spec_from_file_location(f"latbench_user_{path.stem}", path)
            if mspec is None or mspec.loader is None:
                raise LatbenchError(f"cannot import {path}")
            module = importlib.util.module_from_spec(mspec)
            mspec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except LatbenchError:
        raise
    except ModuleNotFoundError as exc:
        raise LatbenchError(f"cannot import module {module_name!r} for the evaluator: {exc}") from None
    except Exception as exc:  # an error while importing the user's module
        raise LatbenchError(f"importing {module_name!r} for the evaluator failed: {short_error(exc)}") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise LatbenchError(f"module {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise LatbenchError(f"{module_name}:{attr} is not callable")
    return fn  # type: ignore[no-any-return]


class CallableEvaluator(Evaluator):
    """A user function ``f(list_of_arch_dicts) -> list_of_accuracies``, called once per batch."""

    name = "python"
    summary = "python:module:function, called with a list of arch dicts, returns one accuracy per arch"
    batched = True
    kind = "accuracy"

    def __init__(self, spec: str, *, cache: bool = False) -> None:
        self.spec = spec[len("python:") :] if spec.startswith("python:") else spec
        self.cache = bool(cache)
        self.fn = load_callable(self.spec)
        self.batches = 0

    def _check(self, values: Any, n: int) -> np.ndarray:
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise LatbenchError(
                f"evaluator python:{self.spec} must return numbers, one per arch; got {type(values).__name__}"
            ) from None
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1 or arr.shape[0] != n:
            got = "a scalar" if arr.ndim == 0 else f"shape {arr.shape}"
            raise LatbenchError(
                f"evaluator python:{self.spec} returned {got} for {n} archs (one number per arch expected)"
            )
        return arr

    def evaluate(self, batch: ArchBatch) -> EvalResult:
        n = len(batch)
        t0 = time.perf_counter()
        errors: list[str | None] = [None] * n
        first = self.batches == 0
        self.batches += 1
        try:
            acc = self._check(self.fn(batch), n)
        except LatbenchError:
            raise
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            if n == 1:
                acc, errors = np.array([np.nan]), [short_error(exc)]
            else:
                # find the archs that crash: one call each
                acc = np.full(n, np.nan)
                for i in range(n):
                    try:
                        acc[i] = self._check(self.fn(batch.subset(np.array([i]))), 1)[0]
                    except LatbenchError:
                        raise
                    except KeyboardInterrupt:
                        raise
                    except Exception as exc_i:
                        errors[i] = short_error(exc_i)
            if first and all(e is not None for e in errors):
                raise LatbenchError(
                    f"evaluator python:{self.spec} failed on every arch of the first batch: {errors[0]}"
                ) from None
        bad = ~np.isfinite(acc)
        for i in np.flatnonzero(bad):
            if errors[i] is None:
                errors[i] = f"python:{self.spec} returned {acc[i]}"
        secs = np.full(n, (time.perf_counter() - t0) / max(n, 1))
        return EvalResult(acc, errors, secs)

    def describe(self) -> dict[str, Any]:
        return {"name": f"python:{self.spec}", "kind": self.kind, "batched": True, "cache": self.cache}
