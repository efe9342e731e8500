"""Speed of the MnasNet engine: candidate evaluations per second with LUT latency and a batched MLP evaluator.

Run: ``.venv/bin/pytest benchmarks/bench_mnas.py``. BLAS is held to one thread
(threadpoolctl): on a shared 2-core machine a multi-threaded 100 x 138 matmul
is 10-20x slower than a single-threaded one.

* ``test_ofa_preset``: Once-for-All's evolution preset (population 100, 500
  generations = 50,100 candidates) on ``ofa-mbv3`` with the Note10 table, hard
  target 25 ms, MLP accuracy predictor called once per generation with the
  batch of arch dicts. The same run times an Once-for-All-style finder (one
  dict arch at a time: sample / mutate / crossover in Python loops, latency
  per arch, accuracy predictor per generation) on the same LUT and MLP, and
  reports the ratio.
* ``test_throughput``: sustained candidates/s with bigger batches (random
  search and evolution with population 1000).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from latbench.predict.lut import TableLatency
from latbench.search.mnas import make_problem, search
from latbench.search.mnas.mlp import MLPRegressor, onehot
from latbench.spaces import get_space
from latbench.table import LatencyTable

REPO = Path(__file__).resolve().parents[1]
EVALUATOR = f"python:{Path(__file__).resolve()}:mlp_accuracy"
_MLP: dict[int, tuple[np.ndarray, MLPRegressor]] = {}


def mlp_accuracy(archs):  # type: ignore[no-untyped-def]
    """A small MLP accuracy predictor (one-hot archs -> 64 -> 64 -> 1, untrained weights), batched."""
    space = archs.space
    key = id(space)
    if key not in _MLP:
        card = space.cardinalities
        _MLP[key] = (card, MLPRegressor(hidden=(64, 64), seed=0).init(int(card.sum())))
    card, m = _MLP[key]
    idx = np.stack([space.to_indices(a) for a in archs]) if getattr(archs, "indices", None) is None else archs.indices
    return 0.7 + 0.05 * np.tanh(m.predict(onehot(card, idx)))


@pytest.fixture(scope="module")
def note10():
    space = get_space("ofa-mbv3")
    lat = TableLatency(LatencyTable.load(REPO / "tables/note10/ofa-mbv3.json")).compile(space)
    p = make_problem(space, lat, 25.0, reward="hard")
    _ = p.latency_range
    return p


def ofa_style_finder(problem, generations: int = 500, population: int = 100, seed: int = 0) -> float:  # type: ignore[no-untyped-def]
    """Once-for-All's evolution finder loop shape: dict archs, one at a time, latency checked per arch."""
    space = problem.space
    rng = np.random.default_rng(seed)
    names = [d.name for d in space.decisions]
    card = space.cardinalities
    target = problem.target_ms

    def latency(sample: dict) -> float:
        return float(problem.latency.predict_indices(np.array([[sample[n] for n in names]]))[0])

    def random_sample() -> tuple[dict, float]:
        while True:
            s = {n: int(rng.integers(c)) for n, c in zip(names, card, strict=True)}
            lat = latency(s)
            if lat <= target:
                return s, lat

    def mutate(s: dict) -> tuple[dict, float]:
        while True:
            new = dict(s)
            for n, c in zip(names, card, strict=True):
                if rng.random() < 0.1:
                    new[n] = int(rng.integers(c))
            lat = latency(new)
            if lat <= target:
                return new, lat

    def crossover(a: dict, b: dict) -> tuple[dict, float]:
        while True:
            new = {n: a[n] if rng.random() < 0.5 else b[n] for n in names}
            lat = latency(new)
            if lat <= target:
                return new, lat

    def predict(samples: list[dict]) -> np.ndarray:
        archs = [space.from_indices([s[n] for n in names]) for s in samples]
        return mlp_accuracy(type("B", (list,), {"space": space, "indices": None})(archs))

    pop = [random_sample()[0] for _ in range(population)]
    accs = predict(pop)
    popl = list(zip(accs, pop, strict=True))
    for _ in range(generations):
        parents = sorted(popl, key=lambda x: -x[0])[: population // 4]
        children = [mutate(parents[rng.integers(len(parents))][1])[0] for _ in range(population // 2)]
        children += [
            crossover(parents[rng.integers(len(parents))][1], parents[rng.integers(len(parents))][1])[0]
            for _ in range(population - population // 2)
        ]
        popl = parents + list(zip(predict(children), children, strict=True))
    return float(max(a for a, _ in popl))


def test_ofa_preset(benchmark, note10):
    def preset():  # type: ignore[no-untyped-def]
        with threadpool_limits(1):
            return search(
                note10,
                strategy="evolution",
                evaluator=EVALUATOR,
                trials=100 * 501,
                seed=0,
                strategy_options={"population": 100},
            )

    eng = benchmark.pedantic(preset, rounds=3, iterations=1)
    assert eng.done == 50100 and eng.best.latency_ms <= 25.0
    with threadpool_limits(1):
        t0 = time.perf_counter()
        preset()
        ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        ofa_style_finder(note10, generations=50)  # 1/10 of the preset; scaled below
        theirs = (time.perf_counter() - t0) * 10
    benchmark.extra_info.update(
        candidates=eng.done,
        candidates_per_s=round(eng.done / benchmark.stats.stats.median, 0),
        ofa_style_seconds_estimate=round(theirs, 2),
        engine_seconds_same_run=round(ours, 3),
        speedup_vs_ofa_style=round(theirs / ours, 2),
    )
    print(
        f"\nOFA preset: {ours:.2f} s here ({eng.done / ours:,.0f} candidates/s); "
        f"OFA-style finder ~{theirs:.1f} s for the same preset; ratio {theirs / ours:.1f}x"
    )
    assert theirs / ours > 2.0


@pytest.mark.parametrize("strategy,options", [("random", {"batch": 5000}), ("evolution", {"population": 1000})])
def test_throughput(benchmark, note10, strategy, options):
    def go():  # type: ignore[no-untyped-def]
        with threadpool_limits(1):
            return search(
                note10, strategy=strategy, evaluator=EVALUATOR, trials=200_000, seed=0, strategy_options=options
            )

    eng = benchmark.pedantic(go, rounds=2, iterations=1)
    rate = eng.done / benchmark.stats.stats.median
    benchmark.extra_info.update(candidates=eng.done, candidates_per_s=round(rate))
    print(f"\n{strategy} {options}: {rate:,.0f} candidates/s")
    assert eng.done == 200_000
