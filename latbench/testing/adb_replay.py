"""A recording ``adb`` stand-in that replays real-format phone output (no phone needed).

Run as ``python -m latbench.testing.adb_replay ARGS`` (or through the wrapper
script :func:`install` writes, named ``adb``). It understands the adb calls the
``adb`` backend makes and answers with transcripts in the formats the real
tools print (``adb_transcripts/``): ``getprop`` of a Pixel 7 (Tensor G2,
4 + 2 + 2 cores), ``/proc/meminfo``, ``dumpsys thermalservice``,
``onnxruntime_perf_test -s`` summaries, ``adb push`` lines.

State lives in ``$LATBENCH_ADB_REPLAY_DIR``: pushed files (a fake phone file
system under ``fs/``), every call (``calls.jsonl``), the CPU temperature
(``cpu_temp``, degrees C, default 41.5) and which tool prints malformed output
(``break``: ``perf_test``, ``getprop`` or ``thermalservice``).

perf_test's latency is made up but deterministic and plausible: it grows with
the model file's size and shrinks with the thread count, with +-1.5 % jitter.
Only the *formats* are real; no number here says anything about a phone.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shlex
import shutil
import sys
from pathlib import Path

TRANSCRIPTS = Path(__file__).with_name("adb_transcripts")
SERIAL = "28031FDH2004MW"
#: Tensor G2: cpu0-3 Cortex-A55, cpu4-5 Cortex-A78, cpu6-7 Cortex-X1 (kHz)
MAX_FREQ_KHZ = {0: 1803000, 1: 1803000, 2: 1803000, 3: 1803000, 4: 2348000, 5: 2348000, 6: 2850000, 7: 2850000}


def _state() -> Path:
    d = Path(os.environ.get("LATBENCH_ADB_REPLAY_DIR", ".adb-replay"))
    (d / "fs").mkdir(parents=True, exist_ok=True)
    return d


def _broken(tool: str) -> bool:
    f = _state() / "break"
    return f.exists() and f.read_text().strip() == tool


def _text(name: str) -> str:
    return (TRANSCRIPTS / name).read_text()


def _on_phone(remote: str) -> Path:
    return _state() / "fs" / remote.lstrip("/")


def push(local: str, remote: str) -> int:
    src = Path(local)
    if not src.is_file():
        sys.stderr.write(f"adb: error: cannot stat '{local}': No such file or directory\n")
        return 1
    dst = _on_phone(remote)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    size = src.stat().st_size
    print(f"{local}: 1 file pushed, 0 skipped. 38.4 MB/s ({size} bytes in 0.{size % 997:03d}s)")
    return 0


def thermalservice() -> str:
    if _broken("thermalservice"):
        return _text("thermalservice_malformed.txt")
    f = _state() / "cpu_temp"
    big = float(f.read_text()) if f.exists() else 41.5
    status = 0 if big < 60 else (1 if big < 70 else 3)
    return (
        _text("thermalservice.txt")
        .replace("{big}", f"{big:.1f}")
        .replace("{mid}", f"{big - 2.3:.1f}")
        .replace("{little}", f"{big - 4.1:.1f}")
        .replace("{status}", str(status))
    )


def perf_test(args: list[str]) -> tuple[str, int]:
    """An ``onnxruntime_perf_test -s`` summary for the model in ``args`` (last argument)."""
    opts = dict(zip(args[::2], args[1::2], strict=False))
    model = _on_phone(args[-1])
    if not model.exists():
        return f"Load model from {args[-1]} failed: No such file or directory\n", 1
    if _broken("perf_test"):
        return _text("perf_test_malformed.txt"), 0  # an old adb without the shell protocol returns 0 whatever ran
    threads, runs = int(opts.get("-x", "1")), int(opts.get("-r", "1000"))
    data = model.read_bytes()
    base_ms = 0.04 + len(data) / 90_000 / threads**0.8
    count = (_state() / "perf_runs").read_text() if (_state() / "perf_runs").exists() else "0"
    (_state() / "perf_runs").write_text(str(int(count) + 1))
    rng = random.Random(hashlib.sha256(data).hexdigest() + count)
    lat = sorted(
        base_ms * (1 + rng.uniform(-0.015, 0.015)) * (1.2 if rng.random() < 0.05 else 1.0) for _ in range(runs)
    )

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] / 1e3

    total_s = sum(lat) / 1e3
    fields = {
        "threads": threads,
        "session_s": f"{0.011 + len(data) / 4e7:.6g}",
        "first_ms": f"{int(base_ms * 3)}",
        "total_s": f"{total_s:.6g}",
        "runs": runs,
        "avg_ms": f"{total_s / runs * 1e3:.6f}",
        "run_s": f"{total_s * 1.002:.6g}",
        "ips": f"{runs / (total_s * 1.002):.6g}",
        "cpu": 12,
        "peak": 28000000 + len(data) * 3,
        "min_s": f"{lat[0] / 1e3:.6g}",
        "max_s": f"{lat[-1] / 1e3:.6g}",
        "p50_s": f"{pct(0.5):.6g}",
        "p90_s": f"{pct(0.9):.6g}",
        "p95_s": f"{pct(0.95):.6g}",
        "p99_s": f"{pct(0.99):.6g}",
    }
    text = _text("perf_test.txt")
    for k, v in fields.items():
        text = text.replace("{" + k + "}", str(v))
    return text, 0


def shell(command: str) -> tuple[str, int]:
    argv = shlex.split(command)
    if not argv:
        return "", 0
    if argv == ["getprop"]:
        return (_text("getprop_malformed.txt") if _broken("getprop") else _text("getprop.txt")), 0
    if argv == ["cat", "/sys/devices/system/cpu/possible"]:
        return "0-7\n", 0
    if argv == ["cat", "/proc/meminfo"]:
        return _text("meminfo.txt"), 0
    if argv[:2] == ["dumpsys", "thermalservice"]:
        return thermalservice(), 0
    if argv[0] == "cat" and argv[1].startswith("/sys/devices/system/cpu/cpu"):
        cpu = int(argv[1].split("/cpu/cpu")[1].split("/")[0])
        if argv[1].endswith("scaling_governor"):
            return "sched_pixel\n", 0
        if argv[1].endswith("cpuinfo_max_freq"):
            return f"{MAX_FREQ_KHZ[cpu]}\n", 0
    if argv[0] == "ls" and len(argv) == 2:
        d = _on_phone(argv[1])
        if not d.is_dir():
            return f"ls: {argv[1]}: No such file or directory\n", 1
        return "".join(f"{p.name}\n" for p in sorted(d.iterdir())), 0
    if argv[:2] == ["mkdir", "-p"]:
        for d in argv[2:]:
            _on_phone(d).mkdir(parents=True, exist_ok=True)
        return "", 0
    if argv[0] == "chmod":
        return "", 0
    if argv[0] == "taskset" and len(argv) > 2 and argv[2].endswith("onnxruntime_perf_test"):
        if not _on_phone(argv[2]).exists():
            return f"/system/bin/sh: {argv[2]}: inaccessible or not found\n", 127
        return perf_test(argv[3:])
    return f"/system/bin/sh: {argv[0]}: inaccessible or not found\n", 127


def main(argv: list[str]) -> int:
    with (_state() / "calls.jsonl").open("a") as fh:
        fh.write(json.dumps(argv) + "\n")
    if argv[:1] == ["-s"]:
        if argv[1] != SERIAL:
            sys.stderr.write(f"adb: device '{argv[1]}' not found\n")
            return 1
        argv = argv[2:]
    if argv == ["get-state"]:
        print("device")
        return 0
    if argv[:1] == ["push"] and len(argv) == 3:
        return push(argv[1], argv[2])
    if argv[:1] == ["shell"]:
        text, rc = shell(" ".join(argv[1:]))
        sys.stdout.write(text)
        return rc
    sys.stderr.write(f"adb: unknown command {' '.join(argv)}\n")
    return 1


def install(folder: Path, state: Path) -> Path:
    """Write an executable ``adb`` wrapper in ``folder`` running this stand-in with its state in ``state``."""
    folder.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parents[2]
    script = folder / "adb"
    script.write_text(
        "#!/bin/sh\n"
        f"LATBENCH_ADB_REPLAY_DIR={shlex.quote(str(state))} PYTHONPATH={shlex.quote(str(root))} "
        f'exec {shlex.quote(sys.executable)} -S {shlex.quote(str(Path(__file__).resolve()))} "$@"\n'
    )
    script.chmod(0o755)
    return script


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
