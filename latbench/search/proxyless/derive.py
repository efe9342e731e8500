"""Deriving the final arch from alpha: argmax, or the most likely arch within the budget.

``within-budget`` keeps, per decision, the ``top_k`` options by probability and
finds the combination with the highest joint probability (sum of log p) whose
predicted latency is at most the target: a knapsack solved exactly by dynamic
programming over a latency grid (latencies rounded *up* to the grid, so the
answer is never over budget). When the argmax arch is within budget it is the
answer; when no top-k combination fits, every option is allowed.
"""

from __future__ import annotations

import math

import numpy as np

from latbench.errors import LatbenchError
from latbench.search.proxyless.latency import ExpectedLatency

DERIVE_METHODS = ("argmax", "within-budget")


def argmax_indices(probs: np.ndarray) -> np.ndarray:
    return np.asarray(probs).argmax(axis=1).astype(np.int64)


def best_within_budget(
    probs: np.ndarray,
    latency: ExpectedLatency,
    target_ms: float,
    top_k: int = 3,
    grid: int = 4000,
) -> np.ndarray:
    """Indices of the most probable arch among the top-``top_k`` options per decision with latency <= target (ms)."""
    probs = np.asarray(probs, dtype=np.float64)
    n_dec = probs.shape[0]
    am = argmax_indices(probs)
    if latency.of_indices(am) <= target_ms:
        return am
    cards = latency.space.cardinalities
    capacity = (target_ms - latency.offset_ms) / latency.scale - latency.fixed_ms  # op-sum budget, ms
    for k in (top_k, int(cards.max())):
        allowed = []
        for i in range(n_dec):
            order = np.argsort(-probs[i, : cards[i]], kind="stable")
            allowed.append(order[: max(1, min(k, cards[i]))])
        idx = _knapsack(probs, latency.table, allowed, capacity, grid)
        if idx is not None:
            if latency.of_indices(idx) > target_ms * (1 + 1e-9):
                raise AssertionError("within-budget derive returned an arch over budget")
            return idx
    lo, hi = latency.bounds()
    raise LatbenchError(f"no arch of the space is within {target_ms:.3f} ms (reachable: {lo:.3f}-{hi:.3f} ms)")


def _knapsack(
    probs: np.ndarray, table: np.ndarray, allowed: list[np.ndarray], capacity: float, grid: int
) -> np.ndarray | None:
    if capacity < 0:
        return None
    unit = max(capacity, 1e-9) / grid
    n_dec = len(allowed)
    neg = -math.inf
    best = np.full(grid + 1, neg)
    best[0] = 0.0
    back = np.zeros((n_dec, grid + 1), dtype=np.int64)  # chosen option per (decision, total cost cell)
    prev_cost = np.zeros((n_dec, grid + 1), dtype=np.int64)
    for i, opts in enumerate(allowed):
        new = np.full(grid + 1, neg)
        choice = np.zeros(grid + 1, dtype=np.int64)
        came = np.zeros(grid + 1, dtype=np.int64)
        for j in opts:
            cost = math.ceil(max(0.0, table[i, j]) / unit - 1e-9)
            if cost > grid:
                continue
            value = math.log(max(probs[i, j], 1e-300))
            cand = np.full(grid + 1, neg)
            cand[cost:] = best[: grid + 1 - cost] + value
            better = cand > new
            new[better] = cand[better]
            choice[better] = j
            came[better] = np.arange(grid + 1)[better] - cost
        best = new
        back[i] = choice
        prev_cost[i] = came
    if not np.isfinite(best).any():
        return None
    c = int(np.argmax(best))
    idx = np.zeros(n_dec, dtype=np.int64)
    for i in range(n_dec - 1, -1, -1):
        idx[i] = back[i, c]
        c = int(prev_cost[i, c])
    return idx


def derive(
    probs: np.ndarray, latency: ExpectedLatency, target_ms: float, method: str = "argmax", top_k: int = 3
) -> np.ndarray:
    """The derived arch's option indices (``argmax`` or ``within-budget``)."""
    if method == "argmax":
        return argmax_indices(probs)
    if method == "within-budget":
        return best_within_budget(probs, latency, target_ms, top_k)
    raise LatbenchError(f"unknown derive method {method!r}; known: {', '.join(DERIVE_METHODS)}")
