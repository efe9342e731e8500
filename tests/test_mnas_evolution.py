"""The evolution strategy: Once-for-All mutation (one coin per block), elitist vs aging survival, presets, limits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from latbench.errors import LatbenchError
from latbench.predict.base import SpaceLatency
from latbench.predict.lut import TableLatency
from latbench.search.mnas import make_problem, make_strategy, search
from latbench.search.mnas.strategies.evolution import mutation_blocks
from latbench.spaces import get_space
from latbench.table import LatencyTable

REPO = Path(__file__).resolve().parents[1]
NOTE10 = REPO / "tables/note10/ofa-mbv3.json"
EV = f"python:{Path(__file__).resolve()}:macs_accuracy"
_MACS: dict[int, np.ndarray] = {}


def macs_accuracy(archs):  # type: ignore[no-untyped-def]
    """Accuracy that saturates with MACs (diminishing returns, like accuracy-vs-FLOPs curves), batched."""
    space = archs.space
    if id(space) not in _MACS:
        _MACS[id(space)] = np.array([op.macs for op in space.vocabulary] + [0], dtype=float)
    macs = _MACS[id(space)][space.op_ids(archs.indices)].sum(axis=1)
    return 1.0 - np.exp(-macs / 3e8)


@pytest.fixture(scope="module")
def note10():
    space = get_space("ofa-mbv3")
    return space, TableLatency(LatencyTable.load(NOTE10)).compile(space)


@pytest.fixture(scope="module")
def res_space():
    """ofa-mbv3 with the resolution searched; latency proportional to MACs (only the mutation is under test)."""
    space = get_space("ofa-mbv3", resolution=None)
    lat = SpaceLatency(space, np.array([op.macs for op in space.vocabulary], dtype=float) / 1e7)
    return space, make_problem(space, lat, 1e9)


def _cols(space, prefix: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.array([i for i, d in enumerate(space.decisions) if d.name.startswith(prefix)])


def _changes(st, n: int = 40_000, seed: int = 7):  # type: ignore[no-untyped-def]
    parents = st.space.sample_indices(np.random.default_rng(seed), n)
    return st.mutate(parents) != parents


def test_blocks_come_from_the_decision_names():
    space = get_space("ofa-mbv3", resolution=None)
    names = [[space.decisions[i].name for i in b] for b in mutation_blocks(space)]
    assert [b for b in names if len(b) > 1] == [[f"k{j:02d}", f"e{j:02d}"] for j in range(1, 21)]
    assert [b[0] for b in names if len(b) == 1] == ["d1", "d2", "d3", "d4", "d5", "r"]
    # proxyless-mobile's bNN already picks kernel and expand as one option: one block per decision
    assert mutation_blocks(get_space("proxyless-mobile")) == [[i] for i in range(21)]
    assert mutation_blocks(get_space("darts")) == [[i] for i in range(14)]


def test_ofa_mutation_resamples_kernel_and_expand_of_a_block_together(note10):
    space, lat = note10
    p = make_problem(space, lat, 1e9)
    k, e = _cols(space, "k"), _cols(space, "e")
    stats = {}
    for mutation in ("ofa", "per-decision"):
        st = make_strategy("evolution", p, seed=0, trials=1000, options={"mutation": mutation})
        ch = _changes(st)
        kc, ec = ch[:, k], ch[:, e]
        stats[mutation] = {
            "k": kc.mean(),
            "e": ec.mean(),
            "e_given_k": ec[kc].mean(),
            "xor_given_any": (kc ^ ec)[kc | ec].mean(),
        }
    ofa, per = stats["ofa"], stats["per-decision"]
    # each decision alone changes at 0.1 x 2/3 in both (a resample redraws the old value 1 time in 3)
    for s in (ofa, per):
        assert s["k"] == pytest.approx(0.1 * 2 / 3, abs=0.003) and s["e"] == pytest.approx(0.1 * 2 / 3, abs=0.003)
    # one coin per block: when the kernel changed the block was resampled, so the expand ratio changed 2 times in 3
    assert ofa["e_given_k"] == pytest.approx(2 / 3, abs=0.02)
    assert per["e_given_k"] == pytest.approx(0.1 * 2 / 3, abs=0.02)  # independent coins
    # of the blocks that changed, one of the two alone changed in 1/2 (4/9 of 8/9); ~all with independent coins
    assert ofa["xor_given_any"] == pytest.approx(0.5, abs=0.02) and per["xor_given_any"] > 0.95


def test_ofa_mutation_draws_depth_and_resolution_on_their_own_coins(res_space):
    space, p = res_space
    st = make_strategy("evolution", p, seed=0, trials=1000, options={"preset": "ofa"})
    assert st.resolution_prob == 0.5 and st.mutation == "ofa" and not st.aging
    ch = _changes(st)
    d, k, r = _cols(space, "d"), _cols(space, "k"), _cols(space, "r")[0]
    dc, kc, rc = ch[:, d], ch[:, k], ch[:, r]
    assert rc.mean() == pytest.approx(0.5 * 24 / 25, abs=0.01)  # resolution_prob 0.5, 25 resolutions
    assert dc.mean() == pytest.approx(0.1 * 2 / 3, abs=0.003)  # depth: mutation_prob, one coin per stage
    # independent of each other and of the blocks: conditional rates equal the plain ones
    assert dc[kc[:, 0]].mean() == pytest.approx(dc.mean(), abs=0.01)
    assert dc[:, 1][dc[:, 0]].mean() == pytest.approx(dc[:, 1].mean(), abs=0.015)
    assert rc[kc[:, 0]].mean() == pytest.approx(rc.mean(), abs=0.025)
    assert dc[rc].mean() == pytest.approx(dc[~rc].mean(), abs=0.005)
    # resolution_prob is an option of its own; per-decision mutation resamples the resolution at mutation_prob
    st = make_strategy("evolution", p, seed=0, trials=1000, options={"preset": "ofa", "resolution_prob": 0.2})
    assert _changes(st)[:, r].mean() == pytest.approx(0.2 * 24 / 25, abs=0.01)
    st = make_strategy("evolution", p, seed=0, trials=1000)
    assert _changes(st)[:, r].mean() == pytest.approx(0.1 * 24 / 25, abs=0.005)


def test_elitist_survival_keeps_the_best_and_aging_keeps_the_newest(note10):
    space, lat = note10
    p = make_problem(space, lat, 1e9)
    rng = np.random.default_rng(0)
    old, new = space.sample_indices(rng, 4), space.sample_indices(rng, 4)
    pops = {}
    for aging in (False, True):
        st = make_strategy("evolution", p, seed=0, trials=100, options={"population": 4, "aging": aging})
        st.tell(old, np.array([5.0, 4.0, 3.0, 2.0]))
        st.tell(new, np.array([1.0, 6.0, 1.0, 1.0]))
        pops[aging] = (st.pop_idx, st.pop_reward)
    assert sorted(pops[False][1]) == [3.0, 4.0, 5.0, 6.0]
    assert {r.tobytes() for r in pops[False][0]} == {r.tobytes() for r in [old[0], old[1], old[2], new[1]]}
    assert np.array_equal(pops[True][0], new) and sorted(pops[True][1]) == [1.0, 1.0, 1.0, 6.0]


def test_ofa_preset_population_is_the_best_of_all_trials(note10):
    space, lat = note10
    p = make_problem(space, lat, 25.0, reward="hard")
    for aging in (False, True):
        opts = {"preset": "ofa", "population": 30} | ({"aging": True} if aging else {})
        e = search(p, strategy="evolution", evaluator=EV, trials=600, seed=0, strategy_options=opts)
        rewards = e.history.arrays()["reward"]
        best, kept = np.sort(rewards)[-30:], np.sort(e.strategy.pop_reward)
        if not aging:  # the preset keeps the best 30 of all 600 trials
            np.testing.assert_array_equal(kept, best)
        else:  # aging keeps the last 30 trials, not the best
            np.testing.assert_array_equal(kept, np.sort(rewards[-30:]))
            assert not np.array_equal(kept, best)


def test_children_over_the_hard_limit_are_redrawn(note10):
    space, lat = note10
    target = 20.0
    p = make_problem(space, lat, target, reward="hard")
    st = make_strategy("evolution", p, seed=0, trials=10_000, options={"preset": "ofa", "mutation_prob": 0.3})
    first = st.ask(100)
    assert len(first) == 100 and (p.latency_ms(first) <= target).all()
    st.tell(first, macs_accuracy(type("B", (), {"space": space, "indices": first})()))
    raw = st.mutate(st.pop_idx[np.argsort(-st.pop_reward)[:25]].repeat(40, axis=0))
    assert (p.latency_ms(raw) > target).mean() > 0.2  # plain mutations of the parents do go over the limit
    for _ in range(3):
        kids = st.ask(500)
        assert len(kids) == 500 and (p.latency_ms(kids) <= target).all()
        st.tell(kids, macs_accuracy(type("B", (), {"space": space, "indices": kids})()))


def test_ofa_preset_is_reproducible_from_the_seed(note10):
    space, lat = note10
    p = make_problem(space, lat, 25.0, reward="hard")
    runs = [
        search(
            p, strategy="evolution", evaluator=EV, trials=400, seed=s, strategy_options={"preset": "ofa"}
        ).history.arrays()["indices"]
        for s in (3, 3, 4)
    ]
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])


def test_ofa_preset_on_the_note10_table_beats_random_search(note10):
    space, lat = note10
    p = make_problem(space, lat, 25.0, reward="hard")
    best: dict[str, list[float]] = {"ofa": [], "random": []}
    for seed in range(3):
        e = search(p, strategy="evolution", evaluator=EV, trials=1000, seed=seed, strategy_options={"preset": "ofa"})
        rewards = e.history.arrays()["reward"]
        assert e.best.latency_ms <= 25.0 and e.best.reward > rewards[:100].max()  # better than its random start
        best["ofa"].append(e.best.reward)
        best["random"].append(search(p, strategy="random", evaluator=EV, trials=1000, seed=seed).best.reward)
    assert min(np.subtract(best["ofa"], best["random"])) > 0, best


@pytest.mark.parametrize(
    "options,match",
    [
        ({"preset": "amoeba"}, "unknown evolution preset 'amoeba'; known: aging, ofa"),
        ({"mutation": "per-block"}, "mutation must be one of per-decision, ofa, got 'per-block'"),
        ({"resolution_prob": 0.5}, "resolution_prob needs mutation=ofa"),
        ({"aging": "yes"}, "aging must be true or false, got 'yes'"),
        ({"population": 1}, "population must be a whole number >= 2, got 1"),
        ({"preset": "ofa", "mutation_prob": 1.5}, r"mutation_prob must be a number in \[0, 1\], got 1.5"),
    ],
)
def test_bad_options_are_one_line(note10, options, match):
    space, lat = note10
    with pytest.raises(LatbenchError, match=match):
        make_strategy("evolution", make_problem(space, lat, 25.0), seed=0, trials=100, options=options)


def test_cli_preset_through_strategy_opt(tmp_path, monkeypatch, capsys):
    from latbench.cli import main

    monkeypatch.setenv("LATBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    args = ["search", "mnas", "--table", str(NOTE10), "--space", "ofa-mbv3", "--resolution", "224"]
    args += ["--target", "25ms", "--reward", "hard"]
    args += ["--evaluator", EV, "--trials", "60", "--strategy-opt", "preset=ofa", "--strategy-opt", "population=20"]
    args += ["--no-measure", "--no-onnx", "--run-id", "ofa", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    cfg = json.loads((Path(out["run_dir"]) / "config.json").read_text())
    st = cfg["strategy"]
    assert (st["preset"], st["mutation"], st["aging"], st["population"], st["blocks"]) == ("ofa", "ofa", False, 20, 20)
    assert st["resolution_prob"] == 0.5 and out["predicted_ms"] <= 25.0
