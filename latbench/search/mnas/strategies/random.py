"""`random`: uniform random search (the KerasTuner ``RandomSearch`` baseline), limits by rejection."""

from __future__ import annotations

import numpy as np

from latbench.search.mnas.strategies.base import Strategy, register_strategy


@register_strategy
class RandomStrategy(Strategy):
    """Every decision uniform at random; candidates over a hard limit are resampled."""

    name = "random"
    summary = "uniform random archs (rejection-sampled under hard limits)"

    def __init__(self, problem, rng, *, trials: int, dedupe: bool = False, batch: int = 256) -> None:  # type: ignore[no-untyped-def]
        super().__init__(problem, rng, trials=trials, dedupe=dedupe)
        self.batch = int(batch)

    @property
    def batch_size(self) -> int:
        return self.batch

    def ask(self, n: int) -> np.ndarray:
        return self.sample_feasible(n)

    def tell(self, indices: np.ndarray, rewards: np.ndarray, feasible: np.ndarray | None = None) -> None:
        return None

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "batch": self.batch}
