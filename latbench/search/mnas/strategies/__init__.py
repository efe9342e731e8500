"""Search strategies behind the ask/tell interface; importing this package registers the built-ins."""

from latbench.search.mnas.strategies.base import (
    STRATEGIES,
    Strategy,
    make_strategy,
    register_strategy,
    strategy_options,
)
from latbench.search.mnas.strategies.evolution import EvolutionStrategy
from latbench.search.mnas.strategies.random import RandomStrategy
from latbench.search.mnas.strategies.rl import RLStrategy
from latbench.search.mnas.strategies.scaling import CompoundScalingStrategy, register_scaling_axes

__all__ = [
    "STRATEGIES",
    "CompoundScalingStrategy",
    "EvolutionStrategy",
    "RLStrategy",
    "RandomStrategy",
    "Strategy",
    "make_strategy",
    "register_scaling_axes",
    "register_strategy",
    "strategy_options",
]
