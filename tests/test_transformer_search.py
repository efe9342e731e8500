"""MnasNet-reward search on the transformer spaces with the weight-sharing supernet evaluator."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from latbench.backends import get_backend
from latbench.errors import LatbenchError
from latbench.measure.harness import TimingConfig
from latbench.predict.lut import TableLatency
from latbench.search.mnas.api import make_problem, run, search
from latbench.search.mnas.evaluators import make_evaluator
from latbench.search.mnas.evaluators.supernet import SupernetEvaluator, make_sequence_task
from latbench.spaces import get_space
from latbench.table import build_table
from latbench.torch_transformers import BertSupernet, ViTSupernet, load_subnet

QUICK = TimingConfig(warmup_s=0.0, min_warmup_calls=1, min_run_time_s=0.005, min_runs=3, rounds=1, max_retries=0)


def _vit(embed: int = 48, heads: int = 4, head_dim: int = 64, hidden: int = 96) -> ViTSupernet:
    torch.manual_seed(0)
    return ViTSupernet(
        image=32, patch=16, channels=3, embed=embed, depth=4, heads=heads, head_dim=head_dim, hidden=hidden,
        num_classes=10,
    )  # fmt: skip


def test_sub_network_forward_is_the_slice_computation() -> None:
    """Weight entanglement: a sub-network's forward equals the same layers computed on the weight slices."""
    import torch.nn.functional as F

    net = _vit(embed=16, heads=2, head_dim=4, hidden=32).eval()
    blk = net.blocks[0]
    x = torch.randn(2, 5, 8)
    d, h, hd, f = 8, 1, 4, 12
    q = h * hd
    # by hand: the first d columns / rows, the first h heads of Q, K and V each
    y = F.layer_norm(x, (d,), blk.ln1.weight[:d], blk.ln1.bias[:d])
    wq, wk, wv = (blk.qkv.weight[i * 8 : i * 8 + q, :d] for i in range(3))
    bq, bk, bv = (blk.qkv.bias[i * 8 : i * 8 + q] for i in range(3))
    qq, kk, vv = (F.linear(y, w, b).reshape(2, 5, h, hd).transpose(1, 2) for w, b in ((wq, bq), (wk, bk), (wv, bv)))
    att = torch.softmax(qq @ kk.transpose(-2, -1) / hd**0.5, -1) @ vv
    x1 = x + F.linear(att.transpose(1, 2).reshape(2, 5, q), blk.proj.weight[:d, :q], blk.proj.bias[:d])
    y = F.layer_norm(x1, (d,), blk.ln2.weight[:d], blk.ln2.bias[:d])
    hid = F.gelu(F.linear(y, blk.fc1.weight[:f, :d], blk.fc1.bias[:f]))
    want = x1 + F.linear(hid, blk.fc2.weight[:d, :f], blk.fc2.bias[:d])
    with torch.no_grad():
        got = blk(x, h, f)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["autoformer", "bert"])
def test_sub_network_equals_the_deployed_network_with_inherited_weights(name: str) -> None:
    """The space's own network, loaded with the supernet's slices, computes what the supernet scored."""
    s = get_space(name, **({"resolution": 32} if name == "autoformer" else {"seq": 12, "vocab": 50}))
    torch.manual_seed(0)
    dims = dict(
        embed=max(s.EMBEDS), depth=s.max_depth, heads=max(s.HEADS), head_dim=64, num_classes=s.params["num_classes"]
    )
    hidden = max(s.mlp_op(e, m).hidden for e in s.EMBEDS for m in s.MLPS)
    if name == "autoformer":
        sup = ViTSupernet(image=32, patch=16, channels=3, hidden=hidden, **dims).eval()
        x = torch.randn(2, 3, 32, 32)
        feed = x
    else:
        sup = BertSupernet(vocab=50, seq=12, hidden=hidden, **dims).eval()
        x = torch.randint(0, 50, (2, 12))
        feed = x.float()
    for seed in (0, 1):
        arch = s.sample(seed)
        cfg = s.sub_config(arch)
        net = load_subnet(s.build(arch), sup, cfg)
        with torch.no_grad():
            torch.testing.assert_close(net(feed), sup(x, cfg), rtol=1e-4, atol=1e-4)
    # a smaller choice really is a slice: zeroing weights outside it leaves its output unchanged
    small = s.from_indices(np.zeros(len(s.decisions), dtype=np.int64))
    cfg = s.sub_config(small)
    with torch.no_grad():
        before = sup(x, cfg)
        sup.blocks[0].fc1.weight[cfg["hidden"][0] :] = 0.0
        sup.blocks[0].qkv.weight[:, cfg["embed"] :] = 0.0
        torch.testing.assert_close(sup(x, cfg), before)


def test_sequence_task_is_balanced_and_labels_the_pattern() -> None:
    x, y = make_sequence_task(400, 16, 10, seed=0)
    assert x.shape == (400, 16) and 150 < y.sum() < 250 and np.all(x[:, 0] == 0)
    has = ((x[:, :-1] == 1) & (x[:, 1:] == 2)).any(axis=1)
    assert np.array_equal(has, y == 1)


def test_supernet_evaluator_refuses_conv_spaces() -> None:
    ev = make_evaluator("supernet", {"steps": 1})
    with pytest.raises(LatbenchError, match="transformer spaces"):
        ev.setup(SimpleNamespace(space=get_space("proxyless-mobile")), 0)


@pytest.mark.slow
def test_supernet_learns_the_sequence_task() -> None:
    s = get_space("bert", seq=16, vocab=100)
    ev = SupernetEvaluator(steps=150, seq=16, samples=1600)
    ev.setup(SimpleNamespace(space=s), 0)
    accs = [ev.evaluate_one(s.sample(i), i)[0] for i in range(3)]
    assert min(accs) > 0.6, accs  # chance is 0.5


def _table(tmp_path, space) -> str:
    path = tmp_path / f"{space.name}.json"
    build_table(
        get_backend("torch-cpu", threads=1),
        space.vocabulary,
        path,
        space=space.name,
        space_params=space.params,
        config=QUICK,
    )
    return str(path)


def test_autoformer_budget_search_writes_a_measured_result(tmp_path) -> None:
    s = get_space("autoformer", resolution=32)
    table = _table(tmp_path, s)
    from latbench.table import LatencyTable

    compiled = TableLatency(LatencyTable.load(table)).compile(s)
    lo, hi = compiled.bounds()
    target = lo + 0.5 * (hi - lo)
    res = run(
        space="autoformer",
        resolution=32,
        table=table,
        target=target,
        strategy="evolution",
        evaluator="supernet",
        evaluator_options={"steps": 8, "samples": 0},
        trials=6,
        reward="hard",
        top_k=1,
        runs_dir=tmp_path / "runs",
        progress=False,
    )
    best = json.loads((res.run_dir / "result.json").read_text())
    assert best["arch"]["space"] == "autoformer" and best["arch"]["resolution"] == 32
    assert 0 < best["predicted_ms"] <= target and 0.0 <= best["accuracy"] <= 1.0
    assert best["measured"]["median_ms"] > 0  # the found network measured end to end on torch-cpu
    assert best["measured"]["kind"] == "measured"
    assert (res.run_dir / "deployed.onnx").stat().st_size > 0


def test_bert_budget_search_in_memory_and_measured(tmp_path) -> None:
    """A short search on a torch-cpu table of a small bert; the found network is measured end to end."""
    from latbench.measure.networks import measure_archs
    from latbench.table import LatencyTable

    s = get_space("bert", seq=16, vocab=100)
    compiled = TableLatency(LatencyTable.load(_table(tmp_path, s))).compile(s)
    lo, hi = compiled.bounds()
    target = lo + 0.3 * (hi - lo)
    problem = make_problem(s, compiled, target, reward="hard")
    engine = search(problem, strategy="evolution", evaluator=SupernetEvaluator(steps=5, seq=16, samples=400), trials=8)
    a = engine.history.arrays()
    assert len(a["accuracy"]) == 8 and np.all(a["latency_ms"] <= target)
    arch = s.from_indices(a["indices"][engine.best.row])
    ms, _ = measure_archs(get_backend("torch-cpu", threads=1), [arch], QUICK, None, progress=False)
    assert ms[0].median > 0
