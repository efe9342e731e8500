"""Predictor files: safe JSON, bit-identical reload in a fresh process, clear refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latbench.errors import LatbenchError
from latbench.predict.io import SCHEMA, load_predictor, save_predictor
from latbench.predict.models import MODEL_NAMES, fit_model
from latbench.predict.sampling import sample_ops
from latbench.predict.training import train_predictor
from latbench.spaces import get_space
from latbench.table import LatencyTable

from .conftest import run_cli
from .test_predict_models import fake_table

RELOAD = """
import sys, numpy as np
from latbench.predict.io import load_predictor
from latbench.spaces import get_space
from latbench.predict.sampling import sample_ops
m = load_predictor(sys.argv[1])
s = get_space("proxyless-mobile")
idx = s.sample_indices(np.random.default_rng(7), 300)
archs = m.predict_archs([s.from_indices(i) for i in idx])
ops = m.predict_ops(s.vocabulary + ([] if sys.argv[2] == "lut" else sample_ops(60, seed=5)))
sys.stdout.write(np.concatenate([archs, ops]).tobytes().hex())
"""


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> list[LatencyTable]:
    tmp = tmp_path_factory.mktemp("io")
    s = get_space("proxyless-mobile")
    return [fake_table(tmp, s.vocabulary, "px", "proxyless-mobile"), fake_table(tmp, sample_ops(150, seed=2), "smp")]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_reload_in_fresh_process_is_bit_identical(name: str, tables: list[LatencyTable], tmp_path: Path) -> None:
    used = tables[:1] if name == "lut" else tables
    m = fit_model(name, used)
    m.meta = {"metrics": {"note": "not scored"}}
    m.calibration = type(m.calibration)(1.0734, 0.5121)
    path = save_predictor(m, tmp_path / f"{name}.json")
    doc = json.loads(path.read_text())
    assert doc["schema"] == SCHEMA and doc["model"] == name
    assert doc["fingerprint"]["id"] == tables[0].fingerprint_id
    assert doc["versions"]["numpy"]
    if name == "xgboost":  # xgboost's own JSON model format, embedded
        regs = doc["state"]["regressors"]
        assert all(r["format"] == "xgboost-json" and "learner" in r["model"] for r in regs.values())
    assert doc["features"] and doc["metrics"] == {"note": "not scored"}
    s = get_space("proxyless-mobile")
    idx = s.sample_indices(np.random.default_rng(7), 300)
    here = np.concatenate(
        [
            m.predict_archs([s.from_indices(i) for i in idx]),
            m.predict_ops(s.vocabulary + ([] if name == "lut" else sample_ops(60, seed=5))),
        ]
    )
    proc = subprocess.run([sys.executable, "-c", RELOAD, str(path), name], capture_output=True, text=True, check=True)
    there = np.frombuffer(bytes.fromhex(proc.stdout))
    assert there.shape == here.shape
    assert np.array_equal(there, here), f"{name}: max diff {np.max(np.abs(there - here))}"


def test_pickle_free_with_out_of_sample_metrics(tables: list[LatencyTable], tmp_path: Path) -> None:
    path = save_predictor(train_predictor("random-forest", tables, cv_folds=2), tmp_path / "rf.json")
    raw = path.read_bytes()
    assert raw.lstrip().startswith(b"{") and b"pickle" not in raw.lower()
    doc = json.loads(raw)
    trees = doc["state"]["regressors"]["mbconv"]
    assert trees["kind"] == "trees" and len(trees["trees"]) == 120
    assert 0 < doc["metrics"]["ops"]["mape"] < 0.5 and doc["metrics"]["ops"]["n"] == 220
    assert doc["metrics"]["archs_vs_lut_sum"]["archs"] == 1000 and "mbconv" in doc["metrics"]["ops_per_type"]


@pytest.fixture
def saved(home: Path, tables: list[LatencyTable]) -> Path:
    m = train_predictor("linear", tables, cv_folds=2)
    return save_predictor(m, home / "predictors" / "fk" / "proxyless-mobile-linear.json")


def _write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_refusals_are_one_line_exit_2(saved: Path, tmp_path: Path, capsys, home: Path) -> None:
    arch = tmp_path / "a.json"
    arch.write_text(json.dumps(get_space("proxyless-mobile").sample(0)))
    code, out, err = run_cli(capsys, "predict", "--predictor", saved, "--arch", arch, "--json")
    assert code == 0, err
    assert json.loads(out)["results"][0]["predicted_ms"] > 0
    doc = json.loads(saved.read_text())
    cases = {
        "missing": ({k: v for k, v in doc.items() if k != "state"}, "lacks field(s) state"),
        "schema": ({**doc, "schema": "latbench.predictor/0"}, "schema 'latbench.predictor/0' is not supported"),
        "noid": ({**doc, "fingerprint": {"backend": "fake"}}, "fingerprint has no id"),
        "state": ({**doc, "state": {**doc["state"], "regressors": {}}}, "no regressor"),
    }
    for name, (bad, msg) in cases.items():
        p = _write(tmp_path / f"{name}.json", bad)
        code, _, err = run_cli(capsys, "predict", "--predictor", p, "--arch", arch)
        assert code == 2, name
        assert msg in err and err.startswith("latbench: error:") and err.count("\n") == 1, err
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"schema": ')
    code, _, err = run_cli(capsys, "predict", "--predictor", corrupt, "--arch", arch)
    assert code == 2 and "corrupt predictor file" in err


def test_refuses_another_device_unless_forced(saved: Path, tmp_path: Path, capsys, home: Path) -> None:
    arch = tmp_path / "a.json"
    arch.write_text(json.dumps(get_space("proxyless-mobile").sample(0)))
    # a fake device with other settings has another fingerprint
    assert run_cli(capsys, "profile", "fake", "--name", "other", "--set", "device=somewhere-else")[0] == 0
    code, _, err = run_cli(capsys, "predict", "--predictor", saved, "--arch", arch, "--device", "other")
    assert code == 2 and "predictor is for device fake-" in err and "--force" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "predict", "--predictor", saved, "--arch", arch, "--device", "other", "--force")
    assert code == 0, err
    with pytest.raises(LatbenchError, match="not fake-0"):
        load_predictor(saved, device="fake-0")
    # filed under another device's folder
    moved = home / "predictors" / "note10" / "x.json"
    moved.parent.mkdir(parents=True)
    moved.write_text(saved.read_text())
    code, _, err = run_cli(capsys, "predict", "--predictor", "note10/x", "--arch", arch)
    assert code == 2 and "filed under predictors/note10/" in err
    assert load_predictor(moved, force=True).predict_arch(json.loads(arch.read_text())) > 0


def test_lookup_by_name(saved: Path) -> None:
    m = load_predictor("fk/proxyless-mobile-linear")
    assert m.meta["path"] == str(saved) and m.meta["model"] == "linear"
    with pytest.raises(LatbenchError, match="predictor not found"):
        load_predictor("fk/nothing-here")


def test_saved_metrics_and_provenance(tables: list[LatencyTable], tmp_path: Path) -> None:
    m = fit_model("lut", tables[:1])
    m.meta = {}
    doc = json.loads(save_predictor(m, tmp_path / "lut.json").read_text())
    assert len(doc["state"]["rows"]) == 70 and doc["space"] == "proxyless-mobile"
