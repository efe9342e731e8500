"""`Strategy`: the ask/tell contract every search strategy implements.

The engine never lets a strategy run an evaluation; it asks for candidates,
evaluates them wherever it likes (here, on a Ray cluster, in any order) and
tells the strategy what came back:

* ``ask(n) -> np.ndarray`` of shape ``(m, decisions)``, ``m <= n`` option-index
  vectors. ``m == 0`` means "nothing to propose right now" (waiting for
  results); when :attr:`finished` is also true the strategy is done.
* ``tell(indices, rewards, feasible)`` with any subset of asked archs, in any
  order, each asked arch told at most once. A NaN reward is a failed trial;
  ``feasible=False`` marks a candidate the engine rejected unevaluated (over a
  hard limit). Archs asked but never told (lost in a crash) are simply forgotten.
* ``state_dict() -> (json_state, arrays)`` and ``load_state_dict(json_state,
  arrays, history)``: enough to resume (``history`` holds the index vectors of
  every trial told so far, for strategies that rebuild sets from it).

Candidates must satisfy ``problem.feasible`` (hard latency, params and memory
limits); :meth:`Strategy.sample_feasible` does rejection sampling for that.
Strategies are seeded through the ``rng`` they are given and must be
reproducible from it.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from latbench.errors import LatbenchError, UnknownNameError
from latbench.search.mnas.problem import SearchProblem


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """A JSON-able snapshot of a numpy Generator."""
    return rng.bit_generator.state


def set_rng_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state


class Strategy(ABC):
    """Proposes archs and learns from their rewards (see the module docstring for the contract)."""

    #: registry name
    name: ClassVar[str] = ""
    #: one line for ``--help`` and reports
    summary: ClassVar[str] = ""

    def __init__(self, problem: SearchProblem, rng: np.random.Generator, *, trials: int, dedupe: bool = False) -> None:
        self.problem = problem
        self.space = problem.space
        self.rng = rng
        self.trials = int(trials)
        self.dedupe = bool(dedupe)
        self.seen: set[bytes] = set()
        self._accept_rate = 0.5  # share of uniform samples meeting the limits (learnt by sample_feasible)

    # ------------------------------------------------------------------ contract
    @abstractmethod
    def ask(self, n: int) -> np.ndarray:
        """Up to ``n`` candidates, shape ``(m, decisions)``, int64."""

    @abstractmethod
    def tell(self, indices: np.ndarray, rewards: np.ndarray, feasible: np.ndarray | None = None) -> None:
        """Results for archs asked before (any order, any grouping)."""

    @property
    def batch_size(self) -> int:
        """How many candidates the strategy likes to be asked for at once."""
        return 100

    @property
    def finished(self) -> bool:
        """True when the strategy will propose nothing more."""
        return False

    def state_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"rng": rng_state(self.rng), "accept_rate": self._accept_rate}, {}

    def load_state_dict(self, state: dict[str, Any], arrays: dict[str, np.ndarray], history: np.ndarray) -> None:
        set_rng_state(self.rng, state["rng"])
        self._accept_rate = float(state.get("accept_rate", self._accept_rate))
        if self.dedupe:
            self.seen = {row.tobytes() for row in np.asarray(history, dtype=np.int64)}

    def describe(self) -> dict[str, Any]:
        """Name and effective options (for config.json and the report)."""
        return {"name": self.name}

    # ------------------------------------------------------------------ helpers
    def accept(self, idx: np.ndarray) -> np.ndarray:
        """Mask of candidates that meet the hard limits (and are new, with ``dedupe``)."""
        ok = self.problem.feasible(idx)
        if self.dedupe:
            batch: set[bytes] = set()
            for i, row in enumerate(idx):
                if ok[i]:
                    key = row.tobytes()
                    if key in self.seen or key in batch:
                        ok[i] = False
                    else:
                        batch.add(key)
        return ok

    def mark_proposed(self, idx: np.ndarray) -> None:
        if self.dedupe:
            self.seen.update(row.tobytes() for row in idx)

    def sample_feasible(self, n: int, around: np.ndarray | None = None) -> np.ndarray:
        """``n`` uniform random candidates meeting the limits (rejection sampling).

        When the feasible region is too small to hit at random, falls back to
        mutations of ``around`` (known feasible archs) or of the fastest arch.
        May return fewer than ``n`` (with ``dedupe`` in a small space).
        """
        if n <= 0:
            return np.zeros((0, len(self.space.decisions)), dtype=np.int64)
        got: list[np.ndarray] = []
        total = 0
        for _ in range(64):
            # draw enough for the remaining slots at the acceptance rate seen so far
            m = int(min(max(1.3 * (n - total) / self._accept_rate, 256), 65536))
            cand = self.space.sample_indices(self.rng, m)
            ok = self.accept(cand)
            self._accept_rate = max(float(ok.mean()), 1e-3)
            cand = cand[ok][: n - total]
            if len(cand):
                got.append(cand)
                total += len(cand)
                if self.dedupe:
                    self.mark_proposed(cand)
            if total >= n or self._accept_rate < 0.005:
                break  # done, or the feasible region is too small to hit at random: mutate known archs
        if total < n:
            seeds = [self.problem.latency_range[2][None, :]]
            if around is not None and len(around):
                seeds.append(np.asarray(around, dtype=np.int64))
            if got:
                seeds.append(np.concatenate(got))
            pool = np.concatenate(seeds)
            for _ in range(200):
                parents = pool[self.rng.integers(len(pool), size=max(64, 2 * (n - total)))]
                cand = self.space.mutate_indices(parents, self.rng, 0.1)
                cand = cand[self.accept(cand)][: n - total]
                if len(cand):
                    got.append(cand)
                    total += len(cand)
                    pool = np.concatenate([pool, cand])
                    self.mark_proposed(cand)
                if total >= n:
                    break
        if not got:
            return np.zeros((0, len(self.space.decisions)), dtype=np.int64)
        return np.concatenate(got)[:n]


# ----------------------------------------------------------------------------- registry
STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Register a strategy class under ``cls.name`` (usable as a decorator); the engine needs no change."""
    if not cls.name:
        raise ValueError("a strategy class needs a name")
    STRATEGIES[cls.name] = cls
    return cls


def strategy_options(cls: type[Strategy]) -> dict[str, Any]:
    """The options a strategy accepts (keyword parameters of ``__init__`` beyond the engine's) with defaults."""
    skip = {"self", "problem", "rng", "trials", "dedupe"}
    out = {}
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.name not in skip and p.kind == p.KEYWORD_ONLY and p.name not in out:
                    out[p.name] = None if p.default is inspect.Parameter.empty else p.default
            break
    return out


def make_strategy(
    name: str | Strategy,
    problem: SearchProblem,
    *,
    seed: int,
    trials: int,
    dedupe: bool = False,
    options: dict[str, Any] | None = None,
) -> Strategy:
    """A strategy by registered name (with ``options``), or an instance passed through."""
    if isinstance(name, Strategy):
        return name
    from latbench.search.mnas import strategies  # noqa: F401  (registers the built-ins)

    cls = STRATEGIES.get(name)
    if cls is None:
        raise UnknownNameError(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}")
    options = dict(options or {})
    known = strategy_options(cls)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise LatbenchError(
            f"strategy {name!r} has no option(s) {', '.join(unknown)}; known: {', '.join(sorted(known)) or 'none'}"
        )
    rng = np.random.default_rng([int(seed), 0x5EA4C])
    try:
        return cls(problem, rng, trials=trials, dedupe=dedupe, **options)
    except TypeError as exc:
        raise LatbenchError(f"bad options for strategy {name!r}: {exc}") from None
