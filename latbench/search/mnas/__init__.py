"""The MnasNet-reward search engine (Tan et al., CVPR 2019).

Maximises ``ACC(m) * (LAT(m) / T) ** w`` over a search space against a latency
target ``T`` (ms) on one device, with pluggable strategies (``random``,
``evolution``, ``rl``, ``scaling``; ask/tell) and accuracy sources (``train``,
``zero-cost``, ``python:module:function``, optionally screened by a fitted
accuracy predictor). ``run(...)`` is the Python twin of ``latbench search mnas``.
"""

from latbench.search.mnas.api import RunResult, make_problem, run, search
from latbench.search.mnas.engine import Executor, LocalExecutor, SearchEngine
from latbench.search.mnas.evaluators import (
    ArchBatch,
    EvalResult,
    Evaluator,
    make_evaluator,
    register_evaluator,
)
from latbench.search.mnas.problem import SearchProblem
from latbench.search.mnas.reward import REWARD_PRESETS, Constraints, Reward, parse_target
from latbench.search.mnas.strategies import Strategy, make_strategy, register_scaling_axes, register_strategy

__all__ = [
    "REWARD_PRESETS",
    "ArchBatch",
    "Constraints",
    "EvalResult",
    "Evaluator",
    "Executor",
    "LocalExecutor",
    "Reward",
    "RunResult",
    "SearchEngine",
    "SearchProblem",
    "Strategy",
    "make_evaluator",
    "make_problem",
    "make_strategy",
    "parse_target",
    "register_evaluator",
    "register_scaling_axes",
    "register_strategy",
    "run",
    "search",
]
