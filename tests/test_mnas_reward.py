"""MnasNet reward, presets, targets and the problem's range checks."""

from __future__ import annotations

import numpy as np
import pytest

from latbench.errors import LatbenchError
from latbench.predict.lut import TableLatency
from latbench.search.mnas import Constraints, Reward, make_problem, parse_target
from latbench.spaces import get_space
from latbench.table import LatencyTable


@pytest.fixture(scope="module")
def pixel1():
    space = get_space("proxyless-mobile")
    return space, TableLatency(LatencyTable.load("tables/pixel1/proxyless-mobile.json")).compile(space)


def test_soft_reward_matches_the_mnasnet_formula():
    r = Reward.from_preset("soft", 80.0)
    assert (r.alpha, r.beta) == (-0.07, -0.07)
    got = r(np.array([0.75, 0.75, 0.8]), np.array([40.0, 160.0, 80.0]))
    np.testing.assert_allclose(got, [0.75 * 0.5**-0.07, 0.75 * 2.0**-0.07, 0.8])
    # a net twice as slow must be about 5% more accurate to tie
    assert r(0.75, 80.0) == pytest.approx(r(0.75 * 2**0.07, 160.0))


def test_hard_reward_is_accuracy_within_and_steep_over_budget():
    r = Reward.from_preset("hard", 20.0)
    assert (r.alpha, r.beta) == (0.0, -1.0)
    np.testing.assert_allclose(r([0.7, 0.7, 0.7], [5.0, 20.0, 40.0]), [0.7, 0.7, 0.35])


def test_custom_exponents_override_the_preset_and_nan_propagates():
    r = Reward.from_preset("soft", 10.0, alpha=-0.1)
    assert (r.alpha, r.beta, r.preset) == (-0.1, -0.07, None)
    assert np.isnan(r(np.nan, 5.0))


@pytest.mark.parametrize("alpha,beta", [(0.07, -0.07), (-0.07, 0.5)])
def test_positive_exponent_is_refused(alpha, beta):
    with pytest.raises(LatbenchError, match="positive: it would reward slower nets"):
        Reward.from_preset("soft", 20.0, alpha=alpha, beta=beta)


def test_unknown_preset_and_bad_targets():
    with pytest.raises(LatbenchError, match="unknown reward 'medium'"):
        Reward.from_preset("medium", 20.0)
    assert parse_target("20ms") == 20.0
    assert parse_target("0.02s") == pytest.approx(20.0)
    assert parse_target("1500us") == pytest.approx(1.5)
    assert parse_target(" 7.5 ") == 7.5
    for bad in ("fast", "-3ms", "0", "20 min"):
        with pytest.raises(LatbenchError):
            parse_target(bad)
    with pytest.raises(LatbenchError):
        Constraints(max_params=0)


def test_latency_range_and_budget_below_the_smallest_arch(pixel1):
    space, lat = pixel1
    p = make_problem(space, lat, 60.0)
    lo, hi, fastest = p.latency_range
    # the Pixel-1 LUT: every net lies between about 30 and 190 ms (ProxylessNAS paper and code)
    assert 29.0 < lo < 31.0 and 185.0 < hi < 195.0
    assert lat.predict_indices(fastest[None, :])[0] == pytest.approx(lo)
    sample = lat.predict_indices(space.sample_indices(np.random.default_rng(0), 5000))
    assert sample.min() >= lo - 1e-9 and sample.max() <= hi + 1e-9
    with pytest.raises(LatbenchError, match=r"smallest possible latency is 29\.6\d\d ms"):
        make_problem(space, lat, 20.0).check_reachable("pixel1")


def test_params_and_memory_limits_are_hard(pixel1):
    space, lat = pixel1
    p = make_problem(space, lat, 200.0, max_params=4_000_000, max_memory_mb=30.0)
    idx = space.sample_indices(np.random.default_rng(1), 400)
    st = p.measure_static(idx)
    exact_params = [space.params_count(space.from_indices(i)) for i in idx[:20]]
    exact_mem = [space.peak_memory_bytes(space.from_indices(i)) / 1e6 for i in idx[:20]]
    np.testing.assert_allclose(st["params"][:20], exact_params)
    np.testing.assert_allclose(st["memory_mb"][:20], exact_mem)
    assert np.array_equal(st["feasible"], (st["params"] <= 4_000_000) & (st["memory_mb"] <= 30.0))
    assert 0 < st["feasible"].sum() < len(idx)
    with pytest.raises(LatbenchError, match="--max-params 1000 is below the smallest arch"):
        make_problem(space, lat, 200.0, max_params=1000).check_reachable()
