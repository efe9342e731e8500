"""Repeatability on the real CPU (slow): two table builds, and two rounds of whole-network measurement.

These are the harness's own test-retest figures; no predictor can beat them.
Run with `make test-slow`.
"""

from __future__ import annotations

import numpy as np
import pytest

from latbench.backends import SENTINEL_SPEC, get_backend
from latbench.service import measure_archs, network_timing
from latbench.spaces import get_space
from latbench.table import build_table

pytestmark = pytest.mark.slow


def test_two_table_builds_agree(tmp_path) -> None:
    backend = get_backend("torch-cpu", threads=1)
    ops = get_space("proxyless-mobile").vocabulary
    a, _ = build_table(backend, ops, tmp_path / "a.json")
    b, _ = build_table(backend, ops, tmp_path / "b.json", sentinel_ref_ms=a.sentinel_ref_ms)
    rel = np.array([abs(a.rows[k]["median_ms"] / b.rows[k]["median_ms"] - 1) for k in a.rows])
    assert len(rel) == 70
    assert float(np.median(rel)) < 0.05, f"median abs rel diff {np.median(rel):.3f}"


def test_measure_test_retest_20_archs() -> None:
    backend = get_backend("torch-cpu", threads=1)
    space = get_space("proxyless-mobile")
    archs = [space.from_indices(i) for i in space.sample_indices(np.random.default_rng(0), 20)]
    cfg = network_timing(backend, None, None)
    sentinel = backend.measure(SENTINEL_SPEC)
    first, _ = measure_archs(backend, archs, cfg, sentinel.median, progress=False)
    second, _ = measure_archs(backend, archs, cfg, sentinel.median, progress=False)
    rel = np.array([abs(x.median / y.median - 1) for x, y in zip(first, second, strict=True)])
    share = float((rel <= 0.05).mean())
    assert share >= 0.9, f"only {share:.0%} of 20 archs agree within 5% (rel diffs {np.round(rel, 3)})"
