"""What the Ray farm costs and what it buys (issue 8), measured on a real local cluster.

* Ray's round trip per remote call, and its overhead per remote op measurement
  (driver round trip minus the time spent inside the node), next to the op's
  own latency and the node's time to measure it;
* wall time of a table build: local (no Ray) vs 1 vs 2 worker nodes, for the
  fake device that sleeps its simulated time (a phone: timing does not occupy
  the host CPU) and for ``torch-cpu`` (timing *is* the host CPU);
* wall time of a ``train``-evaluator search: local vs 1 vs 2 Ray workers.

Every ratio is measured in one run. All the nodes run on this one machine: with
2 CPU cores shared by other work, CPU-bound work (torch-cpu timing, training)
cannot get faster with a second node here; the numbers say how much it does
not, and the fake-phone build shows the speed-up sharding gives when the
timed device is not the host CPU.

Run: ``.venv/bin/pytest benchmarks/bench_farm.py`` (about 3-5 minutes here).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latbench.backends import get_backend
from latbench.cli import main
from latbench.device import load_profile
from latbench.spaces import get_space
from latbench.table import LatencyTable, build_table

ray = pytest.importorskip("ray")


def _profile(*argv: str) -> None:
    assert main(["profile", *argv]) == 0


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    from ray.cluster_utils import Cluster

    from latbench.farm.node import node_resources

    home = tmp_path_factory.mktemp("bench-farm")
    mp = pytest.MonkeyPatch()
    mp.setenv("LATBENCH_HOME", str(home))
    # "-1" devices are served by one node, the others by two; same settings, same fingerprint
    for name in ("phone", "phone-1"):
        _profile("fake", "--set", "device=bench-phone", "--set", "sleep=true", "--name", name)
    for name in ("cpu", "cpu-1"):
        _profile("torch-cpu", "--threads", "1", "--name", name)
    p = {n: load_profile(n) for n in ("phone", "phone-1", "cpu", "cpu-1")}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        n1 = cluster.add_node(num_cpus=0, resources=node_resources([p["phone"], p["phone-1"], p["cpu"], p["cpu-1"]]))
        n2 = cluster.add_node(num_cpus=0, resources=node_resources([p["phone"], p["cpu"]]))
        c1 = cluster.add_node(num_cpus=1)
        c2 = cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        yield {"address": cluster.address, "home": home, "nodes": (n1, n2, c1, c2)}
    finally:
        ray.shutdown()
        cluster.shutdown()
        mp.undo()


def _cluster_build(address: str, device: str, out: Path, **kw: Any) -> tuple[float, dict[str, Any]]:
    from latbench.farm.build import cluster_table_build

    t0 = time.perf_counter()
    (result,) = cluster_table_build(address, [device], out=out, as_json=True, log=lambda m: None, **kw)
    return time.perf_counter() - t0, result


def _local_build(device: str, out: Path, min_time: float | None = None, **space_kw: Any) -> float:
    prof = load_profile(device)
    backend = prof.make_backend()
    config = backend.timing.with_(min_run_time_s=min_time) if min_time else backend.timing
    ops = get_space("proxyless-mobile", **space_kw).vocabulary
    t0 = time.perf_counter()
    build_table(backend, ops, out, config=config, sentinel_ref_ms=prof.sentinel_ms)
    return time.perf_counter() - t0


def test_remote_call_round_trip_and_op_overhead(benchmark, farm, tmp_path) -> None:
    """Ray's bare round trip (benchmarked), and the farm's overhead per op inside a real build (ms)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from latbench.farm.node import DeviceWorker, profile_doc

    n1 = farm["nodes"][0]
    actor = (
        ray.remote(DeviceWorker)
        .options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n1.node_id, soft=False))
        .remote("phone", profile_doc(load_profile("phone")))
    )
    ray.get(actor.ping.remote())
    benchmark(lambda: ray.get(actor.ping.remote()))
    ray.kill(actor)
    ping_ms = benchmark.stats.stats.median * 1e3

    seconds, result = _cluster_build(farm["address"], "phone", tmp_path / "phone.json")
    table = LatencyTable.load(tmp_path / "phone.json")
    op_ms = float(np.median([r["median_ms"] for r in table.rows.values()]))
    ov = result["overhead"]
    benchmark.extra_info.update(
        ping_round_trip_ms=round(ping_ms, 3),
        op_latency_ms_median=round(op_ms, 4),
        node_ms_per_op_median=ov["node_ms_median"],
        roundtrip_ms_per_op_median=ov["roundtrip_ms_median"],
        overhead_ms_per_op_median=ov["overhead_ms_median"],
        overhead_over_node_time=round(ov["overhead_ms_median"] / ov["node_ms_median"], 4),
        overhead_over_op_latency=round(ov["overhead_ms_median"] / op_ms, 3),
        build_seconds=round(seconds, 2),
    )
    print("\nfarm overhead:", benchmark.extra_info)
    assert len(table) == 70
    # the round trip must stay small next to what a node spends measuring one op
    assert ov["overhead_ms_median"] < 0.5 * ov["node_ms_median"], ov


def test_table_build_fake_phone_1_vs_2_nodes(benchmark, farm, tmp_path) -> None:
    """A device whose timing does not occupy the host CPU (fake phone sleeping its simulated time).

    ``min_time`` 0.1 s of timed calls per op, as a real device's table build spends (the fake's own default
    of 16 calls would make each op a few ms and leave only Ray's fixed start-up cost to compare).
    """
    local_s = _local_build("phone", tmp_path / "local.json", min_time=0.1)
    one_s, one = _cluster_build(farm["address"], "phone-1", tmp_path / "one.json", min_time=0.1)
    counter = iter(range(10))

    def two_nodes() -> dict[str, Any]:
        return _cluster_build(farm["address"], "phone", tmp_path / f"two{next(counter)}.json", min_time=0.1)[1]

    t0 = time.perf_counter()
    two = benchmark.pedantic(two_nodes, rounds=1, iterations=1)
    two_s = time.perf_counter() - t0
    benchmark.extra_info.update(
        local_s=round(local_s, 2),
        one_node_s=round(one_s, 2),
        two_nodes_s=round(two_s, 2),
        speedup_2_over_1=round(one_s / two_s, 3),
        ray_1_node_over_local=round(one_s / local_s, 3),
        rows_by_node=list(two["source"]["farm"]["rows_by_node"].values()),
        node_ms_per_op_median=one["overhead"]["node_ms_median"],
        fixed_start_s_one_node=round(one_s - 70 * one["overhead"]["roundtrip_ms_median"] / 1000, 2),
    )
    print("\nfake phone build:", benchmark.extra_info)
    assert one["nodes_used"] == 1 and two["nodes_used"] == 2 and two["rows"] == one["rows"] == 70
    assert one_s / two_s > 1.3  # two phones time two ops at once


def test_table_build_torch_cpu_1_vs_2_nodes(benchmark, farm, tmp_path) -> None:
    """The host CPU is the device: on this 2-core machine a second node cannot make timing faster."""
    kw = {"resolution": 128}
    local_s = _local_build("cpu", tmp_path / "local.json", **kw)
    one_s, one = _cluster_build(farm["address"], "cpu-1", tmp_path / "one.json", resolution=128)
    counter = iter(range(10))

    def two_nodes() -> dict[str, Any]:
        return _cluster_build(farm["address"], "cpu", tmp_path / f"two{next(counter)}.json", resolution=128)[1]

    t0 = time.perf_counter()
    two = benchmark.pedantic(two_nodes, rounds=1, iterations=1)
    two_s = time.perf_counter() - t0
    t_local = LatencyTable.load(tmp_path / "local.json")
    t_one = LatencyTable.load(tmp_path / "one.json")
    t_two = LatencyTable.load(two["path"])
    keys = sorted(t_local.rows)
    med = {n: np.array([t.rows[k]["median_ms"] for k in keys]) for n, t in (("l", t_local), ("1", t_one), ("2", t_two))}
    benchmark.extra_info.update(
        ops=len(keys),
        local_s=round(local_s, 2),
        one_node_s=round(one_s, 2),
        two_nodes_s=round(two_s, 2),
        speedup_2_over_1=round(one_s / two_s, 3),
        ray_1_node_over_local=round(one_s / local_s, 3),
        median_row_ratio_1node_over_local=round(float(np.median(med["1"] / med["l"])), 4),
        median_row_ratio_2nodes_over_1node=round(float(np.median(med["2"] / med["1"])), 4),
    )
    print("\ntorch-cpu build:", benchmark.extra_info)
    assert two["rows"] == one["rows"] == len(keys) and two["nodes_used"] == 2


def test_train_search_1_vs_2_workers(benchmark, farm, tmp_path) -> None:
    """A `train`-evaluator search (random strategy, 6 trials): local, 1 Ray worker, 2 Ray workers."""
    from latbench.farm.search import cluster_executor
    from latbench.predict.lut import TableLatency
    from latbench.search.mnas import make_evaluator, make_problem, make_strategy
    from latbench.search.mnas.engine import LocalExecutor, SearchEngine

    space = get_space("proxyless-mobile")
    table, _ = build_table(get_backend("fake"), space.vocabulary, tmp_path / "t.json")
    problem = make_problem(space, TableLatency(table).compile(space), 20.0)
    opts = {"max_train": 480, "epochs": 1}
    trials = 6

    def search(capacity: int | None) -> tuple[float, SearchEngine]:
        ev = make_evaluator("train", opts)
        st = make_strategy("random", problem, seed=0, trials=trials, dedupe=True)
        t0 = time.perf_counter()
        if capacity is None:
            engine = SearchEngine(problem, st, ev, trials=trials, seed=0, executor=LocalExecutor(ev, 1)).run()
        else:
            with cluster_executor(farm["address"], capacity=capacity) as factory:
                engine = SearchEngine(problem, st, ev, trials=trials, seed=0, executor=factory(ev, problem, 0)).run()
        return time.perf_counter() - t0, engine

    search(1)  # start and warm the Ray workers (torch import, data) so both timed runs find them ready
    local_s, local = search(None)
    one_s, one = search(1)
    t0 = time.perf_counter()
    _, two = benchmark.pedantic(lambda: search(2), rounds=1, iterations=1)
    two_s = time.perf_counter() - t0
    benchmark.extra_info.update(
        trials=trials,
        local_s=round(local_s, 2),
        one_worker_s=round(one_s, 2),
        two_workers_s=round(two_s, 2),
        speedup_2_over_1=round(one_s / two_s, 3),
        ray_1_worker_over_local=round(one_s / local_s, 3),
        eval_s_per_trial_local=round(local.stats.eval_seconds / trials, 3),
        eval_s_per_trial_two_workers=round(two.stats.eval_seconds / trials, 3),
    )
    print("\ntrain search:", benchmark.extra_info)
    assert local.done == one.done == two.done == trials
    assert local.summary()["failed"] == one.summary()["failed"] == two.summary()["failed"] == 0
