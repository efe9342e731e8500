"""Accuracy sources on real data: zero-cost proxies and short training on digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latbench.predict.lut import TableLatency
from latbench.search.mnas import make_problem
from latbench.search.mnas.evaluators import ArchBatch, make_evaluator
from latbench.search.mnas.proxy import proxy_arch, proxy_space
from latbench.spaces import get_space
from latbench.table import LatencyTable

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def problem():
    space = get_space("proxyless-mobile")
    lat = TableLatency(LatencyTable.load(REPO / "tables/pixel1/proxyless-mobile.json")).compile(space)
    return make_problem(space, lat, 80.0)


def _archs(space, choices_list):
    return ArchBatch(space, np.stack([space.to_indices(space.arch(c)) for c in choices_list]))


def test_proxy_space_keeps_the_decisions_and_shrinks_the_net(problem):
    proxy = proxy_space(problem.space)
    assert [d.name for d in proxy.decisions] == [d.name for d in problem.space.decisions]
    arch = problem.space.sample(0)
    small = proxy_arch(proxy, arch)
    assert small["choices"] == arch["choices"] and small["resolution"] == 32 and small["num_classes"] == 10
    assert proxy.macs(small) < problem.space.macs(arch) / 50
    ofa = get_space("ofa-mbv3", resolution=None)
    p2 = proxy_space(ofa)
    assert [d.name for d in p2.decisions] == [d.name for d in ofa.decisions][:-1]  # the resolution decision drops


@pytest.mark.parametrize("proxy", ["naswot", "synflow", "grad-norm"])
def test_zero_cost_scores_are_deterministic_and_grow_with_capacity(problem, proxy):
    space = problem.space
    small = {d.name: ("zero" if "zero" in d.options else "k3_e3") for d in space.decisions}
    big = {d.name: "k7_e6" for d in space.decisions}
    ev = make_evaluator(f"zero-cost:{proxy}")
    ev.setup(problem, 0)
    r1 = ev.evaluate(_archs(space, [small, big]))
    r2 = ev.evaluate(_archs(space, [small, big]))
    assert all(e is None for e in r1.errors) and np.isfinite(r1.accuracy).all()
    np.testing.assert_allclose(r1.accuracy, r2.accuracy, rtol=1e-6)
    assert r1.accuracy[1] > r1.accuracy[0]  # the widest, deepest net scores higher than the smallest
    assert r1.accuracy.min() > 0


def test_train_evaluator_records_a_crash_and_goes_on(problem, monkeypatch):
    ev = make_evaluator("train", {"epochs": 0.05, "max_train": 64})
    ev.setup(problem, 0)
    real_build = ev.proxy.build
    calls = []

    def flaky(arch):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory (simulated)")
        return real_build(arch)

    monkeypatch.setattr(ev.proxy, "build", flaky)
    res = ev.evaluate(ArchBatch(problem.space, problem.space.sample_indices(np.random.default_rng(0), 2)))
    assert np.isnan(res.accuracy[0]) and "RuntimeError: out of memory (simulated)" in res.errors[0]
    assert res.errors[1] is None and 0.0 <= res.accuracy[1] <= 1.0 and "epochs" in res.notes[1]


def test_train_evaluator_repeats_average_seeds(problem):
    opts = {"epochs": 0.1, "max_train": 64}
    one, two = make_evaluator("train", opts), make_evaluator("train", {**opts, "repeats": 2})
    one.setup(problem, 0)
    two.setup(problem, 0)
    batch = ArchBatch(problem.space, problem.space.sample_indices(np.random.default_rng(1), 1))
    a1, r2 = one.evaluate(batch), two.evaluate(batch)
    seeds = [float(x) for x in r2.notes[0].split("(")[1].split(")")[0].split(", ")]
    assert r2.notes[0].startswith("mean of 2 seeds") and len(seeds) == 2
    assert seeds[0] == pytest.approx(a1.accuracy[0], abs=1e-4)  # the first repeat is the single run
    assert r2.accuracy[0] == pytest.approx(sum(seeds) / 2, abs=1e-4)
    assert two.describe()["repeats"] == 2
    with pytest.raises(Exception, match="repeats must be >= 1"):
        make_evaluator("train", {"repeats": 0})


@pytest.mark.slow
def test_short_training_on_digits_learns(problem):
    ev = make_evaluator("train", {"epochs": 2.0})
    ev.setup(problem, 0)
    space = problem.space
    arch = {d.name: ("k3_e3" if "zero" not in d.options else "zero") for d in space.decisions}
    res = ev.evaluate(_archs(space, [arch]))
    assert res.accuracy[0] > 0.3  # 10 classes: chance is 0.1
