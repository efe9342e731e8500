"""`evolution`: batched evolution over option-index vectors, with two mutations and two survival rules.

Default: regularized (aging) evolution (Real et al., AmoebaNet, AAAI 2019)
with population 100, parent ratio 0.25, mutation ratio 0.5 and mutation
probability 0.1: the same numbers Once-for-All's evolution finder uses, but
not its algorithm (Once-for-All keeps the best archs; aging evolution lets
the oldest die, and it resamples each decision on its own coin).

Each child comes from parents drawn uniformly from the best ``parent_ratio``
of the living population: with probability ``mutation_ratio`` a mutated copy
of one parent, else a uniform crossover of two parents (each decision from
either). A child over a hard limit is redrawn, so every proposal meets the
budget in hard mode.

Mutation (``mutation=``):

* ``"per-decision"`` (default): each decision is resampled uniformly with
  probability ``mutation_prob``.
* ``"ofa"``: Once-for-All's ``mutate_arch`` / ``mutate_resolution``
  (Cai et al., ICLR 2020). One coin of probability ``mutation_prob`` per
  *block* resamples all the decisions of that block together (kernel size and
  expand ratio of an ``ofa-mbv3`` block: ``kNN`` and ``eNN``); every other
  decision (depth of a stage ``dN``, ...) has a coin of its own; the input
  resolution (a decision named ``r`` or ``resolution``) is resampled with
  probability ``resolution_prob`` (default 0.5, Once-for-All's). A resample
  may draw the value the parent already had, as in Once-for-All, so a
  resampled block keeps its kernel or its expand ratio at times. Blocks are
  read from the decision names: decisions named ``<letters><digits>`` that
  share the digit string with a decision of another prefix form one block
  (``k01`` + ``e01``; ``h01`` + ``m01``, the heads and MLP ratio of an
  ``autoformer`` layer). A space with no such names falls back to
  per-decision mutation, one coin per decision: ``proxyless-mobile`` (its
  ``bNN`` decision already picks kernel and expand as one option),
  ``darts``, ``nb201``, ``fbnet``.

Survival (``aging=``): ``True`` (regularized evolution) keeps the
``population`` most recently evaluated archs, the oldest die whatever their
reward; ``False`` keeps the best ``population`` (elitist). Once-for-All's
finder keeps its best ``parent_ratio`` share plus the new children; as parents
are only ever drawn from the best ``parent_ratio`` share, keeping the best
``population`` picks the same parents.

Presets (``preset=``, e.g. ``--strategy-opt preset=ofa``) fill the options
that are not given:

* ``"aging"``: the defaults above.
* ``"ofa"``: Once-for-All's finder: ``mutation="ofa"``, ``aging=False``,
  population 100 (and 500 generations of 100 children when run with
  ``--generations 500``).
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

import numpy as np

from latbench.errors import LatbenchError
from latbench.search.mnas.strategies.base import Strategy, register_strategy
from latbench.spaces.base import SearchSpace

MUTATIONS = ("per-decision", "ofa")
#: options each preset fills in when they are not given
PRESETS: dict[str, dict[str, Any]] = {
    "aging": {"mutation": "per-decision", "aging": True},
    "ofa": {"mutation": "ofa", "aging": False, "population": 100},
}
#: Once-for-All's ``resolution_mutate_prob``: the default ``resolution_prob`` of ``mutation="ofa"``
OFA_RESOLUTION_PROB = 0.5
#: names of a space's input-resolution decision
RESOLUTION_NAMES = ("r", "resolution")
_BLOCK_NAME = re.compile(r"([A-Za-z]+)(\d+)")


def mutation_blocks(space: SearchSpace) -> list[list[int]]:
    """Decision indices grouped into blocks (see the module docstring); every decision is in exactly one group.

    The resolution decision and decisions that share no block are groups of one.
    """
    by_suffix: dict[str, list[int]] = {}
    for i, d in enumerate(space.decisions):
        m = _BLOCK_NAME.fullmatch(d.name)
        if m and d.name not in RESOLUTION_NAMES:
            by_suffix.setdefault(m.group(2), []).append(i)
    group_of: dict[int, list[int]] = {}
    for members in by_suffix.values():
        if len(members) > 1:  # names are unique, so the members' prefixes differ
            for i in members:
                group_of[i] = members
    out: list[list[int]] = []
    for i in range(len(space.decisions)):
        g = group_of.get(i, [i])
        if g[0] == i:
            out.append(list(g))
    return out


def _check_options(opts: dict[str, Any]) -> None:
    """One clear line for the first bad option, before anything runs."""
    pop = opts["population"]
    if isinstance(pop, bool) or not isinstance(pop, numbers.Integral) or pop < 2:
        raise LatbenchError(f"evolution population must be a whole number >= 2, got {pop!r}")
    for nm in ("parent_ratio", "mutation_ratio", "mutation_prob", "resolution_prob"):
        v = opts[nm]
        if v is None and nm == "resolution_prob":
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0.0 <= float(v) <= 1.0:
            raise LatbenchError(f"evolution {nm} must be a number in [0, 1], got {v!r}")
    if opts["mutation"] not in MUTATIONS:
        raise LatbenchError(f"evolution mutation must be one of {', '.join(MUTATIONS)}, got {opts['mutation']!r}")
    if opts["resolution_prob"] is not None and opts["mutation"] != "ofa":
        raise LatbenchError("evolution resolution_prob needs mutation=ofa (per-decision mutation uses mutation_prob)")
    if not isinstance(opts["aging"], bool):
        raise LatbenchError(f"evolution aging must be true or false, got {opts['aging']!r}")


@register_strategy
class EvolutionStrategy(Strategy):
    """Aging (default) or elitist evolution with per-decision or Once-for-All mutation, on batches of index vectors."""

    name = "evolution"
    summary = (
        "regularized (aging) evolution (population 100, parents 0.25, mutation 0.5/0.1); "
        "preset=ofa: Once-for-All's elitist finder with per-block mutation"
    )

    def __init__(  # type: ignore[no-untyped-def]
        self,
        problem,
        rng,
        *,
        trials: int,
        dedupe: bool = False,
        preset: str | None = None,
        population: int | None = None,
        parent_ratio: float = 0.25,
        mutation_ratio: float = 0.5,
        mutation_prob: float = 0.1,
        mutation: str | None = None,
        resolution_prob: float | None = None,
        aging: bool | None = None,
        max_redraws: int = 100,
    ) -> None:
        super().__init__(problem, rng, trials=trials, dedupe=dedupe)
        if preset is not None and preset not in PRESETS:
            raise LatbenchError(f"unknown evolution preset {preset!r}; known: {', '.join(PRESETS)}")
        opts: dict[str, Any] = {"population": population, "mutation": mutation, "aging": aging}
        for key, value in PRESETS[preset or "aging"].items():
            if opts[key] is None:
                opts[key] = value
        if opts["population"] is None:
            # 100 for long searches; a smaller one leaves room for evolution in short ones
            opts["population"] = 100 if trials >= 1000 else max(8, min(100, trials // 10))
        if resolution_prob is None and opts["mutation"] == "ofa":
            resolution_prob = OFA_RESOLUTION_PROB
        opts.update(
            parent_ratio=parent_ratio,
            mutation_ratio=mutation_ratio,
            mutation_prob=mutation_prob,
            resolution_prob=resolution_prob,
        )
        _check_options(opts)
        self.preset = preset
        self.population = int(opts["population"])
        self.parent_ratio = float(parent_ratio)
        self.mutation_ratio = float(mutation_ratio)
        self.mutation_prob = float(mutation_prob)
        self.mutation: str = opts["mutation"]
        self.resolution_prob = None if resolution_prob is None else float(resolution_prob)
        self.aging: bool = opts["aging"]
        self.max_redraws = int(max_redraws)
        d = len(self.space.decisions)
        self.blocks = mutation_blocks(self.space) if self.mutation == "ofa" else [[i] for i in range(d)]
        # one coin per block: the block each decision belongs to, and each block's probability
        self._block_of = np.empty(d, dtype=np.int64)
        self._block_prob = np.full(len(self.blocks), self.mutation_prob)
        for b, members in enumerate(self.blocks):
            self._block_of[members] = b
            if self.resolution_prob is not None and self.space.decisions[members[0]].name in RESOLUTION_NAMES:
                self._block_prob[b] = self.resolution_prob
        self.pop_idx = np.zeros((0, d), dtype=np.int64)
        self.pop_reward = np.zeros(0, dtype=np.float64)
        self.initial_asked = 0  # random members asked for the first population
        self._tries = 1  # children drawn per open slot in one round (adapts to the acceptance rate)

    @property
    def batch_size(self) -> int:
        return self.population

    # ------------------------------------------------------------------ ask
    def mutate(self, parents: np.ndarray) -> np.ndarray:
        """One mutated copy of each parent row (``mutation`` decides how; see the module docstring)."""
        if self.mutation == "per-decision":
            return self.space.mutate_indices(parents, self.rng, self.mutation_prob)
        idx = np.array(parents, dtype=np.int64, copy=True)
        coins = self.rng.random((len(idx), len(self.blocks))) < self._block_prob
        mask = coins[:, self._block_of]
        fresh = (self.rng.random(idx.shape) * self.space.cardinalities).astype(np.int64)
        idx[mask] = fresh[mask]
        return idx

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
            out[m] = self.mutate(self.pop_idx[self._parents(int(m.sum()))])
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
            "preset": self.preset,
            "population": self.population,
            "parent_ratio": self.parent_ratio,
            "mutation_ratio": self.mutation_ratio,
            "mutation_prob": self.mutation_prob,
            "mutation": self.mutation,
            "resolution_prob": self.resolution_prob,
            "aging": self.aging,
            "blocks": sum(len(b) > 1 for b in self.blocks),
        }
