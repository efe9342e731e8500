"""The MnasNet reward ``ACC(m) * (LAT(m) / T) ** w`` and the hard constraints of a search.

``w = alpha`` when ``LAT <= T`` and ``w = beta`` otherwise (Tan et al., MnasNet,
CVPR 2019). Presets: ``soft`` (alpha = beta = -0.07, the paper's setting: a
net twice as slow must be 5% more accurate) and ``hard`` (alpha = 0, beta = -1:
accuracy alone under the budget, a steep penalty above it). Both exponents must
be <= 0: a positive one would reward slower networks.

Latency ``T`` and ``LAT`` are milliseconds. ``ACC`` is an accuracy in (0, 1];
a proxy score (zero-cost) is first mapped to (0, 1) by :class:`ScoreScale`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from latbench.errors import LatbenchError

#: name -> (alpha, beta)
REWARD_PRESETS: dict[str, tuple[float, float]] = {"soft": (-0.07, -0.07), "hard": (0.0, -1.0)}


def parse_target(text: str | float | int, bounds: tuple[float, float] | None = None) -> float:
    """The shared target grammar (:func:`latbench.search.target.parse_target`): ms, s, us or a share of the range."""
    from latbench.search.target import parse_target as _parse

    return _parse(text, bounds)


@dataclass(frozen=True)
class ScoreScale:
    """Maps a proxy score (any real number) to (0, 1), increasing: ``1 / (1 + exp(-(s - center) / scale))``.

    ``center`` is the median and ``scale`` the robust spread (IQR / 1.349) of the
    scores of a fixed reference sample of archs, drawn and scored once when the
    search starts (from the search seed, so the same run gets the same scale,
    and a resumed run reads it from its ``config.json``). A log-determinant or a
    log saliency may be negative; multiplied into the reward as it is, a negative
    value would reverse the latency preference. After this map the accuracy term
    is always positive and keeps the order of the scores.
    """

    center: float
    scale: float
    n: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.center) and math.isfinite(self.scale) and self.scale > 0):
            raise LatbenchError(f"bad score scale (center {self.center}, scale {self.scale})")

    @classmethod
    def from_scores(cls, scores: np.ndarray) -> ScoreScale:
        s = np.asarray(scores, dtype=np.float64)
        s = s[np.isfinite(s)]
        if len(s) < 2:
            raise LatbenchError("the evaluator scored fewer than 2 of the reference archs; see its errors")
        q1, med, q3 = np.percentile(s, [25, 50, 75])
        scale = (q3 - q1) / 1.349
        if not scale > 0:
            scale = float(np.std(s)) or max(abs(float(med)), 1.0) * 1e-3
        return cls(float(med), float(scale), len(s))

    def __call__(self, score: np.ndarray | float) -> np.ndarray:
        z = (np.asarray(score, dtype=np.float64) - self.center) / self.scale
        return 0.5 * (1.0 + np.tanh(0.5 * z))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Reward:
    """``accuracy * (latency_ms / target_ms) ** w``, ``w = alpha`` within the budget, ``beta`` above it."""

    target_ms: float
    alpha: float = -0.07
    beta: float = -0.07
    preset: str | None = "soft"
    #: proxy scores: mapped to (0, 1) before the product (see :class:`ScoreScale`); None for accuracies
    score_scale: ScoreScale | None = None

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
        """Reward of each (accuracy or score, latency in ms) pair; NaN where the value is NaN (failed trial).

        A proxy score goes through :attr:`score_scale` first, so the product is
        well defined whatever the score's sign: a higher score and a lower
        latency always give a higher reward.
        """
        acc = np.asarray(accuracy, dtype=np.float64)
        if self.score_scale is not None:
            acc = self.score_scale(acc)
        ratio = np.asarray(latency_ms, dtype=np.float64) / self.target_ms
        w = np.where(ratio <= 1.0, self.alpha, self.beta)
        return acc * np.power(ratio, w)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["score_scale"] = self.score_scale.to_dict() if self.score_scale is not None else None
        return d


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
