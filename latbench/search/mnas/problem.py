"""`SearchProblem`: a space, a latency model compiled for it, the reward and the hard constraints.

Everything here works on batches of option-index vectors (shape ``(n, decisions)``),
so strategies can test 100,000s of candidates a second against the budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from latbench.errors import LatbenchError
from latbench.predict.base import SpaceLatency
from latbench.search.mnas.reward import Constraints, Reward
from latbench.spaces import SearchSpace

BatchFn = Callable[[np.ndarray], np.ndarray]


class SpaceCounts:
    """Vectorised analytic counts of a space: parameters and peak memory (bytes) per index vector."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        vocab = space.vocabulary
        self.params_vec = np.array([op.params for op in vocab] + [0], dtype=np.int64)
        self.weight_vec = np.array([op.weight_bytes for op in vocab] + [0], dtype=np.int64)
        self.act_vec = np.array([op.peak_activation_bytes for op in vocab] + [0], dtype=np.int64)

    def params(self, idx: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        ids = self.space.op_ids(idx) if ids is None else ids
        return self.params_vec[ids].sum(axis=1)

    def memory_bytes(self, idx: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        """Peak activation bytes of a layer-by-layer run plus all weight bytes (``SearchSpace.peak_memory_bytes``)."""
        ids = self.space.op_ids(idx) if ids is None else ids
        return self.act_vec[ids].max(axis=1) + self.weight_vec[ids].sum(axis=1)


def coordinate_minimum(
    fn: BatchFn, space: SearchSpace, starts: np.ndarray, sweeps: int = 30
) -> tuple[np.ndarray, float]:
    """Minimise a batched function of index vectors by coordinate descent from each start; best (idx, value)."""
    best_idx, best_val = None, np.inf
    card = space.cardinalities
    for start in np.atleast_2d(starts):
        cur = start.copy()
        val = float(fn(cur[None, :])[0])
        for _ in range(sweeps):
            improved = False
            for d, c in enumerate(card):
                cand = np.repeat(cur[None, :], c, axis=0)
                cand[:, d] = np.arange(c)
                v = fn(cand)
                j = int(np.argmin(v))
                if v[j] < val - 1e-12:
                    cur, val, improved = cand[j].copy(), float(v[j]), True
            if not improved:
                break
        if val < best_val:
            best_idx, best_val = cur, val
    assert best_idx is not None
    return best_idx, best_val


@dataclass
class SearchProblem:
    """What a search optimises: ``reward(accuracy, latency)`` subject to ``constraints``, over ``space``."""

    space: SearchSpace
    latency: SpaceLatency
    reward: Reward
    constraints: Constraints = field(default_factory=Constraints)

    def __post_init__(self) -> None:
        if self.latency.space.name != self.space.name or self.latency.space.params != self.space.params:
            raise LatbenchError(
                f"latency model is compiled for {self.latency.space.name} {self.latency.space.params}, "
                f"not for {self.space.name} {self.space.params}"
            )

    @cached_property
    def counts(self) -> SpaceCounts:
        return SpaceCounts(self.space)

    @property
    def target_ms(self) -> float:
        return self.reward.target_ms

    # ----------------------------------------------------------------- batches
    def latency_ms(self, idx: np.ndarray) -> np.ndarray:
        """Predicted milliseconds of each index vector."""
        return self.latency.predict_indices(idx)

    def measure_static(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Latency (ms), params and memory (MB; NaN unless a params/memory limit is set) of a batch, feasible mask."""
        lat = self.latency.predict_indices(idx)
        n = len(lat)
        ok = np.ones(n, dtype=bool)
        if self.constraints.hard_latency:
            ok &= lat <= self.target_ms
        params = np.full(n, np.nan)
        mem = np.full(n, np.nan)
        if self.constraints.counts_needed:
            ids = self.space.op_ids(idx)
            params = self.counts.params(idx, ids).astype(np.float64)
            mem = self.counts.memory_bytes(idx, ids) / 1e6
            if self.constraints.max_params is not None:
                ok &= params <= self.constraints.max_params
            if self.constraints.max_memory_mb is not None:
                ok &= mem <= self.constraints.max_memory_mb
        return {"latency_ms": lat, "params": params, "memory_mb": mem, "feasible": ok}

    def feasible(self, idx: np.ndarray) -> np.ndarray:
        """Boolean mask: the archs a strategy may propose (hard latency, params and memory limits)."""
        if not self.constraints.hard_latency and not self.constraints.counts_needed:
            return np.ones(len(idx), dtype=bool)
        return self.measure_static(idx)["feasible"]

    def within_budget(self, latency_ms: np.ndarray) -> np.ndarray:
        return np.asarray(latency_ms) <= self.target_ms

    # ------------------------------------------------------------ range checks
    def _starts(self, n: int = 2000) -> np.ndarray:
        rng = np.random.default_rng(12345)
        card = self.space.cardinalities
        fixed = np.stack([np.zeros_like(card), card - 1])
        return np.concatenate([fixed, self.space.sample_indices(rng, n)])

    @cached_property
    def latency_range(self) -> tuple[float, float, np.ndarray]:
        """(smallest, largest) predicted ms over the space and the fastest arch's indices.

        ``SpaceLatency.bounds()`` (exact for one-op-per-decision spaces, sampled
        otherwise) tightened by coordinate descent from the best samples.
        """
        lo_b, hi_b = self.latency.bounds()
        starts = self._starts()
        lat = self.latency.predict_indices(starts)
        order = np.argsort(lat)
        fast_idx, lo = coordinate_minimum(self.latency.predict_indices, self.space, starts[order[:3]])
        _, neg_hi = coordinate_minimum(lambda x: -self.latency.predict_indices(x), self.space, starts[order[-3:]])
        return min(lo, lo_b), max(-neg_hi, hi_b), fast_idx

    def smallest(self, what: str) -> tuple[float, np.ndarray]:
        """Smallest ``params`` or ``memory_mb`` over the space (coordinate descent) and the arch reaching it."""
        if what == "params":

            def fn(x: np.ndarray) -> np.ndarray:
                return self.counts.params(x).astype(np.float64)
        else:

            def fn(x: np.ndarray) -> np.ndarray:
                return self.counts.memory_bytes(x) / 1e6

        starts = self._starts(500)
        order = np.argsort(fn(starts))
        idx, val = coordinate_minimum(fn, self.space, starts[order[:2]])
        return val, idx

    def check_reachable(self, source: str = "") -> None:
        """One clear :class:`LatbenchError` when no arch of the space can meet the budget or the limits."""
        lo, hi, fast = self.latency_range
        where = f" on {source}" if source else ""
        if self.target_ms < lo * (1 - 1e-9):
            raise LatbenchError(
                f"target {self.target_ms:g} ms is below the fastest arch of {self.space.name}{where}: "
                f"the smallest possible latency is {lo:.3f} ms (slowest {hi:.3f} ms)"
            )
        c = self.constraints
        if c.max_params is not None:
            p, _ = self.smallest("params")
            if p > c.max_params:
                raise LatbenchError(
                    f"--max-params {c.max_params} is below the smallest arch of {self.space.name} ({p:.0f} params)"
                )
        if c.max_memory_mb is not None:
            m, _ = self.smallest("memory_mb")
            if m > c.max_memory_mb:
                raise LatbenchError(
                    f"--max-memory {c.max_memory_mb:g} MB is below the smallest arch of {self.space.name} ({m:.2f} MB)"
                )
        if c.hard_latency or c.counts_needed:
            if not self.feasible(fast[None, :])[0]:
                # the fastest arch breaks a params/memory limit: look for any feasible arch
                rng = np.random.default_rng(0)
                for _ in range(50):
                    if self.feasible(self.space.sample_indices(rng, 4096)).any():
                        return
                raise LatbenchError(
                    f"no arch of {self.space.name} meets the target {self.target_ms:g} ms "
                    "and the params/memory limits together"
                )
