"""Shared fixtures: an isolated LATBENCH_HOME, the published phone LUTs (shipped), small helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from latbench.cli import main

REPO = Path(__file__).resolve().parents[1]
#: the published YAML LUTs the shipped tables were imported from (byte-identical copies, see their README)
PUBLISHED_LUTS = REPO / "latbench" / "testing" / "published"
PIXEL1_YAML = PUBLISHED_LUTS / "proxylessnas_pixel1_mobile.yaml"
NOTE10_YAML = PUBLISHED_LUTS / "ofa_mbv3_note10_224.yaml"
#: the shipped latbench tables of the same data
PIXEL1_TABLE = REPO / "tables" / "pixel1" / "proxyless-mobile.json"
NOTE10_TABLE = REPO / "tables" / "note10" / "ofa-mbv3.json"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``$LATBENCH_HOME`` so nothing is written into the checkout."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("LATBENCH_HOME", str(h))
    return h


@pytest.fixture
def need_luts() -> None:
    """The published LUTs ship with the checkout: a missing one is a broken checkout, not a reason to skip."""
    for f in (PIXEL1_YAML, NOTE10_YAML, PIXEL1_TABLE, NOTE10_TABLE):
        assert f.is_file(), f"{f} is missing from the checkout"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err
