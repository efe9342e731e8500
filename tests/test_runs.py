"""The run store both search engines share: one layout, one result schema, one resume rule, `latbench runs`.

Also the shared target grammar, and that a ``python:`` evaluator named in a run's
config.json is not run on ``--resume`` unless the user names it again.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from latbench.errors import LatbenchError
from latbench.search.runstore import RunFolder, budget_verdict, within_with_margin
from latbench.search.target import parse_target, parse_target_spec

from .conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
PIXEL1 = str(REPO / "tables/pixel1/proxyless-mobile.json")
#: the keys of result.json, the same for both engines
RESULT_KEYS = {
    "schema", "engine", "run_id", "space", "target_ms", "predicted_ms", "predicted_kind", "measured", "measured_note",
    "within_budget", "over_budget_pct", "arch", "trained_variant", "accuracy", "score", "score_name", "found",
    "latency_source", "finished", "details",
}  # fmt: skip
COMMON_FILES = ("config.json", "history.csv", "result.json", "deployed.onnx", "deployed.json", "report.md")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    from sklearn.datasets import load_digits

    d = load_digits()
    p = tmp_path / "digits200.npz"
    np.savez(p, x=d.images[:200].astype(np.float32), y=d.target[:200])
    return p


# ----------------------------------------------------------------------------- targets
@pytest.mark.parametrize(
    "text,ms",
    [("12", 12.0), ("12ms", 12.0), ("0.012s", 12.0), ("12000us", 12.0), (" 7.5 ms", 7.5), (12, 12.0), ("1e1", 10.0)],
)
def test_target_units(text, ms):
    assert parse_target(text) == pytest.approx(ms, rel=1e-12)


def test_target_share_of_the_range():
    assert parse_target("50%", (10.0, 30.0)) == 20.0
    assert parse_target("100%", (10.0, 30.0)) == 30.0
    assert parse_target("25 %", (10.0, 30.0)) == 15.0
    with pytest.raises(LatbenchError, match="give a latency source"):
        parse_target("50%")
    with pytest.raises(LatbenchError, match=r"below the smallest arch of the space \(10\.000 ms\)"):
        parse_target("5ms", (10.0, 30.0))
    with pytest.raises(LatbenchError, match="above the largest arch"):
        parse_target("31", (10.0, 30.0))


@pytest.mark.parametrize(
    "bad",
    ["0", "0ms", "-3ms", "-1", "0%", "-5%", "100.5%", "150%", "nan", "inf", "fast", "12 min", "", "1e400", "12msms",
     float("nan"), float("inf"), -2.0, 0, True],
)  # fmt: skip
def test_target_refusals_are_one_line(bad):
    with pytest.raises(LatbenchError) as info:
        parse_target_spec(bad)
    assert "\n" not in str(info.value) and "target" in str(info.value)


def test_any_positive_finite_ms_round_trips_through_each_unit():
    hypothesis = pytest.importorskip("hypothesis")  # in the dev extra (see pyproject)
    from hypothesis import strategies as st

    @hypothesis.settings(max_examples=200, deadline=None)
    @hypothesis.given(st.floats(min_value=1e-6, max_value=1e7, allow_nan=False, allow_infinity=False))
    def round_trip(ms: float) -> None:
        assert parse_target(repr(ms)) == ms
        assert parse_target(f"{ms!r}ms") == ms
        assert parse_target(f"{ms / 1000.0!r}s") == pytest.approx(ms, rel=1e-12)
        assert parse_target(f"{ms * 1000.0!r}us") == pytest.approx(ms, rel=1e-12)

    round_trip()


def test_budget_verdict_has_no_slack():
    m = {"median_ms": 10.0, "iqr_ms": 0.5, "p90_ms": 10.4, "n": 20}
    assert budget_verdict(10.0, 9.0, m) == (True, 0.0)
    assert budget_verdict(9.9, 9.0, m) == (False, pytest.approx(1.0101, abs=1e-3))  # 1% over is over
    assert budget_verdict(9.5, 9.0, None) == (True, 0.0)  # the prediction when not measured
    assert not within_with_margin(m, 10.4) and within_with_margin(m, 10.5)


# ----------------------------------------------------------------------------- layout, list, show
def _mnas(capsys, runs: Path, *extra: str) -> tuple[int, str, str]:
    args = ["search", "mnas", "--table", PIXEL1, "--target", "60%", "--strategy", "random", "--trials", "6"]
    return run_cli(capsys, *args, "--runs-dir", runs, *extra)


def _proxyless(capsys, runs: Path, data: Path, *extra: str) -> tuple[int, str, str]:
    args = ["search", "proxyless", "--table", PIXEL1, "--target", "60%", "--data", data, "--epochs", "1"]
    return run_cli(capsys, *args, "--warmup", "0", "--batch-size", "64", "--runs-dir", runs, *extra)


def test_both_engines_write_one_layout_and_runs_lists_and_shows_them(home, tmp_path, tiny_npz, capsys):
    runs = tmp_path / "runs"
    code, out, err = _mnas(capsys, runs, "--run-id", "m1", "--json")
    assert code == 0, err
    m = json.loads(out)
    code, out, err = _proxyless(capsys, runs, tiny_npz, "--run-id", "p1", "--json")
    assert code == 0, err
    p = json.loads(out)
    for doc, rid in ((m, "m1"), (p, "p1")):
        d = runs / rid
        for f in COMMON_FILES:
            assert (d / f).stat().st_size > 0, (rid, f)
        assert (d / "state").is_dir() and any((d / "state").iterdir()) and not (d / "state" / "running.json").exists()
        assert set(json.loads((d / "result.json").read_text())) == RESULT_KEYS
        assert doc["run_id"] == rid and doc["target_ms"] == pytest.approx(29.609 + 0.6 * (191.0 - 29.609), abs=0.02)
        assert doc["measured"] is None and doc["predicted_kind"] == "looked up"  # a Pixel 1 does not run here
        assert doc["within_budget"] == (doc["predicted_ms"] <= doc["target_ms"])
        cfg = json.loads((d / "config.json").read_text())
        assert (
            cfg["schema"] == "latbench.run/1" and cfg["run_id"] == rid and cfg["latency_source"]["kind"] == "looked up"
        )
        assert cfg["device_fingerprint"]["source"]["id"] == "published-pixel1-proxyless" and cfg["versions"]["torch"]
        assert cfg["target"]["text"] == "60%" and cfg["created"]
    assert (
        m["engine"] == "mnas" and m["trained_variant"] is None and not (runs / "m1" / "trained-variant.onnx").exists()
    )
    assert m["score"] is not None and m["accuracy"] is None  # naswot: a score, named as one
    assert p["engine"] == "proxyless" and (runs / "p1" / "trained-variant.onnx").stat().st_size > 0
    assert p["trained_variant"]["arch"]["resolution"] == 32 and p["arch"]["resolution"] == 224
    assert 0 <= p["accuracy"] <= 1 and p["score"] is None
    # latbench runs list / show read either engine
    code, out, err = run_cli(capsys, "runs", "list", "--runs-dir", runs, "--json")
    assert code == 0, err
    rows = {r["run_id"]: r for r in json.loads(out)}
    assert set(rows) == {"m1", "p1"} and {r["engine"] for r in rows.values()} == {"mnas", "proxyless"}
    assert all(r["state"] == "done" and r["space"] == "proxyless-mobile" for r in rows.values())
    assert rows["p1"]["predicted_ms"] == p["predicted_ms"] and rows["m1"]["within_budget"] == m["within_budget"]
    code, out, _ = run_cli(capsys, "runs", "list", "--runs-dir", runs)
    assert code == 0 and len(out.strip().splitlines()) == 3 and " | mnas | " in out and " | proxyless | " in out
    for rid, doc in (("m1", m), ("p1", p)):
        code, out, err = run_cli(capsys, "runs", "show", rid, "--runs-dir", runs, "--json")
        assert code == 0, err
        shown = json.loads(out)
        assert shown["result"]["arch"] == doc["arch"] and "deployed.onnx" in shown["files"]
        code, out, _ = run_cli(capsys, "runs", "show", rid, "--runs-dir", runs)
        assert code == 0 and f"{doc['predicted_ms']:.3f}" in out
    code, _, err = run_cli(capsys, "runs", "show", "../m1", "--runs-dir", runs)
    assert code == 2 and "bad run id" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "search", "mnas", "--resume", "p1", "--runs-dir", runs)
    assert code == 2 and "is a proxyless run" in err


def test_default_runs_folder_is_under_latbench_home(home, capsys):
    code, out, err = run_cli(
        capsys, "search", "mnas", "--table", PIXEL1, "--target", "100ms", "--trials", "3", "--strategy", "random",
        "--run-id", "h1", "--no-onnx", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert (home / "runs" / "h1" / "result.json").is_file() and not (home / "runs" / "h1" / "deployed.onnx").exists()
    code, out, _ = run_cli(capsys, "runs", "list", "--json")
    assert [r["run_id"] for r in json.loads(out)] == ["h1"]


# ----------------------------------------------------------------------------- resume and code from data
EVALUATOR = """
import math, os, pathlib
pathlib.Path(os.environ["LB_MARKER"]).write_text("this module ran")

def acc(archs):
    stop = os.environ.get("LB_STOP_AT")
    if stop and int(archs.trials.max()) >= int(stop):
        raise KeyboardInterrupt
    return [1.0 - math.exp(-archs.space.macs(a) / 3e8) for a in archs]
"""


def test_mnas_resume_and_a_python_evaluator_is_not_run_unasked(home, tmp_path, monkeypatch, capsys):
    runs, marker = tmp_path / "runs", tmp_path / "marker"
    ev = tmp_path / "ev.py"
    ev.write_text(EVALUATOR)
    spec = f"python:{ev}:acc"
    monkeypatch.setenv("LB_MARKER", str(marker))
    monkeypatch.setenv("LB_STOP_AT", "8")
    args = ["search", "mnas", "--table", PIXEL1, "--target", "80ms", "--strategy", "evolution", "--population", "4"]
    args += ["--batch", "4", "--trials", "16", "--runs-dir", runs, "--evaluator", spec, "--run-id", "py", "--no-onnx"]
    code, _, err = run_cli(capsys, *args)
    assert code == 130 and "resume with: latbench search mnas --resume py" in err
    assert marker.exists()  # the user named it: it ran
    rows = json.loads(run_cli(capsys, "runs", "list", "--runs-dir", runs, "--json")[1])
    assert [(r["run_id"], r["state"]) for r in rows] == [("py", "interrupted")]
    marker.unlink()
    monkeypatch.delenv("LB_STOP_AT")
    # a resume that does not name the evaluator again: refused in one line, the file is not executed
    code, _, err = run_cli(capsys, "search", "mnas", "--resume", "py", "--runs-dir", runs)
    assert code == 2 and err.count("\n") == 1 and "pass --evaluator" in err and "--trust-run" in err
    assert not marker.exists()
    code, _, err = run_cli(capsys, "search", "mnas", "--resume", "py", "--runs-dir", runs, "--evaluator", "zero-cost")
    assert code == 2 and not marker.exists()
    # named again: it runs and the search goes on to 16 trials
    code, out, err = run_cli(
        capsys, "search", "mnas", "--resume", "py", "--runs-dir", runs, "--evaluator", spec, "--json"
    )
    assert code == 0, err
    res = json.loads(out)
    assert marker.exists() and set(res) - {"run_dir"} == RESULT_KEYS and res["accuracy"] > 0 and res["score"] is None
    hist = (runs / "py" / "history.csv").read_text().splitlines()
    assert len(hist) == 1 + 16 and hist[0].split(",")[-12] == "accuracy"
    marker.unlink()
    code, _, err = run_cli(capsys, "search", "mnas", "--resume", "py", "--runs-dir", runs, "--trust-run", "--json")
    assert code == 0 and marker.exists()


def test_proxyless_resume_after_an_interrupted_epoch(home, tmp_path, tiny_npz, monkeypatch, capsys):
    from latbench.search.proxyless import engine

    runs = tmp_path / "runs"
    original = engine.SupernetTrainer.save_checkpoint

    def stop_after_first_epoch(self):  # type: ignore[no-untyped-def]
        original(self)
        if self.epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine.SupernetTrainer, "save_checkpoint", stop_after_first_epoch)
    code, _, err = _proxyless(capsys, runs, tiny_npz, "--warmup", "1", "--run-id", "px")
    assert code == 130 and "interrupted" in err
    folder = RunFolder(runs, "px")
    assert folder.status() == "interrupted" and not folder.result_path.exists()
    assert json.loads((folder.state_dir / "checkpoint.json").read_text())["epoch"] == 1
    monkeypatch.setattr(engine.SupernetTrainer, "save_checkpoint", original)
    code, out, err = run_cli(capsys, "search", "proxyless", "--resume", "px", "--runs-dir", runs, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert set(res) - {"run_dir"} == RESULT_KEYS and res["details"]["epochs_run"] == 2
    assert folder.status() == "done" and len((runs / "px" / "history.csv").read_text().splitlines()) == 1 + 2


# ----------------------------------------------------------------------------- a real device
@pytest.fixture(scope="module")
def cpu_device(tmp_path_factory):
    """A torch-cpu profile of this machine, its proxyless-mobile table at 32 px and a predictor on it whose glue is
    fitted to 0.65 x five networks measured here: it under-predicts, so a found arch near the budget measures
    over it on the real CPU while faster candidates measure within."""
    from latbench import paths
    from latbench.backends import get_backend
    from latbench.device import DeviceProfile
    from latbench.measure.harness import TimingConfig
    from latbench.predict.glue import fit_glue_on
    from latbench.predict.io import save_predictor
    from latbench.predict.lut import TableLatency
    from latbench.service import measure_archs
    from latbench.spaces import get_space
    from latbench.table import build_table

    home = tmp_path_factory.mktemp("cpuhome")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LATBENCH_HOME", str(home))
        b = get_backend("torch-cpu", threads=1)
        settings_ = {k: v for k, v in b.settings.items() if v is not None}
        DeviceProfile(
            name="cpu-t", backend="torch-cpu", settings=settings_, fingerprint=b.fingerprint().to_dict()
        ).save()
        sp = get_space("proxyless-mobile", resolution=32, width=0.35)
        quick = TimingConfig(warmup_s=0.005, min_run_time_s=0.01, min_runs=5, rounds=3, drift="none")
        path = paths.write_dir("tables") / "cpu-t" / "proxyless-mobile-32.json"
        device = {"name": "cpu-t", "backend": "torch-cpu", "settings": b.settings}
        table, _ = build_table(
            b, sp.vocabulary, path, device=device, space=sp.name, space_params=sp.params, config=quick
        )
        archs = [sp.from_indices(i) for i in sp.sample_indices(np.random.default_rng(0), 5)]
        ms, _ = measure_archs(b, archs, quick.with_(min_run_time_s=0.05), progress=False)
        model = TableLatency(table)
        fit_glue_on(model, archs, 0.65 * np.array([m.median for m in ms]), with_offset=True)
        pred = save_predictor(model, home / "under.json")
    return home, pred


def test_measured_over_budget_is_said_and_stepped_within_on_a_real_cpu(cpu_device, tmp_path, monkeypatch, capsys):
    home, pred = cpu_device
    monkeypatch.setenv("LATBENCH_HOME", str(home))
    runs = tmp_path / "runs"
    args = ["search", "mnas", "--predictor", pred, "--device", "cpu-t", "--resolution", "32", "--width", "0.35"]
    args += ["--target", "60%"]
    args += ["--reward", "hard", "--strategy", "scaling", "--trials", "8", "--top-k", "2", "--no-onnx"]
    args += ["--evaluator", "python:" + str(tmp_path / "ev.py") + ":acc", "--runs-dir", runs, "--json"]
    (tmp_path / "ev.py").write_text(EVALUATOR)
    monkeypatch.setenv("LB_MARKER", str(tmp_path / "marker"))
    code, out, err = run_cli(capsys, *args, "--run-id", "step")
    assert code == 0, err
    res = json.loads(out)
    target = res["target_ms"]
    top = res["details"]["top_k"]
    first = res["found"] or top[0]
    m = res["measured"]
    assert res["predicted_kind"] == "predicted" and m is not None and m["n"] >= 16
    assert res["within_budget"] == (m["median_ms"] <= target)  # exactly, no slack
    assert first["measured"]["median_ms"] > target  # the predictor under-predicts: the found arch measures over
    err = " ".join(err.split())  # the terminal reporter may wrap long lines
    assert "OVER the" in err and f"{target:g} ms budget" in err
    report = (runs / "step" / "report.md").read_text()
    assert "OVER" in report.split("## ")[0]  # said at the top of the report
    if res["found"] is not None:  # stepped: the deployed arch is within the budget by its own noise
        assert m["median_ms"] + m["iqr_ms"] <= target and res["within_budget"] and "deploying trial" in err
        assert res["arch"] != res["found"]["arch"]
    else:  # no measured candidate within: the result says over
        assert not res["within_budget"] and res["over_budget_pct"] > 0 and "no measured candidate" in err
    # the option turns stepping off: the found arch is deployed and reported over the budget
    code, out, err = run_cli(capsys, *args, "--run-id", "nostep", "--no-step-to-budget")
    assert code == 0, err
    off = json.loads(out)
    assert off["arch"] == first["arch"]
    assert off["found"] is None and off["measured"]["median_ms"] > target and not off["within_budget"]
    assert off["over_budget_pct"] == pytest.approx(100 * (off["measured"]["median_ms"] / target - 1), abs=1e-3)
    assert math.isfinite(off["predicted_ms"]) and os.path.exists(runs / "nostep" / "deployed.json")
