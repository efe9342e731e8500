"""ONNX Runtime backends: contract, recorded settings, IO binding, int8 QDQ, whole models, bad input."""

from __future__ import annotations

import gc
import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from latbench.backends import get_backend
from latbench.backends.ort import (
    CalibrationReader,
    check_onnx_file,
    empty_model_path,
    model_inputs,
    quantize_int8,
)
from latbench.backends.torch_cpu import available_cores
from latbench.cli import main
from latbench.errors import BackendUnavailable, UnsupportedOp
from latbench.export import export_onnx
from latbench.measure.harness import TimingConfig
from latbench.ops import OpSpec
from latbench.spaces import get_space
from latbench.table import LatencyTable
from latbench.testing.contracts import BackendContract

QUICK = TimingConfig(warmup_s=0.0, min_warmup_calls=1, min_run_time_s=0.02, min_runs=8, rounds=2, max_retries=0)


@pytest.fixture(autouse=True)
def _home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    # one ONNX cache for the whole module keeps exports to one per op
    home = tmp_path_factory.getbasetemp() / "ort-home"
    monkeypatch.setenv("LATBENCH_HOME", str(home))
    return home


class TestORTCPU(BackendContract):
    backend_name = "ort-cpu"
    settings = {"threads": 1}


class TestORTMobile(BackendContract):
    backend_name = "ort-mobile"
    settings = {}


class TestORTMobileInt8(BackendContract):
    backend_name = "ort-mobile"
    settings = {"precision": "int8", "calibration_samples": 2}


# ------------------------------------------------------------------ settings + fingerprint
def test_fingerprint_names_the_ort_settings() -> None:
    b = get_backend("ort-cpu", threads=1, graph_optimization="extended")
    fp = b.fingerprint().to_dict()
    s = fp["settings"]
    assert s["provider"] == "CPUExecutionProvider"
    assert s["onnxruntime"] == fp["versions"]["onnxruntime"]
    assert s["threads"] == 1 and s["execution_mode"] == "sequential" and s["graph_optimization"] == "extended"
    assert s["timed_call"] == "run_with_iobinding" and s["exporter"].startswith("torch.onnx.export")
    assert "calibration" not in s  # int8-only settings are not recorded for fp32
    other = get_backend("ort-cpu", threads=1, graph_optimization="all").fingerprint()
    assert other.id != b.fingerprint().id
    so = b.session_options()
    assert so.intra_op_num_threads == 1 and so.inter_op_num_threads == 1


def test_mobile_pins_threads_to_cores_and_restores_affinity() -> None:
    before = available_cores()
    b = get_backend("ort-mobile", threads=1)
    assert b.settings["cores"] == before[:1]
    assert available_cores() == before[:1]
    assert b.fingerprint().to_dict()["settings"]["cores"] == before[:1]
    del b
    gc.collect()
    assert available_cores() == before


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"threads": 5}, "1 to 4 intra-op threads"),
        ({"threads": 1, "cores": [4096]}, r"cores \[4096\] do not exist"),
        ({"precision": "fp16"}, "precision must be one of"),
        ({"graph_optimization": "max"}, "graph_optimization must be one of"),
        ({"calibration": "x.npz"}, "only applies with precision=int8"),
        ({"nonsense": 1}, "has no setting"),
    ],
)
def test_bad_settings_are_one_clear_line(settings: dict, match: str) -> None:
    with pytest.raises(BackendUnavailable, match=match) as exc:
        get_backend("ort-mobile", **settings)
    assert "\n" not in str(exc.value)


def test_mobile_refuses_more_threads_than_cores() -> None:
    n = len(available_cores())
    if n >= 4:
        pytest.skip("this machine has 4+ cores")
    with pytest.raises(BackendUnavailable, match=f"needs {n + 1} cores"):
        get_backend("ort-mobile", threads=n + 1)


# ------------------------------------------------------------------ timing
def test_empty_graph_is_much_cheaper_than_an_op() -> None:
    b = get_backend("ort-cpu", threads=1)
    empty = b.measure(str(empty_model_path()), QUICK)
    op = b.measure(OpSpec("mbconv", 14, 32, 32, kernel=3, expand=6, act="relu6"), QUICK)
    assert 0 < empty.median < 0.05  # a session call costs microseconds, not milliseconds
    assert op.median > 5 * empty.median


def test_io_binding_and_plain_run_time_the_same_model() -> None:
    op = OpSpec("conv", 28, 32, 64, kernel=1, act="relu")
    bound = get_backend("ort-cpu", threads=1).measure(op, QUICK)
    plain = get_backend("ort-cpu", threads=1, io_binding=False).measure(op, QUICK)
    assert bound.n >= 8 and plain.n >= 8
    # same kernels: within a factor 3 of each other even on a busy machine
    assert 1 / 3 < plain.median / bound.median < 3


def test_arch_runs_on_ort_and_is_slower_than_its_stem() -> None:
    space = get_space("proxyless-mobile", resolution=64)
    arch = space.sample(0)
    b = get_backend("ort-cpu", threads=1)
    whole = b.measure(arch, QUICK)
    stem = b.measure(space.ops_of(arch)[0], QUICK)
    assert whole.median > 3 * stem.median


def test_unsupported_ops_and_files() -> None:
    b = get_backend("ort-cpu", threads=1)
    half = OpSpec("conv", 8, 8, 8, dtype="float16")
    assert "float32" in b.why_unsupported(half)
    with pytest.raises(UnsupportedOp):
        b.runner(half)
    with pytest.raises(UnsupportedOp, match="not found"):
        b.runner("/nonexistent/model.onnx")
    with pytest.raises(UnsupportedOp):
        b.runner(3.5)  # type: ignore[arg-type]


def test_not_onnx_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x00\x01 definitely not a protobuf \xff" * 20)
    with pytest.raises(UnsupportedOp, match="not an ONNX model"):
        check_onnx_file(bad)
    with pytest.raises(UnsupportedOp, match="folder"):
        check_onnx_file(tmp_path)


# ------------------------------------------------------------------ int8
def test_int8_model_is_qdq_and_cached(tmp_path: Path) -> None:
    op = OpSpec("mbconv", 14, 32, 32, kernel=3, expand=3, act="relu6")
    src = export_onnx(op, None)
    q, source = quantize_int8(src, samples=2, cache_dir=tmp_path)
    ops = Counter(n.op_type for n in onnx.load(str(q)).graph.node)
    assert ops["QuantizeLinear"] >= 3 and ops["DequantizeLinear"] >= 6 and ops["Conv"] == 3
    assert source == "random-normal"
    meta = {p.key: p.value for p in onnx.load(str(q)).metadata_props}
    assert meta["latbench.precision"] == "int8-qdq"
    mtime = q.stat().st_mtime_ns
    q2, _ = quantize_int8(src, samples=2, cache_dir=tmp_path)
    assert q2 == q and q.stat().st_mtime_ns == mtime


def test_int8_backend_records_quantization_settings() -> None:
    b = get_backend("ort-mobile", precision="int8", calibration_samples=2)
    s = b.fingerprint().to_dict()["settings"]
    assert s["precision"] == "int8" and s["activation_type"] == "uint8" and s["weight_type"] == "int8"
    assert b.fingerprint().id != get_backend("ort-mobile").fingerprint().id
    m = b.measure(OpSpec("conv", 14, 32, 64, kernel=1, act="relu"), QUICK)
    assert m.median > 0


def test_calibration_reader_uses_user_data_when_it_fits(tmp_path: Path) -> None:
    inputs = {"input": ((1, 3, 8, 8), np.float32)}
    data = np.arange(4 * 3 * 8 * 8, dtype=np.float32).reshape(4, 3, 8, 8)
    np.save(tmp_path / "cal.npy", data)
    r = CalibrationReader(inputs, samples=3, data=tmp_path / "cal.npy")
    assert r.source == "file:cal.npy"
    batches = []
    while (b := r.get_next()) is not None:
        batches.append(b["input"])
    assert len(batches) == 3 and np.array_equal(batches[1][0], data[1])
    r.rewind()
    assert np.array_equal(r.get_next()["input"], data[:1])
    # data of another shape: random normal, and it says so
    other = CalibrationReader({"input": ((1, 16, 4, 4), np.float32)}, samples=2, data=tmp_path / "cal.npy")
    assert other.source == "random-normal" and len(other.batches) == 2


def test_int8_onnx_file_with_user_calibration(tmp_path: Path) -> None:
    op = OpSpec("conv", 16, 3, 16, kernel=3, stride=2, act="relu")
    model = export_onnx(op, tmp_path / "stem.onnx")
    np.savez(tmp_path / "cal.npz", input=np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32))
    b = get_backend("ort-cpu", threads=1, precision="int8", calibration=str(tmp_path / "cal.npz"))
    path = b.model_path(str(model))
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["latbench.calibration"] == "file:cal.npz"
    assert "cal.npz:sha256:" in b.fingerprint().to_dict()["settings"]["calibration"]
    sess = b.session(path)
    assert model_inputs(sess) == {"input": ((1, 3, 16, 16), np.float32)}


# ------------------------------------------------------------------ CLI
def test_cli_measure_onnx_and_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = export_onnx(OpSpec("mbconv", 14, 16, 16, kernel=3, expand=3, act="relu6"), tmp_path / "m.onnx")
    rc = main(["measure", "--device", "ort-cpu", "--onnx", str(model), "--min-time", "0.05", "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["fingerprint"].startswith("ort-cpu-") and doc["results"][0]["median_ms"] > 0
    bad = tmp_path / "bad.onnx"
    bad.write_text("not onnx at all")
    rc = main(["measure", "--device", "ort-cpu", "--onnx", str(bad)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("latbench: error:") and "not an ONNX model" in err and "\n" not in err


def test_cli_measure_arch_on_mobile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = get_space("proxyless-mobile", resolution=64)
    (tmp_path / "a.json").write_text(json.dumps(space.sample(1)))
    rc = main(["measure", "--device", "mobile-1t", "--arch", str(tmp_path / "a.json"), "--min-time", "0.05", "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["device"] == "mobile-1t" and doc["fingerprint"].startswith("ort-mobile-")
    assert doc["results"][0]["median_ms"] > 0


def test_cli_cores_that_do_not_exist(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["profile", "ort-mobile", "--cores", "4096", "--name", "x"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "do not exist" in err and "\n" not in err


def test_shipped_profiles_are_templates() -> None:
    from latbench.device import load_profile

    shipped = (("mobile-1t", 1, "fp32"), ("mobile-4t-int8", 4, "int8"), ("mobile-1t-int8", 1, "int8"))
    for name, threads, precision in shipped:
        p = load_profile(name)
        assert p.backend == "ort-mobile" and p.fingerprint is None
        assert p.settings["threads"] == threads and p.settings["precision"] == precision


@pytest.mark.slow
def test_table_build_mobile_1t_proxyless(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.json"
    rc = main(["table", "build", "--device", "mobile-1t", "--space", "proxyless-mobile", "--out", str(out), "--json"])
    assert rc == 0, capsys.readouterr().err
    t = LatencyTable.load(out)
    assert len(t) == len(get_space("proxyless-mobile").vocabulary) == 70
    s = t.fingerprint["settings"]
    assert t.fingerprint["backend"] == "ort-mobile" and s["provider"] == "CPUExecutionProvider"
    assert s["threads"] == 1 and s["precision"] == "fp32" and s["graph_optimization"] == "all"
    assert all(r["median_ms"] > 0 for r in t.rows.values())
