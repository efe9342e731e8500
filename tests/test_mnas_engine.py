"""Engine, strategies and evaluators on the real Pixel-1 and Note10 tables with a batched callable."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from latbench.errors import LatbenchError
from latbench.predict.lut import TableLatency
from latbench.search.mnas import SearchEngine, make_problem, make_strategy, search
from latbench.search.mnas.evaluators import ArchBatch, EvalResult, Evaluator, make_evaluator
from latbench.spaces import get_space
from latbench.table import LatencyTable

REPO = Path(__file__).resolve().parents[1]

# accuracy that saturates with MACs (diminishing returns, like accuracy-vs-FLOPs curves), vectorised via op ids;
# trials whose arch has a k7_e6 first block "crash" when CRASH is set
ACC_MODULE = textwrap.dedent(
    """
    import numpy as np
    CRASH = False
    CALLS = []
    _V = {}

    def macs_accuracy(archs):
        space = archs.space
        if id(space) not in _V:
            _V[id(space)] = np.array([op.macs for op in space.vocabulary] + [0], dtype=float)
        CALLS.append(len(archs))
        if CRASH and any(a["choices"].get("b01") == "k7_e6" for a in archs):
            raise RuntimeError("simulated crash in one trial")
        macs = _V[id(space)][space.op_ids(archs.indices)].sum(axis=1)
        return 1.0 - np.exp(-macs / 3e8)

    def wrong_length(archs):
        return [0.5]

    def not_numbers(archs):
        return ["good"] * len(archs)

    def always_fails(archs):
        raise ValueError("model file missing")
    """
)


@pytest.fixture()
def accmod(tmp_path, monkeypatch):
    (tmp_path / "mnas_acc_fixture.py").write_text(ACC_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import mnas_acc_fixture

    importlib.reload(mnas_acc_fixture)
    return mnas_acc_fixture


@pytest.fixture(scope="module")
def pixel1():
    space = get_space("proxyless-mobile")
    return space, TableLatency(LatencyTable.load(REPO / "tables/pixel1/proxyless-mobile.json")).compile(space)


@pytest.fixture(scope="module")
def note10():
    space = get_space("ofa-mbv3")
    return space, TableLatency(LatencyTable.load(REPO / "tables/note10/ofa-mbv3.json")).compile(space)


EV = "python:mnas_acc_fixture:macs_accuracy"


@pytest.mark.parametrize("strategy", ["random", "evolution", "rl", "scaling"])
def test_hard_mode_never_proposes_or_returns_over_budget_and_is_reproducible(accmod, pixel1, strategy):
    space, lat = pixel1
    p = make_problem(space, lat, 70.0, reward="hard")
    n = 100 if strategy == "rl" else 300
    e1 = search(p, strategy=strategy, evaluator=EV, trials=n, seed=3)
    e2 = search(p, strategy=strategy, evaluator=EV, trials=n, seed=3)
    a1, a2 = e1.history.arrays(), e2.history.arrays()
    if strategy == "scaling":  # a deterministic grid: it stops when its distinct candidates are spent
        assert e1.strategy.finished and 3 <= len(a1["trial"]) < 300
    else:
        assert len(a1["trial"]) == n
    assert np.array_equal(a1["indices"], a2["indices"]) and np.array_equal(a1["reward"], a2["reward"])
    assert (a1["latency_ms"] <= 70.0).all()  # proposals themselves stay within budget
    # the recorded latency is the LUT sum of the arch
    i = len(a1["trial"]) // 2
    arch = space.from_indices(a1["indices"][i])
    assert a1["latency_ms"][i] == pytest.approx(
        LatencyTable.load(REPO / "tables/pixel1/proxyless-mobile.json").lut_sum(space.ops_of(arch))
    )
    assert e1.best.latency_ms <= 70.0 and e1.best.reward == pytest.approx(np.nanmax(a1["reward"]))
    other = search(p, strategy=strategy, evaluator=EV, trials=n, seed=4).history.arrays()
    assert strategy == "scaling" or not np.array_equal(other["indices"], a1["indices"])


def test_evolution_beats_random_at_equal_trials(accmod, note10):
    space, lat = note10
    p = make_problem(space, lat, 25.0, reward="hard")
    best = {
        s: [search(p, strategy=s, evaluator=EV, trials=600, seed=k).best.reward for k in range(3)]
        for s in ("random", "evolution")
    }
    assert np.mean(best["evolution"]) > np.mean(best["random"])


def test_scaling_grid_obeys_the_compound_rule_and_fills_the_budget(accmod, note10):
    space, _ = note10
    res_space = get_space("ofa-mbv3", resolution=None)
    lat = TableLatency(LatencyTable.load(REPO / "tables/note10/ofa-mbv3.json")).compile(space)
    p = make_problem(space, lat, 40.0, reward="hard")
    st = make_strategy("scaling", p, seed=0, trials=50)
    triples = st.triples()
    assert triples and all(abs(a * b * b * g * g - 2.0) <= 0.1 + 1e-9 for a, b, g in triples)
    assert all(g == 1.0 for _, _, g in triples)  # resolution is fixed in this space
    e = search(p, strategy="scaling", evaluator=EV, trials=200, seed=0)
    assert e.best.latency_ms <= 40.0
    assert e.best.latency_ms > 0.8 * 40.0  # phi grows until the budget binds
    with pytest.raises(LatbenchError, match="no depth/width/resolution axes for space 'darts'"):
        d = get_space("darts")
        from latbench.predict.base import SpaceLatency

        make_strategy("scaling", make_problem(d, SpaceLatency(d, np.ones(len(d.vocabulary))), 100.0), seed=0, trials=5)
    assert "r" in [x.name for x in res_space.decisions]


def test_rl_ppo_updates_and_state_round_trips(accmod, pixel1):
    space, lat = pixel1
    p = make_problem(space, lat, 60.0, reward="hard")
    e = search(p, strategy="rl", evaluator=EV, trials=300, seed=1, strategy_options={"algo": "ppo", "batch": 20})
    assert e.strategy.updates >= 15 and (e.history.arrays()["latency_ms"] <= 60.0).all()
    state, arrays = e.strategy.state_dict()
    fresh = make_strategy("rl", p, seed=99, trials=300, options={"algo": "ppo", "batch": 20})
    fresh.load_state_dict(state, arrays, e.history.arrays()["indices"])
    assert np.array_equal(fresh.ask(5), e.strategy.ask(5))


def test_crash_inside_one_trial_is_recorded_and_the_search_goes_on(accmod, pixel1):
    space, lat = pixel1
    accmod.CRASH = True
    e = search(make_problem(space, lat, 80.0), strategy="random", evaluator=EV, trials=120, seed=0, batch=20)
    a = e.history.arrays()
    failed = a["status"] == "failed"
    assert len(a["trial"]) == 120 and failed.any() and (~failed).sum() > 60
    b01 = np.array([space.from_indices(i)["choices"]["b01"] for i in a["indices"]])
    assert np.array_equal(failed, b01 == "k7_e6")  # exactly the crashing archs, the rest of their batch is fine
    assert all("simulated crash in one trial" in err for err in a["error"][failed])
    assert np.isnan(a["reward"][failed]).all()


@pytest.mark.parametrize(
    "fn,match",
    [
        ("wrong_length", "returned shape"),
        ("not_numbers", "must return numbers"),
        ("always_fails", "failed on every arch of the first batch: ValueError: model file missing"),
        ("nosuch", "has no attribute 'nosuch'"),
    ],
)
def test_broken_user_callable_is_one_clear_error(accmod, pixel1, fn, match):
    space, lat = pixel1
    with pytest.raises(LatbenchError, match=match):
        search(make_problem(space, lat, 80.0), strategy="random", evaluator=f"python:mnas_acc_fixture:{fn}", trials=10)


def test_unknown_names_are_one_line(pixel1):
    space, lat = pixel1
    p = make_problem(space, lat, 80.0)
    with pytest.raises(LatbenchError, match="unknown strategy 'annealing'; known: evolution, random, rl, scaling"):
        search(p, strategy="annealing", evaluator="zero-cost", trials=2)
    with pytest.raises(LatbenchError, match="unknown evaluator 'magic'"):
        search(p, strategy="random", evaluator="magic", trials=2)
    with pytest.raises(LatbenchError, match="has no option"):
        search(p, strategy="evolution", evaluator="zero-cost", trials=2, strategy_options={"populaton": 3})


def test_batched_callable_gets_whole_batches_of_arch_dicts(accmod, pixel1):
    space, lat = pixel1
    e = search(
        make_problem(space, lat, 80.0),
        strategy="evolution",
        evaluator=EV,
        trials=500,
        seed=0,
        strategy_options={"population": 50},
    )
    assert accmod.CALLS == [50] * 10
    assert e.summary()["candidates_per_s"] > 1000


class ShuffledExecutor:
    """Holds batches and returns them later in reverse order (what a cluster can do)."""

    def __init__(self, evaluator: Evaluator, capacity: int) -> None:
        self.evaluator, self.capacity, self.held = evaluator, capacity, []

    def submit(self, batch: ArchBatch) -> None:
        self.held.append(batch)

    def collect(self) -> list[tuple[ArchBatch, EvalResult]]:
        out = [(b, self.evaluator.evaluate(b)) for b in reversed(self.held)]
        self.held = []
        return out

    def close(self) -> None:
        pass


def test_results_may_arrive_out_of_order(accmod, note10):
    space, lat = note10
    p = make_problem(space, lat, 30.0, reward="hard")
    ev = make_evaluator(EV)
    st = make_strategy("evolution", p, seed=0, trials=400, options={"population": 40})
    eng = SearchEngine(p, st, ev, trials=400, batch_size=10, executor=ShuffledExecutor(ev, capacity=40)).run()
    a = eng.history.arrays()
    assert sorted(a["trial"].tolist()) == list(range(400))
    assert a["trial"][0] != 0  # really out of order
    ref = make_evaluator(EV)
    ref.setup(p, 0)
    np.testing.assert_allclose(a["accuracy"], ref.evaluate(ArchBatch(space, a["indices"])).accuracy)
    assert (a["latency_ms"] <= 30.0).all() and eng.best.latency_ms <= 30.0


def test_fitted_accuracy_predictor_screens_candidates(accmod, pixel1):
    space, lat = pixel1
    e = search(
        make_problem(space, lat, 80.0),
        strategy="evolution",
        evaluator=EV,
        trials=200,
        seed=0,
        batch=20,
        acc_predictor={"warmup": 40, "real_fraction": 0.25, "refit_every": 20, "epochs": 100},
    )
    a = e.history.arrays()
    real = a["source"] == "real"
    assert real[:40].all() and 40 + 0.25 * 160 - 1 <= real.sum() <= 40 + 0.25 * 160 + 8
    assert a["source"][e.best.row] == "real"
    # predictions are close to the real accuracy source on the archs they replaced
    ref = make_evaluator(EV)
    ref.setup(e.problem, 0)
    truth = ref.evaluate(ArchBatch(space, a["indices"][~real])).accuracy
    assert np.corrcoef(truth, a["accuracy"][~real])[0, 1] > 0.5
