"""The README demo's search steps search with the demo's calibrated predictor, not the bare LUT sum."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from latbench.spaces import get_space

from .conftest import run_cli
from .test_proxyless_search import FAKE, _fake_device


def test_mnas_demo_step_uses_the_calibrated_predictor(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from latbench import demo
    from latbench.device import load_profile
    from latbench.search.mnas import demo as mnas_demo

    table = _fake_device("proxyless-mobile")
    prof = load_profile(FAKE)
    ctx = demo.DemoContext(FAKE, prof, prof.make_backend(), table, get_space("proxyless-mobile"), home)
    assert ctx.latency_source() == ({"table": str(table.path)}, "LUT sum")

    code, out, err = run_cli(
        capsys, "predictor", "train", "--table", str(table.path), "--model", "lut", "--calib-archs", "5", "--json"
    )
    assert code == 0, err
    path = json.loads(out)["path"]
    ctx.results["predictor"] = {"path": path}
    assert ctx.latency_source() == ({"predictor": path}, "calibrated predictor")

    monkeypatch.setitem(mnas_demo.DEMO_SETTINGS, "trials", 12)
    ctx.step = 5
    mnas_demo.step_mnas_search(ctx)
    printed = capsys.readouterr().out
    r = ctx.results["mnas"]
    assert "5. MnasNet-reward search" in printed and "(calibrated predictor)" in printed
    assert r["latency_source"] == "calibrated predictor" and r["predicted_ms"] <= r["target_ms"]
    assert r["measured_ms"] > 0 and f"measured {r['measured_ms']:.2f} ms" in printed
    config = json.loads((Path(r["run_dir"]) / "config.json").read_text())
    assert path in json.dumps(config)  # the run records the predictor it searched with
