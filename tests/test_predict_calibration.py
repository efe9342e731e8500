"""End-to-end calibration, accuracy metrics, and `predictor train|eval` on the fake device."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from latbench.errors import LatbenchError
from latbench.predict.glue import fit_glue
from latbench.predict.metrics import accuracy

from .conftest import PIXEL1_YAML, run_cli


def test_fit_calibration_recovers_scale_and_offset() -> None:
    x = np.array([10.0, 12.0, 15.0, 19.0, 25.0, 31.0])
    cal = fit_glue(x, 1.25 * x + 3.5)
    assert cal.scale == pytest.approx(1.25) and cal.offset_ms == pytest.approx(3.5)
    few = fit_glue(x[:2], 1.1 * x[:2])  # too few networks for an offset: scale only
    assert few.offset_ms == 0.0 and few.scale == pytest.approx(1.1)
    neg = fit_glue(x, 1.5 * x - 4.0)  # a negative offset is not glue: scale only
    assert neg.offset_ms == 0.0 and 1.2 < neg.scale < 1.5
    with pytest.raises(LatbenchError, match="positive"):
        fit_glue([1.0, -1.0], [1.0, 1.0])


def test_accuracy_numbers() -> None:
    m = np.array([10.0, 20.0, 30.0, 40.0])
    p = np.array([10.4, 21.5, 30.0, 47.0])  # 4%, 7.5%, 0%, 17.5%
    acc = accuracy(p, m)
    assert acc["within_5"] == 0.5 and acc["within_10"] == 0.75
    assert acc["mape"] == pytest.approx((0.04 + 0.075 + 0 + 0.175) / 4)
    assert acc["rmse_ms"] == pytest.approx(np.sqrt((0.16 + 2.25 + 0 + 49) / 4))
    assert acc["spearman"] == pytest.approx(1.0) and acc["kendall"] == pytest.approx(1.0)
    assert acc["max_rel_error"] == pytest.approx(0.175)


def _setup(capsys, tmp_path: Path) -> None:
    assert run_cli(capsys, "profile", "fake", "--name", "fk", "--set", "noise=0.0")[0] == 0
    assert run_cli(capsys, "table", "build", "--device", "fk", "--space", "proxyless-mobile")[0] == 0
    assert run_cli(capsys, "table", "build", "--device", "fk", "--sample", "120", "--out", tmp_path / "s.json")[0] == 0
    code = run_cli(
        capsys, "space", "sample", "proxyless-mobile", "--n", "12", "--seed", "9", "--out", tmp_path / "a.jsonl"
    )
    assert code[0] == 0


def test_train_calibrate_eval_end_to_end(home: Path, capsys, tmp_path: Path) -> None:
    _setup(capsys, tmp_path)
    code, out, err = run_cli(
        capsys,
        "predictor",
        "train",
        "--table",
        "fk/proxyless-mobile",
        "--table",
        tmp_path / "s.json",
        "--model",
        "gbm",
        "--calib-archs",
        "6",
        "--cv-folds",
        "3",
        "--json",
    )
    assert code == 0, err
    doc = json.loads(out)
    path = Path(doc["path"])
    assert path == home / "predictors" / "fk" / "proxyless-mobile-gbm.json" and path.exists()
    # the fake device adds 0.005 ms of glue per op: calibration finds a positive offset
    assert doc["calibration"]["offset_ms"] > 0 and doc["metrics"]["calibration_in_sample"]["mape"] < 0.01
    saved = json.loads(path.read_text())
    assert saved["calibration"]["archs"] == 6 and len(saved["calibration"]["measured_ms"]) == 6
    assert saved["training"]["rows"] == 190 and saved["metrics"]["archs_vs_lut_sum"]["archs"] == 1000
    code, out, err = run_cli(capsys, "predictor", "train", "--table", "fk/proxyless-mobile", "--model", "lut", "--json")
    assert code == 0, err
    code, _, err = run_cli(capsys, "predictor", "train", "--table", "fk/proxyless-mobile", "--model", "lut")
    assert code == 2 and "exists; pass --force" in err
    code, out, err = run_cli(
        capsys,
        "predictor",
        "eval",
        "fk/proxyless-mobile-gbm",
        "fk/proxyless-mobile-lut",
        "--arch",
        tmp_path / "a.jsonl",
        "--device",
        "fk",
        "--retest",
        "--out",
        tmp_path / "ev" / "summary.json",
        "--json",
    )
    assert code == 0, err
    res = json.loads(out)
    assert set(res["models"]) == {"gbm", "lut"} and res["n_archs"] == 12
    for r in res["models"].values():
        assert r["n"] == 12 and {"rmse_ms", "mape", "within_5", "within_10", "spearman", "kendall"} <= set(r)
    # the uncalibrated LUT misses the glue; the calibrated model does not
    assert res["models"]["lut"]["bias"] < -0.005 < res["models"]["gbm"]["bias"] + 0.005
    assert res["models"]["gbm"]["within_5"] == 1.0
    assert res["retest"]["within_5"] == 1.0  # the fake device repeats itself
    # each model's off-range figures on its own table, as stored at training (lut has none)
    assert list(res["table_off_range"]) == ["gbm"]
    assert res["table_off_range"]["gbm"] == {
        k: v for k, v in saved["metrics"]["ops_off_range"].items() if k != "groups"
    }
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert len(summary["measured_ms"]) == 12 and summary["fingerprint"].startswith("fake-")
    png = (tmp_path / "ev" / "summary.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_calibration_needs_a_measurable_device(home: Path, capsys, need_luts: None, tmp_path: Path) -> None:
    table = tmp_path / "pixel1.json"
    assert run_cli(capsys, "table", "import", PIXEL1_YAML, "--format", "proxyless", "--out", table)[0] == 0
    code, _, err = run_cli(capsys, "predictor", "train", "--table", table, "--model", "linear", "--calib-archs", "3")
    assert code == 2 and err.count("\n") == 1
    code, _, err = run_cli(capsys, "predictor", "train", "--table", table, "--model", "nope")
    assert code == 2 and "unknown model 'nope'" in err


def test_calibrate_from_measured_archs(home: Path, capsys, tmp_path: Path) -> None:
    _setup(capsys, tmp_path)
    code, _, err = run_cli(
        capsys, "measure", "--device", "fk", "--arch", tmp_path / "a.jsonl", "--out", tmp_path / "m.json"
    )
    assert code == 0, err
    code, out, err = run_cli(
        capsys,
        "predictor",
        "train",
        "--table",
        "fk/proxyless-mobile",
        "--model",
        "lut",
        "--calib-from",
        tmp_path / "m.json",
        "--out",
        tmp_path / "p.json",
        "--json",
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["calibration"]["offset_ms"] > 0 and doc["metrics"]["calibration_in_sample"]["n"] == 12
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["calibration"]["from"] == str(tmp_path / "m.json")
    # measurements of another device are refused
    assert run_cli(capsys, "profile", "fake", "--name", "fk2", "--set", "device=elsewhere")[0] == 0
    code, _, err = run_cli(
        capsys, "measure", "--device", "fk2", "--arch", tmp_path / "a.jsonl", "--out", tmp_path / "m2.json"
    )
    assert code == 0, err
    code, _, err = run_cli(
        capsys,
        "predictor",
        "train",
        "--table",
        "fk/proxyless-mobile",
        "--model",
        "lut",
        "--calib-from",
        tmp_path / "m2.json",
        "--out",
        tmp_path / "p2.json",
    )
    assert code == 2 and "was measured on fake-" in err and err.count("\n") == 1


def test_eval_with_in_run_calibration(home: Path, capsys, tmp_path: Path) -> None:
    """`eval --calib-archs K` refits each model's glue on K other archs measured in the same run."""
    _setup(capsys, tmp_path)
    code, _, err = run_cli(capsys, "predictor", "train", "--table", "fk/proxyless-mobile", "--model", "lut")
    assert code == 0, err
    # the device is now 30% slower than when the table was built: only an in-run calibration sees that
    # (noise-free like _setup: with noise, the fake's sentinel ticks, which follow the wall clock, would draw
    # different noise from run to run)
    assert (
        run_cli(capsys, "profile", "fake", "--name", "fk", "--set", "speed=1.3", "--set", "noise=0.0", "--force")[0]
        == 0
    )
    args = ("predictor", "eval", "fk/proxyless-mobile-lut", "--arch", tmp_path / "a.jsonl", "--device", "fk")
    code, out, err = run_cli(capsys, *args, "--force", "--out", tmp_path / "e1" / "summary.json", "--json")
    assert code == 0, err
    plain = json.loads(out)["models"]["lut"]
    assert plain["bias"] < -0.2 and plain["within_10"] == 0.0
    code, out, err = run_cli(
        capsys, *args, "--force", "--calib-archs", "5", "--retest", "--out", tmp_path / "e2" / "summary.json", "--json"
    )
    assert code == 0, err
    res = json.loads(out)
    lut = res["models"]["lut"]
    assert lut["within_5"] == 1.0 and lut["calibration"]["scale"] == pytest.approx(1.3, rel=0.02)
    assert res["retest_in_run_calibrated"]["within_5"] == 1.0
    summary = json.loads((tmp_path / "e2" / "summary.json").read_text())
    calib = summary["in_run_calibration"]["archs"]
    assert len(calib) == 5 and not {json.dumps(a, sort_keys=True) for a in calib} & {
        json.dumps(json.loads(line), sort_keys=True) for line in (tmp_path / "a.jsonl").read_text().splitlines()
    }


def test_demo_step_trains_and_calibrates(home: Path, tmp_path: Path) -> None:
    from latbench import demo
    from latbench.backends import get_backend
    from latbench.device import DeviceProfile
    from latbench.predict.demo import step_predictor
    from latbench.service import measure_archs
    from latbench.spaces import get_space
    from latbench.table import build_table

    steps = demo.demo_steps()
    assert steps.index(step_predictor) == steps.index(demo.step_lut_vs_measured) + 1
    be = get_backend("fake")
    space = get_space("proxyless-mobile")
    table, _ = build_table(be, space.vocabulary, tmp_path / "t.json", space=space.name, space_params=space.params)
    archs = [space.from_indices(i) for i in space.sample_indices(np.random.default_rng(0), 10)]
    ms, _ = measure_archs(be, archs, be.timing, None, progress=False)
    ctx = demo.DemoContext("fk", DeviceProfile("fk", "fake"), be, table, space, tmp_path)
    ctx.results["lut_vs_measured"] = {
        "lut_ms": [table.lut_sum(space.ops_of(a)) for a in archs],
        "measured_ms": [m.median for m in ms],
    }
    step_predictor(ctx)
    res = ctx.results["predictor"]
    assert Path(res["path"]).exists() and (res["scale"] > 1.0 or res["offset_ms"] > 0)
    assert res["model"]["mape"] < res["lut"]["mape"]
