"""The CLI end to end on the fake backend: happy paths, one-line errors with exit 2, nothing lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from latbench.spaces import get_space

from .conftest import PIXEL1_YAML, run_cli


def _profile_fake(capsys, name: str = "fk", device: str = "dev-a") -> str:
    code, out, err = run_cli(capsys, "profile", "fake", "--name", name, "--set", f"device={device}")
    assert code == 0, err
    return out.strip()


def test_profile_build_show_export_lut_sum(home: Path, capsys, tmp_path: Path) -> None:
    fid = _profile_fake(capsys)
    assert fid.startswith("fake-")
    toml = (home / "devices" / "fk.toml").read_text()
    assert fid in toml and "sentinel_ms" in toml
    code, out, err = run_cli(capsys, "table", "build", "--device", "fk", "--space", "proxyless-mobile", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["rows"] == 70 and doc["measured_now"] == 70 and doc["fingerprint"] == fid and doc["seconds"] > 0
    table = home / "tables" / "fk" / "proxyless-mobile.json"
    assert table.exists()
    code, out, _ = run_cli(capsys, "table", "show", str(table), "--json")
    assert json.loads(out)["rows"] == 70
    code, _, _ = run_cli(capsys, "table", "export", str(table), "--csv", tmp_path / "t.csv")
    assert code == 0 and (tmp_path / "t.csv").read_text().count("\n") == 71
    code, _, _ = run_cli(
        capsys, "space", "sample", "proxyless-mobile", "--n", "5", "--seed", "1", "--out", tmp_path / "a.jsonl"
    )
    assert code == 0
    code, out, _ = run_cli(capsys, "lut-sum", "--table", str(table), "--arch", tmp_path / "a.jsonl", "--json")
    sums = json.loads(out)["lut_sum_ms"]
    assert len(sums) == 5 and all(s > 0 for s in sums)
    code, out, _ = run_cli(capsys, "measure", "--device", "fk", "--arch", tmp_path / "a.jsonl", "--json")
    res = json.loads(out)["results"]
    assert len(res) == 5 and all(r["median_ms"] > 0 and r["n"] >= 16 for r in res)
    # the fake device's networks cost their ops plus glue: close to, and above, the LUT sum
    for r, s in zip(res, sums, strict=True):
        assert 1.0 < r["median_ms"] / s < 1.12


def test_build_resume_on_existing_table(home: Path, capsys) -> None:
    _profile_fake(capsys)
    args = ("table", "build", "--device", "fk", "--space", "darts")
    assert run_cli(capsys, *args)[0] == 0
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "--resume" in err and err.count("\n") == 1
    code, out, _ = run_cli(capsys, *args, "--resume", "--json")
    assert code == 0 and json.loads(out)["measured_now"] == 0


def test_import_and_sum_published(home: Path, capsys, need_luts: None, tmp_path: Path) -> None:
    out_t = tmp_path / "pixel1.json"
    code, out, _ = run_cli(capsys, "table", "import", PIXEL1_YAML, "--format", "proxyless", "--out", out_t, "--json")
    assert code == 0 and json.loads(out)["rows"] == 72
    code, _, err = run_cli(capsys, "table", "import", PIXEL1_YAML, "--format", "proxyless", "--out", out_t)
    assert code == 2 and "exists" in err


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "case",
    [
        "unknown-space",
        "unknown-device",
        "malformed-arch",
        "illegal-choice",
        "corrupt-table",
        "foreign-table",
        "bad-cores",
        "bad-drift",
    ],
)
def test_bad_input_is_one_line_and_exit_2(home: Path, capsys, tmp_path: Path, case: str) -> None:
    _profile_fake(capsys, "fk", "dev-a")
    _profile_fake(capsys, "other", "dev-b")
    assert run_cli(capsys, "table", "build", "--device", "fk", "--space", "darts")[0] == 0
    table = home / "tables" / "fk" / "darts.json"
    good = json.dumps(get_space("darts").sample(0))
    before = table.read_text()
    args = {
        "unknown-space": ["table", "build", "--device", "fk", "--space", "nasnet"],
        "unknown-device": ["table", "build", "--device", "pixel99", "--space", "darts"],
        "malformed-arch": ["lut-sum", "--table", table, "--arch", _write(tmp_path / "a.json", good[:-5])],
        "illegal-choice": [
            "lut-sum",
            "--table",
            table,
            "--arch",
            _write(
                tmp_path / "a.json",
                good.replace("none", "conv_9x9", 1)
                .replace("max_pool_3x3", "conv_9x9", 1)
                .replace("skip_connect", "conv_9x9", 1)
                .replace("sep_conv_3x3", "conv_9x9", 1)
                .replace("avg_pool_3x3", "conv_9x9", 1),
            ),
        ],
        "corrupt-table": ["table", "show", _write(tmp_path / "c.json", before[: len(before) // 2])],
        "foreign-table": ["table", "build", "--device", "other", "--space", "darts", "--out", table, "--resume"],
        "bad-cores": ["profile", "torch-cpu", "--cores", "0,999", "--name", "x"],
        "bad-drift": [
            "table",
            "build",
            "--device",
            "fk",
            "--space",
            "darts",
            "--drift",
            "bogus",
            "--out",
            tmp_path / "d.json",
        ],
    }[case]
    code, out, err = run_cli(capsys, *args)
    assert code == 2, (out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("latbench: error: "), err
    assert "Traceback" not in err
    assert table.read_text() == before  # nothing already written is lost


def test_profile_of_another_machine_is_refused(home: Path, capsys) -> None:
    _profile_fake(capsys, "fk", "dev-a")
    p = home / "devices" / "fk.toml"
    text = p.read_text()
    import re

    p.write_text(re.sub(r'(\nid = ")[^"]+"', r'\1fake-0000000000"', text, count=1))
    code, _, err = run_cli(capsys, "table", "build", "--device", "fk", "--space", "darts")
    assert code == 2 and "recorded on another machine" in err


def test_profile_retimes_a_noisy_sentinel(home: Path, capsys) -> None:
    """The sentinel median is every batch's reference: a noisy one is timed again, then flagged."""
    code, out, err = run_cli(capsys, "profile", "fake", "--name", "quiet", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["sentinel_attempts"] == 1 and doc["sentinel_noisy"] is False and doc["sentinel_rel_iqr"] < 0.1
    code, out, err = run_cli(capsys, "profile", "fake", "--name", "loud", "--set", "noise=0.3")
    assert code == 0, err
    assert "stayed noisy after 4 attempts" in err and out.startswith("fake-")
    assert "sentinel_ms" in (home / "devices" / "loud.toml").read_text()


# ----------------------------------------------------------------------------- shipped data, packaging
def test_published_lut_fixtures_are_the_shipped_tables_sources() -> None:
    """The YAML copies the tests import are byte for byte the files the shipped tables record."""
    import hashlib

    from latbench.table import LatencyTable

    from .conftest import NOTE10_TABLE, NOTE10_YAML, PIXEL1_TABLE

    for yaml_path, table in ((PIXEL1_YAML, PIXEL1_TABLE), (NOTE10_YAML, NOTE10_TABLE)):
        digest = hashlib.sha256(yaml_path.read_bytes()).hexdigest()
        assert LatencyTable.load(table).source["sha256"] == digest, yaml_path


def test_wheel_carries_the_data_folders_and_paths_finds_them(tmp_path: Path) -> None:
    """A wheel has no checkout: devices/, tables/, predictors/ ship as latbench/_data/ and are found there."""
    import os
    import subprocess
    import sys
    import zipfile

    from .conftest import REPO

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LATBENCH_HOME")}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    (wheel,) = tmp_path.glob("latbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind in ("devices", "tables", "predictors"):
        shipped = {
            f"latbench/_data/{kind}/{p.relative_to(REPO / kind).as_posix()}"
            for p in (REPO / kind).rglob("*")
            if p.is_file() and p.suffix in (".toml", ".json", ".md")
        }
        assert shipped and shipped <= names, sorted(shipped - names)[:5]
    assert not [n for n in names if n.startswith("latbench/_data/") and n.endswith(".py")]
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "from latbench import paths; "
        "print(paths.find('devices', 'mobile-1t.toml')); "
        "print(paths.find('predictors', 'pixel1/proxyless-mobile-xgboost.json'))"
    )
    res = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(site)},
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    found = res.stdout.split()
    assert found == [
        str(site / "latbench" / "_data" / "devices" / "mobile-1t.toml"),
        str(site / "latbench" / "_data" / "predictors" / "pixel1" / "proxyless-mobile-xgboost.json"),
    ]
