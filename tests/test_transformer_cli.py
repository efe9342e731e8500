"""``--seq`` on the command line: it reaches the ``bert`` space, is recorded in what is written, and is refused in
one line where the space has no sequence length."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from latbench.spaces import get_space
from latbench.table import LatencyTable

from .conftest import run_cli


def test_table_build_at_seq_64_times_ops_at_sequence_64(home: Path, capsys, tmp_path: Path) -> None:
    """A torch-cpu table of ``bert --seq 64``: every op is at 64 tokens, the file and the output record seq 64,
    its default name says so, and lut-sum fills ``--seq`` into archs that record none (refusing one that does)."""
    code, out, err = run_cli(
        capsys, "table", "build", "--device", "torch-cpu", "--space", "bert", "--seq", "64",
        "--min-time", "0.002", "--drift", "none", "--json",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    path = home / "tables" / "torch-cpu" / "bert-seq64.json"
    assert doc["path"] == str(path) and doc["rows"] == 44 and doc["space_params"]["seq"] == 64
    t = LatencyTable.load(path)
    assert t.space == "bert" and t.space_params["seq"] == 64
    want = {o.key for o in get_space("bert", seq=64).vocabulary}
    assert set(t.rows) == want and want.isdisjoint(o.key for o in get_space("bert").vocabulary)
    assert all(r["median_ms"] > 0 for r in t.rows.values())
    code, out, _ = run_cli(capsys, "table", "show", str(path), "--json")
    assert code == 0 and json.loads(out)["space_params"]["seq"] == 64

    # an arch that records no space and no seq: --space bert --seq 64 fill them in
    arch = get_space("bert", seq=64).sample(3)
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"choices": arch["choices"]}))
    args = ("lut-sum", "--table", path, "--arch", bare, "--space", "bert")
    code, out, err = run_cli(capsys, *args, "--seq", "64", "--json")
    assert code == 0, err
    ops = get_space("bert", seq=64).ops_of(arch)
    assert json.loads(out)["lut_sum_ms"] == [pytest.approx(sum(t.rows[o.key]["median_ms"] for o in ops))]
    # without --seq the same arch is a bert at 128 tokens, whose ops this table lacks
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and err.startswith("latbench: error: ") and "lacks" in err and err.count("\n") == 1
    # an arch that records seq 64 is not silently re-targeted by --seq 32
    recorded = tmp_path / "seq64.json"
    recorded.write_text(json.dumps(arch))
    code, _, err = run_cli(capsys, "lut-sum", "--table", path, "--arch", recorded, "--space", "bert", "--seq", "32")
    assert code == 2 and "seq=64" in err and "seq=32" in err and err.count("\n") == 1
    # a predictor of the seq-64 table gets a default name of its own, next to one of the seq-128 table
    code, out, err = run_cli(capsys, "predictor", "train", "--table", path, "--model", "lut", "--json")
    assert code == 0, err
    pred = home / "predictors" / "torch-cpu" / "bert-seq64-lut.json"
    assert json.loads(out)["path"] == str(pred) and pred.is_file()


@pytest.mark.parametrize(
    "args",
    [
        ("space", "sample", "ofa-mbv3", "--seq", "64"),
        ("table", "build", "--device", "torch-cpu", "--space", "ofa-mbv3", "--seq", "64"),
        ("search", "mnas", "--space", "autoformer", "--seq", "64", "--target", "5ms", "--table", "none.json"),
        ("lut-check", "--device", "torch-cpu", "--space", "proxyless-mobile", "--seq", "64"),
        ("dataset", "measure", "--device", "torch-cpu", "--space", "nb201", "--seq", "64", "--sample", "1"),
    ],
)
def test_seq_on_a_space_without_one_is_one_line_exit_2(home: Path, capsys, args: tuple[str, ...]) -> None:
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("latbench: error: --seq 64: space ") and "has no sequence length" in err and "bert" in err
    assert not (home / "tables").exists()  # refused before any work


@pytest.mark.parametrize("value", ["7", "4097", "0", "-1", "x"])
def test_seq_out_of_range_is_one_line_exit_2(home: Path, capsys, value: str) -> None:
    code, _, err = run_cli(capsys, "space", "sample", "bert", "--seq", value)
    assert code == 2 and err.startswith("latbench: error: ") and "--seq" in err and err.count("\n") == 1


def test_seq_needs_a_space_and_not_a_sample(home: Path, capsys, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "measure", "--device", "torch-cpu", "--arch", tmp_path / "a.json", "--seq", "64")
    assert code == 2 and "give --space too" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "measure", "--device", "torch-cpu", "--onnx", tmp_path / "m.onnx", "--seq", "64")
    assert code == 2 and "ONNX" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "table", "build", "--device", "torch-cpu", "--sample", "5", "--seq", "64")
    assert code == 2 and "--sample" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "search", "mnas", "--resume", "r1", "--seq", "64")
    assert code == 2 and "drop --seq" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "space", "sample", "bert", "--resolution", "64")
    assert code == 2 and "has no input resolution" in err and err.count("\n") == 1


def test_space_sample_records_the_seq(capsys, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "space", "sample", "bert", "--seq", "256", "--n", "3", "--out", tmp_path / "a.jsonl")
    assert code == 0, err
    archs = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert len(archs) == 3 and all(a["space"] == "bert" and a["seq"] == 256 for a in archs)
    assert get_space("bert", seq=256).ops_of(archs[0])[0].hw == 256  # the token embedding runs 256 tokens


def test_dataset_measure_records_the_seq(home: Path, capsys, tmp_path: Path) -> None:
    """One bert network at 8 tokens measured end to end on torch-cpu into a dataset that records seq 8."""
    from latbench.dataset import load_dataset

    code, _, err = run_cli(
        capsys, "dataset", "measure", "--device", "torch-cpu", "--space", "bert", "--seq", "8", "--sample", "1",
        "--min-time", "0.01", "--out", tmp_path / "d.csv", "--json",
    )  # fmt: skip
    assert code == 0, err
    ds = load_dataset(tmp_path / "d.csv")
    assert ds.space == "bert" and ds.space_params["seq"] == 8 and len(ds) == 1
    assert ds.get_space().params["seq"] == 8
