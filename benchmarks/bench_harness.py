"""Speed and correctness of the timing harness itself.

* overhead per timed call (the harness's runner around a no-op);
* agreement with ``torch.utils.benchmark`` on the same ops (medians within 5%, measured in one run);
* time to build the full ``proxyless-mobile`` 224 table with ``torch-cpu``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.utils.benchmark as tub

from latbench.backends import get_backend
from latbench.backends.torch_cpu import torch_module_runner
from latbench.measure.harness import TimingConfig, measure_batch, perf_counter_runner
from latbench.spaces import get_space
from latbench.table import build_table


def test_overhead_per_timed_call(benchmark) -> None:
    """Per-call cost the harness adds around a call that does nothing (ms per call)."""
    run = perf_counter_runner(lambda: None)
    benchmark(run, 1000)
    per_call_ms = benchmark.stats.stats.median / 1000 * 1e3
    benchmark.extra_info["overhead_per_call_ms"] = per_call_ms
    assert per_call_ms < 0.01  # far below the smallest op timed (~0.05 ms)


AGREEMENT_OPS = [
    ("mbconv", dict(hw=56, cin=24, cout=24, kernel=3, expand=3, act="relu6")),
    ("mbconv", dict(hw=28, cin=40, cout=80, kernel=5, stride=2, expand=6, act="relu6")),
    ("mbconv", dict(hw=14, cin=96, cout=96, kernel=7, expand=6, act="relu6")),
    ("conv", dict(hw=7, cin=320, cout=1280, kernel=1, act="relu6")),
]


def test_agreement_with_torch_utils_benchmark(benchmark) -> None:
    """latbench medians vs torch.utils.benchmark's blocked_autorange medians on the same modules, one run."""
    from latbench.ops import OpSpec

    torch.set_num_threads(1)
    ratios = []
    for t, kw in AGREEMENT_OPS:
        spec = OpSpec(t, **kw)
        module, x = spec.build(), spec.example_input()
        runner = torch_module_runner(module, x)
        timer = tub.Timer("m(x)", globals={"m": module, "x": x}, num_threads=1)
        ours, theirs = [], []
        for _ in range(5):  # alternate the two tools so machine drift hits both alike
            m, _ = measure_batch({"op": runner}, TimingConfig(min_run_time_s=0.1, drift="none"))
            ours.append(m["op"].median)
            with torch.inference_mode():
                theirs.append(timer.blocked_autorange(min_run_time=0.1).median * 1e3)
        ratios.append(float(np.median(ours) / np.median(theirs)))
    benchmark.extra_info["median_ratios_latbench_over_torch"] = [round(r, 4) for r in ratios]
    benchmark(lambda: None)
    assert all(abs(r - 1) < 0.05 for r in ratios), ratios


def test_full_proxyless_224_table_build(benchmark, tmp_path) -> None:
    """Wall time of `table build` for all 70 ops of proxyless-mobile at 224 on torch-cpu (target <= 30 s)."""
    backend = get_backend("torch-cpu")
    ops = get_space("proxyless-mobile").vocabulary
    counter = iter(range(100))

    def build() -> float:
        t0 = time.perf_counter()
        _, measured = build_table(backend, ops, tmp_path / f"t{next(counter)}.json")
        assert len(measured) == 70
        return time.perf_counter() - t0

    seconds = benchmark.pedantic(build, rounds=1, iterations=1)
    benchmark.extra_info["build_seconds"] = seconds


@pytest.mark.parametrize("n_items", [10, 70])
def test_harness_statistics_cost(benchmark, n_items: int) -> None:
    """Cost of the harness's bookkeeping for a batch whose calls take no time (fake runners)."""
    runners = {f"k{i}": (lambda n: [1.0] * n) for i in range(n_items)}
    cfg = TimingConfig(warmup_s=0.0, min_warmup_calls=1, min_run_time_s=0.0, min_runs=32, rounds=8)
    benchmark(measure_batch, runners, cfg, sentinel=lambda n: [1.0] * n)
