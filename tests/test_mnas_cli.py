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
    d = tmp_path / "runs" / "r1"
    assert out["run_dir"] == str(Path("runs") / "r1")
    for f in ("config.json", "history.csv", "best.json", "best.onnx", "pareto.png", "report.md", "state.json"):
        assert (d / f).stat().st_size > 0, f
    rows = list(csv.DictReader((d / "history.csv").open()))
    assert len(rows) == 12 and all(r["status"] == "ok" for r in rows)
    assert all(float(r["latency_ms"]) <= 70.0 for r in rows)
    best = json.loads((d / "best.json").read_text())
    assert best["best"]["predicted_ms"] <= 70.0 and best["best"]["arch"]["space"] == "proxyless-mobile"
    assert best["best"]["accuracy"] == pytest.approx(max(float(r["accuracy"]) for r in rows))
    assert "not measured: the latency source's device (pixel1) cannot run here" in best["measure_note"]
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["latency_source"]["fingerprint"] == "published-pixel1-proxyless"
    assert cfg["reward"]["alpha"] == 0.0 and cfg["reward"]["beta"] == -1.0 and cfg["versions"]["torch"]
    import onnx

    assert len(onnx.load(str(d / "best.onnx")).graph.node) > 20
    assert "| 1 |" in (d / "report.md").read_text()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--target", "5ms"], "smallest possible latency is 29.609 ms"),
        (["--target", "70ms", "--strategy", "annealing"], "unknown strategy 'annealing'"),
        (["--target", "70ms", "--evaluator", "magic"], "unknown evaluator 'magic'"),
        (["--target", "70ms", "--evaluator", "python:no_such_module_xyz:f"], "cannot import module"),
        (["--target", "70ms", "--alpha", "0.2"], "positive: it would reward slower nets"),
        (["--target", "fast"], "bad latency target"),
        ([], "give a latency target"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, capsys):
    rc = main(["search", "mnas", "--table", PIXEL1, "--trials", "3", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("latbench: error: ") and message in err[0]


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
    ref = run(evaluator="interrupt-at", out=tmp_path / "a", run_id="ref", **common)
    with pytest.raises(RunInterrupted) as info:
        run(evaluator="interrupt-at", evaluator_options={"at": 70}, out=tmp_path / "b", run_id="cut", **common)
    cut = tmp_path / "b" / "cut"
    assert info.value.run_dir == cut
    rows = list(csv.reader((cut / "history.csv").open()))
    assert len(rows) == 1 + 60  # three whole batches kept, the interrupted one not half-written
    # resume (without the interruption) and compare with the run that was never stopped
    cfg = json.loads((cut / "config.json").read_text())
    cfg["args"]["evaluator_options"] = {}
    (cut / "config.json").write_text(json.dumps(cfg))
    res = run(resume=str(cut), progress=False, export_onnx=False)
    a = list(csv.DictReader((tmp_path / "a" / "ref" / "history.csv").open()))
    b = list(csv.DictReader((cut / "history.csv").open()))
    keys = [k for k in a[0] if k not in ("eval_s", "elapsed_s")]
    assert len(b) == 120
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    assert res.best["trial"] == ref.best["trial"] and res.best["accuracy"] == ref.best["accuracy"]
