"""The zero-cost and train evaluators of ``search mnas`` on the transformer spaces, on torch-cpu tables.

Each combination runs a few trials and its ``result.json`` must hold a finite score (or accuracy) and a positive
predicted latency for the deployed arch; ``bert`` runs through the CLI at ``--seq 16``, so the sequence length is
recorded in what the run writes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from latbench.backends import get_backend
from latbench.errors import LatbenchError
from latbench.measure.harness import TimingConfig
from latbench.search.mnas.api import run
from latbench.search.mnas.proxy import proxy_data, proxy_space
from latbench.spaces import get_space
from latbench.table import build_table

from .conftest import run_cli

QUICK = TimingConfig(warmup_s=0.0, min_warmup_calls=1, min_run_time_s=0.002, min_runs=3, rounds=1, max_retries=0)
#: small evaluator settings: a few examples, a step or two of training
FAST = {
    "zero-cost": {"batch": 8},
    "zero-cost:synflow": {},
    "zero-cost:grad-norm": {"batch": 8},
    "train": {"epochs": 1, "max_train": 32, "max_seconds": 5},
}


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """torch-cpu tables of autoformer at 32 px and bert at 16 tokens (the sizes the searches below deploy)."""
    folder = tmp_path_factory.mktemp("tables")
    backend = get_backend("torch-cpu", threads=1)
    out = {}
    for name, params in (("autoformer", {"resolution": 32}), ("bert", {"seq": 16})):
        s = get_space(name, **params)
        out[name] = folder / f"{name}.json"
        build_table(backend, s.vocabulary, out[name], space=s.name, space_params=s.params, config=QUICK)
    return out


def _check_result(run_dir: Path, value: str) -> dict:
    res = json.loads((run_dir / "result.json").read_text())
    assert res["arch"], "no trial succeeded"
    assert math.isfinite(res[value]) and math.isfinite(res["predicted_ms"]) and res["predicted_ms"] > 0
    return res


@pytest.mark.parametrize("evaluator", ["zero-cost", "zero-cost:synflow", "zero-cost:grad-norm", "train"])
def test_autoformer_evaluator(evaluator: str, tables: dict[str, Path], tmp_path: Path) -> None:
    res = run(
        space="autoformer", resolution=32, table=str(tables["autoformer"]), target="50%", evaluator=evaluator,
        evaluator_options=FAST[evaluator], trials=3, top_k=1, measure=False, export_onnx=False,
        runs_dir=tmp_path, progress=False,
    )  # fmt: skip
    best = _check_result(res.run_dir, "accuracy" if evaluator == "train" else "score")
    assert best["arch"]["space"] == "autoformer" and best["arch"]["resolution"] == 32
    if evaluator == "train":
        assert 0.0 <= best["accuracy"] <= 1.0


def test_bert_zero_cost_through_the_cli_at_seq_16(capsys, tables: dict[str, Path], tmp_path: Path) -> None:
    code, out, err = run_cli(
        capsys, "search", "mnas", "--space", "bert", "--seq", "16", "--table", tables["bert"], "--target", "50%",
        "--evaluator", "zero-cost", "--evaluator-opt", "batch=8", "--trials", "3", "--top-k", "1", "--no-measure",
        "--no-onnx", "--runs-dir", tmp_path, "--run-id", "z", "--json",
    )  # fmt: skip
    assert code == 0, err
    best = _check_result(tmp_path / "z", "score")
    assert best["arch"]["space"] == "bert" and best["arch"]["seq"] == 16
    config = json.loads((tmp_path / "z" / "config.json").read_text())
    assert config["space"]["seq"] == 16 and config["settings"]["seq"] == 16
    assert config["evaluator"]["proxy_space"]["space"] == "bert"  # the sequence-task proxy, not an image net
    assert json.loads(out)["arch"]["seq"] == 16


def test_bert_train(tables: dict[str, Path], tmp_path: Path) -> None:
    res = run(
        space="bert", seq=16, table=str(tables["bert"]), target="50%", evaluator="train",
        evaluator_options=FAST["train"], trials=2, top_k=1, measure=False, export_onnx=False,
        runs_dir=tmp_path, progress=False,
    )  # fmt: skip
    best = _check_result(res.run_dir, "accuracy")
    assert 0.0 <= best["accuracy"] <= 1.0 and best["arch"]["seq"] == 16


def test_bert_proxy_is_the_sequence_task() -> None:
    s = get_space("bert", seq=256)
    sp = proxy_data(s, "digits", 32, 0)
    proxy = proxy_space(s, 32, 0.35, sp.num_classes)
    assert proxy.params["seq"] == sp.x_train.shape[1] == 32 and sp.num_classes == 2
    assert proxy.decisions == s.decisions  # the same choices, so every deployed arch has a proxy
    assert float(sp.x_train.max()) < proxy.params["vocab"] and 0.4 < float(sp.y_train.float().mean()) < 0.6
    with pytest.raises(LatbenchError, match="sequence task"):
        proxy_data(s, "images.npz", 32, 0)
