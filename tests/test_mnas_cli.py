"""`latbench search mnas`: run folders, bad input, resume after an interruption."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from latbench.cli import main
from latbench.search.mnas import run
from latbench.search.mnas.evaluators import Evaluator

REPO = Path(__file__).resolve().parents[1]
PIXEL1 = str(REPO / "tables/pixel1/proxyless-mobile.json")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LATBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


def test_cli_writes_a_complete_run_folder(tmp_path, capsys):
    rc = main(
        [
            "search",
            "mnas",
            "--table",
            PIXEL1,
            "--target",
            "70ms",
            "--strategy",
            "evolution",
            "--evaluator",
            "zero-cost",
            "--trials",
            "12",
            "--reward",
            "hard",
            "--run-id",
            "r1",
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    d = tmp_path / "home" / "runs" / "r1"  # the default runs folder: $LATBENCH_HOME/runs
    assert out["run_dir"] == str(d) and out["run_id"] == "r1" and out["engine"] == "mnas"
    for f in ("config.json", "history.csv", "result.json", "deployed.onnx", "deployed.json", "pareto.png", "report.md"):
        assert (d / f).stat().st_size > 0, f
    assert (d / "state" / "state.json").is_file() and not (d / "trained-variant.onnx").exists()
    rows = list(csv.DictReader((d / "history.csv").open()))
    assert len(rows) == 12 and all(r["status"] == "ok" for r in rows)
    assert "accuracy" not in rows[0] and "score" in rows[0]  # naswot is a proxy score, named as one
    assert all(float(r["latency_ms"]) <= 70.0 for r in rows)
    res = json.loads((d / "result.json").read_text())
    assert res["predicted_ms"] <= 70.0 and res["arch"]["space"] == "proxyless-mobile" and res["target_ms"] == 70.0
    assert res["score"] == pytest.approx(max(float(r["score"]) for r in rows)) and res["accuracy"] is None
    assert res["score_name"] == "zero-cost:naswot" and res["predicted_kind"] == "looked up"
    assert res["measured"] is None and res["within_budget"] and res["over_budget_pct"] == 0.0
    assert "not measured: the latency source's device (pixel1) cannot run here" in res["measured_note"]
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["engine"] == "mnas" and cfg["latency_source"]["fingerprint"] == "published-pixel1-proxyless"
    assert cfg["latency_source"]["kind"] == "looked up" and cfg["target"]["ms"] == 70.0
    assert cfg["reward"]["alpha"] == 0.0 and cfg["reward"]["beta"] == -1.0 and cfg["versions"]["torch"]
    assert cfg["reward"]["score_scale"]["n"] >= 2  # the proxy score's reference sample
    import onnx

    assert len(onnx.load(str(d / "deployed.onnx")).graph.node) > 20
    report = (d / "report.md").read_text()
    assert "| 1 |" in report and "**Budget 70 ms:" in report and "proxy score" in report


@pytest.mark.parametrize(
    "args,message",
    [
        (["--target", "5ms"], "below the smallest arch of the space (29.609 ms)"),
        (["--target", "0"], "must be a positive latency"),
        (["--target", "0%"], "must be in (0, 100]%"),
        (["--target", "70ms", "--trials", "-3"], "--trials must be >= 1"),
        (["--target", "70ms", "--batch", "0"], "--batch must be >= 1"),
        (["--target", "70ms", "--run-id", "../../x"], "bad run id"),
        (["--resume", "no-such-run"], "no run 'no-such-run'"),
        (["--target", "70ms", "--strategy", "annealing"], "unknown strategy 'annealing'"),
        (["--target", "70ms", "--evaluator", "magic"], "unknown evaluator 'magic'"),
        (["--target", "70ms", "--evaluator", "python:no_such_module_xyz:f"], "cannot import module"),
        (["--target", "70ms", "--alpha", "0.2"], "positive: it would reward slower nets"),
        (["--target", "fast"], "bad latency target"),
        ([], "give a latency target"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, capsys, tmp_path):
    rc = main(["search", "mnas", "--table", PIXEL1, "--trials", "3", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("latbench: error: ") and message in err[0]
    assert not (tmp_path / "home" / "runs").exists() or not any((tmp_path / "home" / "runs").iterdir())
    assert not (tmp_path / "x").exists()


class InterruptAt(Evaluator):
    """A real zero-cost-free evaluator (MACs of the arch) that raises Ctrl-C at one trial."""

    name = "interrupt-at"
    batched = True

    def __init__(self, at: int | None) -> None:
        self.at = at

    def evaluate(self, batch):  # type: ignore[no-untyped-def]
        from latbench.search.mnas.evaluators import EvalResult

        if self.at is not None and (batch.trials >= self.at).any():
            raise KeyboardInterrupt
        space = batch.space
        macs = np.array([space.macs(a) for a in batch], dtype=float)
        return EvalResult(1.0 - np.exp(-macs / 3e8), [None] * len(batch), np.zeros(len(batch)))


def test_interrupted_run_resumes_to_the_same_history_as_an_uninterrupted_one(tmp_path, monkeypatch):
    from latbench.search.mnas import evaluators as ev_mod
    from latbench.search.mnas.api import RunInterrupted

    common = dict(
        table=PIXEL1,
        target="80ms",
        strategy="evolution",
        trials=120,
        seed=5,
        batch=20,
        strategy_options={"population": 20},
        progress=False,
        export_onnx=False,
        checkpoint_every_s=0.0,
    )
    monkeypatch.setitem(ev_mod.EVALUATORS, "interrupt-at", lambda at=None: InterruptAt(at))
    ref = run(evaluator="interrupt-at", runs_dir=tmp_path / "a", run_id="ref", **common)
    with pytest.raises(RunInterrupted) as info:
        run(evaluator="interrupt-at", evaluator_options={"at": 70}, runs_dir=tmp_path / "b", run_id="cut", **common)
    cut = tmp_path / "b" / "cut"
    assert info.value.run_dir == cut
    rows = list(csv.reader((cut / "history.csv").open()))
    assert len(rows) == 1 + 60  # three whole batches kept, the interrupted one not half-written
    assert not (cut / "result.json").exists() and not (cut / "state" / "running.json").exists()
    from latbench.search.runstore import RunFolder

    assert RunFolder(tmp_path / "b", "cut").status() == "interrupted"
    # resume (without the interruption) and compare with the run that was never stopped
    cfg = json.loads((cut / "config.json").read_text())
    cfg["settings"]["evaluator_options"] = {}
    (cut / "config.json").write_text(json.dumps(cfg))
    res = run(resume="cut", runs_dir=tmp_path / "b", progress=False, export_onnx=False)
    a = list(csv.DictReader((tmp_path / "a" / "ref" / "history.csv").open()))
    b = list(csv.DictReader((cut / "history.csv").open()))
    keys = [k for k in a[0] if k not in ("eval_s", "elapsed_s")]
    assert len(b) == 120
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    assert res.best["trial"] == ref.best["trial"] and res.best["accuracy"] == ref.best["accuracy"]
    assert res.result["accuracy"] == ref.result["accuracy"] and res.result["score"] is None
    assert set(res.result) == set(ref.result) and RunFolder(tmp_path / "b", "cut").status() == "done"
