"""Shared fixtures: an isolated LATBENCH_HOME, the published phone LUTs, small helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from latbench.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED_LUTS = REPO.parent / "shared" / "data" / "luts"
PIXEL1_YAML = SHARED_LUTS / "proxylessnas_pixel1_mobile.yaml"
NOTE10_YAML = SHARED_LUTS / "ofa_mbv3_note10_224.yaml"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``$LATBENCH_HOME`` so nothing is written into the checkout."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("LATBENCH_HOME", str(h))
    return h


@pytest.fixture
def need_luts() -> None:
    if not PIXEL1_YAML.exists():
        pytest.skip("../shared/data/luts is not beside the checkout")


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err
