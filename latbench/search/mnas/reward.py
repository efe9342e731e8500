"""The MnasNet reward ``ACC(m) * (LAT(m) / T) ** w`` and the hard constraints of a search.

``w = alpha`` when ``LAT <= T`` and ``w = beta`` otherwise (Tan et al., MnasNet,
CVPR 2019). Presets: ``soft`` (alpha = beta = -0.07, the paper's setting: a
net twice as slow must be 5% more accurate) and ``hard`` (alpha = 0, beta = -1:
accuracy alone under the budget, a steep penalty above it). Both exponents must
be <= 0: a positive one would reward slower networks.

Latency ``T`` and ``LAT`` are milliseconds.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from latbench.errors import LatbenchError

#: name -> (alpha, beta)
REWARD_PRESETS: dict[str, tuple[float, float]] = {"soft": (-0.07, -0.07), "hard": (0.0, -1.0)}

_TARGET = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|us)?\s*$")


def parse_target(text: str | float | int) -> float:
    """``"20ms"``, ``"20"``, ``"0.02s"``, ``"1500us"`` or a number -> milliseconds (> 0)."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = _TARGET.match(str(text))
        if not m:
            raise LatbenchError(f"bad latency target {text!r}; write it like 20ms, 0.02s or 20 (milliseconds)")
        value = float(m.group(1)) * {"ms": 1.0, None: 1.0, "s": 1000.0, "us": 0.001}[m.group(2)]
    if not math.isfinite(value) or value <= 0:
        raise LatbenchError(f"the latency target must be a positive number of milliseconds, got {text!r}")
    return value


@dataclass(frozen=True)
class Reward:
    """``accuracy * (latency_ms / target_ms) ** w``, ``w = alpha`` within the budget, ``beta`` above it."""

    target_ms: float
    alpha: float = -0.07
    beta: float = -0.07
    preset: str | None = "soft"

    def __post_init__(self) -> None:
        if not math.isfinite(self.target_ms) or self.target_ms <= 0:
            raise LatbenchError(f"the latency target must be > 0 ms, got {self.target_ms}")
        for name, value in (("alpha", self.alpha), ("beta", self.beta)):
            if not math.isfinite(value):
                raise LatbenchError(f"reward exponent {name} must be a finite number, got {value}")
            if value > 0:
                raise LatbenchError(
                    f"reward exponent {name}={value:g} is positive: it would reward slower nets; use a value <= 0 "
                    "(soft: -0.07, hard: alpha 0 and beta -1)"
                )

    @classmethod
    def from_preset(
        cls, preset: str | None, target_ms: float, alpha: float | None = None, beta: float | None = None
    ) -> Reward:
        """A preset (``soft``/``hard``), with ``alpha``/``beta`` overriding it where given."""
        name = preset or "soft"
        if name not in REWARD_PRESETS:
            raise LatbenchError(f"unknown reward {name!r}; known: {', '.join(REWARD_PRESETS)} (or give --alpha/--beta)")
        a, b = REWARD_PRESETS[name]
        custom = (alpha is not None and alpha != a) or (beta is not None and beta != b)
        return cls(
            float(target_ms),
            a if alpha is None else float(alpha),
            b if beta is None else float(beta),
            None if custom else name,
        )

    def __call__(self, accuracy: np.ndarray | float, latency_ms: np.ndarray | float) -> np.ndarray:
        """Reward of each (accuracy, latency in ms) pair; NaN where the accuracy is NaN (failed trial)."""
        acc = np.asarray(accuracy, dtype=np.float64)
        ratio = np.asarray(latency_ms, dtype=np.float64) / self.target_ms
        w = np.where(ratio <= 1.0, self.alpha, self.beta)
        return acc * np.power(ratio, w)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Constraints:
    """Hard limits besides latency, from the deployment space's analytic counts.

    ``max_params`` in parameters, ``max_memory_mb`` in MB (10**6 bytes) of peak
    activation memory plus all weights (``SearchSpace.peak_memory_bytes``).
    ``hard_latency``: archs predicted above the target are never proposed nor
    returned (rejection sampling, as Once-for-All's evolution does).
    """

    max_params: int | None = None
    max_memory_mb: float | None = None
    hard_latency: bool = False

    def __post_init__(self) -> None:
        if self.max_params is not None and self.max_params <= 0:
            raise LatbenchError(f"--max-params must be > 0, got {self.max_params}")
        if self.max_memory_mb is not None and not self.max_memory_mb > 0:
            raise LatbenchError(f"--max-memory must be > 0 MB, got {self.max_memory_mb}")

    @property
    def counts_needed(self) -> bool:
        return self.max_params is not None or self.max_memory_mb is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
