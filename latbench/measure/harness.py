"""The timing harness: warmup by time, adaptive repeats, drift handling, re-measure.

A *runner* is ``runner(n) -> list[float]``: it makes ``n`` calls and returns
each call's time in milliseconds. Backends build runners (a CPU backend times
with ``perf_counter_ns``, a CUDA backend with CUDA events), the harness decides
how often to call them.

Drift: on a shared machine the speed of the whole CPU moves by several per
cent within seconds. :func:`measure_batch` therefore (by default) times the
items of a batch in interleaved rounds, in a fresh random order each round, and
times a *sentinel* op every ~100 ms in the same window. Each item's samples are
divided by the local sentinel speed relative to a reference (the device
profile's sentinel time, or the batch's own median), so a slow second on the
machine does not end up in the table. Raw samples are kept beside the
corrected ones.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from latbench.errors import LatbenchError
from latbench.measure.measurement import Measurement

Runner = Callable[[int], list[float]]
DRIFT_MODES = ("sentinel", "interleave", "none")


@dataclass(frozen=True)
class TimingConfig:
    """How long and how often to time. Seconds for durations, milliseconds for results."""

    warmup_s: float = 0.03
    min_warmup_calls: int = 3
    min_run_time_s: float = 0.12
    min_runs: int = 16
    max_runs: int = 2000
    rounds: int = 8
    noise_threshold: float = 0.10
    max_retries: int = 2
    drift: str = "sentinel"
    sentinel_every_s: float = 0.08
    sentinel_calls: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.drift not in DRIFT_MODES:
            raise LatbenchError(f"drift handling must be one of {', '.join(DRIFT_MODES)}, got {self.drift!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_(self, **changes: Any) -> TimingConfig:
        return replace(self, **changes)


@contextmanager
def gc_disabled() -> Iterator[None]:
    """Garbage collection off while timing (as timeit does)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def perf_counter_runner(fn: Callable[[], Any]) -> Runner:
    """A runner that times each call of ``fn`` with ``perf_counter_ns``."""
    clock = time.perf_counter_ns

    def run(n: int) -> list[float]:
        out = [0.0] * n
        for i in range(n):
            t0 = clock()
            fn()
            out[i] = (clock() - t0) * 1e-6
        return out

    return run


def warmup(runner: Runner, config: TimingConfig) -> float:
    """Call until ``warmup_s`` has passed (at least ``min_warmup_calls``); returns the last per-call ms."""
    t_end = time.perf_counter() + config.warmup_s
    times = runner(config.min_warmup_calls)
    while time.perf_counter() < t_end:
        times = runner(max(1, len(times) // 2))
    return float(np.median(times))


def _calls_per_round(est_ms: float, config: TimingConfig) -> int:
    per_round_ms = 1000.0 * config.min_run_time_s / config.rounds
    calls = math.ceil(per_round_ms / max(est_ms, 1e-4))
    calls = max(calls, math.ceil(config.min_runs / config.rounds))
    return int(min(calls, max(1, config.max_runs // config.rounds)))


def measure_runner(runner: Runner, label: str, config: TimingConfig | None = None) -> Measurement:
    """Time one runner on its own: warmup, then repeat until ``min_run_time_s``.

    Repeats go on (up to ``max_runs``, and at most 3x the run time) while the
    relative IQR is above ``noise_threshold / 2``.
    """
    config = config or TimingConfig()
    with gc_disabled():
        est = warmup(runner, config)
        samples: list[float] = []
        chunk = _calls_per_round(est, config)
        t0 = time.perf_counter()
        while True:
            samples += runner(min(chunk, config.max_runs - len(samples)))
            elapsed = time.perf_counter() - t0
            if len(samples) >= config.max_runs:
                break
            if elapsed >= config.min_run_time_s and len(samples) >= config.min_runs:
                m = Measurement(label, samples)
                if m.rel_iqr <= config.noise_threshold / 2 or elapsed >= 3 * config.min_run_time_s:
                    break
    return Measurement(label, samples, meta={"drift": "none"})


@dataclass
class _Slot:
    key: str
    samples: list[float]
    t: float


def _interleaved_pass(
    runners: dict[str, Runner],
    config: TimingConfig,
    sentinel: Runner | None,
    sentinel_ref_ms: float | None,
    rng: np.random.Generator,
    on_round: Callable[[int, int], None] | None,
) -> tuple[dict[str, Measurement], dict[str, Any]]:
    keys = list(runners)
    est = {k: warmup(runners[k], config) for k in keys}
    calls = {k: _calls_per_round(est[k], config) for k in keys}
    use_sentinel = config.drift == "sentinel" and sentinel is not None
    if use_sentinel:
        assert sentinel is not None
        warmup(sentinel, config)

    slots: list[_Slot] = []
    sentinel_marks: list[tuple[float, float]] = []  # (time, median ms)
    clock = time.perf_counter

    def tick() -> None:
        assert sentinel is not None
        sentinel_marks.append((clock(), float(np.median(sentinel(config.sentinel_calls)))))

    for r in range(config.rounds):
        order = [keys[i] for i in rng.permutation(len(keys))]
        if use_sentinel:
            tick()
        last = clock()
        for k in order:
            slots.append(_Slot(k, runners[k](calls[k]), clock()))
            if use_sentinel and clock() - last >= config.sentinel_every_s:
                tick()
                last = clock()
        if use_sentinel and clock() - last > 0:
            tick()
        if on_round is not None:
            on_round(r + 1, config.rounds)

    raw: dict[str, list[float]] = {k: [] for k in keys}
    norm: dict[str, list[float]] = {k: [] for k in keys}
    factors: dict[str, list[float]] = {k: [] for k in keys}
    info: dict[str, Any] = {"drift": config.drift}
    if use_sentinel:
        mark_t = np.array([t for t, _ in sentinel_marks])
        mark_v = np.array([v for _, v in sentinel_marks])
        ref = float(sentinel_ref_ms) if sentinel_ref_ms else float(np.median(mark_v))
        info.update(sentinel_ref_ms=ref, sentinel_median_ms=float(np.median(mark_v)), sentinel_marks=len(mark_v))
        for s in slots:
            j = int(np.searchsorted(mark_t, s.t))  # first mark after the slot ended
            local = mark_v[max(j - 1, 0) : j + 1].mean()
            f = float(local / ref)
            raw[s.key] += s.samples
            norm[s.key] += [x / f for x in s.samples]
            factors[s.key].append(f)
    else:
        for s in slots:
            raw[s.key] += s.samples
            norm[s.key] += s.samples
            factors[s.key].append(1.0)
    out = {
        k: Measurement(
            k,
            norm[k],
            raw_ms=raw[k] if use_sentinel else None,
            drift_factor=float(np.median(factors[k])),
            meta={"drift": config.drift},
        )
        for k in keys
    }
    return out, info


def measure_batch(
    runners: dict[str, Runner],
    config: TimingConfig | None = None,
    *,
    sentinel: Runner | None = None,
    sentinel_ref_ms: float | None = None,
    on_round: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Measurement], dict[str, Any]]:
    """Time a batch of runners with drift handling; noisy results are re-measured.

    Returns ``(measurements, info)``; ``info`` says which drift handling ran,
    the sentinel reference and what was re-measured. A result still noisy after
    ``max_retries`` re-measurements keeps ``noisy=True`` in its summary.
    """
    config = config or TimingConfig()
    rng = np.random.default_rng(config.seed)
    with gc_disabled():
        if config.drift == "none":
            result = {k: measure_runner(r, k, config) for k, r in runners.items()}
            info: dict[str, Any] = {"drift": "none"}
            if on_round:
                on_round(1, 1)
        else:
            result, info = _interleaved_pass(runners, config, sentinel, sentinel_ref_ms, rng, on_round)
            if sentinel_ref_ms is None and "sentinel_ref_ms" in info:
                sentinel_ref_ms = info["sentinel_ref_ms"]
        remeasured: list[str] = []
        for attempt in range(config.max_retries):
            noisy = [k for k, m in result.items() if not m.meets_confidence(config.noise_threshold)]
            if not noisy:
                break
            remeasured += noisy
            sub = {k: runners[k] for k in noisy}
            if config.drift == "none":
                again = {k: measure_runner(r, k, config) for k, r in sub.items()}
            else:
                again, _ = _interleaved_pass(sub, config, sentinel, sentinel_ref_ms, rng, None)
            for k, m in again.items():
                m.attempts = result[k].attempts + 1
                if m.rel_iqr < result[k].rel_iqr:
                    result[k] = m
                else:
                    result[k].attempts = m.attempts
            del attempt
    info["remeasured"] = sorted(set(remeasured))
    info["still_noisy"] = sorted(k for k, m in result.items() if m.noisy)
    return result, info
