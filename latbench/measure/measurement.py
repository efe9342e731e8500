"""`Measurement`: raw timing samples and the statistics derived from them.

Modelled on ``torch.utils.benchmark.Measurement``: the raw samples are kept,
statistics are computed lazily, ``meets_confidence`` says whether a number can
be trusted, and two measurements of the same thing merge.
All times are milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

#: IQR / median above this marks a measurement as noisy
NOISY_REL_IQR = 0.10


@dataclass
class Measurement:
    """Timing samples of one callable, in milliseconds.

    ``samples_ms`` are the samples the statistics use: drift-corrected when the
    harness normalised them by a sentinel (then ``raw_ms`` holds the samples as
    timed and ``drift_factor`` the median correction applied), else as timed.
    """

    label: str
    samples_ms: list[float]
    raw_ms: list[float] | None = None
    drift_factor: float = 1.0
    attempts: int = 1
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.samples_ms:
            raise ValueError(f"measurement {self.label!r} has no samples")

    @cached_property
    def _sorted(self) -> np.ndarray:
        return np.sort(np.asarray(self.samples_ms, dtype=np.float64))

    @property
    def n(self) -> int:
        return len(self.samples_ms)

    @property
    def median(self) -> float:
        return float(np.median(self._sorted))

    @property
    def mean(self) -> float:
        return float(self._sorted.mean())

    @property
    def iqr(self) -> float:
        q1, q3 = np.percentile(self._sorted, [25, 75])
        return float(q3 - q1)

    @property
    def p90(self) -> float:
        return float(np.percentile(self._sorted, 90))

    @property
    def rel_iqr(self) -> float:
        med = self.median
        return self.iqr / med if med > 0 else float("inf")

    @property
    def noisy(self) -> bool:
        return not self.meets_confidence(NOISY_REL_IQR)

    @property
    def raw_median(self) -> float:
        return float(np.median(self.raw_ms)) if self.raw_ms else self.median

    def meets_confidence(self, threshold: float = NOISY_REL_IQR) -> bool:
        """True when IQR / median is at most ``threshold`` (and there are >= 4 samples)."""
        return self.n >= 4 and self.rel_iqr <= threshold

    def merge(self, other: Measurement) -> Measurement:
        """Pool the samples of two measurements of the same thing."""
        if other.label != self.label:
            raise ValueError(f"cannot merge {self.label!r} with {other.label!r}")
        raw = (self.raw_ms or self.samples_ms) + (other.raw_ms or other.samples_ms)
        n1, n2 = self.n, other.n
        return Measurement(
            self.label,
            self.samples_ms + other.samples_ms,
            raw_ms=raw,
            drift_factor=(self.drift_factor * n1 + other.drift_factor * n2) / (n1 + n2),
            attempts=self.attempts + other.attempts,
            meta={**self.meta, **other.meta},
        )

    def summary(self) -> dict[str, Any]:
        """The statistics a table row stores (milliseconds)."""
        return {
            "median_ms": round(self.median, 6),
            "iqr_ms": round(self.iqr, 6),
            "p90_ms": round(self.p90, 6),
            "mean_ms": round(self.mean, 6),
            "n": self.n,
            "rel_iqr": round(self.rel_iqr, 4),
            "noisy": self.noisy,
            "raw_median_ms": round(self.raw_median, 6),
            "drift_factor": round(self.drift_factor, 4),
            "attempts": self.attempts,
        }

    def to_dict(self, *, with_samples: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {"label": self.label, **self.summary(), "meta": self.meta}
        if with_samples:
            d["samples_ms"] = [round(x, 5) for x in self.samples_ms]
            if self.raw_ms is not None:
                d["raw_ms"] = [round(x, 5) for x in self.raw_ms]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        return cls(
            d["label"],
            list(d["samples_ms"]),
            raw_ms=d.get("raw_ms"),
            drift_factor=d.get("drift_factor", 1.0),
            attempts=d.get("attempts", 1),
            meta=d.get("meta", {}),
        )

    def __repr__(self) -> str:
        flag = " NOISY" if self.noisy else ""
        return (
            f"Measurement({self.label}: median {self.median:.4f} ms, IQR {self.iqr:.4f} ms, "
            f"p90 {self.p90:.4f} ms, n={self.n}{flag})"
        )
