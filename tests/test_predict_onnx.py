"""Splitting ONNX graphs into kernels; `predict --onnx` agrees with `predict --arch`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from latbench.errors import LatbenchError
from latbench.export import export_arch, export_onnx
from latbench.ops import OpSpec
from latbench.predict.io import save_predictor
from latbench.predict.onnx_graph import predict_onnx, split_onnx
from latbench.predict.sampling import sample_ops
from latbench.predict.training import train_predictor
from latbench.spaces import get_space

from .conftest import run_cli
from .test_predict_models import fake_table


@pytest.mark.parametrize(
    ("space", "params", "n"),
    [
        ("proxyless-mobile", {}, 1),
        ("ofa-mbv3", {}, 1),
        pytest.param("proxyless-mobile", {"resolution": 192, "width": 1.4}, 3, marks=pytest.mark.slow),
        pytest.param("ofa-mbv3", {"resolution": 160, "width": 1.0}, 5, marks=pytest.mark.slow),
    ],
)
def test_exported_archs_split_into_their_ops(home: Path, tmp_path: Path, space: str, params: dict, n: int) -> None:
    s = get_space(space, **params)
    for i in range(n):
        arch = s.sample(100 + i)
        split = split_onnx(export_arch(arch, tmp_path / f"{i}.onnx"))
        assert [o.key for o in split.ops] == [o.key for o in s.ops_of(arch)]
        assert split.unknown == {} and split.elementwise == []
        assert all(k.note == "" for k in split.kernels)


def test_ofa_kernels_fuse_se_residual_and_activations(home: Path, tmp_path: Path) -> None:
    s = get_space("ofa-mbv3")
    arch = s.sample(3)
    split = split_onnx(export_arch(arch, tmp_path / "ofa.onnx"))
    se_blocks = [k for k in split.kernels if k.spec is not None and k.spec.se]
    assert se_blocks, "stages 2, 4 and 5 have SE"
    for k in se_blocks:
        types = Counter(k.op_types)
        assert types["ReduceMean"] == 1 and types["HardSigmoid"] == 1 and types["Mul"] == 1
    residual = [k for k in split.kernels if k.spec is not None and k.spec.residual]
    assert residual and all(k.op_types[-1] == "Add" for k in residual)
    stem = split.kernels[next(i for i, k in enumerate(split.kernels) if k.kind != "free")]
    assert stem.op_types == ["Conv", "HardSwish"] and stem.spec.act == "hswish" and stem.spec.stride == 2


def test_darts_cell_kernels(home: Path, tmp_path: Path) -> None:
    s = get_space("darts")
    arch = s.sample(0)
    split = split_onnx(export_arch(arch, tmp_path / "darts.onnx"))
    want = Counter(o.key for o in s.ops_of(arch) if o.type in ("sep_conv", "dil_conv", "conv", "classifier"))
    got = Counter(o.key for o in split.ops if o.type in ("sep_conv", "dil_conv", "conv", "classifier"))
    assert got == want
    assert {k.op_types[0] for k in split.elementwise} <= {"Add", "Concat"} and split.unknown == {}


def test_depthwise_pool_gemm_and_unknown_nodes_are_listed(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, shape, rng.standard_normal(shape).astype(np.float32).ravel())

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=16),
        helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["p1", "p1"], ["a1"]),
        helper.make_node("LRN", ["a1"], ["l1"], size=3),
        helper.make_node("GlobalAveragePool", ["l1"], ["gp"]),
        helper.make_node("Flatten", ["gp"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [
            init("w1", 16, 1, 3, 3),
            init("g", 16),
            init("b", 16),
            init("m", 16),
            init("v", 16),
            init("wf", 10, 16),
            init("bf", 10),
        ],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    split = split_onnx(path)
    kinds = [(k.kind, k.op_types) for k in split.kernels if k.kind != "free"]
    assert kinds[0] == ("conv", ["Conv", "BatchNormalization", "Relu"])
    assert split.ops[0] == OpSpec("conv", 32, 16, 16, kernel=3, groups=16, act="relu")
    assert split.ops[1] == OpSpec("max_pool", 32, 16, 16, kernel=3, stride=2, act="none")
    assert split.ops[2] == OpSpec("classifier", 16, 16, 10, act="none")  # pool + flatten + gemm
    assert split.unknown == {"LRN": 1}
    assert [k.op_types for k in split.elementwise] == [["Add"]]


def test_not_onnx_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.onnx"
    bad.write_text("hello")
    with pytest.raises(LatbenchError, match="not a readable ONNX model"):
        split_onnx(bad)
    with pytest.raises(LatbenchError, match="not found"):
        split_onnx(tmp_path / "missing.onnx")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("onnxpred")
    s = get_space("proxyless-mobile")
    tables = [fake_table(tmp, s.vocabulary, "px", "proxyless-mobile"), fake_table(tmp, sample_ops(200, seed=4), "s")]
    m = train_predictor("random-forest", tables, cv_folds=2)
    m.calibration = type(m.calibration)(1.05, 0.3)
    return save_predictor(m, tmp / "p.json")


@pytest.mark.parametrize("n", [2, pytest.param(20, marks=pytest.mark.slow)])
def test_predict_onnx_agrees_with_predict_arch(home: Path, tmp_path: Path, capsys, trained: Path, n: int) -> None:
    """Acceptance: on the exported ONNX of 20 random archs, `predict --onnx` agrees with `predict --arch` within 2%."""
    s = get_space("proxyless-mobile")
    for i in range(n):
        arch = s.sample(200 + i)
        (tmp_path / "a.json").write_text(json.dumps(arch))
        onnx_path = export_arch(arch, tmp_path / f"a{i}.onnx")
        code, out, err = run_cli(capsys, "predict", "--predictor", trained, "--onnx", onnx_path, "--json")
        assert code == 0, err
        by_onnx = json.loads(out)
        code, out, err = run_cli(capsys, "predict", "--predictor", trained, "--arch", tmp_path / "a.json", "--json")
        by_arch = json.loads(out)["results"][0]
        assert by_onnx["predicted_ms"] == pytest.approx(by_arch["predicted_ms"], rel=0.02)
        assert by_onnx["predicted_ms"] == pytest.approx(by_arch["predicted_ms"], rel=1e-9)  # same kernels
        assert len(by_onnx["kernels"]) == len(by_arch["ops"]) and by_onnx["unknown_node_types"] == {}


def test_predict_onnx_prices_an_op_export_and_lists_breakdown(
    home: Path, tmp_path: Path, capsys, trained: Path
) -> None:
    from latbench.predict.io import load_predictor

    op = OpSpec("mbconv", 20, 48, 64, kernel=5, stride=2, expand=4, act="hswish", se=True)
    path = export_onnx(op, tmp_path / "op.onnx")
    model = load_predictor(trained)
    res = predict_onnx(model, path)
    assert [k["op"] for k in res["kernels"]] == [op.key]
    assert res["op_sum_ms"] == pytest.approx(float(model.predict_ops([op])[0]))
    code, out, _ = run_cli(capsys, "predict", "--predictor", trained, "--onnx", path)
    assert code == 0 and op.key in out and "ms predicted" in out
