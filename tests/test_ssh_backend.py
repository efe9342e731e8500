"""The ``ssh`` backend against a real OpenSSH server on 127.0.0.1 standing for a Linux board.

The module starts ``/usr/sbin/sshd -D`` with keys made here (see
:mod:`latbench.testing.sshd`), profiles it as a board with the generic
``latbench profile ssh --set ...`` command, builds the ``proxyless-mobile``
table on it (interrupted with SIGINT once, then ``--resume``), compares its
rows with the same ops timed locally by ``ort-cpu`` at one thread, drops the
connection in the middle of a build and checks the one-line errors of a wrong
key, host or host key. It skips only when sshd cannot run here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from latbench.backends import Backend, get_backend
from latbench.cli import main
from latbench.device import load_profile
from latbench.ops import OpSpec
from latbench.spaces import get_space
from latbench.table import LatencyTable, build_table
from latbench.testing import BackendContract
from latbench.testing.contracts import QUICK
from latbench.testing.sshd import TestBoard, sshd_unavailable_reason, start_sshd

pytestmark = pytest.mark.skipif(sshd_unavailable_reason() is not None, reason=str(sshd_unavailable_reason()))


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Any:
    b = start_sshd(tmp_path_factory.mktemp("sshd"), python=sys.executable)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Any:
    h = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("LATBENCH_HOME", str(h))
    try:
        yield h
    finally:
        mp.undo()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    got = capsys.readouterr()
    return rc, got.out, got.err


class TestSSHContract(BackendContract):
    backend_name = "ssh"

    @pytest.fixture
    def backend(self, board: TestBoard) -> Backend:
        b = get_backend("ssh", **board.settings())
        yield b
        b.close()


# ----------------------------------------------------------------------------- profile, build, resume
@pytest.fixture(scope="module")
def board_table(board: TestBoard, home: Path) -> SimpleNamespace:
    """`latbench profile ssh` the board, build its proxyless-mobile table, SIGINT it once, then --resume."""
    assert main(["profile", "ssh", *board.set_args(), "--threads", "1", "--name", "board"]) == 0
    table = home / "tables" / "board" / "proxyless-mobile.json"
    env = {**os.environ, "LATBENCH_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "latbench", "table", "build", "--device", "board", "--space", "proxyless-mobile"]
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if table.exists() and len(json.loads(table.read_text())["rows"]) >= 10:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the build finished before it could be interrupted: " + proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = json.loads(table.read_text())
    rc_resume = main(["table", "build", "--device", "board", "--space", "proxyless-mobile", "--resume"])
    return SimpleNamespace(path=table, rc=proc.returncode, err=err, first=first, rc_resume=rc_resume)


def test_profile_records_the_boards_fingerprint(board_table: SimpleNamespace, board: TestBoard) -> None:
    prof = load_profile("board")
    fp = prof.fingerprint or {}
    assert prof.backend == "ssh" and fp["id"].startswith("ssh-")
    assert fp["host"]["reached_as"].endswith(f"127.0.0.1:{board.port}")
    assert fp["host"]["cores_logical"] == os.cpu_count()
    assert fp["versions"]["onnxruntime"] and fp["versions"]["agent_protocol"] == "1"
    # where the board is does not change which device it is
    assert "port" not in fp["settings"] and "host" not in fp["settings"] and fp["settings"]["threads"] == 1
    assert prof.sentinel_ms and prof.sentinel_ms > 0


def test_ctrl_c_keeps_rows_and_resume_completes(board_table: SimpleNamespace) -> None:
    assert board_table.rc == 130, board_table.err
    assert "--resume" in board_table.err and "Traceback" not in board_table.err
    first = board_table.first
    assert 10 <= len(first["rows"]) < 70
    assert board_table.rc_resume == 0
    final = json.loads(board_table.path.read_text())
    assert set(final["rows"]) == {op.key for op in get_space("proxyless-mobile").vocabulary}
    for key, row in first["rows"].items():
        assert final["rows"][key] == row  # nothing measured twice, nothing lost
    assert final["fingerprint"]["backend"] == "ssh"


def test_board_rows_agree_with_local_ort_cpu(board_table: SimpleNamespace, board: TestBoard, capsys) -> None:
    """Board (the agent over ssh) vs ort-cpu here, both one thread, the 70 ops of the space.

    The tables are timed minutes apart on a shared machine, so rows beyond 10% (every row, when the two
    tables are not on one scale) are timed again with both devices' runners interleaved in one harness
    batch (the fair comparison of medians). The
    two must be on one scale (median ratio within 5%) and at least 95% of the ops (all but 3)
    must agree within 10%. Known exception: a large memory-bound op can run up to ~40% slower in one ONNX Runtime
    session than in another (seen with sessions made the same way in one process, so not the SSH
    path); see docs/remote.md.
    """
    assert main(["profile", "ort-cpu", "--threads", "1", "--name", "local"]) == 0
    local_path = board_table.path.parent.parent / "local" / "proxyless-mobile.json"
    assert main(["table", "build", "--device", "local", "--space", "proxyless-mobile"]) == 0
    remote, local = LatencyTable.load(board_table.path), LatencyTable.load(local_path)
    ratio = {k: remote.rows[k]["median_ms"] / local.rows[k]["median_ms"] for k in local.rows}
    off = sorted(k for k, r in ratio.items() if abs(r - 1) > 0.10)
    if abs(np.median([*ratio.values()]) - 1) >= 0.05:
        # the two tables were timed minutes apart and the machine's speed moved in between: time every op again,
        # both devices interleaved in one batch, which is the comparison that means something
        off = sorted(ratio)
    print(
        f"tables: {len(ratio) - len(off)}/{len(ratio)} rows within 10%, median ratio {np.median([*ratio.values()]):.3f}"
    )
    if off:
        again = _interleaved_ratios(board, {k: OpSpec.from_key(k) for k in off})
        print("re-timed interleaved:", {k[:34]: round(v, 3) for k, v in again.items()})
        ratio.update(again)
    final = np.array([*ratio.values()])
    print(
        f"final: {int(np.sum(np.abs(final - 1) <= 0.10))}/{len(final)} within 10%, median ratio {np.median(final):.3f}"
    )
    assert abs(np.median(final) - 1) < 0.05
    assert np.mean(np.abs(final - 1) <= 0.10) >= 0.95, {k: round(v, 3) for k, v in ratio.items() if abs(v - 1) > 0.1}


def _interleaved_ratios(board: TestBoard, specs: dict[str, OpSpec], attempts: int = 3) -> dict[str, float]:
    """board / local median of each op, both devices' runners interleaved in one harness batch.

    An op still beyond 10% is timed again (up to ``attempts`` batches), each time with fresh
    sessions on both sides: on a shared machine a neighbour's burst can land on one device's
    blocks, and a large op can run much slower in one ONNX Runtime session than in another.
    """
    from latbench.measure.harness import measure_batch

    ratios: dict[str, float] = {}
    todo = dict(specs)
    for attempt in range(attempts):
        b = get_backend("ssh", **board.settings())
        here = get_backend("ort-cpu", threads=1)
        try:
            runners = {}
            for k, spec in todo.items():
                runners[f"board|{k}"] = b.runner(spec)
                runners[f"local|{k}"] = here.runner(spec)
            res, _ = measure_batch(runners, here.timing.with_(drift="interleave", rounds=12, seed=attempt))
        finally:
            b.close()
            here.close()
        for k in todo:
            ratios[k] = res[f"board|{k}"].median / res[f"local|{k}"].median
        todo = {k: s for k, s in todo.items() if abs(ratios[k] - 1) > 0.10}
        if not todo:
            break
    return ratios


def test_measure_an_onnx_model_on_the_board(board: TestBoard, home: Path, capsys, tmp_path: Path) -> None:
    from latbench.export import export_onnx

    assert main(["profile", "ssh", *board.set_args(), "--name", "board-m"]) == 0
    model = export_onnx(OpSpec("mbconv", 14, 32, 32, kernel=3, expand=3, act="relu6"), tmp_path / "m.onnx")
    rc, out, err = _run(capsys, "measure", "--device", "board-m", "--onnx", str(model), "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["fingerprint"] == (load_profile("board-m").fingerprint or {})["id"]
    assert doc["fingerprint"].startswith("ssh-")
    assert doc["results"][0]["median_ms"] > 0 and doc["info"]["thermal"]["paused"] is False


# ----------------------------------------------------------------------------- a dropped connection
def test_killed_connection_mid_build_loses_nothing(board: TestBoard, tmp_path: Path) -> None:
    ops = list(get_space("darts").vocabulary)
    b = get_backend("ssh", **board.settings())
    killed: list[int] = []

    def kill_when_timing() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if len(b._handles) >= 3 and b._channel is not None:  # sessions are loaded: timing is under way
                pid = b._channel.proc.pid
                os.kill(pid, signal.SIGKILL)  # the ssh client dies: the link is gone mid-batch
                killed.append(pid)
                return
            time.sleep(0.01)

    t = threading.Thread(target=kill_when_timing)
    t.start()
    try:
        _, measured = build_table(b, ops, tmp_path / "t.json", config=QUICK.with_(drift="sentinel"))
    finally:
        t.join()
        b.close()
    assert killed, "the connection was never killed"
    assert b.reconnect_count >= 1
    keys = {o.key for o in ops if o.type != "zero"}
    assert sorted(measured) == sorted(keys) and set(LatencyTable.load(tmp_path / "t.json").rows) == keys


# ----------------------------------------------------------------------------- thermal gate
def test_thermal_gate_waits_until_the_board_cools(board: TestBoard, tmp_path: Path) -> None:
    sensor = tmp_path / "temp"
    sensor.write_text("85000\n")  # millidegrees, as /sys/class/thermal reports
    b = get_backend("ssh", **board.settings(thermal_path=str(sensor), thermal_pause_c=80.0, thermal_resume_c=70.0))
    timer = threading.Timer(1.5, lambda: sensor.write_text("60000\n"))
    timer.start()
    try:
        res, info = b.measure_many({"op": OpSpec("conv", 8, 8, 8, kernel=1, act="relu")}, QUICK)
    finally:
        timer.cancel()
        b.close()
    gate = info["thermal"]
    assert gate["paused"] and gate["temperature_before_c"] == 85.0 and gate["temperature_c"] == 60.0
    assert gate["waited_s"] > 0 and not gate["timed_out"]
    assert res["op"].meta["thermal_wait_s"] == gate["waited_s"] and b.thermal_events == [gate]


# ----------------------------------------------------------------------------- one-line errors
def test_wrong_key_host_or_host_key_is_one_line(board: TestBoard, tmp_path: Path, capsys, home: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong_known = tmp_path / "known_hosts"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "h")], check=True)
    wrong_known.write_text(f"[127.0.0.1]:{board.port} {(tmp_path / 'h.pub').read_text()}")
    from latbench.testing.sshd import _free_port

    cases = {
        "key": board.set_args(key=str(other)),
        "host": board.set_args(port=_free_port()),
        "host key": board.set_args(known_hosts=str(wrong_known), strict_host_keys="yes"),
        "missing key": board.set_args(key=str(tmp_path / "nope")),
        "shell in remote_dir": board.set_args(remote_dir="/tmp/x;touch /tmp/pwned"),
    }
    for what, args in cases.items():
        rc, _, err = _run(capsys, "profile", "ssh", *args, "--name", "bad")
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("latbench: error:"), (what, err)
        assert any(w in lines[0] for w in ("cannot reach board", "key not found", "plain path")), (what, lines[0])
    assert not (home / "devices" / "bad.toml").exists()


# ----------------------------------------------------------------------------- farm: a node serving the board
def test_farm_node_serves_the_board_beside_a_local_device(board: TestBoard, tmp_path: Path) -> None:
    """A Ray node serves the SSH board attached to it, another node a local ort-cpu device; one
    `table build --cluster` builds both tables side by side, each row on the node serving its device."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from latbench.farm.build import cluster_table_build
    from latbench.farm.node import node_env, node_resources

    mp = pytest.MonkeyPatch()
    mp.setenv("LATBENCH_HOME", str(tmp_path))
    try:
        assert main(["profile", "ssh", *board.set_args(), "--name", "farm-board"]) == 0
        assert main(["profile", "ort-cpu", "--threads", "1", "--name", "farm-local"]) == 0
        pb, pl = load_profile("farm-board"), load_profile("farm-local")
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        try:
            # the board's host hands its own profile of the board to the node (as `latbench farm join` does)
            n_board = cluster.add_node(num_cpus=0, resources=node_resources([pb]), env_vars=node_env([pb]))
            n_local = cluster.add_node(num_cpus=0, resources=node_resources([pl]))
            ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
            results = cluster_table_build(
                cluster.address, ["farm-board", "farm-local"], space="darts", as_json=True, log=lambda m: None
            )
        finally:
            ray.shutdown()
            cluster.shutdown()
    finally:
        mp.undo()
    by_device = {r["device"]: r for r in results}
    keys = {o.key for o in get_space("darts").vocabulary if o.type != "zero"}
    for device, node in (("farm-board", n_board), ("farm-local", n_local)):
        t = LatencyTable.load(by_device[device]["path"])
        assert set(t.rows) == keys
        assert {r["farm_node"] for r in t.rows.values()} == {node.node_id}
        assert t.fingerprint_id == by_device[device]["fingerprint"] and by_device[device]["nodes_used"] == 1
    assert by_device["farm-board"]["fingerprint"] == (pb.fingerprint or {})["id"]
    assert LatencyTable.load(by_device["farm-board"]["path"]).fingerprint["backend"] == "ssh"
