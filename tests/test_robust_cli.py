"""Bad input at the CLI surface, command by command: one line ``latbench: error: ...``, exit 2, refused before any
work, and every file already on disk byte-identical afterwards."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latbench.cli import main

from .conftest import PIXEL1_YAML, REPO

PREDICTOR = str(REPO / "predictors" / "pixel1" / "proxyless-mobile-lut.json")


def _onnx(path: Path, *, shape: list[Any], domain: str = "", op: str = "Relu", opset: int = 17) -> Path:
    """A one-node ONNX model (Relu, or a custom-domain op) with input ``shape`` (ints or symbolic names)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    node = helper.make_node(op, ["x"], ["y"], domain=domain)
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=imports)
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A LATBENCH_HOME with a fake profile ``fk``, its darts table, archs, files an output would overwrite,
    broken ONNX models and a folder nothing can be written into."""
    root = tmp_path_factory.mktemp("robust")
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LATBENCH_HOME", str(home))
        assert main(["profile", "fake", "--name", "fk", "--set", "device=dev-a"]) == 0
        assert main(["table", "build", "--device", "fk", "--space", "darts"]) == 0
        assert main(["space", "sample", "proxyless-mobile", "--n", "2", "--out", str(root / "a.jsonl")]) == 0
        existing = root / "existing.json"
        existing.write_text('{"keep": true}\n')
        blocker = root / "a-file"
        blocker.write_text("not a folder\n")
        w = {
            "root": root,
            "home": home,
            "table": str(home / "tables" / "fk" / "darts.json"),
            "archs": str(root / "a.jsonl"),
            "existing": str(existing),
            # root ignores permission bits, so "unwritable" is a folder under a regular file: no one can create it
            "unwritable": str(blocker / "out"),
            "empty_onnx": str(root / "empty.onnx"),
            "dynamic_onnx": str(_onnx(root / "dynamic.onnx", shape=["N", 3, 8, 8])),
            "batch0_onnx": str(_onnx(root / "batch0.onnx", shape=[0, 3, 8, 8])),
            "custom_onnx": str(_onnx(root / "custom.onnx", shape=[1, 3, 8, 8], domain="com.example", op="MyOp")),
            "opset99_onnx": str(_onnx(root / "opset99.onnx", shape=[1, 3, 8, 8], opset=99)),
        }
        (root / "empty.onnx").write_bytes(b"")
        yield w


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


#: id -> argv (``{key}`` is filled from the world) and optional environment; every one must be refused
BAD: dict[str, tuple[list[str], dict[str, str]]] = {
    # --- devices / profile
    "devices-unknown-option": (["devices", "--bogus"], {}),
    "profile-name-traversal": (["profile", "fake", "--name", "../../x"], {}),
    "profile-name-absolute": (["profile", "fake", "--name", "/tmp/x"], {}),
    "profile-name-empty": (["profile", "fake", "--name", ""], {}),
    "profile-exists-no-force": (["profile", "fake", "--name", "fk", "--set", "device=dev-a"], {}),
    "profile-threads-1000": (["profile", "torch-cpu", "--threads", "1000", "--name", "t"], {}),
    "profile-threads-0": (["profile", "torch-cpu", "--threads", "0", "--name", "t"], {}),
    "profile-cores-reversed": (["profile", "torch-cpu", "--cores", "3-0", "--name", "t"], {}),
    "profile-cores-missing": (["profile", "torch-cpu", "--cores", "0,999", "--name", "t"], {}),
    "profile-cores-negative": (["profile", "torch-cpu", "--cores", "-1", "--name", "t"], {}),
    "profile-cores-garbage": (["profile", "torch-cpu", "--cores", "zero", "--name", "t"], {}),
    "profile-set-threads-1000": (["profile", "ort-cpu", "--set", "threads=1000", "--name", "t"], {}),
    "profile-set-batch-0": (["profile", "ort-cpu", "--set", "batch=0", "--name", "t"], {}),
    "profile-negative-speed": (["profile", "fake", "--set", "speed=-1", "--name", "t"], {}),
    "profile-nan-noise": (["profile", "fake", "--set", "noise=NaN", "--name", "t"], {}),
    "profile-unwritable-home": (["profile", "fake", "--name", "t"], {"LATBENCH_HOME": "{unwritable}"}),
    # --- space
    "sample-n-negative": (["space", "sample", "darts", "--n", "-5"], {}),
    "sample-n-zero": (["space", "sample", "darts", "--n", "0"], {}),
    "sample-n-text": (["space", "sample", "darts", "--n", "ten"], {}),
    "sample-seed-negative": (["space", "sample", "darts", "--seed", "-1"], {}),
    "sample-width-nan": (["space", "sample", "proxyless-mobile", "--width", "nan"], {}),
    "sample-width-negative": (["space", "sample", "proxyless-mobile", "--width", "-1"], {}),
    "sample-resolution-zero": (["space", "sample", "proxyless-mobile", "--resolution", "0"], {}),
    "sample-out-exists": (["space", "sample", "darts", "--out", "{existing}"], {}),
    "sample-unknown-space": (["space", "sample", "nasnet"], {}),
    # --- table
    "build-missing-device": (["table", "build"], {}),
    "build-min-time-nan": (["table", "build", "--device", "fk", "--out", "{root}/n.json", "--min-time", "nan"], {}),
    "build-min-time-inf": (["table", "build", "--device", "fk", "--out", "{root}/n.json", "--min-time", "inf"], {}),
    "build-min-time-neg": (["table", "build", "--device", "fk", "--out", "{root}/n.json", "--min-time", "-1"], {}),
    "build-min-time-zero": (["table", "build", "--device", "fk", "--out", "{root}/n.json", "--min-time", "0"], {}),
    "build-sample-zero": (["table", "build", "--device", "fk", "--sample", "0", "--out", "{root}/n.json"], {}),
    "build-exists-no-resume": (["table", "build", "--device", "fk", "--space", "darts"], {}),
    "build-unwritable-out": (
        ["table", "build", "--device", "fake", "--space", "darts", "--out", "{unwritable}/t.json"],
        {},
    ),
    "build-unwritable-home": (
        ["table", "build", "--device", "fake", "--space", "darts"],
        {"LATBENCH_HOME": "{unwritable}"},
    ),
    "build-out-is-a-folder": (["table", "build", "--device", "fake", "--space", "darts", "--out", "{root}"], {}),
    "show-missing": (["table", "show", "{root}/nope.json"], {}),
    "export-csv-exists": (["table", "export", "{table}", "--csv", "{existing}"], {}),
    "export-missing-csv": (["table", "export", "{table}"], {}),
    "import-bad-format": (["table", "import", str(PIXEL1_YAML), "--format", "tflite", "--out", "{root}/i.json"], {}),
    "import-out-exists": (["table", "import", str(PIXEL1_YAML), "--format", "proxyless", "--out", "{existing}"], {}),
    "merge-missing-source": (["table", "merge", "{table}", "{root}/nope.json"], {}),
    # --- measure / lut-sum / lut-check
    "measure-min-time-nan": (["measure", "--device", "fk", "--arch", "{archs}", "--min-time", "nan"], {}),
    "measure-out-exists": (["measure", "--device", "fk", "--arch", "{archs}", "--out", "{existing}"], {}),
    "measure-neither": (["measure", "--device", "fk"], {}),
    "measure-unknown-device": (["measure", "--device", "pixel99", "--arch", "{archs}"], {}),
    "measure-unwritable-out": (["measure", "--device", "fk", "--arch", "{archs}", "--out", "{unwritable}/m.json"], {}),
    "lut-sum-missing-arch": (["lut-sum", "--table", "{table}", "--arch", "{root}/nope.jsonl"], {}),
    "lut-check-n-archs-zero": (["lut-check", "--device", "fk", "--space", "darts", "--n-archs", "0"], {}),
    "lut-check-min-time-inf": (["lut-check", "--device", "fk", "--space", "darts", "--min-time", "inf"], {}),
    "lut-check-out-exists": (["lut-check", "--device", "fk", "--space", "darts", "--out", "{existing}"], {}),
    # --- calibrate
    "calibrate-shots-zero": (["calibrate", "--table", "{table}", "--reference", str(PIXEL1_YAML), "--shots", "0"], {}),
    "calibrate-shots-neg": (["calibrate", "--table", "{table}", "--reference", str(PIXEL1_YAML), "--shots", "-3"], {}),
    "calibrate-n-archs-neg": (
        ["calibrate", "--table", "{table}", "--reference", str(PIXEL1_YAML), "--n-archs", "-1"],
        {},
    ),
    "calibrate-name-traversal": (
        ["calibrate", "--table", "{table}", "--reference", str(PIXEL1_YAML), "--name", "../x"],
        {},
    ),
    "calibrate-bad-stat": (["calibrate", "--table", "{table}", "--reference", str(PIXEL1_YAML), "--stat", "p99"], {}),
    "calibrate-bad-model": (["calibrate", "--table", "{table}", "--reference", str(PIXEL1_YAML), "--model", "x"], {}),
    "calibrate-write-table-exists": (
        ["calibrate", "--table", "{table}", "--reference", str(PIXEL1_YAML), "--write-table", "{existing}"],
        {},
    ),
    # --- predict (ONNX models a predictor cannot price)
    "predict-onnx-empty": (["predict", "--predictor", PREDICTOR, "--onnx", "{empty_onnx}"], {}),
    "predict-onnx-dynamic": (["predict", "--predictor", PREDICTOR, "--onnx", "{dynamic_onnx}"], {}),
    "predict-onnx-batch-0": (["predict", "--predictor", PREDICTOR, "--onnx", "{batch0_onnx}"], {}),
    "predict-onnx-custom-op": (["predict", "--predictor", PREDICTOR, "--onnx", "{custom_onnx}"], {}),
    "predict-onnx-opset-99": (["predict", "--predictor", PREDICTOR, "--onnx", "{opset99_onnx}"], {}),
    "predict-neither": (["predict", "--predictor", PREDICTOR], {}),
    "predict-missing-predictor": (["predict", "--predictor", "{root}/nope.json", "--arch", "{archs}"], {}),
    # --- predictor
    "train-cv-folds-zero": (["predictor", "train", "--table", "{table}", "--model", "lut", "--cv-folds", "0"], {}),
    "train-cv-folds-one": (["predictor", "train", "--table", "{table}", "--model", "lut", "--cv-folds", "1"], {}),
    "train-calib-archs-neg": (["predictor", "train", "--table", "{table}", "--calib-archs", "-2"], {}),
    "train-unknown-model": (["predictor", "train", "--table", "{table}", "--model", "transformer"], {}),
    "train-out-exists": (["predictor", "train", "--table", "{table}", "--model", "lut", "--out", "{existing}"], {}),
    "eval-missing-device": (["predictor", "eval", PREDICTOR, "--arch", "{archs}"], {}),
    "eval-calib-archs-neg": (
        ["predictor", "eval", PREDICTOR, "--arch", "{archs}", "--device", "fk", "--calib-archs", "-1"],
        {},
    ),
    "eval-out-exists": (
        ["predictor", "eval", PREDICTOR, "--arch", "{archs}", "--device", "fk", "--out", "{existing}"],
        {},
    ),
    # --- demo, farm, search (usage level)
    "demo-device-traversal": (["demo", "--device", "../../etc/x"], {}),
    "demo-seed-negative": (["demo", "--seed", "-1"], {}),
    "demo-unwritable-home": (["demo"], {"LATBENCH_HOME": "{unwritable}"}),
    "farm-join-num-cpus-neg": (["farm", "join", "--device", "fk", "--address", "x:1", "--num-cpus", "-1"], {}),
    "farm-status-unknown-option": (["farm", "status", "--bogus"], {}),
    "mnas-trials-text": (["search", "mnas", "--trials", "many"], {}),
    "proxyless-epochs-float": (["search", "proxyless", "--epochs", "1.5"], {}),
}


def _esc(text: str) -> str:
    """Arbitrary text as a literal for :func:`_fill`."""
    return text.replace("{", "{{").replace("}", "}}")


def _fill(text: str, world: dict[str, Any]) -> str:
    return text.format(**{k: str(v) for k, v in world.items()})


def _refused(world: dict[str, Any], argv: list[str], env: dict[str, str], capsys: Any, mp: Any) -> str:
    """Run ``argv`` in process; assert the clean refusal; return the error line."""
    for k, v in env.items():
        mp.setenv(k, _fill(v, world))
    before = _snapshot(world["root"])
    code = main([_fill(a, world) for a in argv])
    cap = capsys.readouterr()
    assert code == 2, (code, cap.out, cap.err)
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("latbench: error: "), cap.err
    assert "Traceback" not in cap.err
    assert _snapshot(world["root"]) == before, "a refused command changed files on disk"
    return lines[0]


@pytest.mark.parametrize("case", list(BAD))
def test_bad_invocation_is_refused_cleanly(
    case: str, world: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LATBENCH_HOME", str(world["home"]))
    argv, env = BAD[case]
    _refused(world, argv, env, capsys, monkeypatch)


def test_the_refusals_say_what_is_wrong(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sample of the lines: each names the option or file and the fix."""
    monkeypatch.setenv("LATBENCH_HOME", str(world["home"]))
    expect = {
        "profile-threads-1000": "use 1 to",
        "profile-cores-reversed": "first core is the lower",
        "profile-cores-missing": "do not exist on this machine",
        "profile-exists-no-force": "pass --force",
        "build-min-time-nan": "'--min-time': nan",
        "train-cv-folds-zero": "'--cv-folds'",
        "calibrate-shots-zero": "--shots must be at least 1",
        "predict-onnx-empty": "empty",
        "predict-onnx-dynamic": "no fixed shape",
        "predict-onnx-batch-0": "batch 0",
        "predict-onnx-custom-op": "com.example:MyOp",
        "predict-onnx-opset-99": "opset 99",
        "profile-unwritable-home": "cannot write into",
        "sample-out-exists": "pass --force",
    }
    for case, words in expect.items():
        argv, env = BAD[case]
        with pytest.MonkeyPatch.context() as mp:
            assert words in _refused(world, argv, env, capsys, mp), case


def test_force_overwrites_what_it_names(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The other side of the policy: --force is the way to replace an output."""
    target = tmp_path / "archs.jsonl"
    target.write_text("old\n")
    assert main(["space", "sample", "darts", "--n", "2", "--out", str(target), "--force"]) == 0
    assert len(target.read_text().splitlines()) == 2
    csv = tmp_path / "t.csv"
    csv.write_text("old\n")
    assert main(["table", "export", world["table"], "--csv", str(csv), "--force", "--json"]) == 0
    assert csv.read_text().startswith("key") or csv.read_text().count("\n") > 2
    capsys.readouterr()


# ----------------------------------------------------------------------------- arbitrary text
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_TEXT)
def test_any_min_time_text_is_refused_or_reaches_the_next_check(
    value: str, world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Whatever the text, ``--min-time`` never crashes: a bad value is a usage error, a good one goes on to the
    missing arch file, which is refused too (before any timing)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LATBENCH_HOME", str(world["home"]))
        argv = ["measure", "--device", "fk", "--arch", "{root}/nope.jsonl", f"--min-time={_esc(value)}"]
        _refused(world, argv, {}, capsys, mp)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_TEXT)
def test_any_count_text_is_refused_or_reaches_the_next_check(
    value: str, world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LATBENCH_HOME", str(world["home"]))
        argv = ["lut-check", "--device", "nope", f"--n-archs={_esc(value)}", f"--seed={_esc(value)}"]
        _refused(world, argv, {}, capsys, mp)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_TEXT)
def test_any_profile_name_is_checked_before_profiling(
    name: str, world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad name is refused; a good one reaches the thread check (1000 threads on this machine), refused too:
    either way nothing is profiled and nothing is written outside devices/<name>.toml."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LATBENCH_HOME", str(world["home"]))
        threads = str((os.cpu_count() or 1) + 1000)
        _refused(world, ["profile", "torch-cpu", f"--name={_esc(name)}", "--threads", threads], {}, capsys, mp)
