"""Accuracy of latency numbers against measured (or reference) ones: the one metrics module.

Every relative figure is a fraction (0.05 is 5%); callers format percentages
for people. Used by predictors, the emulator transfer, the demo and the search
reports alike, so "within 10%" means the same everywhere: ``|pred / ref - 1| <= 0.10``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from latbench.errors import LatbenchError


def accuracy(predicted: Sequence[float] | np.ndarray, measured: Sequence[float] | np.ndarray) -> dict[str, float]:
    """RMSE (ms), MAPE, RMSPE, bias, within 5% / 10%, max relative error (fractions), Spearman and Kendall of
    ``predicted`` vs ``measured`` (ms). Pairs that are not finite or whose measured value is not positive are left
    out; Spearman and Kendall are NaN with fewer than 3 pairs or a constant side."""
    from scipy.stats import kendalltau, spearmanr

    p = np.asarray(predicted, dtype=np.float64)
    m = np.asarray(measured, dtype=np.float64)
    if p.shape != m.shape or p.ndim != 1:
        raise ValueError(f"predicted {p.shape} and measured {m.shape} must be equal 1-d shapes")
    ok = np.isfinite(p) & np.isfinite(m) & (m > 0)
    p, m = p[ok], m[ok]
    n = len(m)
    if n == 0:
        raise LatbenchError("no finite measured/predicted pairs to score")
    rel = (p - m) / m
    out: dict[str, float] = {
        "n": n,
        "rmse_ms": float(np.sqrt(np.mean((p - m) ** 2))),
        "mape": float(np.mean(np.abs(rel))),
        "rmspe": float(np.sqrt(np.mean(rel**2))),
        "bias": float(np.mean(rel)),
        "within_5": float(np.mean(np.abs(rel) <= 0.05)),
        "within_10": float(np.mean(np.abs(rel) <= 0.10)),
        "max_rel_error": float(np.max(np.abs(rel))),
    }
    if n >= 3 and np.ptp(p) > 0 and np.ptp(m) > 0:
        out["spearman"] = float(spearmanr(p, m).statistic)
        out["kendall"] = float(kendalltau(p, m).statistic)
    else:
        out["spearman"] = out["kendall"] = float("nan")
    return out


def format_accuracy(name: str, acc: dict[str, float]) -> str:
    return (
        f"{name:<16} n={int(acc['n']):<4} RMSE {acc['rmse_ms']:8.3f} ms  MAPE {100 * acc['mape']:5.1f}%  "
        f"within 5% {100 * acc['within_5']:5.1f}%  within 10% {100 * acc['within_10']:5.1f}%  "
        f"Spearman {acc['spearman']:.3f}  Kendall {acc['kendall']:.3f}"
    )
