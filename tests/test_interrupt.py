"""Ctrl-C during `table build`: the file stays valid JSON at every moment, and --resume completes it
without measuring any row twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from latbench.cli import main
from latbench.spaces import get_space


def test_sigint_then_resume(tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    (home / "devices").mkdir(parents=True)
    (home / "devices" / "slowfake.toml").write_text(
        'name = "slowfake"\nbackend = "fake"\n[settings]\ndevice = "slow"\nsleep = true\nspeed = 4.0\n'
    )
    table = home / "tables" / "slowfake" / "proxyless-mobile.json"
    env = {**os.environ, "LATBENCH_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "latbench", "table", "build", "--device", "slowfake", "--space", "proxyless-mobile"]
    # a shell's background job (`ci &`) starts with SIGINT ignored, and Python keeps it ignored: give the child
    # the default disposition, so it gets Ctrl-C as a user at a terminal would
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    snapshots = 0
    rows_seen = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if table.exists():
                doc = json.loads(table.read_text())  # must parse at every moment
                snapshots += 1
                rows_seen = len(doc["rows"])
                if rows_seen >= 20:
                    break
            time.sleep(0.005)
        assert proc.poll() is None, "build finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    first = json.loads(table.read_text())
    assert 20 <= len(first["rows"]) < 70 and snapshots > 0

    monkeypatch.setenv("LATBENCH_HOME", str(home))
    assert main(["table", "build", "--device", "slowfake", "--space", "proxyless-mobile", "--resume"]) == 0
    final = json.loads(table.read_text())
    vocab = {op.key for op in get_space("proxyless-mobile").vocabulary}
    assert set(final["rows"]) == vocab
    for key, row in first["rows"].items():  # rows of the first run were kept as they were: none measured twice
        assert final["rows"][key] == row
