"""The `autoformer` and `bert` spaces: structure, arch JSON, sampling, ONNX export, tables, predictors, glue."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latbench.backends import get_backend
from latbench.errors import ArchError
from latbench.export import WEIGHT_SEED, export_arch
from latbench.measure.harness import TimingConfig
from latbench.predict.glue import fit_glue_on
from latbench.predict.lut import TableLatency
from latbench.spaces import SPACES, get_space, load_archs, save_archs, space_of
from latbench.table import build_table
from latbench.testing import LatencyModelContract

QUICK = TimingConfig(warmup_s=0.0, min_warmup_calls=1, min_run_time_s=0.005, min_runs=3, rounds=1, max_retries=0)
#: small variants (same decisions, few tokens) so export / timing tests stay fast
SMALL = {"autoformer": {"resolution": 32, "patch": 16, "num_classes": 10}, "bert": {"seq": 16, "vocab": 100}}


def test_registered() -> None:
    assert "autoformer" in SPACES and "bert" in SPACES


def test_autoformer_structure_and_tiny_ranges() -> None:
    s = get_space("autoformer")
    ch = s.choices
    assert ch["embed"] == (192, 216, 240) and ch["depth"] == (12, 13, 14)
    assert ch["h01"] == (3, 4) and ch["m14"] == (3.5, 4.0) and len(s.decisions) == 2 + 2 * 14
    arch = s.arch({**{d: o[0] for d, o in ch.items()}, "depth": 13, "embed": 192})
    ops = s.ops_of(arch)
    assert [o.type for o in ops[:3]] == ["patch_embed", "mhsa", "mlp"] and len(ops) == 1 + 2 * 13 + 2
    assert ops[0].tokens_out == 197 and all(o.hw == 197 for o in ops[1:])
    assert {o.cin for o in ops[1:-1]} == {192} and ops[1].norm == "pre" and ops[1].fused
    # AutoFormer-Tiny is ~5.7 M parameters and ~1.3 G MACs
    assert 5.0e6 < s.params_count(arch) < 6.5e6 and 1.0e9 < s.macs(arch) < 1.5e9
    assert len(s.vocabulary) == 3 * (3 + 2 + 2)


def test_bert_structure_and_sequence_parameter() -> None:
    s = get_space("bert")
    assert s.params["seq"] == 128 and s.input_shape == (1, 128)
    ch = s.choices
    assert ch["layers"] == tuple(range(4, 13)) and ch["hidden"] == (256, 384, 512, 768) and ch["h01"] == (4, 8, 12)
    assert min(ch["f01"]) == 512 and max(ch["f12"]) == 3072
    arch = s.arch({**{d: o[-1] for d, o in ch.items()}})  # BERT-base-like: 12 x 768, 12 heads, 3072
    ops = s.ops_of(arch)
    assert ops[0].type == "token_embed" and ops[-1].type == "cls_head" and len(ops) == 2 + 2 * 12
    assert ops[1].norm == "post" and ops[1].qkv_dim == 768 and ops[2].hidden == 3072
    assert 100e6 < s.params_count(arch) < 115e6  # BERT-base: 110 M
    long = get_space("bert", seq=512)
    assert long.ops_of(long.from_indices(s.to_indices(arch)))[1].hw == 512
    with pytest.raises(ArchError):
        get_space("bert", seq=0)
    with pytest.raises(ArchError, match="multiple of the patch"):
        get_space("autoformer", resolution=225)


@pytest.mark.parametrize("name", ["autoformer", "bert"])
def test_arch_json_sampling_mutation(name: str, tmp_path) -> None:
    s = get_space(name)
    assert s.sample(3) == s.sample(3) and s.sample(3) != s.sample(4)
    a = s.sample(0)
    assert space_of(json.loads(json.dumps(a))).params == s.params
    child = s.mutate(a, 1, prob=0.5)
    s.validate(child)
    assert child != a
    bad = {**a, "choices": {**a["choices"], "h01": 5}}
    with pytest.raises(ArchError, match="illegal choice"):
        s.validate(bad)
    save_archs([a, child], tmp_path / "a.jsonl")
    assert load_archs(str(tmp_path / "a.jsonl")) == [a, child]


@pytest.mark.parametrize("name", ["autoformer", "bert"])
def test_depth_drops_the_later_layers_choices(name: str) -> None:
    s = get_space(name)
    a = s.sample(0)
    depth = s.DEPTH_DECISION
    last = f"{s.HEAD_PREFIX}{s.max_depth:02d}"
    shallow = s.arch({**a["choices"], depth: min(s.DEPTHS)})
    other = s.arch({**shallow["choices"], last: next(h for h in s.HEADS if h != shallow["choices"][last])})
    assert [o.key for o in s.ops_of(shallow)] == [o.key for o in s.ops_of(other)]


@pytest.mark.parametrize("name", ["autoformer", "bert"])
def test_onnx_export_runs_under_onnxruntime(name: str, tmp_path) -> None:
    _check_exports(name, SMALL[name], 3, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["autoformer", "bert"])
def test_onnx_export_of_20_full_size_archs(name: str, tmp_path) -> None:
    _check_exports(name, {"vocab": 1000} if name == "bert" else {}, 20, tmp_path)


def _check_exports(name: str, params: dict, n: int, tmp_path) -> None:
    import onnxruntime as ort

    s = get_space(name, **params)
    rng = np.random.default_rng(11)
    for i in range(n):
        arch = s.sample(rng)
        path = export_arch(arch, tmp_path / f"{i}.onnx")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(WEIGHT_SEED)
            net = s.build(arch)
        x = torch.randn(*s.input_shape, generator=torch.Generator().manual_seed(0))
        if name == "bert":
            x = torch.randint(0, s.params["vocab"], s.input_shape, generator=torch.Generator().manual_seed(0)).float()
        with torch.inference_mode():
            ref = net(x).numpy()
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = sess.run(None, {"input": x.numpy()})[0]
        assert out.shape == (1, s.params["num_classes"])
        np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", ["autoformer", pytest.param("bert", marks=pytest.mark.slow)])
def test_torch_cpu_table_lut_and_glue(name: str, tmp_path) -> None:
    """A real torch-cpu table of a small variant: every op timed, LUT sums, the glue fit on measured networks."""
    from latbench.measure.networks import measure_archs

    s = get_space(name, **SMALL[name])
    be = get_backend("torch-cpu", threads=1)
    table, measured = build_table(
        be, s.vocabulary, tmp_path / "t.json", space=s.name, space_params=s.params, config=QUICK
    )
    assert len(measured) == len(s.vocabulary) and all(table.rows[o.key]["median_ms"] > 0 for o in s.vocabulary)
    model = TableLatency(table)
    archs = [s.sample(i) for i in range(4)]
    ms, _ = measure_archs(be, archs, QUICK, None, progress=False)
    fit = fit_glue_on(model, archs, [m.median for m in ms])
    assert fit["archs"] == 4 and fit["scale"] > 0
    assert np.all(np.asarray(model.predict_archs(archs)) > 0)


class TestAutoformerLUT(LatencyModelContract):
    """The LUT model over an autoformer table passes the latency-model contract (consistency of its paths)."""

    space_name = "autoformer"
    space_params = SMALL["autoformer"]

    @pytest.fixture
    def model(self, tmp_path) -> TableLatency:
        s = get_space(self.space_name, **self.space_params)
        table, _ = build_table(get_backend("fake"), s.vocabulary, tmp_path / "f.json", space=s.name)
        return TableLatency(table)

    def test_op_predictions_are_positive_ms_and_zero_is_free(self, model, space) -> None:
        pred = np.asarray(model.predict_ops(space.vocabulary))
        assert np.all(pred > 0)


class TestBertLUT(TestAutoformerLUT):
    space_name = "bert"
    space_params = SMALL["bert"]
