"""The ``adb`` backend against the recording adb stand-in (no phone here).

:mod:`latbench.testing.adb_replay` answers the backend's adb calls with
real-format transcripts (getprop of a Pixel 7, dumpsys thermalservice,
onnxruntime_perf_test -s summaries); the ONNX export, push, command lines,
parsing, harness, profile, table build and measure are latbench's own and run
for real. docs/remote.md lists what only the stand-in checked.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from latbench.backends import Backend, get_backend
from latbench.cli import main
from latbench.device import load_profile
from latbench.ops import OpSpec
from latbench.remote import android
from latbench.spaces import get_space
from latbench.table import LatencyTable
from latbench.testing import BackendContract
from latbench.testing.adb_replay import SERIAL, install

PERF_TEST_OUTPUT = """Setting intra_op_num_threads to 1
Session creation time cost: 0.0412 s
First inference time cost: 3 ms
Total inference time cost: 0.0231 s
Total inference requests: 20
Average inference time cost total: 1.155 ms
Total inference run time: 0.0233 s
Number of inferences per second: 858.4
Avg CPU usage: 12 %
Peak working set size: 31457280 bytes
Avg CPU usage:12
Peak working set size:31457280
Runs:20
Min Latency: 0.00111 s
Max Latency: 0.00131 s
P50 Latency: 0.00115 s
P90 Latency: 0.00121 s
P95 Latency: 0.00126 s
P99 Latency: 0.00131 s
P999 Latency: 0.00131 s
"""


@pytest.fixture
def phone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    state = tmp_path / "phone"
    adb = install(tmp_path / "bin", state)
    perf = tmp_path / "onnxruntime_perf_test"
    perf.write_bytes(b"\x7fELF\x02\x01\x01 stand-in for an aarch64 build of onnxruntime_perf_test")
    monkeypatch.setenv("LATBENCH_HOME", str(tmp_path / "home"))
    settings = {"adb": str(adb), "perf_test": str(perf), "serial": SERIAL}
    args = [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    return SimpleNamespace(state=state, settings=settings, args=args, home=tmp_path / "home")


def _calls(phone: SimpleNamespace) -> list[list[str]]:
    return [json.loads(line) for line in (phone.state / "calls.jsonl").read_text().splitlines()]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    got = capsys.readouterr()
    return rc, got.out, got.err


class TestADBContract(BackendContract):
    backend_name = "adb"

    @pytest.fixture
    def backend(self, phone: SimpleNamespace) -> Backend:
        return get_backend("adb", **phone.settings)


# ----------------------------------------------------------------------------- parsers
def test_parse_perf_test_in_milliseconds() -> None:
    got = android.parse_perf_test(PERF_TEST_OUTPUT)
    assert got["requests"] == 20 and got["average_ms"] == pytest.approx(1.155)
    assert got["p50_ms"] == pytest.approx(1.15) and got["min_ms"] == pytest.approx(1.11)
    assert got["p90_ms"] == pytest.approx(1.21) and got["max_ms"] == pytest.approx(1.31)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (PERF_TEST_OUTPUT.split("Min Latency")[0], "Min Latency"),  # run without -s
        ("", "Total inference requests"),
        (PERF_TEST_OUTPUT.replace("P50 Latency: 0.00115", "P50 Latency: 0.00200"), "inconsistent"),
    ],
)
def test_malformed_perf_test_is_one_line(text: str, words: str) -> None:
    with pytest.raises(android.ToolOutputError, match=words) as exc:
        android.parse_perf_test(text)
    assert "\n" not in str(exc.value)


def test_parse_getprop_thermal_cpus() -> None:
    from latbench.testing.adb_replay import TRANSCRIPTS

    props = android.parse_getprop((TRANSCRIPTS / "getprop.txt").read_text())
    assert props["ro.product.model"] == "Pixel 7" and props["ro.soc.model"] == "GS201"
    thermal_text = (TRANSCRIPTS / "thermalservice.txt").read_text()
    thermal_text = thermal_text.replace("{big}", "48.5").replace("{mid}", "45.0").replace("{little}", "40.2")
    t = android.parse_thermalservice(thermal_text.replace("{status}", "1"))
    assert t == {"thermal_status": 1, "cpu_c": 48.5, "skin_c": 31.9, "battery_c": 33.1, "sensors": 6}
    assert android.parse_cpu_list("0-3,6\n") == [0, 1, 2, 3, 6]
    assert android.affinity_mask([4, 5, 6, 7]) == "f0" and android.affinity_mask([0]) == "1"
    for bad, parser in (
        ("Can't find service: thermalservice", android.parse_thermalservice),
        ("", android.parse_getprop),
    ):
        with pytest.raises(android.ToolOutputError):
            parser(bad)


# ----------------------------------------------------------------------------- profile, table build, measure
def test_profile_table_build_and_measure(phone: SimpleNamespace, capsys, tmp_path: Path) -> None:
    rc, out, err = _run(capsys, "profile", "adb", *phone.args, "--threads", "2", "--name", "pixel7")
    assert rc == 0, err
    prof = load_profile("pixel7")
    fp = prof.fingerprint or {}
    host = fp["host"]
    assert fp["id"].startswith("adb-") and out.strip() == fp["id"]
    assert host["phone"] == "Google Pixel 7" and host["cpu_model"] == "Google GS201" and host["cores_logical"] == 8
    assert host["governor"] == {"6": "sched_pixel", "7": "sched_pixel"} and host["cpu_freq_mhz"]["7"] == 2850
    assert host["temperature_c"] == 41.5 and host["thermal_status"] == 0 and host["memory_gb"] == 7.4
    assert fp["settings"]["cores"] == [6, 7] and fp["settings"]["perf_test"].startswith("onnxruntime_perf_test:sha256:")
    assert "serial" not in fp["settings"] and "adb" not in fp["settings"]

    rc, _, err = _run(capsys, "table", "build", "--device", "pixel7", "--space", "darts")
    assert rc == 0, err
    table = LatencyTable.load(phone.home / "tables" / "pixel7" / "darts.json")
    vocab = [o for o in get_space("darts").vocabulary if o.type != "zero"]
    assert set(table.rows) == {o.key for o in vocab} and table.fingerprint_id == fp["id"]
    assert all(r["median_ms"] > 0 and r["n"] >= 6 for r in table.rows.values())

    runs = [c for c in _calls(phone) if c[2:3] == ["shell"] and c[3].startswith("taskset")]
    cmd = runs[-1][3].split()
    assert cmd[:2] == ["taskset", "c0"] and cmd[2] == "/data/local/tmp/latbench/onnxruntime_perf_test"
    assert cmd[cmd.index("-x") + 1] == "2" and "-s" in cmd and cmd[cmd.index("-r") + 1] == "20"
    assert cmd[-1].startswith("/data/local/tmp/latbench/models/") and cmd[-1].endswith(".onnx")
    pushes = [c for c in _calls(phone) if c[2:3] == ["push"] and "/models/" in c[4]]
    assert len({c[4] for c in pushes}) == len(pushes)  # each model pushed once

    from latbench.export import export_onnx

    model = export_onnx(OpSpec("mbconv", 14, 32, 32, kernel=3, expand=3, act="relu6"), tmp_path / "m.onnx")
    rc, out, err = _run(capsys, "measure", "--device", "pixel7", "--onnx", str(model), "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["fingerprint"] == fp["id"] and doc["results"][0]["median_ms"] > 0


@pytest.mark.parametrize("tool", ["perf_test", "getprop", "thermalservice"])
def test_malformed_tool_output_is_one_line_exit_2(phone: SimpleNamespace, capsys, tool: str) -> None:
    (phone.state).mkdir(parents=True, exist_ok=True)
    (phone.state / "break").write_text(tool)
    rc, _, err = _run(capsys, "profile", "adb", *phone.args, "--name", "broken")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("latbench: error:"), err
    name = {"perf_test": "onnxruntime_perf_test", "getprop": "getprop", "thermalservice": "dumpsys thermalservice"}
    assert name[tool] in lines[0]
    assert not (phone.home / "devices" / "broken.toml").exists()


def test_no_phone_or_no_binary_is_one_line(phone: SimpleNamespace, capsys, tmp_path: Path) -> None:
    cases: dict[str, Any] = {
        "serial": ([*phone.args, "--set", "serial=NOPE123"], "device 'NOPE123' not found"),
        "binary": ([*phone.args, "--set", f"perf_test={tmp_path / 'missing'}"], "perf_test binary not found"),
        "adb": ([*phone.args, "--set", f"adb={tmp_path / 'no-adb'}"], "adb not found"),
    }
    for what, (args, words) in cases.items():
        rc, _, err = _run(capsys, "profile", "adb", *args, "--name", "x")
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and words in lines[0], (what, err)


def test_thermal_gate_waits_for_the_phone_to_cool(phone: SimpleNamespace) -> None:
    b = get_backend("adb", **phone.settings, thermal_poll_s=0.2, thermal_pause_c=70.0, thermal_resume_c=60.0)
    (phone.state / "cpu_temp").write_text("74.0")
    timer = threading.Timer(1.0, lambda: (phone.state / "cpu_temp").write_text("52.0"))
    timer.start()
    try:
        res, info = b.measure_many({"op": OpSpec("conv", 8, 8, 8, kernel=1, act="relu")})
    finally:
        timer.cancel()
    gate = info["thermal"]
    assert gate["paused"] and gate["temperature_before_c"] == 74.0 and gate["temperature_c"] == 52.0
    assert not gate["timed_out"] and res["op"].meta["thermal_wait_s"] == gate["waited_s"] > 0
