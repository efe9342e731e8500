"""An accuracy predictor fitted on the archs evaluated so far (``--acc-predictor``).

Wraps a real evaluator. The first ``warmup`` archs are all evaluated for real.
From then on an MLP on one-hot arch encodings (refitted after every
``refit_every`` new real results) predicts every candidate; within each batch
the ``real_fraction`` with the best *predicted reward* (predicted accuracy and
the candidate's predicted latency) are evaluated for real, the others keep the
predicted accuracy (``source=predicted`` in history.csv). The engine returns the
best arch among the real evaluations.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from latbench.search.mnas.evaluators.base import ArchBatch, EvalResult, Evaluator
from latbench.search.mnas.mlp import MLPRegressor, onehot


class PredictorAssistedEvaluator(Evaluator):
    """Real evaluations for the most promising candidates, a fitted MLP's prediction for the rest."""

    name = "acc-predictor"
    summary = "MLP fitted on the archs evaluated so far screens candidates; the best fraction is evaluated for real"
    batched = True

    def __init__(
        self,
        base: Evaluator,
        *,
        warmup: int = 20,
        real_fraction: float = 0.25,
        refit_every: int = 10,
        hidden: tuple[int, ...] = (64, 64),
        epochs: int = 300,
    ) -> None:
        from latbench.errors import LatbenchError

        if not 0.0 < real_fraction <= 1.0:
            raise LatbenchError(f"real_fraction must be in (0, 1], got {real_fraction}")
        self.base = base
        self.warmup = int(warmup)
        self.real_fraction = float(real_fraction)
        self.refit_every = int(refit_every)
        self.hidden = tuple(hidden)
        self.epochs = int(epochs)
        self.cache = base.cache
        self.kind = base.kind  # type: ignore[misc]
        self.x_real: list[np.ndarray] = []
        self.y_real: list[float] = []
        self.model: MLPRegressor | None = None
        self.fit_n = 0

    def setup(self, problem: Any, seed: int) -> None:
        super().setup(problem, seed)
        self.base.setup(problem, seed)
        self.cards = problem.space.cardinalities

    def _fit(self, n: int) -> None:
        x = onehot(self.cards, np.stack(self.x_real[:n]))
        self.model = MLPRegressor(self.hidden, epochs=self.epochs, seed=self.seed).fit(x, np.asarray(self.y_real[:n]))
        self.fit_n = n

    def _record(self, idx: np.ndarray, res: EvalResult) -> None:
        for row, a in zip(idx, res.accuracy, strict=True):
            if np.isfinite(a):
                self.x_real.append(row.copy())
                self.y_real.append(float(a))

    def evaluate(self, batch: ArchBatch) -> EvalResult:
        n = len(batch)
        if len(self.y_real) < self.warmup:
            res = self.base.evaluate(batch)
            self._record(batch.indices, res)
            return res
        if self.model is None or len(self.y_real) - self.fit_n >= self.refit_every:
            self._fit(len(self.y_real))
        assert self.model is not None
        pred = self.model.predict(onehot(self.cards, batch.indices))
        score = pred if batch.latency_ms is None else self.problem.reward(pred, batch.latency_ms)
        k = max(1, math.ceil(self.real_fraction * n))
        real = np.sort(np.argsort(-score, kind="stable")[:k])
        res_real = self.base.evaluate(batch.subset(real))
        self._record(batch.indices[real], res_real)
        acc = pred.copy()
        errors: list[str | None] = [None] * n
        secs = np.zeros(n)
        source = ["predicted"] * n
        notes = [""] * n
        for j, i in enumerate(real):
            acc[i] = res_real.accuracy[j]
            errors[i] = res_real.errors[j]
            secs[i] = res_real.seconds[j]
            source[i] = res_real.source[j]
            notes[i] = res_real.notes[j]
        return EvalResult(acc, errors, secs, source, notes)

    def state_dict(self) -> dict[str, Any]:
        return {"fit_n": self.fit_n, "base": self.base.state_dict()}

    def load_state_dict(self, state: dict[str, Any], history: dict[str, np.ndarray]) -> None:
        real = (history["source"] == "real") & np.isfinite(history["accuracy"])
        self.x_real = [row.copy() for row in history["indices"][real]]
        self.y_real = [float(a) for a in history["accuracy"][real]]
        self.model = None
        if int(state.get("fit_n", 0)) > 0:
            self._fit(int(state["fit_n"]))
        self.base.load_state_dict(state.get("base", {}), history)

    def describe(self) -> dict[str, Any]:
        return {
            "name": f"{self.base.describe()['name']}+acc-predictor",
            "kind": self.kind,
            "base": self.base.describe(),
            "acc_predictor": {
                "model": f"MLP {self.hidden} on one-hot archs",
                "warmup": self.warmup,
                "real_fraction": self.real_fraction,
                "refit_every": self.refit_every,
                "fitted_on": self.fit_n,
            },
        }
