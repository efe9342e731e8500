"""Whole networks measured together on a backend: interleaved, drift-corrected, with progress."""

from __future__ import annotations

from typing import Any

from latbench.measure.harness import TimingConfig
from latbench.progress import track


def network_timing(backend: Any, drift: str | None = None, min_time: float | None = None) -> TimingConfig:
    """Timing for whole networks: longer per item than ops, same drift handling."""
    cfg = backend.timing.with_(min_run_time_s=0.6, rounds=8, min_runs=16, warmup_s=0.1)
    if drift:
        cfg = cfg.with_(drift=drift)
    if min_time:
        cfg = cfg.with_(min_run_time_s=min_time)
    return cfg


def dataset_timing(backend: Any, min_time: float | None = None) -> TimingConfig:
    """Timing for datasets of thousands of networks: short interleaved rounds, the same drift and noise handling.

    0.1 s of timing per network (4 rounds, >= 16 calls) instead of ``network_timing``'s 0.6 s,
    so every NAS-Bench-201 class fits in half an hour on one core; test-retest
    of this setting is in docs/transfer.md. Noisy networks are still re-measured.
    """
    cfg = backend.timing.with_(min_run_time_s=0.1, rounds=4, min_runs=16, warmup_s=0.02)
    if min_time:
        cfg = cfg.with_(min_run_time_s=min_time)
    return cfg


def measure_archs(
    backend: Any,
    archs: list[dict[str, Any]],
    config: TimingConfig | None = None,
    sentinel_ref_ms: float | None = None,
    progress: bool = True,
) -> tuple[list[Any], dict[str, Any]]:
    """Measure whole networks together (interleaved, drift-corrected); returns measurements in arch order."""
    config = config or network_timing(backend)
    workloads = {f"arch{i:04d}": a for i, a in enumerate(archs)}
    with track("measure", total=config.rounds, enabled=progress) as update:
        res, info = backend.measure_many(
            workloads, config, sentinel_ref_ms=sentinel_ref_ms, on_round=lambda r, n: update(r, n)
        )
    return [res[k] for k in workloads], info
