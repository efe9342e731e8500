"""`Evaluator`: where a search gets accuracy from.

Contract:

* ``setup(problem, seed)`` once before the first batch (load data, check the
  user callable...); raises :class:`~latbench.errors.LatbenchError` for bad input.
* ``evaluate(batch) -> EvalResult``: one accuracy per arch of the
  :class:`ArchBatch` (a list of arch dicts that also carries the index vectors,
  trial ids and predicted latencies). A trial that crashes gets NaN and its
  error message; it must not stop the batch. Higher is better; the MnasNet
  reward multiplies it, so it must be positive (a proxy score is fine: the
  reward is invariant to its scale).
* ``batched``: evaluates a whole batch in one call (cheap predictors).
  ``cache``: the engine reuses the result of an arch evaluated before.

Evaluators that only define ``evaluate_one(arch, trial)`` get the per-trial
loop, timing and error capture of :meth:`Evaluator.evaluate` for free; Ray
(``--cluster``) can farm ``evaluate`` out on sub-batches of any size.
"""

from __future__ import annotations

import time
import traceback
from abc import ABC
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from latbench.errors import LatbenchError
from latbench.spaces import SearchSpace

if TYPE_CHECKING:
    from latbench.search.mnas.problem import SearchProblem


class ArchBatch(list):  # type: ignore[type-arg]
    """A list of arch dicts (what a user callable receives), with ``indices``, ``trials`` and ``latency_ms``."""

    def __init__(
        self,
        space: SearchSpace,
        indices: np.ndarray,
        trials: np.ndarray | None = None,
        latency_ms: np.ndarray | None = None,
    ) -> None:
        indices = np.asarray(indices, dtype=np.int64)
        super().__init__(arch_dicts(space, indices))
        self.space = space
        self.indices = indices
        self.trials = np.arange(len(indices)) if trials is None else np.asarray(trials, dtype=np.int64)
        self.latency_ms = latency_ms

    def subset(self, mask_or_idx: np.ndarray) -> ArchBatch:
        sel = np.asarray(mask_or_idx)
        lat = None if self.latency_ms is None else self.latency_ms[sel]
        return ArchBatch(self.space, self.indices[sel], self.trials[sel], lat)


def arch_dicts(space: SearchSpace, indices: np.ndarray) -> list[dict[str, Any]]:
    """Arch JSON dicts for a batch of index vectors (fast: one column lookup per decision)."""
    cached = space.__dict__.get("_arch_dict_columns")
    if cached is None:
        names = [d.name for d in space.decisions]
        cols = [np.array([*d.options, None], dtype=object)[:-1] for d in space.decisions]
        cached = (names, cols)
        space.__dict__["_arch_dict_columns"] = cached
    names, cols = cached
    params = space.params
    if len(indices) == 0:
        return []
    values = [col[indices[:, j]] for j, col in enumerate(cols)]
    head = {"space": space.name, **params}
    return [{**head, "choices": dict(zip(names, row, strict=True))} for row in zip(*values, strict=True)]


@dataclass
class EvalResult:
    """Accuracy (NaN = failed) per arch, its error message, seconds spent, and where the number came from."""

    accuracy: np.ndarray
    errors: list[str | None]
    seconds: np.ndarray
    source: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.accuracy)
        if not self.source:
            self.source = ["real"] * n
        if not self.notes:
            self.notes = [""] * n


def short_error(exc: BaseException) -> str:
    """``Type: message`` on one line, with the innermost frame, for history.csv."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" ({tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg[:300]}{where}"


class Evaluator(ABC):  # noqa: B024 - evaluate() has a default built on evaluate_one()
    """An accuracy source for the search (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: evaluates a whole batch in one call
    batched: ClassVar[bool] = False
    #: the engine may reuse the accuracy of an arch evaluated before
    cache: bool = True
    #: what the number is: "accuracy" (0..1) or "proxy score"
    kind: ClassVar[str] = "accuracy"

    def setup(self, problem: SearchProblem, seed: int) -> None:
        """Bind to the search problem (deployment space, reward); load data. Called once."""
        self.problem = problem
        self.seed = int(seed)

    def evaluate(self, batch: ArchBatch) -> EvalResult:
        """Default: :meth:`evaluate_one` per arch, each timed, a crash recorded as NaN + message."""
        n = len(batch)
        acc = np.full(n, np.nan)
        secs = np.zeros(n)
        errors: list[str | None] = [None] * n
        notes = [""] * n
        for i, arch in enumerate(batch):
            t0 = time.perf_counter()
            try:
                value = self.evaluate_one(arch, int(batch.trials[i]))
                if isinstance(value, tuple):
                    value, notes[i] = value
                value = float(value)
                if not np.isfinite(value):
                    errors[i] = f"evaluator returned {value}"
                else:
                    acc[i] = value
            except (KeyboardInterrupt, LatbenchError):
                raise
            except Exception as exc:  # a crash inside one trial: recorded, the search goes on
                errors[i] = short_error(exc)
            secs[i] = time.perf_counter() - t0
        return EvalResult(acc, errors, secs, notes=notes)

    def evaluate_one(self, arch: dict[str, Any], trial: int) -> float | tuple[float, str]:
        """Accuracy of one arch (or ``(accuracy, note)``); raise to mark the trial failed."""
        raise NotImplementedError(f"evaluator {self.name!r} implements neither evaluate nor evaluate_one")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind}

    # state for resume (only evaluators that learn need it)
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any], history: dict[str, np.ndarray]) -> None:
        return None
