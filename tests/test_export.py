"""ONNX export: BatchNorm folded, metadata recorded, cache reused, numerics equal to torch."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from latbench.errors import LatbenchError
from latbench.export import EXPORTER, WEIGHT_SEED, default_cache_dir, export_arch, export_onnx, read_metadata
from latbench.ops import OpSpec
from latbench.spaces import get_space


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATBENCH_HOME", str(tmp_path / "home"))


def _ops(path: Path) -> Counter[str]:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_mbconv_export_folds_batchnorm_and_matches_torch(tmp_path: Path) -> None:
    op = OpSpec("mbconv", 14, 32, 32, kernel=5, expand=6, act="relu6")
    path = export_onnx(op, tmp_path / "op.onnx")
    assert path == tmp_path / "op.onnx" and path.exists()
    ops = _ops(path)
    assert "BatchNormalization" not in ops
    assert ops["Conv"] == 3 and ops["Clip"] == 2 and ops["Add"] == 1  # expand, depthwise, project + residual
    x = op.example_input()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(WEIGHT_SEED)  # exports draw their weights with this seed
        ref = op.build()(x).numpy()
    got = _ort_run(path, x.numpy())
    assert got.shape == ref.shape == (1, 32, 14, 14)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_metadata_records_exporter_and_opset(tmp_path: Path) -> None:
    op = OpSpec("conv", 32, 16, 24, kernel=3, stride=2, act="hswish")
    path = export_onnx(op, tmp_path / "c.onnx", opset=18)
    meta = read_metadata(path)
    assert meta["latbench.exporter"] == EXPORTER == "torch.onnx.export(dynamo=False)"
    assert meta["latbench.opset"] == "18"
    assert meta["latbench.workload"] == f"op:{op.key}"
    assert meta["latbench.input_shape"] == "[1, 16, 32, 32]"
    model = onnx.load(str(path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 18


def test_ops_are_cached_by_key(tmp_path: Path) -> None:
    op = OpSpec("mbconv", 7, 48, 48, kernel=3, expand=3, act="relu")
    cache = tmp_path / "cache"
    first = export_onnx(op, None, cache_dir=cache)
    assert first.parent == cache and op.key in first.name
    mtime = first.stat().st_mtime_ns
    second = export_onnx(op, tmp_path / "copy.onnx", cache_dir=cache)
    assert first.stat().st_mtime_ns == mtime  # not re-exported
    assert second.read_bytes() == first.read_bytes()
    assert len(list(cache.glob("*.onnx"))) == 1
    # another opset is another cache entry
    export_onnx(op, None, cache_dir=cache, opset=18)
    assert len(list(cache.glob("*.onnx"))) == 2


def test_default_cache_dir_follows_latbench_home(tmp_path: Path) -> None:
    assert default_cache_dir() == tmp_path / "home" / "cache" / "onnx"
    p = export_onnx(OpSpec("gap", 7, 16, 16, act="none"), None)
    assert p.parent == default_cache_dir()


def test_arch_export_runs_the_same_network(tmp_path: Path) -> None:
    space = get_space("proxyless-mobile", resolution=96)
    arch = space.sample(3)
    path = export_arch(arch, tmp_path / "net.onnx")
    ops = _ops(path)
    assert "BatchNormalization" not in ops
    n_conv = sum(
        3 if o.type == "mbconv" and o.expand != 1 else 2 if o.type == "mbconv" else 1
        for o in space.ops_of(arch)
        if o.type in ("mbconv", "conv")
    )
    assert ops["Conv"] == n_conv
    assert ops["Gemm"] == 1
    x = torch.randn(*space.input_shape)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(WEIGHT_SEED)
        ref = space.build(arch)(x).numpy()
    got = _ort_run(path, x.numpy())
    assert got.shape == ref.shape == (1, 1000)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3)


def test_module_pair_export(tmp_path: Path) -> None:
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
    x = torch.randn(2, 3, 16, 16)
    path = export_onnx((m, x), tmp_path / "m.onnx")
    assert "BatchNormalization" not in _ops(path)
    assert read_metadata(path)["latbench.input_shape"] == "[2, 3, 16, 16]"
    with torch.no_grad():
        ref = m.eval()(x).numpy()
    np.testing.assert_allclose(_ort_run(path, x.numpy()), ref, rtol=1e-4, atol=1e-4)


def test_bad_workloads_raise_one_line(tmp_path: Path) -> None:
    with pytest.raises(LatbenchError, match="zero"):
        export_onnx(OpSpec("zero", 7, 16, 16, act="none"), tmp_path / "z.onnx")
    with pytest.raises(LatbenchError, match="cannot export"):
        export_onnx("not a workload", tmp_path / "s.onnx")
    with pytest.raises(LatbenchError, match="opset"):
        export_onnx(OpSpec("gap", 7, 16, 16, act="none"), tmp_path / "g.onnx", opset=9)
    bad = tmp_path / "bad.onnx"
    bad.write_text("this is not onnx")
    with pytest.raises(LatbenchError, match="not an ONNX model"):
        read_metadata(bad)
