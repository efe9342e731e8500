"""E[LAT], targets, losses and derivation on the real Pixel-1 table (published phone numbers)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from latbench.errors import LatbenchError
from latbench.predict.base import E2ECalibration, SpaceLatency
from latbench.predict.lut import TableLatency
from latbench.search.proxyless.derive import best_within_budget, derive
from latbench.search.proxyless.latency import ExpectedLatency
from latbench.search.proxyless.losses import AddLoss, BudgetLoss, MulLogLoss, make_loss
from latbench.search.target import parse_target
from latbench.spaces import get_space
from latbench.table import LatencyTable

from .conftest import PIXEL1_TABLE


@pytest.fixture(scope="module")
def pixel1() -> LatencyTable:
    return LatencyTable.load(PIXEL1_TABLE)


@pytest.fixture(scope="module")
def lat(pixel1: LatencyTable) -> ExpectedLatency:
    return ExpectedLatency(TableLatency(pixel1).compile(get_space("proxyless-mobile")))


def _one_hot(idx: np.ndarray, width: int = 7) -> torch.Tensor:
    p = torch.zeros(len(idx), width, dtype=torch.float64)
    p[torch.arange(len(idx)), torch.as_tensor(idx)] = 1.0
    return p


def test_expected_latency_of_one_hot_is_the_lut_sum(pixel1: LatencyTable, lat: ExpectedLatency) -> None:
    space = lat.space
    lo, hi = lat.bounds()
    assert 29 < lo < 31 and 185 < hi < 195  # the published range of the ProxylessNAS mobile space on a Pixel 1
    rng = np.random.default_rng(0)
    for idx in space.sample_indices(rng, 20):
        want = pixel1.lut_sum(space.ops_of(space.from_indices(idx)))
        assert float(lat.expected(_one_hot(idx))) == pytest.approx(want, rel=1e-12)
        assert lat.of_indices(idx) == pytest.approx(want, rel=1e-12)


def test_expected_latency_applies_the_calibration_and_its_gradient_is_p_times_centered_latency(
    pixel1: LatencyTable,
) -> None:
    space = get_space("proxyless-mobile")
    model = TableLatency(pixel1, E2ECalibration(scale=1.2, offset_ms=3.0))
    lat = ExpectedLatency(model.compile(space))
    idx = space.sample_indices(np.random.default_rng(1), 1)[0]
    assert float(lat.expected(_one_hot(idx))) == pytest.approx(model.predict_arch(space.from_indices(idx)), rel=1e-12)
    alpha = torch.randn(21, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    mask = torch.zeros(21, 7, dtype=torch.bool)
    for i, d in enumerate(space.decisions):
        mask[i, : len(d)] = True
    p = torch.softmax(alpha.masked_fill(~mask, -math.inf), 1)
    e = lat.expected(p)
    e.backward()
    table = torch.as_tensor(lat.table)
    block_mean = (p * table).sum(1, keepdim=True)
    want = 1.2 * p * (table - block_mean)
    assert torch.allclose(alpha.grad, want.detach(), atol=1e-10)
    # uniform p over each decision's options: the mean of all archs' latencies (decisions are independent)
    uniform = mask.double() / mask.sum(1, keepdim=True)
    mean_arch = 1.2 * (lat.fixed_ms + sum(float(np.mean(x)) for x in lat.compiled.decision_latencies())) + 3.0
    assert float(lat.expected(uniform)) == pytest.approx(mean_arch, rel=1e-12)


def test_targets_parse_and_out_of_range_ones_say_which_side_and_what_is_reachable(lat: ExpectedLatency) -> None:
    lo, hi = lat.bounds()
    assert parse_target("25%", (lo, hi)) == pytest.approx(lo + 0.25 * (hi - lo))
    assert (
        parse_target("80ms", (lo, hi)) == 80.0
        and parse_target("80", (lo, hi)) == 80.0
        and parse_target(80, (lo, hi)) == 80
    )
    with pytest.raises(LatbenchError, match=r"below the smallest arch of the space \(29\.6\d\d ms\); reachable: 29\.6"):
        parse_target("12ms", (lo, hi))
    with pytest.raises(LatbenchError, match=r"above the largest arch .*191\.0\d\d ms.*reachable: 29\.6\d\d-191\.0"):
        parse_target("500", (lo, hi))
    with pytest.raises(LatbenchError, match="bad latency target"):
        parse_target("fast", (lo, hi))


def test_losses() -> None:
    ce = torch.tensor(1.5)
    e = torch.tensor(100.0)
    assert float(AddLoss(50.0, lam=0.1)(ce, e)) == pytest.approx(1.5 + 0.1 * 2.0)
    ml = MulLogLoss(50.0)
    assert (ml.a, ml.b) == (0.2, 0.3)
    assert float(ml(ce, torch.tensor(50.0))) == pytest.approx(1.5 * 0.2)
    assert float(ml(ce, e)) == pytest.approx(1.5 * 0.2 * (math.log(100) / math.log(50)) ** 0.3)
    with pytest.raises(LatbenchError, match="above 1 ms"):
        MulLogLoss(0.8)
    with pytest.raises(LatbenchError, match="unknown loss"):
        make_loss("hinge", 10.0)
    b = make_loss("budget", 100.0)
    assert isinstance(b, BudgetLoss) and b.multiplier == 0.0 and b.aim_ms == pytest.approx(98.0)
    b.update(120.0)  # over budget: the multiplier rises (integral and proportional parts)
    over = b.multiplier
    assert over == pytest.approx(0.01 * (120 / 98 - 1) + 2.0 * (120 / 98 - 1))
    for _ in range(50):
        b.update(120.0)
    assert b.multiplier > over > 0
    b.update(60.0)  # far under: pushed back up towards the budget
    assert b.multiplier < b.lam_i
    state = b.state()
    b2 = make_loss("budget", 100.0)
    b2.load_state(state)
    assert b2.multiplier == b.multiplier
    assert b.in_band(97.0) and b.in_band(100.0) and not b.in_band(100.5) and not b.in_band(94.0)


def test_within_budget_derive_is_the_most_probable_arch_under_the_target() -> None:
    space = get_space("darts", channels=8)
    rng = np.random.default_rng(0)
    vocab_ms = rng.uniform(0.1, 2.0, len(space.vocabulary))
    lat = ExpectedLatency(SpaceLatency(space, vocab_ms))
    logits = rng.normal(size=(14, 8)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    am = derive(probs, lat, 1e9, "argmax")
    assert (am == probs.argmax(1)).all()
    target = 0.8 * lat.of_indices(am)
    got = best_within_budget(probs, lat, target, top_k=2)
    assert lat.of_indices(got) <= target
    # brute force over the top-2 options of every edge (16384 archs)
    top2 = np.argsort(-probs, 1)[:, :2]
    best, best_lp = None, -np.inf
    combos = np.array(list(itertools.product([0, 1], repeat=14)))
    idx_all = top2[np.arange(14)[None, :], combos]
    ms = lat.compiled.predict_indices(idx_all)
    lp = np.log(probs[np.arange(14)[None, :], idx_all]).sum(1)
    ok = ms <= target
    best = idx_all[ok][np.argmax(lp[ok])]
    best_lp = lp[ok].max()
    got_lp = np.log(probs[np.arange(14), got]).sum()
    assert got_lp == pytest.approx(best_lp, abs=1e-9)
    assert (got == best).all()
    # with a floor: the most probable arch in [floor, target] (same brute force)
    floor = 0.97 * target
    banded = best_within_budget(probs, lat, target, top_k=2, floor_ms=floor)
    in_band = (ms <= target) & (ms >= floor)
    assert in_band.any() and floor <= lat.of_indices(banded) <= target
    assert np.log(probs[np.arange(14), banded]).sum() == pytest.approx(lp[in_band].max(), abs=1e-9)
    # within budget already: the argmax itself
    assert (best_within_budget(probs, lat, lat.of_indices(am) + 1e-6) == am).all()
    with pytest.raises(LatbenchError, match="no arch of the space"):
        best_within_budget(probs, lat, 0.01)
