"""Supernet: layout of the spaces, sub-network extraction, the three mixed-op modes and their gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latbench.errors import LatbenchError
from latbench.ops import OpSpec
from latbench.search.proxyless.supernet import MixedOp, SharedMBConvChoices, build_supernet, space_layout
from latbench.spaces import get_space

SMALL = {"resolution": 32, "width": 0.35, "num_classes": 10}


@pytest.fixture(autouse=True)
def _one_thread():
    """These nets are tiny: one intra-op thread is fastest, and much faster on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_layout_of_proxyless_and_darts() -> None:
    lay = space_layout(get_space("proxyless-mobile"))
    assert lay.positions == tuple(range(2, 23))  # stem conv + first MBConv, then 21 blocks, then head conv + classifier
    assert [p for p, _ in lay.fixed] == [0, 1, 23, 24]
    assert [len(c) for c in lay.candidates].count(7) == 15  # 15 skippable blocks have a zero option
    assert lay.candidates[1][6].type == "zero" and lay.candidates[0][5].key.startswith(
        "mbconv-i112x112x16-o24-k7-s2-e6"
    )
    darts = space_layout(get_space("darts"))
    assert len(darts.positions) == 14 and [p for p, _ in darts.fixed] == [0, 15]
    with pytest.raises(LatbenchError, match="not one op per decision"):
        build_supernet(get_space("ofa-mbv3"), "binary")


@pytest.mark.parametrize(
    ("space", "params", "share"),
    [("proxyless-mobile", SMALL, True), ("proxyless-mobile", SMALL, False), ("darts", {"channels": 8}, False)],
)
def test_subnet_state_reproduces_the_supernet_path_exactly(space: str, params: dict, share: bool) -> None:
    sp = get_space(space, **params)
    torch.manual_seed(0)
    net = build_supernet(sp, "binary", share)
    assert all(m.shared == share for m in net.mixed)
    g = torch.Generator().manual_seed(0)
    net.train()
    with torch.no_grad():
        for _ in range(3):  # give the BNs non-trivial running statistics
            net.plan("weights", g)
            net(torch.randn(8, *sp.input_shape[1:]))
    for seed in (1, 2):
        idx = sp.sample_indices(np.random.default_rng(seed), 1)[0]
        net.eval()
        net.plan("eval", fixed=idx)
        x = torch.randn(3, *sp.input_shape[1:])
        with torch.no_grad():
            y_super = net(x)
            sub = sp.build(sp.from_indices(idx))
            sub.load_state_dict(net.subnet_state(idx), strict=True)
            y_sub = sub(x)
        assert y_super.shape == (3, 10)
        assert torch.equal(y_super, y_sub)


def _mbconv_specs() -> tuple[OpSpec, ...]:
    base = {"hw": 6, "cin": 8, "cout": 8, "stride": 1, "act": "relu6"}
    return (
        OpSpec("mbconv", kernel=3, expand=3, **base),
        OpSpec("mbconv", kernel=5, expand=6, **base),
        OpSpec("mbconv", kernel=7, expand=3, **base),
        OpSpec("zero", **{**base, "act": "none"}),
    )


@pytest.mark.parametrize("share", [True, False])
def test_binary_gate_gradient_is_the_proxylessnas_formula(share: bool) -> None:
    specs = _mbconv_specs()
    torch.manual_seed(0)
    op = MixedOp(specs, zero_is_identity=True, share_weights=share)
    assert op.shared == share and SharedMBConvChoices.can_share(specs)
    op.eval()
    x = torch.randn(2, 8, 6, 6)
    weight = torch.randn(2, 8, 6, 6)  # L = <weight, y>, so dL/dy = weight
    alpha = torch.tensor([0.3, -0.2, 0.5, 0.1], requires_grad=True)
    pair = [2, 0]
    q = torch.softmax(alpha[pair], dim=0)
    op.plan = {"kind": "binary", "k": 2, "pair": pair, "q": q}
    y = op(x)
    with torch.no_grad():
        outs = {j: op.choices.run(j, x) for j in range(4)}
    assert torch.allclose(y, outs[2])  # the forward value is the active path only
    (y * weight).sum().backward()
    dg = {j: float((weight * outs[j]).sum()) for j in pair}  # dL/dg_j = <dL/dy, o_j>
    qn = q.detach().numpy()
    expected = np.zeros(4)
    for a_slot, i in enumerate(pair):
        expected[i] = sum(dg[j] * qn[b] * ((a_slot == b) - qn[a_slot]) for b, j in enumerate(pair))
    assert np.allclose(alpha.grad.numpy(), expected, rtol=1e-4, atol=1e-6)
    assert alpha.grad[1] == 0 and alpha.grad[3] == 0  # paths outside the pair get nothing


def test_softmax_mode_is_the_weighted_sum_and_zero_in_darts_adds_nothing() -> None:
    sp = get_space("darts", channels=4)
    net = build_supernet(sp, "softmax")
    with torch.no_grad():
        net.alpha.normal_()
    net.eval()
    net.plan("alpha")
    mixed = net.mixed[0]
    x = torch.randn(2, 4, 32, 32)
    w = torch.softmax(net.alpha[0], 0)
    with torch.no_grad():
        want = sum(w[j] * mixed.choices.run(j, x) for j in range(8))
        assert torch.allclose(mixed(x), want, atol=1e-6)
        assert float(mixed.choices.run(0, x).abs().sum()) == 0.0  # "none" is zeros


def test_gumbel_weights_anneal_to_one_hot_and_masked_options_get_nothing() -> None:
    sp = get_space("proxyless-mobile", **SMALL)
    net = build_supernet(sp, "gumbel")
    g = torch.Generator().manual_seed(0)
    net.tau = 5.0
    net.plan("alpha", g)
    soft = torch.stack([m.plan["w"] for m in net.mixed]).detach()
    net.tau = 0.05
    net.plan("alpha", g)
    hard = torch.stack([m.plan["w"] for m in net.mixed]).detach()
    assert torch.allclose(soft.sum(1), torch.ones(21)) and torch.allclose(hard.sum(1), torch.ones(21))
    assert float(soft.max(1).values.mean()) < 0.5 < 0.95 < float(hard.max(1).values.mean())
    # b01 has six options: its seventh (padding) column is never weighted
    assert float(hard[0, 6]) == 0.0 and float(net.probs()[0, 6].detach()) == 0.0


def test_binary_weight_step_runs_one_path_and_alpha_step_two() -> None:
    sp = get_space("proxyless-mobile", **SMALL)
    net = build_supernet(sp, "binary")
    calls: list[int] = []
    for m in net.mixed:
        original = m.choices.run

        def counted(j: int, x: torch.Tensor, _run=original) -> torch.Tensor:
            calls.append(j)
            return _run(j, x)

        m.choices.run = counted  # type: ignore[method-assign]
    g = torch.Generator().manual_seed(0)
    net.train()
    net.plan("weights", g)
    net(torch.randn(4, 3, 32, 32))
    assert len(calls) == 21
    calls.clear()
    net.plan("alpha", g)
    net(torch.randn(4, 3, 32, 32))
    assert len(calls) == 42
    assert all(m.plan["k"] in m.plan["pair"] and len(set(m.plan["pair"])) == 2 for m in net.mixed)
