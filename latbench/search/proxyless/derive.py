"""Deriving the final arch from alpha: argmax, or the most likely arch within the budget.

``within-budget`` keeps, per decision, the ``top_k`` options by probability and
finds the combination with the highest joint probability (sum of log p) whose
predicted latency is at most the target (and, with ``floor_ms``, at least the
floor): a knapsack solved exactly by dynamic programming over a latency grid
(latencies rounded *up* to the grid, so the answer is never over budget). When
the argmax arch already qualifies it is the answer; when no top-k combination
does, every option is allowed; when the floor cannot be met, it is dropped.

Why the budget loss finishes with it (``--derive auto``): the budget loss's dual
ascent gets the argmax arch to the target up to the jumps of whole blocks
flipping together (one scalar multiplier moves every block whose options trade
accuracy for milliseconds at a similar rate), which on a CPU table can be 15 %
of the target. That is the duality gap of a knapsack; the exact repair among the
options alpha ranks highest closes it. The report shows the argmax arch's
latency next to the derived one, and how many decisions the repair changed.
"""

from __future__ import annotations

import math

import numpy as np

from latbench.errors import LatbenchError
from latbench.search.proxyless.latency import ExpectedLatency

DERIVE_METHODS = ("auto", "argmax", "within-budget")


def argmax_indices(probs: np.ndarray) -> np.ndarray:
    return np.asarray(probs).argmax(axis=1).astype(np.int64)


def best_within_budget(
    probs: np.ndarray,
    latency: ExpectedLatency,
    target_ms: float,
    top_k: int = 3,
    grid: int = 4000,
    floor_ms: float | None = None,
) -> np.ndarray:
    """Indices of the most probable arch among the top-``top_k`` options per decision with
    ``floor_ms <= latency <= target_ms`` (ms); the floor is dropped when no arch meets both."""
    probs = np.asarray(probs, dtype=np.float64)
    n_dec = probs.shape[0]
    am = argmax_indices(probs)
    am_ms = latency.of_indices(am)
    if am_ms <= target_ms and (floor_ms is None or am_ms >= floor_ms):
        return am
    cards = latency.space.cardinalities

    def opsum(ms: float) -> float:  # a whole-network latency as the op-sum budget the table is in
        return (ms - latency.offset_ms) / latency.scale - latency.fixed_ms

    capacity = opsum(target_ms)
    floors = [opsum(floor_ms), None] if floor_ms is not None else [None]
    for floor in floors:
        for k in (top_k, int(cards.max())):
            allowed = []
            for i in range(n_dec):
                order = np.argsort(-probs[i, : cards[i]], kind="stable")
                allowed.append(order[: max(1, min(k, cards[i]))])
            idx = _knapsack(probs, latency.table, allowed, capacity, grid, floor)
            if idx is not None:
                if latency.of_indices(idx) > target_ms * (1 + 1e-9):
                    raise AssertionError("within-budget derive returned an arch over budget")
                return idx
    lo, hi = latency.bounds()
    raise LatbenchError(f"no arch of the space is within {target_ms:.3f} ms (reachable: {lo:.3f}-{hi:.3f} ms)")


def _knapsack(
    probs: np.ndarray,
    table: np.ndarray,
    allowed: list[np.ndarray],
    capacity: float,
    grid: int,
    floor: float | None = None,
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

    def backtrack(c: int) -> np.ndarray:
        idx = np.zeros(n_dec, dtype=np.int64)
        for i in range(n_dec - 1, -1, -1):
            idx[i] = back[i, c]
            c = int(prev_cost[i, c])
        return idx

    if floor is None:
        if not np.isfinite(best).any():
            return None
        return backtrack(int(np.argmax(best)))
    # costs were rounded up, so a cell's true op sum lies within n_dec units below it: cells from
    # floor / unit + n_dec up surely meet the floor, the n_dec cells below them are checked exactly
    start = max(0, math.floor(floor / unit))
    for c in sorted(range(start, grid + 1), key=lambda c: -best[c]):
        if not np.isfinite(best[c]):
            return None
        idx = backtrack(c)
        if float(table[np.arange(n_dec), idx].sum()) >= floor - 1e-12:
            return idx
    return None


def derive(
    probs: np.ndarray,
    latency: ExpectedLatency,
    target_ms: float,
    method: str = "argmax",
    top_k: int = 3,
    floor_ms: float | None = None,
) -> np.ndarray:
    """The derived arch's option indices (``argmax`` or ``within-budget`` of ``[floor_ms, target_ms]``)."""
    if method == "argmax":
        return argmax_indices(probs)
    if method == "within-budget":
        return best_within_budget(probs, latency, target_ms, top_k, floor_ms=floor_ms)
    raise LatbenchError(f"unknown derive method {method!r}; known: {', '.join(DERIVE_METHODS)}")
