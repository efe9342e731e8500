"""torch-cuda timing policy: the logic runs everywhere; the GPU parts skip with the backend's reason.

Without a GPU these tests check what decides the numbers: the warmup that keeps
going until clocks can ramp, the blocks of graph replays, the batch guard, the
split of device identity from timing knobs. ``scripts/gpu_check.sh`` runs the
GPU side on a machine that has one.
"""

from __future__ import annotations

import itertools

import pytest

from latbench.backends.base import SENTINEL_SPEC
from latbench.backends.torch_cuda import (
    POLICIES,
    TIMING_SETTINGS,
    TorchCUDABackend,
    batch_mismatch,
    cuda_unavailable_reason,
    graph_block_size,
    settle,
    split_blocks,
    split_settings,
    validate_timing,
)
from latbench.errors import BackendUnavailable
from latbench.ops import OpSpec

REASON = cuda_unavailable_reason()
needs_cuda = pytest.mark.skipif(REASON is not None, reason=f"torch-cuda unavailable here: {REASON}")
OP = OpSpec("mbconv", 14, 32, 32, kernel=3, expand=3, act="relu6")


class FakeClock:
    """A clock that advances by the work each runner call does (no wall clock in unit tests)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_settle_keeps_warming_until_min_s_even_when_blocks_agree() -> None:
    clock = FakeClock()
    calls: list[int] = []

    def runner(n: int) -> list[float]:  # a tiny op: 0.01 ms a call, steady from the first block
        calls.append(n)
        clock.t += n * 0.01e-3
        return [0.01] * n

    assert settle(runner, max_s=10.0, block=10, min_s=0.5, clock=clock) == 0.01
    assert clock.t >= 0.5  # the old rule stopped after the second block: 0.2 microseconds of work
    assert len(calls) == pytest.approx(0.5 / (10 * 0.01e-3) + 1, abs=2)


def test_settle_stops_when_clocks_settle_after_min_s() -> None:
    clock = FakeClock()
    seq = itertools.chain([2.0, 1.6, 1.3, 1.1, 1.0, 1.0], itertools.repeat(1.0))

    def runner(n: int) -> list[float]:
        v = next(seq)
        clock.t += n * v * 1e-3
        return [v] * n

    assert settle(runner, max_s=10.0, block=100, min_s=0.2, clock=clock) == 1.0
    assert 0.2 <= clock.t < 1.0


def test_settle_gives_up_at_max_s() -> None:
    clock = FakeClock()
    vals = itertools.cycle([1.0, 2.0])  # never agrees

    def runner(n: int) -> list[float]:
        clock.t += 0.1
        return [next(vals)] * n

    settle(runner, max_s=1.0, block=5, clock=clock)
    assert 1.0 <= clock.t <= 1.2


def test_graph_blocks_last_about_block_ms() -> None:
    assert graph_block_size(0.01, 2.0) == 200
    assert graph_block_size(5.0, 2.0) == 1
    assert graph_block_size(1e-6, 2.0, max_block=500) == 500
    assert graph_block_size(0.0, 2.0, max_block=64) == 64
    assert split_blocks(450, 200) == [200, 200, 50]
    assert split_blocks(3, 200) == [3]
    assert split_blocks(0, 10) == []
    assert sum(split_blocks(1234, 7)) == 1234


def test_timing_knobs_are_not_device_identity() -> None:
    settings = dict(TorchCUDABackend.default_settings)
    ident_eager, timing_eager = split_settings({**settings, "policy": "eager"})
    ident_graph, timing_graph = split_settings({**settings, "policy": "graph", "warmup_min_s": 2.0, "batch": 8})
    assert ident_eager == ident_graph  # same device whatever the policy, warmup or network batch
    assert timing_eager["policy"] == "eager" and timing_graph["policy"] == "graph" and timing_graph["batch"] == 8
    assert set(TIMING_SETTINGS) <= set(settings)
    assert {"precision", "channels_last", "cudnn_benchmark", "tf32", "device"} <= set(ident_eager)
    assert "settle_s" not in settings


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"policy": "blocked"}, "policy must be one of eager, graph"),
        ({"warmup_min_s": 5.0, "warmup_max_s": 1.0}, "warmup_min_s <= warmup_max_s"),
        ({"graph_block_ms": 0}, "graph_block_ms"),
        ({"batch": 0}, "batch must be an integer"),
    ],
)
def test_bad_timing_settings_are_one_line(change: dict, words: str) -> None:
    with pytest.raises(BackendUnavailable, match=words) as exc:
        validate_timing({**TorchCUDABackend.default_settings, **change})
    assert "\n" not in str(exc.value)


def test_batch_stays_in_the_op_key() -> None:
    assert batch_mismatch(OP, None) is None
    assert batch_mismatch(OP.with_(batch=8), 8) is None
    why = batch_mismatch(OP, 8)
    assert why and "batch 1" in why and "-b8-" in why and "\n" not in why
    assert batch_mismatch(SENTINEL_SPEC, 8) is None  # the drift sentinel stays batch 1
    assert OP.with_(batch=8).key != OP.key and "-b8-" in OP.with_(batch=8).key
    assert set(POLICIES) == {"eager", "graph"}


# ----------------------------------------------------------------------------- on a GPU
@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("policy", POLICIES)
def test_policy_is_recorded_with_every_number(policy: str, tmp_path) -> None:
    from latbench.backends import get_backend
    from latbench.table import LatencyTable, build_table

    b = get_backend("torch-cuda", policy=policy, warmup_min_s=0.1, warmup_max_s=0.5)
    m = b.measure(OP)
    assert m.meta["timing_policy"] == policy and m.median > 0
    _, _ = build_table(b, [OP, OP.with_(cout=64)], tmp_path / "t.json")
    rows = LatencyTable.load(tmp_path / "t.json").rows
    assert all(r["timing_policy"] == policy for r in rows.values())


@pytest.mark.cuda
@needs_cuda
def test_graph_is_not_slower_than_eager_and_ids_match() -> None:
    from latbench.backends import get_backend

    eager = get_backend("torch-cuda", policy="eager", warmup_min_s=0.2)
    graph = get_backend("torch-cuda", policy="graph", warmup_min_s=0.2)
    assert eager.fingerprint().id == graph.fingerprint().id
    e, g = eager.measure(OP), graph.measure(OP)
    assert g.median <= e.median * 1.05  # graph replay drops the launch overhead eager pays
