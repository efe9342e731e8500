"""`evolution`: regularized (aging) evolution (Real et al., AmoebaNet, AAAI 2019), batched.

Defaults are Once-for-All's evolution finder (Cai et al., ICLR 2020): population
100, parent ratio 0.25, mutation ratio 0.5, mutation probability 0.1 (and 500
generations of 100 children when run with ``generations=500``).

Each child comes from parents drawn uniformly from the best ``parent_ratio``
of the living population: with probability ``mutation_ratio`` a copy of one
parent with each decision resampled at probability ``mutation_prob``, else a
uniform crossover of two parents. A child over a hard limit is redrawn (as
Once-for-All does), so every proposal meets the budget in hard mode.

``aging=True`` (regularized evolution): the population is the ``population``
most recently evaluated archs, the oldest die whatever their reward.
``aging=False``: the best ``population`` archs survive (Once-for-All's elitist
truncation).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from latbench.search.mnas.strategies.base import Strategy, register_strategy


@register_strategy
class EvolutionStrategy(Strategy):
    """Aging evolution with Once-for-All's defaults; works on batches of index vectors."""

    name = "evolution"
    summary = "regularized (aging) evolution, Once-for-All defaults (population 100, parents 0.25, mutation 0.5/0.1)"

    def __init__(  # type: ignore[no-untyped-def]
        self,
        problem,
        rng,
        *,
        trials: int,
        dedupe: bool = False,
        population: int | None = None,
        parent_ratio: float = 0.25,
        mutation_ratio: float = 0.5,
        mutation_prob: float = 0.1,
        aging: bool = True,
        max_redraws: int = 100,
    ) -> None:
        super().__init__(problem, rng, trials=trials, dedupe=dedupe)
        if population is None:
            # Once-for-All's 100 for long searches; a smaller one leaves room for evolution in short ones
            population = 100 if trials >= 1000 else max(8, min(100, trials // 10))
        from latbench.errors import LatbenchError

        if int(population) < 2:
            raise LatbenchError(f"evolution population must be >= 2, got {population}")
        for nm, v in (
            ("parent_ratio", parent_ratio),
            ("mutation_ratio", mutation_ratio),
            ("mutation_prob", mutation_prob),
        ):
            if not 0.0 <= float(v) <= 1.0:
                raise LatbenchError(f"evolution {nm} must be in [0, 1], got {v}")
        self.population = int(population)
        self.parent_ratio = float(parent_ratio)
        self.mutation_ratio = float(mutation_ratio)
        self.mutation_prob = float(mutation_prob)
        self.aging = bool(aging)
        self.max_redraws = int(max_redraws)
        d = len(self.space.decisions)
        self.pop_idx = np.zeros((0, d), dtype=np.int64)
        self.pop_reward = np.zeros(0, dtype=np.float64)
        self.initial_asked = 0  # random members asked for the first population
        self._tries = 1  # children drawn per open slot in one round (adapts to the acceptance rate)

    @property
    def batch_size(self) -> int:
        return self.population

    # ------------------------------------------------------------------ ask
    def _parents(self, n: int) -> np.ndarray:
        k = max(1, math.ceil(self.parent_ratio * len(self.pop_reward)))
        if k >= len(self.pop_reward):
            top = np.arange(len(self.pop_reward))
        else:
            top = np.argpartition(-self.pop_reward, k - 1)[:k]
        return top[self.rng.integers(len(top), size=n)]

    def _draw(self, slots: np.ndarray, n_mut: int) -> np.ndarray:
        """One child per slot: a mutation for slots below ``n_mut``, a crossover for the others."""
        out = np.empty((len(slots), self.pop_idx.shape[1]), dtype=np.int64)
        m = slots < n_mut
        if m.any():
            out[m] = self.space.mutate_indices(self.pop_idx[self._parents(int(m.sum()))], self.rng, self.mutation_prob)
        c = ~m
        if c.any():
            a = self.pop_idx[self._parents(int(c.sum()))]
            b = self.pop_idx[self._parents(int(c.sum()))]
            out[c] = self.space.crossover_indices(a, b, self.rng)
        return out

    def _children(self, n: int) -> np.ndarray:
        n_mut = round(self.mutation_ratio * n)
        out = np.empty((n, self.pop_idx.shape[1]), dtype=np.int64)
        todo = np.arange(n)
        tries = 1 if self.dedupe else self._tries
        for _ in range(self.max_redraws):
            # draw ``tries`` children per open slot at once and keep the first that meets the limits
            slots = np.tile(todo, tries)
            cand = self._draw(slots, n_mut)
            ok = self.accept(cand).reshape(tries, len(todo))
            hit = ok.any(axis=0)
            first = np.argmax(ok, axis=0)
            pick = first[hit] * len(todo) + np.flatnonzero(hit)
            out[todo[hit]] = cand[pick]
            self.mark_proposed(cand[pick])
            rate = max(float(ok.mean()), 0.02)
            todo = todo[~hit]
            if not self.dedupe:
                # draws per slot so that ~99% of the slots fill in one round (the next generation starts there too)
                self._tries = int(min(64, max(1, np.ceil(np.log(0.01) / np.log1p(-min(rate, 0.999))))))
                tries = self._tries
            if not len(todo):
                return out
        # still over a limit after max_redraws: fresh feasible samples
        fill = self.sample_feasible(len(todo), around=self.pop_idx)
        out[todo[: len(fill)]] = fill
        keep = np.ones(n, dtype=bool)
        keep[todo[len(fill) :]] = False
        return out[keep]

    def ask(self, n: int) -> np.ndarray:
        parts = []
        init_left = self.population - self.initial_asked
        if init_left > 0 or len(self.pop_reward) < 2:
            k = min(n, max(init_left, 0)) if len(self.pop_reward) >= 2 else n
            first = self.sample_feasible(k)
            self.initial_asked += len(first)
            parts.append(first)
            n -= len(first)
        if n > 0 and len(self.pop_reward) >= 2:
            parts.append(self._children(n))
        if not parts:
            return np.zeros((0, len(self.space.decisions)), dtype=np.int64)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    # ----------------------------------------------------------------- tell
    def tell(self, indices: np.ndarray, rewards: np.ndarray, feasible: np.ndarray | None = None) -> None:
        rewards = np.asarray(rewards, dtype=np.float64)
        ok = np.isfinite(rewards)
        if feasible is not None:
            ok &= np.asarray(feasible, dtype=bool)
        if not ok.any():
            return
        idx = np.concatenate([self.pop_idx, np.asarray(indices, dtype=np.int64)[ok]])
        rew = np.concatenate([self.pop_reward, rewards[ok]])
        if len(rew) > self.population:
            if self.aging:
                idx, rew = idx[-self.population :], rew[-self.population :]
            else:
                keep = np.sort(np.argsort(-rew, kind="stable")[: self.population])
                idx, rew = idx[keep], rew[keep]
        self.pop_idx, self.pop_reward = idx, rew

    # --------------------------------------------------------------- state
    def state_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        state, arrays = super().state_dict()
        state["initial_asked"] = min(self.initial_asked, self.population)
        state["tries"] = self._tries
        arrays.update(pop_idx=self.pop_idx, pop_reward=self.pop_reward)
        return state, arrays

    def load_state_dict(self, state: dict[str, Any], arrays: dict[str, np.ndarray], history: np.ndarray) -> None:
        super().load_state_dict(state, arrays, history)
        self.pop_idx = np.asarray(arrays["pop_idx"], dtype=np.int64).reshape(-1, len(self.space.decisions))
        self.pop_reward = np.asarray(arrays["pop_reward"], dtype=np.float64)
        self.initial_asked = int(state["initial_asked"])
        self._tries = int(state.get("tries", 1))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "population": self.population,
            "parent_ratio": self.parent_ratio,
            "mutation_ratio": self.mutation_ratio,
            "mutation_prob": self.mutation_prob,
            "aging": self.aging,
        }
