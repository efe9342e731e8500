"""Backend speed: per-call overhead on a tiny op, the fixed cost of an ORT session call, table build time.

* ``test_per_call_overhead``: one timed call of each backend's runner on a tiny
  1x1 conv (4x4x8 -> 8), in ms per call, i.e. the floor under every table row;
* ``test_ort_empty_graph_call``: an ONNX Runtime session call on an Identity
  graph (IO binding), the part of every ORT op latency that is not the op;
* ``test_table_build_time``: building a 12-op table of ``proxyless-mobile`` at
  96 px per backend (timing as the table build does, exports cached after the
  first round), in seconds.

Run: ``.venv/bin/pytest benchmarks/bench_backends.py``. ``torch-cuda`` skips
without a GPU.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from latbench.backends import backend_class, get_backend
from latbench.ops import OpSpec
from latbench.spaces import get_space
from latbench.table import build_table

TINY = OpSpec("conv", 4, 8, 8, kernel=1, act="none")
BACKENDS = [
    ("torch-cpu", {"threads": 1}),
    ("ort-cpu", {"threads": 1}),
    ("ort-mobile", {}),
    ("ort-mobile", {"precision": "int8", "calibration_samples": 2}),
    ("fake", {}),
    ("torch-cuda", {"settle_s": 0.2}),
]
IDS = ["torch-cpu", "ort-cpu", "ort-mobile", "ort-mobile-int8", "fake", "torch-cuda"]


@pytest.fixture(autouse=True, scope="module")
def _home() -> object:
    import os

    d = tempfile.mkdtemp(prefix="latbench-bench-")
    old = os.environ.get("LATBENCH_HOME")
    os.environ["LATBENCH_HOME"] = d
    yield d
    if old is None:
        os.environ.pop("LATBENCH_HOME", None)
    else:
        os.environ["LATBENCH_HOME"] = old
    shutil.rmtree(d, ignore_errors=True)


def _make(name: str, settings: dict) -> object:
    ok, reason = backend_class(name).available()
    if not ok:
        pytest.skip(f"{name} unavailable: {reason}")
    return get_backend(name, **settings)


@pytest.mark.parametrize(("name", "settings"), BACKENDS, ids=IDS)
def test_per_call_overhead(benchmark, name: str, settings: dict) -> None:
    """Milliseconds of one timed runner call on a tiny op (what a backend costs before the op's own work)."""
    backend = _make(name, settings)
    run = backend.runner(TINY)
    run(50)  # warm up
    benchmark.pedantic(run, args=(200,), rounds=15, iterations=1)
    per_call_ms = benchmark.stats.stats.median / 200 * 1e3
    benchmark.extra_info["per_call_ms"] = per_call_ms
    inside = sorted(run(200))[100]  # the runner's own median per-call time (ms)
    benchmark.extra_info["runner_median_ms"] = inside
    assert per_call_ms < 1.0
    backend.close()


def test_ort_empty_graph_call(benchmark) -> None:
    """An ORT session call on an Identity graph: the fixed per-op cost inside every ORT table row (ms)."""
    from latbench.backends.ort import empty_model_path

    backend = _make("ort-cpu", {"threads": 1})
    run = backend.runner(str(empty_model_path()))
    run(100)
    benchmark.pedantic(run, args=(1000,), rounds=10, iterations=1)
    per_call_ms = benchmark.stats.stats.median / 1000 * 1e3
    benchmark.extra_info["empty_call_ms"] = per_call_ms
    op_ms = sorted(backend.runner(OpSpec("mbconv", 14, 96, 96, kernel=3, expand=6, act="relu6"))(50))[25]
    benchmark.extra_info["mbconv14_ms"] = op_ms
    benchmark.extra_info["overhead_share_of_small_op"] = per_call_ms / op_ms
    assert per_call_ms < 0.05 < op_ms


@pytest.mark.parametrize(("name", "settings"), BACKENDS, ids=IDS)
def test_table_build_time(benchmark, name: str, settings: dict) -> None:
    """Seconds to build a 12-op proxyless-mobile (96 px) table with the backend's own table timing."""
    backend = _make(name, settings)
    ops = get_space("proxyless-mobile", resolution=96).vocabulary[:12]
    out = Path(tempfile.mkdtemp(prefix="latbench-bench-table-"))
    counter = iter(range(1000))

    def build() -> None:
        build_table(backend, ops, out / f"t{next(counter)}.json")

    benchmark.pedantic(build, rounds=2, iterations=1, warmup_rounds=0)
    benchmark.extra_info["ops"] = len(ops)
    benchmark.extra_info["seconds_per_op"] = benchmark.stats.stats.median / len(ops)
    assert len(list(out.glob("t*.json"))) == 2
    shutil.rmtree(out, ignore_errors=True)
    backend.close()
