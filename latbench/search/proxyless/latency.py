"""Differentiable latency: ``E[LAT] = fixed + sum_blocks sum_ops p_op * lat_op`` (milliseconds).

``lat_op`` comes from :meth:`SpaceLatency.decision_latencies` of the *deployment*
space (e.g. ``proxyless-mobile`` at 224 on the chosen device), so the search can
train a small-image variant of the space while it counts the latency of the
network it will deploy. The model's end-to-end calibration (``scale * op_sum +
offset_ms``) is applied to the expectation too, so ``E[LAT]`` of a one-hot
``p`` equals the model's prediction for that arch exactly.
"""

from __future__ import annotations

import numpy as np
import torch

from latbench.predict.base import SpaceLatency
from latbench.spaces import SearchSpace


def same_decisions(a: SearchSpace, b: SearchSpace) -> bool:
    return [(d.name, d.options) for d in a.decisions] == [(d.name, d.options) for d in b.decisions]


class ExpectedLatency:
    """``E[LAT]`` of per-decision probabilities and the exact latency of an index vector, in ms."""

    def __init__(self, compiled: SpaceLatency) -> None:
        self.compiled = compiled
        self.space = compiled.space
        try:
            lats = compiled.decision_latencies()
            zeros = np.zeros((1, len(lats)), dtype=np.int64)
            fixed = float(compiled.op_sum_indices(zeros)[0] - sum(float(x[0]) for x in lats))
        except ValueError:
            # decision_latencies() starts from option 0 of every decision, which is the free `none` op in
            # darts; read the same numbers from the compiled vector through the supernet's layout instead
            lats, fixed = _latencies_from_layout(compiled)
        width = max(len(x) for x in lats)
        table = np.zeros((len(lats), width))
        for i, x in enumerate(lats):
            table[i, : len(x)] = x
        self.table = table  # (decisions, max_options) ms, uncalibrated
        self.fixed_ms = fixed
        self.scale = float(compiled.calibration.scale)
        self.offset_ms = float(compiled.calibration.offset_ms)
        self._cache: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def _table(self, like: torch.Tensor) -> torch.Tensor:
        key = (str(like.device), like.dtype)
        if key not in self._cache:
            self._cache[key] = torch.as_tensor(self.table, dtype=like.dtype, device=like.device)
        return self._cache[key]

    def expected(self, probs: torch.Tensor) -> torch.Tensor:
        """Differentiable ``E[LAT]`` (ms) for ``probs`` of shape ``(decisions, max_options)``."""
        op_sum = self.fixed_ms + (probs * self._table(probs)).sum()
        return self.scale * op_sum + self.offset_ms

    def of_indices(self, idx: np.ndarray) -> float:
        """Exact predicted latency (ms) of one arch given by option indices."""
        return float(self.compiled.predict_indices(np.asarray(idx, dtype=np.int64)[None, :])[0])

    def bounds(self) -> tuple[float, float]:
        """(smallest, largest) predicted latency (ms) over the space: exact, decisions are independent."""
        lo = self.fixed_ms + sum(
            float(row[: len(d)].min()) for row, d in zip(self.table, self.space.decisions, strict=True)
        )
        hi = self.fixed_ms + sum(
            float(row[: len(d)].max()) for row, d in zip(self.table, self.space.decisions, strict=True)
        )
        return self.scale * lo + self.offset_ms, self.scale * hi + self.offset_ms


def _latencies_from_layout(compiled: SpaceLatency) -> tuple[list[np.ndarray], float]:
    from latbench.search.proxyless.supernet import space_layout

    space = compiled.space
    layout = space_layout(space)
    vi = space.vocabulary_index

    def ms(op: object) -> float:
        return 0.0 if op.type in space.free_types else float(compiled.vector[vi[op.key]])  # type: ignore[attr-defined]

    lats = [np.array([ms(op) for op in cands]) for cands in layout.candidates]
    return lats, float(sum(ms(op) for _, op in layout.fixed))
