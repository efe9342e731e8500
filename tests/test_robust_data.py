"""Nothing lost, nothing silently wrong: concurrent table writers, validated tables / predictors / arch files /
device profiles, read-only destinations, DARTS reduction cells, and property tests over tampered files."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latbench.backends import get_backend
from latbench.device import DeviceProfile, list_profiles, load_profile
from latbench.errors import ArchError, LatbenchError, TableError
from latbench.ops import OpSpec, strict_json_loads
from latbench.predict.io import PredictorError, load_predictor
from latbench.predict.training import train_predictor
from latbench.service import set_reporter
from latbench.spaces import get_space, load_archs
from latbench.table import LatencyTable, build_table, import_published, merge_rows

from .conftest import REPO, run_cli

PIXEL1 = REPO / "tables" / "pixel1" / "proxyless-mobile.json"
NOTE10 = REPO / "tables" / "note10" / "ofa-mbv3.json"
PREDICTORS = REPO / "predictors" / "pixel1"
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
LATBENCH = [sys.executable, "-m", "latbench"]


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg, msg
    return msg


def write_json(path: Path, doc: Any) -> Path:
    """JSON as a tamperer writes it: NaN / Infinity allowed, so the reader must refuse them."""
    path.write_text(json.dumps(doc, allow_nan=True))
    return path


@contextlib.contextmanager
def hard_timeout(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the body runs longer than ``seconds``."""

    def boom(signum: int, frame: Any) -> None:
        raise TimeoutError(f"took more than {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ============================================================================ 1. concurrent writers
BUILD_PART = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from latbench.backends import get_backend
    from latbench.spaces import get_space
    from latbench.table import build_table

    out, part, gate = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    s = get_space("darts", channels=4, resolution=8)
    ops = s.vocabulary[:6] if part == 0 else s.vocabulary[3:]
    be = get_backend("torch-cpu", threads=1)
    cfg = be.timing.with_(min_run_time_s=0.01, warmup_s=0.005, rounds=2, min_runs=8)
    (gate / f"ready{part}").touch()
    while len(list(gate.glob("ready*"))) < 2:  # both processes start building at the same moment
        time.sleep(0.01)
    table, measured = build_table(
        be, ops, out, space=s.name, space_params=s.params, resume=True, config=cfg, chunk_size=1
    )
    print(json.dumps(measured))
    """
)


def test_two_processes_building_one_table_keep_every_row(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    gate = tmp_path / "gate"
    gate.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BUILD_PART, str(out), str(part), str(gate)],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for part in (0, 1)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, e) in zip(procs, results, strict=True):
        assert p.returncode == 0, e
    measured = [set(json.loads(o.strip().splitlines()[-1])) for o, _ in results]
    vocab = {o.key for o in get_space("darts", channels=4, resolution=8).vocabulary}
    assert measured[0] | measured[1] == vocab  # between them they measured every op
    table = LatencyTable.load(out)  # valid, validated
    assert set(table.rows) == vocab  # and every row of both is on disk
    assert all(table.rows[k]["median_ms"] > 0 for k in vocab)


def test_two_cli_builds_into_one_table_both_succeed(tmp_path: Path) -> None:
    out = tmp_path / "cli.json"
    args = [*LATBENCH, "table", "build", "--device", "torch-cpu", "--space", "darts", "--resolution", "8"]
    args += ["--out", str(out), "--resume", "--min-time", "0.01", "--json"]
    procs = [subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    table = LatencyTable.load(out)
    assert set(table.rows) == {o.key for o in get_space("darts", resolution=8).vocabulary}


def _row(median: float, rel: float, noisy: bool = False, n: int = 20) -> dict[str, Any]:
    return {"median_ms": median, "iqr_ms": rel * median, "rel_iqr": rel, "noisy": noisy, "n": n}


def test_merge_keeps_every_key_and_the_less_noisy_row_in_any_order() -> None:
    a = {"x": _row(1.0, 0.05), "y": _row(2.0, 0.01), "only_a": _row(3.0, 0.5)}
    b = {"x": _row(1.1, 0.02), "y": _row(2.2, 0.01, noisy=True), "only_b": _row(4.0, 0.5)}
    ab, ba = merge_rows(a, b), merge_rows(b, a)
    assert ab == ba
    assert set(ab) == {"x", "y", "only_a", "only_b"}
    assert ab["x"]["median_ms"] == 1.1 and ab["y"]["median_ms"] == 2.0


def test_save_refuses_a_table_of_another_device_at_the_path(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    shutil_copy(PIXEL1, path)
    before = path.read_bytes()
    other = LatencyTable.load(NOTE10)
    with pytest.raises(TableError) as exc:
        other.save(path)
    assert "published-pixel1-proxyless" in one_line(exc)
    assert path.read_bytes() == before  # nothing replaced
    assert (tmp_path / "t.json.lock").exists()  # the lock file lives beside the table


def shutil_copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    return dst


# ============================================================================ 2. writers
def test_exports_refuse_a_symlink_target(tmp_path: Path) -> None:
    from latbench.backends.ort import empty_model
    from latbench.export import export_onnx

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "model.onnx"
    link.symlink_to(victim)
    op = OpSpec("conv", 8, 4, 4, kernel=3)
    with pytest.raises(LatbenchError, match="symbolic link"):
        export_onnx(op, link, cache_dir=tmp_path / "cache")
    with pytest.raises(LatbenchError, match="symbolic link"):
        empty_model(link)
    assert victim.read_text() == "keep me"
    good = export_onnx(op, tmp_path / "op.onnx", cache_dir=tmp_path / "cache")
    assert good.stat().st_size > 100 and not list(tmp_path.glob(".op.onnx.*"))  # no staging file left


# ============================================================================ 3. tables on load and import
def _tampered_table(tmp_path: Path, edit: Any, name: str = "t.json") -> tuple[Path, str]:
    doc = json.loads(PIXEL1.read_text())
    key = sorted(doc["rows"])[5]
    text = edit(doc, key)
    path = tmp_path / name
    path.write_text(text if isinstance(text, str) else json.dumps(doc, allow_nan=True))
    return path, key


def _set(field: str, value: Any) -> Any:
    def edit(doc: dict[str, Any], key: str) -> None:
        doc["rows"][key][field] = value

    return edit


def _spec(field: str, value: Any) -> Any:
    def edit(doc: dict[str, Any], key: str) -> None:
        doc["rows"][key]["spec"][field] = value

    return edit


def _swap_spec(doc: dict[str, Any], key: str) -> None:
    other = sorted(doc["rows"])[6]
    doc["rows"][key]["spec"] = doc["rows"][other]["spec"]


def _duplicate(doc: dict[str, Any], key: str) -> str:
    text = json.dumps(doc)
    row = json.dumps({**doc["rows"][key], "median_ms": 999.0})
    return text.replace('"rows": {', f'"rows": {{{json.dumps(key)}: {row}, ', 1)


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (_set("median_ms", float("nan")), "NaN"),
        (_set("median_ms", float("inf")), "Infinity"),
        (_set("median_ms", -1.0), "invalid median"),
        (_set("median_ms", 0.0), "invalid median"),
        (_set("median_ms", "1.5"), "invalid median"),
        (_set("iqr_ms", -0.5), "invalid iqr_ms"),
        (_set("n", 2.5), "sample count"),
        (_swap_spec, "spec of another op"),
        (_spec("cin", -16), "cin must be"),
        (_spec("cout", 0), "cout must be"),
        (_spec("stride", 0), "stride must be"),
        (_spec("kernel", -3), "kernel must be"),
        (_spec("hw", 10**12), "hw must be"),
        (_duplicate, "duplicate key"),
    ],
)
def test_tampered_tables_are_refused_on_load(tmp_path: Path, edit: Any, says: str) -> None:
    path, key = _tampered_table(tmp_path, edit)
    with pytest.raises(TableError) as exc:
        LatencyTable.load(path)
    msg = one_line(exc)
    assert str(path) in msg and says in msg
    if says not in ("NaN", "Infinity", "duplicate key"):
        assert key in msg  # names the row


def test_a_huge_number_is_refused_not_read_as_infinity(tmp_path: Path) -> None:
    path, _ = _tampered_table(
        tmp_path, lambda doc, key: json.dumps(doc).replace('"median_ms": ', '"median_ms": 1e400, "x": ', 1)
    )
    with pytest.raises(TableError, match="out of range"):
        LatencyTable.load(path)


def test_resume_refuses_rows_of_another_space_or_resolution(tmp_path: Path) -> None:
    be = get_backend("torch-cpu", threads=1)
    s8 = get_space("darts", channels=4, resolution=8)
    table = LatencyTable(fingerprint=be.fingerprint().to_dict(), space=s8.name, space_params=s8.params)
    table.add(s8.vocabulary[0], {"median_ms": 0.01, "iqr_ms": 0.0, "p90_ms": 0.01, "n": 16})
    path = table.save(tmp_path / "t.json")
    s16 = get_space("darts", channels=4, resolution=16)
    be.measure_many = None  # nothing may be measured before the refusal
    with pytest.raises(TableError) as exc:
        build_table(be, s16.vocabulary, path, space=s16.name, space_params=s16.params, resume=True)
    assert "another --out" in one_line(exc) and "'resolution': 16" in str(exc.value)
    pm = get_space("proxyless-mobile", resolution=128)
    with pytest.raises(TableError, match="space proxyless-mobile"):
        build_table(be, pm.vocabulary, path, space=pm.name, space_params=pm.params, resume=True)
    assert set(LatencyTable.load(path).rows) == {s8.vocabulary[0].key}


def _published_yaml(table_path: Path, out: Path, edit: Any = None) -> Path:
    """A published YAML LUT rebuilt from a shipped imported table (tests read only data the repository ships)."""
    import yaml

    doc = json.loads(table_path.read_text())
    raw = {
        r["published_key"]: {"mean": r["median_ms"], "std": r["std_ms"], "count": r["n"]} for r in doc["rows"].values()
    }
    if edit:
        edit(raw)
    out.write_text(yaml.safe_dump(raw))
    return out


def test_import_refuses_a_table_of_the_other_format(tmp_path: Path) -> None:
    ofa = _published_yaml(NOTE10, tmp_path / "ofa.yaml")
    with pytest.raises(TableError) as exc:
        import_published(ofa, "proxyless")
    assert "ofa LUT keys" in one_line(exc) and "pixel1" in str(exc.value)
    assert len(import_published(ofa, "ofa")) == 96
    pxl = _published_yaml(PIXEL1, tmp_path / "pxl.yaml")
    with pytest.raises(TableError, match="proxyless LUT keys"):
        import_published(pxl, "ofa")
    assert len(import_published(pxl, "proxyless")) == 72


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.5, 0.0, "fast"])
def test_import_refuses_bad_latencies(tmp_path: Path, bad: Any) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw[sorted(raw)[3]]["mean"] = bad

    yml = _published_yaml(PIXEL1, tmp_path / "bad.yaml", edit)
    with pytest.raises(TableError) as exc:
        import_published(yml, "proxyless")
    assert "bad.yaml" in one_line(exc)


def test_one_row_table_is_not_called_empty(tmp_path: Path) -> None:
    doc = json.loads(PIXEL1.read_text())
    key = sorted(doc["rows"])[0]
    doc["rows"] = {key: doc["rows"][key]}
    path = write_json(tmp_path / "one.json", doc)
    with pytest.raises(LatbenchError) as exc:
        train_predictor("linear", [LatencyTable.load(path)], progress=False)
    assert "only 1 training row" in one_line(exc) and "empty" not in str(exc.value)
    doc["rows"] = {}
    empty = write_json(tmp_path / "empty.json", doc)
    with pytest.raises(LatbenchError, match="is empty"):
        train_predictor("linear", [LatencyTable.load(empty)], progress=False)


# ============================================================================ 4. predictors on load
def _pred(name: str) -> dict[str, Any]:
    return json.loads((PREDICTORS / f"proxyless-mobile-{name}.json").read_text())


def _first_group(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["state"]["regressors"][sorted(doc["state"]["regressors"])[0]]


def _rf_cycle(doc: dict[str, Any]) -> None:
    tree = _first_group(doc)["trees"][0]
    inner = next(i for i in range(1, len(tree["left"])) if tree["left"][i] != -1)
    tree["left"][inner] = 0  # back to the root: a walk that never ends


def _rf_self_loop(doc: dict[str, Any]) -> None:
    tree = _first_group(doc)["trees"][3]
    tree["right"][0] = 0


def _rf_out_of_range(doc: dict[str, Any]) -> None:
    _first_group(doc)["trees"][1]["left"][0] = 10**6


def _rf_feature(doc: dict[str, Any]) -> None:
    _first_group(doc)["trees"][0]["feature"][0] = 999


def _rf_one_child(doc: dict[str, Any]) -> None:
    _first_group(doc)["trees"][0]["right"][0] = -1


def _xgb_tree(doc: dict[str, Any]) -> dict[str, Any]:
    return _first_group(doc)["model"]["learner"]["gradient_booster"]["model"]["trees"][0]


def _xgb_cycle(doc: dict[str, Any]) -> None:
    _xgb_tree(doc)["left_children"][1] = 0


def _xgb_broken(doc: dict[str, Any]) -> None:
    _first_group(doc)["model"]["learner"]["objective"] = {"name": "reg:no-such-objective"}


def _xgb_garbage(doc: dict[str, Any]) -> None:
    _first_group(doc)["model"] = {"learner": "garbage"}


def _xgb_features(doc: dict[str, Any]) -> None:
    _first_group(doc)["model"]["learner"]["learner_model_param"]["num_feature"] = "7"


def _linear_short(doc: dict[str, Any]) -> None:
    g = _first_group(doc)
    g["coef"] = g["coef"][:-3]


def _glue(field: str, value: Any) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        doc["calibration"][field] = value

    return edit


def _schema(doc: dict[str, Any]) -> None:
    doc["schema"] = "latbench.predictor/99"


def _feature_schema(doc: dict[str, Any]) -> None:
    doc["state"]["features"]["schema"] = "latbench.features/99"


def _unknown_type(doc: dict[str, Any]) -> None:
    doc["state"]["types"]["warp_drive"] = "*"


def _flops_nan(doc: dict[str, Any]) -> None:
    line = doc["state"]["lines"][sorted(doc["state"]["lines"])[0]]
    line["ms_per_gflop"] = float("nan")


def _lut_negative(doc: dict[str, Any]) -> None:
    row = doc["state"]["rows"][sorted(doc["state"]["rows"])[0]]
    row["median_ms"] = -2.0


@pytest.mark.parametrize(
    ("model", "edit", "says"),
    [
        ("random-forest", _rf_cycle, "cycle"),
        ("random-forest", _rf_self_loop, "cycle"),
        ("random-forest", _rf_out_of_range, "out of range"),
        ("random-forest", _rf_feature, "feature index out of range"),
        ("random-forest", _rf_one_child, "one child"),
        ("gbm", _rf_cycle, "cycle"),
        ("xgboost", _xgb_cycle, "cycle"),
        ("xgboost", _xgb_broken, "xgboost cannot read the model"),
        ("xgboost", _xgb_garbage, "not an xgboost gbtree JSON model"),
        ("xgboost", _xgb_features, "features"),
        ("linear", _linear_short, "coefficients for"),
        ("linear", _glue("scale", float("nan")), "NaN"),
        ("linear", _glue("scale", -1.0), "scale must be > 0"),
        ("linear", _glue("scale", 0), "scale must be > 0"),
        ("linear", _glue("offset_ms", -3.0), "offset >= 0"),
        ("linear", _glue("scale", "1.0"), "not a finite number"),
        ("linear", _schema, "schema"),
        ("linear", _feature_schema, "feature schema"),
        ("linear", _unknown_type, "warp_drive"),
        ("flops-linear", _flops_nan, "NaN"),
        ("lut", _lut_negative, "invalid median"),
    ],
)
def test_tampered_predictors_are_refused_in_one_line(tmp_path: Path, model: str, edit: Any, says: str) -> None:
    doc = _pred(model)
    edit(doc)
    path = write_json(tmp_path / f"{model}.json", doc)
    with hard_timeout(60), pytest.raises(PredictorError) as exc:
        load_predictor(path)
    msg = one_line(exc)
    assert str(path) in msg and says in msg


def test_cli_says_one_line_and_exits_2_for_a_broken_xgboost_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = _pred("xgboost")
    _xgb_broken(doc)
    path = write_json(tmp_path / "x.json", doc)
    arch = tmp_path / "a.json"
    arch.write_text(json.dumps(get_space("proxyless-mobile").sample(0)))
    code, _, err = run_cli(capsys, "predict", "--predictor", path, "--arch", arch)
    assert code == 2 and err.startswith("latbench: error:") and len(err.strip().splitlines()) == 1, err


# ============================================================================ 5. read-only destinations
@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder no file can be created in: chmod 555, or (as root, who ignores modes) sysfs."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    try:
        (d / "probe").write_text("x")
    except OSError:
        yield d
        d.chmod(0o755)
        return
    (d / "probe").unlink()
    d.chmod(0o755)
    sysfs = Path("/sys/kernel")
    try:
        (sysfs / "latbench-probe").mkdir()
    except OSError:
        yield sysfs
        return
    pytest.skip("no unwritable folder on this machine (root, no sysfs)")


class _NoMeasuring:
    """A torch-cpu backend whose measuring fails the test: the refusal must come first."""

    def __init__(self) -> None:
        self.be = get_backend("torch-cpu", threads=1)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("measure"):
            raise AssertionError("measured before checking the destination")
        return getattr(self.be, name)


def test_build_into_a_readonly_folder_fails_before_measuring(readonly_dir: Path) -> None:
    ops = get_space("darts", channels=4, resolution=8).vocabulary
    with pytest.raises(LatbenchError) as exc:
        build_table(_NoMeasuring(), ops, readonly_dir / "sub" / "t.json")
    assert str(readonly_dir) in one_line(exc)


def test_build_into_a_readonly_latbench_home_fails_before_measuring(
    readonly_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from latbench.table import default_table_path

    monkeypatch.setenv("LATBENCH_HOME", str(readonly_dir))
    path = default_table_path("torch-cpu", "darts")
    with pytest.raises(LatbenchError, match="cannot write into"):
        build_table(_NoMeasuring(), get_space("darts", resolution=8).vocabulary, path)


def test_train_into_a_readonly_folder_fails_before_training(
    readonly_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import latbench.predict.training as training

    monkeypatch.setattr(training, "fit_model", lambda *a, **k: pytest.fail("trained before checking --out"))
    with pytest.raises(LatbenchError, match="cannot write into"):
        train_predictor("linear", [LatencyTable.load(PIXEL1)], out=readonly_dir / "p" / "x.json", progress=False)


def test_merge_into_a_readonly_table_is_one_line(readonly_dir: Path, tmp_path: Path) -> None:
    table = LatencyTable.load(PIXEL1)
    with pytest.raises(TableError) as exc:
        table.save(readonly_dir / "merged.json")
    assert "cannot write table" in one_line(exc)


def test_archs_into_a_readonly_folder_is_one_line(readonly_dir: Path, tmp_path: Path) -> None:
    from latbench.spaces import save_archs

    archs = [GOOD, GOOD]
    with pytest.raises(LatbenchError) as exc:
        save_archs(archs, readonly_dir / "archs.jsonl")
    assert "cannot write into" in one_line(exc)
    out = save_archs(archs, tmp_path / "archs.jsonl")
    assert load_archs(str(out)) == archs


# ============================================================================ 6. bad values in files
GOOD = get_space("darts", channels=4, resolution=8).sample(0)


def _good_line() -> str:
    return json.dumps(GOOD)


def _with(**changes: Any) -> str:
    return json.dumps({**GOOD, **changes})


def _choice(value: Any) -> str:
    return json.dumps({**GOOD, "choices": {**GOOD["choices"], "n0_i0": value}})


BAD_LINES = {
    "nan": (_good_line().replace('"resolution": 8', '"resolution": NaN'), "NaN"),
    "infinity": (_good_line().replace('"resolution": 8', '"resolution": -Infinity'), "Infinity"),
    "1e400": (_good_line().replace('"resolution": 8', '"resolution": 1e400'), "out of range"),
    "huge int": (_good_line().replace('"resolution": 8', '"resolution": ' + "9" * 40), "out of range"),
    "big int": (_with(resolution=10**15), "resolution must be"),
    "string resolution": (_with(resolution="8"), "whole number"),
    "fraction": (_with(resolution=8.5), "whole number"),
    "bool reduction": (_with(reduction=1), "reduction"),
    "list space": (_with(space=["darts"]), "unknown search space"),
    "deep": (_with(choices=json.loads("[" * 200 + "]" * 200)), "nested"),
    "unknown choice": (_choice("conv_9x9"), "illegal choice 'conv_9x9' for n0_i0"),
    "choice type": (_choice(["sep_conv_3x3"]), "illegal choice"),
    "not an object": ("[1, 2, 3]", "must be a JSON object"),
    "duplicate": (_good_line()[:-1] + ', "resolution": 8}', "duplicate key"),
    "syntax": ('{"space": "darts",', "malformed JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_arch_lines_name_file_and_line(tmp_path: Path, case: str) -> None:
    text, says = BAD_LINES[case]
    path = tmp_path / "archs.jsonl"
    path.write_text(f"{_good_line()}\n\n{_good_line()}\n{text}\n{_good_line()}\n")
    with pytest.raises(LatbenchError) as exc:  # ArchError, or UnknownNameError for the space
        load_archs(str(path))
    msg = one_line(exc)
    assert msg.startswith(f"{path}: line 4: ") and says in msg, msg
    assert len(load_archs(str(_lines(tmp_path, 3)))) == 3


def _lines(tmp_path: Path, n: int) -> Path:
    p = tmp_path / "ok.jsonl"
    p.write_text("\n".join(_good_line() for _ in range(n)) + "\n\n")
    return p


def test_non_utf8_bytes_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "archs.jsonl"
    path.write_bytes((_good_line() + "\n" + _good_line() + "\n").encode() + b'{"space": "\xff"}\n')
    with pytest.raises(ArchError) as exc:
        load_archs(str(path))
    assert "line 3: not UTF-8" in one_line(exc)
    single = tmp_path / "arch.json"
    single.write_text(_with(resolution=float("nan")))
    with pytest.raises(ArchError, match=r"arch\.json: malformed JSON"):
        load_archs(str(single))


class _Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Any]:
        yield lambda *a, **k: None

    def message(self, text: str, stream: str = "out") -> None:
        self.lines.append((stream, text))


BAD_PROFILES = {
    "binary": b"\x00\xff\xfe\x01 name = 'x'",
    "malformed": b"name = [\n",
    "threads": b'name = "threads"\nbackend = "torch-cpu"\n[settings]\nthreads = 0\n',
    "threads-text": b'name = "threads-text"\nbackend = "torch-cpu"\n[settings]\nthreads = "2"\n',
    "cores": b'name = "cores"\nbackend = "torch-cpu"\n[settings]\ncores = [0, 99999]\n',
    "speed": b'name = "speed"\nbackend = "fake"\n[settings]\nspeed = -1.0\n',
    "sentinel": b'name = "sentinel"\nbackend = "fake"\nsentinel_ms = 0.0\n',
    "calibration": (
        b'name = "calibration"\nbackend = "ort-mobile"\n[calibration]\nfeatures = ["t"]\ncoefficients = [-0.5]\n'
    ),
    "name": b'name = "../../etc/x"\nbackend = "fake"\n',
}


def test_broken_profiles_are_skipped_when_listing_and_refused_by_name(home: Path) -> None:
    devices = home / "devices"
    devices.mkdir()
    for name, data in BAD_PROFILES.items():
        (devices / f"{name}.toml").write_bytes(data)
    (devices / "fine.toml").write_text('name = "fine"\nbackend = "fake"\n[settings]\nspeed = 2.0\n')
    rec = _Recorder()
    previous = set_reporter(rec)
    try:
        names = {p.name for p in list_profiles()}
    finally:
        set_reporter(previous)
    assert "fine" in names and "mobile-1t" in names and not names & set(BAD_PROFILES)
    warned = [t for s, t in rec.lines if s == "err"]
    assert len(warned) == len(BAD_PROFILES) and all(t.startswith("warning: skipping device profile") for t in warned)
    for name in BAD_PROFILES:
        with pytest.raises(LatbenchError) as exc:
            load_profile(name)
        assert f"{name}.toml" in one_line(exc)
    assert load_profile("fine").settings == {"speed": 2.0}


def test_devices_command_lists_despite_a_broken_profile(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (home / "devices").mkdir()
    (home / "devices" / "junk.toml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    code, out, err = run_cli(capsys, "devices", "--json")
    assert code == 0 and "mobile-1t" in out
    assert "junk.toml: not a device profile" in err.replace("\n", "")  # (rich may wrap a long path)


# ============================================================================ 7. DARTS reduction cells
@pytest.mark.parametrize("reduction", [False, True])
def test_darts_op_list_matches_what_the_module_runs(reduction: bool) -> None:
    import torch

    space = get_space("darts", channels=8, resolution=16, reduction=reduction)
    arch = space.sample(3)
    ops = space.ops_of(arch, include_free=True)
    edges = ops[1:-1]
    net = space.build(arch)
    seen: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    for e, module in enumerate(net.edges):
        module.register_forward_hook(lambda m, i, o, e=e: seen.__setitem__(e, (tuple(i[0].shape), tuple(o.shape))))
    with torch.no_grad():
        y = net(torch.randn(*space.input_shape))
    assert tuple(y.shape) == (1, 10)
    assert len(seen) == 14
    for e, op in enumerate(edges):
        assert seen[e] == (op.input_shape, op.output_shape), (e, op.key)
    if reduction:
        from latbench.spaces.darts import DARTS_EDGES

        for (node, inp), op in zip(DARTS_EDGES, edges, strict=True):
            assert (op.hw, op.stride) == ((16, 2) if inp < 2 else (8, 1)), (node, inp, op.key)
        assert ops[-1].hw == 8


def test_darts_reduction_vocabulary_and_onnx_export(tmp_path: Path) -> None:
    import onnxruntime as ort

    from latbench.export import export_arch

    red = get_space("darts", channels=8, resolution=16, reduction=True)
    hws = {(o.hw, o.stride) for o in red.vocabulary if o.type in ("sep_conv", "dil_conv", "max_pool", "avg_pool")}
    assert hws == {(16, 2), (8, 1)}
    arch = red.sample(1)
    path = export_arch(arch, tmp_path / "red.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"input": np.random.default_rng(0).standard_normal((1, 3, 16, 16), dtype=np.float32)})
    assert out.shape == (1, 10)


# ============================================================================ 8. property tests
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
PROPERTY = settings(
    max_examples=40,
    deadline=timedelta(seconds=10),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _mutate(data: st.DataObject, doc: Any, value: Any) -> Any:
    """``doc`` with one node (drawn by walking down from the root) replaced by ``value``."""
    doc = copy.deepcopy(doc)
    if not isinstance(doc, (dict, list)) or not doc:
        return value
    parent, key = None, None
    node = doc
    while isinstance(node, (dict, list)) and node:
        keys = sorted(node) if isinstance(node, dict) else list(range(len(node)))
        k = keys[data.draw(st.integers(0, len(keys) - 1))]
        parent, key, node = node, k, node[k]
        if data.draw(st.integers(0, 3)) == 0:
            break
    parent[key] = value  # type: ignore[index]
    return doc


@PROPERTY
@given(value=json_values, jsonl=st.booleans())
def test_any_json_as_an_arch_file_loads_or_is_refused(tmp_path_factory: Any, value: Any, jsonl: bool) -> None:
    path = tmp_path_factory.mktemp("arch") / ("a.jsonl" if jsonl else "a.json")
    path.write_text(json.dumps(value, allow_nan=True))
    with hard_timeout(30):
        try:
            archs = load_archs(str(path))
        except LatbenchError:
            return
    for a in archs:
        assert get_space(a["space"], **{k: v for k, v in a.items() if k not in ("space", "choices")}).validate(a) == a


@PROPERTY
@given(data=st.data(), value=json_values)
def test_a_tampered_arch_loads_valid_or_is_refused(tmp_path_factory: Any, data: st.DataObject, value: Any) -> None:
    arch = get_space("proxyless-mobile").sample(0)
    path = tmp_path_factory.mktemp("arch") / "a.jsonl"
    path.write_text(json.dumps(_mutate(data, arch, value), allow_nan=True) + "\n")
    with hard_timeout(30):
        try:
            (loaded,) = load_archs(str(path))
        except LatbenchError:
            return
    space = get_space("proxyless-mobile", resolution=loaded["resolution"], width=loaded["width"])
    assert space.validate(loaded) == loaded and space.ops_of(loaded)


@PROPERTY
@given(data=st.data(), value=json_values)
def test_a_tampered_table_loads_valid_or_is_refused(tmp_path_factory: Any, data: st.DataObject, value: Any) -> None:
    doc = json.loads(PIXEL1.read_text())
    path = write_json(tmp_path_factory.mktemp("table") / "t.json", _mutate(data, doc, value))
    with hard_timeout(30):
        try:
            table = LatencyTable.load(path)
        except LatbenchError:
            return
    for key, row in table.rows.items():
        assert OpSpec.from_dict(row["spec"]).key == key
        assert math.isfinite(row["median_ms"]) and row["median_ms"] > 0
    table.lut_sum([OpSpec.from_dict(r["spec"]) for r in table.rows.values()])


@PROPERTY
@given(
    data=st.data(),
    bad=st.sampled_from([None, -1.0, 0, "1.0", [], {}, float("nan"), float("inf"), True]),
    field=st.sampled_from(["median_ms", "iqr_ms", "p90_ms", "n", "spec"]),
)
def test_shipped_tables_with_a_bad_value_are_refused(
    tmp_path_factory: Any, data: st.DataObject, bad: Any, field: str
) -> None:
    if field in ("iqr_ms", "p90_ms", "n") and bad == 0 and not isinstance(bad, bool):
        bad = -1.0  # zero spread, or a published row's zero count, is a valid value
    source = data.draw(st.sampled_from([PIXEL1, NOTE10]))
    doc = json.loads(source.read_text())
    key = data.draw(st.sampled_from(sorted(doc["rows"])))
    doc["rows"][key][field] = bad
    path = write_json(tmp_path_factory.mktemp("table") / "t.json", doc)
    with pytest.raises(TableError):
        LatencyTable.load(path)


SMALL_PREDICTORS = ("linear", "flops-linear", "lut")


@PROPERTY
@given(data=st.data(), value=json_values, model=st.sampled_from(SMALL_PREDICTORS))
def test_a_tampered_predictor_loads_and_predicts_latencies_or_is_refused(
    tmp_path_factory: Any, data: st.DataObject, value: Any, model: str
) -> None:
    path = write_json(tmp_path_factory.mktemp("pred") / "p.json", _mutate(data, _pred(model), value))
    space = get_space("proxyless-mobile")
    with hard_timeout(30):
        try:
            m = load_predictor(path)
            ms = m.predict_ops(space.vocabulary)
        except LatbenchError:
            return
    assert np.all(np.isfinite(ms)) and np.all(ms >= 0)


@functools.cache
def _tree_doc(model: str) -> dict[str, Any]:
    return _pred(model)


@PROPERTY
@given(data=st.data(), model=st.sampled_from(["random-forest", "gbm", "xgboost"]))
def test_shipped_tree_predictors_with_a_broken_tree_are_refused(
    tmp_path_factory: Any, data: st.DataObject, model: str
) -> None:
    doc = copy.deepcopy(_tree_doc(model))
    group = data.draw(st.sampled_from(sorted(doc["state"]["regressors"])))
    reg = doc["state"]["regressors"][group]
    if model == "xgboost":
        trees = reg["model"]["learner"]["gradient_booster"]["model"]["trees"]
        arrays = [(t["left_children"], t["right_children"], t["split_indices"]) for t in trees]
    else:
        arrays = [(t["left"], t["right"], t["feature"]) for t in reg["trees"]]
    grown = [a for a in arrays if len(a[0]) > 1]  # trees with at least one split
    left, right, feature = grown[data.draw(st.integers(0, len(grown) - 1))]
    inner = [i for i in range(len(left)) if left[i] != -1]
    i = data.draw(st.sampled_from(inner))
    how = data.draw(st.sampled_from(["backwards", "beyond", "feature", "one-child", "type"]))
    n = len(left)
    if how == "backwards":
        data.draw(st.sampled_from([left, right]))[i] = data.draw(st.integers(0, i))
    elif how == "beyond":
        data.draw(st.sampled_from([left, right]))[i] = data.draw(st.integers(n, n + 10**6))
    elif how == "feature":
        feature[i] = data.draw(st.sampled_from([-5, len(doc["features"]), 10**9]))
    elif how == "one-child":
        right[i] = -1
    else:
        left[i] = data.draw(st.sampled_from([1.5, "3", None, True, [1]]))
    path = write_json(tmp_path_factory.mktemp("pred") / "p.json", doc)
    with hard_timeout(60), pytest.raises(PredictorError):
        load_predictor(path)


@PROPERTY
@given(value=json_values)
def test_strict_json_parses_what_json_writes_and_nothing_nonfinite(value: Any) -> None:
    text = json.dumps(value, allow_nan=True)
    try:
        parsed = strict_json_loads(text)
    except ValueError as exc:
        assert any(s in str(exc) for s in ("NaN", "Infinity", "out of range", "nested", "duplicate")), exc
        return
    assert json.dumps(parsed, sort_keys=True) == json.dumps(json.loads(text), sort_keys=True)


def test_shipped_artifacts_load() -> None:
    """The starting points of the property tests are valid: every shipped predictor, table and profile loads."""
    files = sorted(PREDICTORS.glob("*.json")) + sorted((REPO / "predictors" / "note10").glob("*.json"))
    assert len(files) == 12
    for f in files:
        m = load_predictor(f)
        ms = m.predict_ops(get_space(m.meta["space"], **m.meta["space_params"]).vocabulary)
        assert np.all(ms > 0)
    assert len(LatencyTable.load("pixel1/proxyless-mobile")) == 72 and len(LatencyTable.load(NOTE10)) == 96
    assert {p.name for p in list_profiles()} >= {"mobile-1t", "mobile-2t", "mobile-1t-int8", "mobile-4t-int8"}
    assert DeviceProfile.from_file(REPO / "devices" / "mobile-1t.toml").settings["threads"] == 1
