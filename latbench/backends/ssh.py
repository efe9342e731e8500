"""``ssh``: ONNX Runtime on a Linux board, timed on the board, driven over SSH.

Every workload is exported to ONNX here, with the exporter and cache of the
``ort-cpu`` backend (and quantized the same way for ``precision="int8"``),
then copied to the board, many files per connection, each cached there by
sha256. A small agent (:mod:`latbench.remote.agent`: stdlib + numpy +
onnxruntime) runs on the board and times each call with ``perf_counter_ns``
around ``run_with_iobinding``; the harness rules stay latbench's own (warmup
by time, interleaved rounds in random order, drift sentinel, raw samples),
driven from here one block of calls at a time.

The fingerprint is the board's: CPU model, cores, memory and architecture
(hashed into the id), governor, frequency and temperature at profile time, the
board's Python / onnxruntime / numpy versions (recorded beside it). Connection
details (host, port, user, key) are not part of the id: the same board reached
another way is the same device.

A **thermal gate** runs before every batch: above ``thermal_pause_c`` the
board is left idle until it is below ``thermal_resume_c`` (at most
``thermal_max_wait_s``); each wait is recorded in the batch's info and in its
measurements' ``meta``.

A dropped connection is re-opened (``reconnects`` times) and the block of
calls that was in flight is made again on a freshly loaded and warmed session,
so a build loses nothing; when the board stays unreachable the build stops
with one line and ``--resume`` goes on later.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, ClassVar

from latbench.backends.base import Backend, Workload
from latbench.errors import BackendUnavailable, UnsupportedOp
from latbench.fingerprint import DeviceFingerprint, library_versions
from latbench.measure.harness import Runner, TimingConfig
from latbench.measure.measurement import Measurement
from latbench.ops import OpSpec
from latbench.remote.channel import AgentChannel, ConnectionLost, RemoteError, SSHTarget

#: settings that say where the board is and how to reach it (never in the fingerprint id)
CONNECTION_SETTINGS = (
    "host",
    "port",
    "user",
    "key",
    "known_hosts",
    "strict_host_keys",
    "python",
    "remote_dir",
    "connect_timeout_s",
    "reconnects",
    "lock_wait_s",
    "thermal_path",
)
#: thermal-gate knobs: they decide when to wait, not how fast an op runs
THERMAL_SETTINGS = ("thermal_pause_c", "thermal_resume_c", "thermal_max_wait_s")


class SSHBackend(Backend):
    """A Linux board over SSH, ONNX Runtime CPU EP timed by the latbench agent on the board."""

    name: ClassVar[str] = "ssh"
    default_settings: ClassVar[dict[str, Any]] = {
        "host": None,
        "port": 22,
        "user": None,
        "key": None,
        "known_hosts": None,
        "strict_host_keys": "accept-new",
        "python": "python3",
        "remote_dir": "$HOME/.cache/latbench-agent",
        "connect_timeout_s": 10,
        "reconnects": 3,
        "lock_wait_s": 600.0,
        "threads": 1,
        "cores": None,
        "graph_optimization": "all",
        "spinning": True,
        "precision": "fp32",
        "opset": 17,
        "thermal_path": None,
        "thermal_pause_c": 80.0,
        "thermal_resume_c": 70.0,
        "thermal_max_wait_s": 300.0,
    }
    timing = TimingConfig()

    @classmethod
    def available(cls) -> tuple[bool, str]:
        import shutil

        if shutil.which("ssh") is None:
            return False, "the OpenSSH client `ssh` is not installed (apt-get install openssh-client)"
        try:
            import onnx  # noqa: F401  (export here)
            import torch  # noqa: F401
        except ImportError as exc:
            return False, f"exporting ops to ONNX needs {exc.name} here"
        return True, ""

    # ------------------------------------------------------------ set-up
    def setup(self) -> None:
        s = self.settings
        if not s["host"]:
            raise BackendUnavailable("the ssh backend needs a host: --set host=BOARD (and port, user, key)")
        if not isinstance(s["port"], int) or not 0 < s["port"] < 65536:
            raise BackendUnavailable(f"port must be an integer 1..65535, got {s['port']!r}")
        if s["key"] and not Path(str(s["key"])).expanduser().is_file():
            raise BackendUnavailable(f"ssh key not found: {s['key']}")
        if not isinstance(s["threads"], int) or s["threads"] < 1:
            raise BackendUnavailable(f"threads must be an integer >= 1, got {s['threads']!r}")
        if s["precision"] not in ("fp32", "int8"):
            raise BackendUnavailable(f"precision must be fp32 or int8, got {s['precision']!r}")
        if not float(s["thermal_resume_c"]) <= float(s["thermal_pause_c"]):
            raise BackendUnavailable("thermal_resume_c must not be above thermal_pause_c")
        if s["cores"]:
            s["cores"] = sorted(int(c) for c in s["cores"])
        # both go into a shell command on the board: plain paths only, never shell syntax
        if not re.fullmatch(r"(\$HOME|~)?[\w./-]+", str(s["remote_dir"])):
            raise BackendUnavailable(f"remote_dir must be a plain path (letters, digits, . / - _): {s['remote_dir']!r}")
        if not re.fullmatch(r"[\w./-]+", str(s["python"])):
            raise BackendUnavailable(f"python must be a plain command or path, got {s['python']!r}")
        self.target = SSHTarget(
            host=str(s["host"]),
            port=int(s["port"]),
            user=s["user"],
            key=s["key"],
            known_hosts=s["known_hosts"],
            strict_host_keys=str(s["strict_host_keys"]),
            connect_timeout_s=int(s["connect_timeout_s"]),
            python=str(s["python"]),
            remote_dir=str(s["remote_dir"]),
        )
        self._channel: AgentChannel | None = None
        self._board: dict[str, Any] | None = None
        self._handles: dict[str, int] = {}  # model sha256 -> session handle on the current connection
        self._names: dict[str, str] = {}  # local file -> sha256
        self.reconnect_count = 0
        self.thermal_events: list[dict[str, Any]] = []
        self._connect()

    def _connect(self) -> AgentChannel:
        if self._channel is not None and self._channel.alive:
            return self._channel
        self._channel = AgentChannel(self.target, lock_wait_s=float(self.settings["lock_wait_s"]))
        self._handles = {}
        self._board = self._channel.call("hello", thermal_path=self.settings["thermal_path"])
        return self._channel

    def _reconnect(self, why: Exception) -> AgentChannel:
        """Open a new channel after a drop (``reconnects`` tries, 1, 2, 4 ... s apart)."""
        if self._channel is not None:
            self._channel.close()
        self._channel = None
        tries = int(self.settings["reconnects"])
        for attempt in range(tries):
            time.sleep(min(2**attempt, 10))
            try:
                ch = self._connect()
                self.reconnect_count += 1
                return ch
            except RemoteError:
                continue
        raise RemoteError(
            f"lost the board {self.target.label} ({why}) and could not reconnect after {tries} tries; "
            "rows measured so far are saved, run again with --resume"
        ) from None

    # ------------------------------------------------------------ identity
    @property
    def board(self) -> dict[str, Any]:
        if self._board is None:
            self._connect()
        assert self._board is not None
        return self._board

    def fingerprint_settings(self) -> dict[str, Any]:
        from latbench.export import EXPORTER

        s = self.settings
        speed = {k: v for k, v in s.items() if k not in CONNECTION_SETTINGS and k not in THERMAL_SETTINGS}
        return {**speed, "runtime": "latbench-agent", "provider": "CPUExecutionProvider", "exporter": EXPORTER}

    def fingerprint(self) -> DeviceFingerprint:
        host = {**self.board["host"], "reached_as": self.target.label}
        local = library_versions()
        versions = {
            **{k: str(v) for k, v in self.board["versions"].items()},
            "latbench": local.get("latbench", "?"),
            "exporter_torch": local.get("torch", "?"),
            "exporter_onnx": local.get("onnx", "?"),
        }
        return DeviceFingerprint(backend=self.name, settings=self.fingerprint_settings(), host=host, versions=versions)

    def why_unsupported(self, spec: OpSpec) -> str | None:
        if spec.dtype != "float32":
            return (
                f"dtype {spec.dtype} is not run on {self.name}: ops are exported in float32 (precision=int8 quantizes)"
            )
        if spec.type == "zero":
            return "zero ops are skipped blocks and never timed"
        return None

    # ------------------------------------------------------------ models
    def model_path(self, workload: Workload) -> Path:
        """The ONNX file for ``workload``: exported (and quantized) here, as ``ort-cpu`` does."""
        from latbench.backends.ort import onnx_file_for, quantize_int8

        src = onnx_file_for(self, workload)
        if self.settings["precision"] == "int8":
            src, _ = quantize_int8(src)
        return src

    def _handle(self, ch: AgentChannel, path: Path) -> int:
        name = self._names.get(str(path)) or ch.upload([path])[str(path)]
        self._names[str(path)] = name
        if name not in self._handles:
            s = self.settings
            try:
                reply = ch.call(
                    "load",
                    name=name,
                    threads=int(s["threads"]),
                    cores=s["cores"],
                    graph_optimization=s["graph_optimization"],
                    spinning=bool(s["spinning"]),
                )
            except ConnectionLost:
                raise
            except RemoteError as exc:
                raise UnsupportedOp(f"{path.name}: {exc}") from None
            self._handles[name] = int(reply["handle"])
        return self._handles[name]

    def prepare(self, workloads: list[Workload]) -> None:
        """Export every workload and upload the missing ones in one go (one connection, many files)."""
        files = [self.model_path(w) for w in workloads]
        ch = self._connect()
        for f, name in ch.upload(files).items():
            self._names[f] = name

    def runner(self, workload: Workload) -> Runner:
        path = self.model_path(workload)
        self._with_channel(lambda ch: self._handle(ch, path))

        def run(n: int) -> list[float]:
            def call(ch: AgentChannel) -> list[float]:
                fresh = self._names.get(str(path)) not in self._handles
                handle = self._handle(ch, path)
                if fresh:  # a reconnect: warm the new session before its calls count
                    ch.call("run", handle=handle, n=max(3, n // 2))
                return [float(x) for x in ch.call("run", handle=handle, n=int(n))["ms"]]

            return self._with_channel(call)

        return run

    def _with_channel(self, fn: Any) -> Any:
        """Run ``fn(channel)``; after a dropped connection reconnect and run it again."""
        try:
            return fn(self._connect())
        except ConnectionLost as exc:
            return fn(self._reconnect(exc))

    # ------------------------------------------------------------ batches
    def thermal_gate(self) -> dict[str, Any]:
        """Wait while the board is too hot (pause above ``thermal_pause_c``, resume below ``thermal_resume_c``)."""
        s = self.settings
        res = self._with_channel(
            lambda ch: ch.call(
                "thermal_wait",
                pause_c=float(s["thermal_pause_c"]),
                resume_c=float(s["thermal_resume_c"]),
                max_s=float(s["thermal_max_wait_s"]),
            )
        )
        event = {k: v for k, v in res.items() if k != "ok"}
        if event.get("paused"):
            self.thermal_events.append(event)
        return event

    def measure_many(
        self,
        workloads: dict[str, Workload],
        config: TimingConfig | None = None,
        **kwargs: Any,
    ) -> tuple[dict[str, Measurement], dict[str, Any]]:
        """The harness's batch timing, behind the thermal gate; the info says what the gate and the link did."""
        self.prepare([*workloads.values()])
        gate = self.thermal_gate()
        before = self.reconnect_count
        results, info = super().measure_many(workloads, config, **kwargs)
        info["thermal"] = gate
        info["reconnects"] = self.reconnect_count - before
        for m in results.values():
            m.meta["thermal_wait_s"] = gate.get("waited_s", 0.0)
            if gate.get("temperature_c") is not None:
                m.meta["temperature_c"] = gate["temperature_c"]
        return results, info

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
