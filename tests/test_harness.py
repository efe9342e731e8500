"""Timing harness: statistics, noisy re-measurement, and drift correction on a drifting synthetic machine."""

from __future__ import annotations

import numpy as np
import pytest

from latbench.measure.harness import TimingConfig, measure_batch, measure_runner, perf_counter_runner
from latbench.measure.measurement import Measurement

FAST = TimingConfig(warmup_s=0.0, min_warmup_calls=1, min_run_time_s=0.0, min_runs=16, rounds=8, max_retries=2)


def test_statistics_match_numpy() -> None:
    x = [1.0, 2.0, 2.5, 3.0, 10.0, 2.2, 2.1, 1.9]
    m = Measurement("x", x)
    assert m.median == pytest.approx(np.median(x))
    assert m.iqr == pytest.approx(np.percentile(x, 75) - np.percentile(x, 25))
    assert m.p90 == pytest.approx(np.percentile(x, 90))
    assert m.mean == pytest.approx(np.mean(x)) and m.n == 8
    assert m.noisy  # IQR/median ~ 0.3
    quiet = Measurement("q", [1.0, 1.01, 0.99, 1.0, 1.02, 0.98])
    assert not quiet.noisy and quiet.meets_confidence(0.05)
    merged = quiet.merge(Measurement("q", [2.0] * 6))
    assert merged.n == 12 and merged.attempts == 2
    with pytest.raises(ValueError):
        quiet.merge(m)
    assert Measurement.from_dict(m.to_dict()).samples_ms == pytest.approx(x, abs=1e-5)


class DriftingMachine:
    """A deterministic machine whose speed steps by 40% every ``period`` calls."""

    def __init__(self, period: int = 60, seed: int = 0) -> None:
        self.calls = 0
        self.period = period
        self.rng = np.random.default_rng(seed)

    def speed(self) -> float:
        return 1.4 if (self.calls // self.period) % 2 else 1.0

    def runner(self, base_ms: float):
        def run(n: int) -> list[float]:
            out = []
            for _ in range(n):
                out.append(base_ms * self.speed() * float(np.exp(self.rng.normal(0, 0.01))))
                self.calls += 1
            return out

        return run


def _ratio_errors(drift: str) -> float:
    machine = DriftingMachine()
    bases = {f"op{i}": b for i, b in enumerate([0.5, 1.0, 2.0, 3.0, 5.0, 8.0])}
    runners = {k: machine.runner(b) for k, b in bases.items()}
    res, info = measure_batch(runners, FAST.with_(drift=drift, sentinel_every_s=0.0), sentinel=machine.runner(1.0))
    assert info["drift"] == drift
    est = np.array([res[k].median for k in bases])
    true = np.array(list(bases.values()))
    ratios = (est / est[1]) / (true / true[1])
    return float(np.abs(ratios - 1).max())


def test_sentinel_correction_removes_drift() -> None:
    corrected = _ratio_errors("sentinel")
    naive = _ratio_errors("none")
    assert naive > 0.2  # items timed in different speed phases
    assert corrected < 0.05
    assert corrected < naive / 4


def test_noisy_items_are_remeasured_then_flagged() -> None:
    state = {"calls": 0}

    def settling(n: int) -> list[float]:  # noisy for its first 40 calls, then steady
        out = []
        for _ in range(n):
            state["calls"] += 1
            out.append(1.0 if state["calls"] > 40 or state["calls"] % 2 else 3.0)
        return out

    rng = np.random.default_rng(0)

    def always_noisy(n: int) -> list[float]:
        return list(rng.uniform(0.5, 2.0, n))

    res, info = measure_batch({"settling": settling, "noisy": always_noisy}, FAST.with_(drift="interleave"))
    assert "settling" in info["remeasured"] and not res["settling"].noisy
    assert res["settling"].attempts >= 2
    assert info["still_noisy"] == ["noisy"] and res["noisy"].noisy
    assert res["noisy"].summary()["noisy"] is True


def test_measure_runner_respects_limits() -> None:
    m = measure_runner(
        perf_counter_runner(lambda: sum(range(50))), "sum", TimingConfig(min_run_time_s=0.02, max_runs=500)
    )
    assert 16 <= m.n <= 500 and m.median > 0


def test_interleaved_rounds_use_fresh_orders() -> None:
    order: list[str] = []

    def make(k: str):
        def run(n: int) -> list[float]:
            order.append(k)
            return [1.0] * n

        return run

    measure_batch({k: make(k) for k in "abcdef"}, FAST.with_(drift="interleave", max_retries=0))
    timed = order[6 * 1 :]  # after one warmup call each
    rounds = [tuple(timed[i : i + 6]) for i in range(0, len(timed), 6)]
    assert len(rounds) == 8 and len(set(rounds)) > 1
