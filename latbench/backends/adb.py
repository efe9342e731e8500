"""``adb``: an Android phone, timed by ONNX Runtime's ``onnxruntime_perf_test`` on the phone.

The user builds ``onnxruntime_perf_test`` for Android (ONNX Runtime's
``build.sh --android ... --build_shared_lib`` makes it) and names it in the
profile (``perf_test = "/path/to/onnxruntime_perf_test"``). latbench exports
each op / network to ONNX here (the ``ort-cpu`` exporter and cache), pushes
model and binary to ``/data/local/tmp/latbench`` with ``adb push``, and runs

    taskset <mask> onnxruntime_perf_test -e cpu -m times -r <runs> -x <threads> -y 1 -o <level> -s -I <model>

pinned to the profile's cores (``taskset``, hexadecimal mask). One *sample*
is the P50 latency of one such invocation (``runs_per_sample`` timed runs
after the tool's own first run); the harness interleaves invocations of the
items of a batch in random order as it does for every device, and keeps the
samples. The tool prints no per-run times, so a sample is a median of
``runs_per_sample`` runs, not one run.

Fingerprint: the phone's (``getprop``: model, manufacturer, SoC, ABI, Android
release and SDK; CPU count and memory; governor and maximum frequency of the
pinned cores; ``dumpsys thermalservice`` status and CPU temperature), with the
perf_test binary's sha256 among the settings (another runtime build is another
device). A thermal gate waits while the CPU sensors are above
``thermal_pause_c`` until they are below ``thermal_resume_c``.

Malformed tool output is one :class:`~latbench.errors.LatbenchError` line.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any, ClassVar

from latbench.backends.base import Backend, Workload
from latbench.errors import BackendUnavailable, LatbenchError
from latbench.fingerprint import DeviceFingerprint, library_versions
from latbench.measure.harness import Runner, TimingConfig
from latbench.measure.measurement import Measurement
from latbench.ops import OpSpec
from latbench.remote import android

OPT_LEVELS = {"disabled": 0, "basic": 1, "extended": 2, "all": 99}
#: settings that say how to reach the phone or when to wait (never in the fingerprint id)
CONNECTION_SETTINGS = ("adb", "serial", "remote_dir", "timeout_s", "thermal_pause_c", "thermal_resume_c")
CONNECTION_SETTINGS += ("thermal_max_wait_s", "thermal_poll_s")


class ADBError(LatbenchError):
    """adb failed: no phone, unauthorized, a push or a run that did not work."""


def _one_line(text: str, n: int = 200) -> str:
    return " ".join(text.split())[:n]


class ADBBackend(Backend):
    """An Android phone over adb, ONNX Runtime's perf_test pinned with taskset."""

    name: ClassVar[str] = "adb"
    default_settings: ClassVar[dict[str, Any]] = {
        "adb": "adb",
        "serial": None,
        "perf_test": None,
        "remote_dir": "/data/local/tmp/latbench",
        "threads": 1,
        "cores": None,
        "runs_per_sample": 20,
        "graph_optimization": "all",
        "precision": "fp32",
        "opset": 17,
        "timeout_s": 120.0,
        "thermal_pause_c": 70.0,
        "thermal_resume_c": 60.0,
        "thermal_max_wait_s": 300.0,
        "thermal_poll_s": 2.0,
    }
    #: each call is a whole invocation: no time-based warmup or run time, a fixed count of samples
    timing = TimingConfig(
        warmup_s=0.0, min_warmup_calls=1, min_run_time_s=0.0, min_runs=6, rounds=3, drift="interleave", max_retries=1
    )

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import onnx  # noqa: F401
            import torch  # noqa: F401
        except ImportError as exc:
            return False, f"exporting ops to ONNX needs {exc.name} here"
        return True, ""

    # ------------------------------------------------------------ adb
    def adb(self, *args: str, timeout_s: float | None = None) -> str:
        """Run ``adb [-s SERIAL] ARGS``; returns stdout, or one :class:`ADBError` line."""
        s = self.settings
        argv = [str(s["adb"]), *(["-s", str(s["serial"])] if s["serial"] else []), *args]
        try:
            res = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout_s or float(s["timeout_s"]), check=False
            )
        except FileNotFoundError:
            raise ADBError(f"adb not found at {s['adb']!r}; install Android platform-tools or set adb=PATH") from None
        except subprocess.TimeoutExpired:
            raise ADBError(
                f"`adb {' '.join(args[:3])}` did not finish within {timeout_s or s['timeout_s']} s"
            ) from None
        if res.returncode != 0:
            why = _one_line(res.stderr or res.stdout) or f"exit code {res.returncode}"
            raise ADBError(f"`adb {' '.join(args[:2])}` failed: {why}")
        return res.stdout

    def shell(self, command: str, timeout_s: float | None = None) -> str:
        return self.adb("shell", command, timeout_s=timeout_s)

    # ------------------------------------------------------------ set-up
    def setup(self) -> None:
        s = self.settings
        if not s["perf_test"]:
            raise BackendUnavailable(
                "the adb backend needs onnxruntime_perf_test built for Android: --set perf_test=PATH"
            )
        binary = Path(str(s["perf_test"])).expanduser()
        if not binary.is_file():
            raise BackendUnavailable(f"perf_test binary not found: {binary}")
        if not isinstance(s["threads"], int) or s["threads"] < 1:
            raise BackendUnavailable(f"threads must be an integer >= 1, got {s['threads']!r}")
        if not isinstance(s["runs_per_sample"], int) or s["runs_per_sample"] < 1:
            raise BackendUnavailable(f"runs_per_sample must be an integer >= 1, got {s['runs_per_sample']!r}")
        if s["graph_optimization"] not in OPT_LEVELS:
            raise BackendUnavailable(f"graph_optimization must be one of {', '.join(OPT_LEVELS)}")
        if s["precision"] not in ("fp32", "int8"):
            raise BackendUnavailable(f"precision must be fp32 or int8, got {s['precision']!r}")
        state = self.adb("get-state", timeout_s=30).strip()
        if state != "device":
            raise ADBError(f"the phone is {state!r}, not ready ('device'); unlock it and accept USB debugging")
        self._binary_sha = hashlib.sha256(binary.read_bytes()).hexdigest()
        self._pushed: dict[str, str] = {}
        self._props = android.parse_getprop(self.shell("getprop"))
        cpus = android.parse_cpu_list(self.shell("cat /sys/devices/system/cpu/possible"))
        if s["cores"]:
            s["cores"] = sorted(int(c) for c in s["cores"])
            bad = [c for c in s["cores"] if c not in cpus]
            if bad:
                raise BackendUnavailable(f"cores {bad} do not exist on this phone (it has {cpus[0]}-{cpus[-1]})")
        else:
            s["cores"] = cpus[-s["threads"] :]  # the last cores: the big cluster on big.LITTLE SoCs
        if len(s["cores"]) < s["threads"]:
            raise BackendUnavailable(f"threads={s['threads']} needs as many cores, got cores={s['cores']}")
        self._cpus = cpus
        self._remote_bin = f"{s['remote_dir']}/onnxruntime_perf_test"
        models_dir = shlex.quote(f"{s['remote_dir']}/models")
        self.shell(f"mkdir -p {models_dir}")
        listing = self.shell(f"ls {models_dir}").split()
        self._on_phone = {name for name in listing if name.endswith(".onnx")}  # pushed by an earlier run
        self.adb("push", str(binary), self._remote_bin)
        self.shell(f"chmod 755 {shlex.quote(self._remote_bin)}")
        self.thermal_events: list[dict[str, Any]] = []

    # ------------------------------------------------------------ identity
    def _cpufreq(self) -> dict[str, Any]:
        govs, freqs = {}, {}
        for c in self.settings["cores"]:
            base = f"/sys/devices/system/cpu/cpu{c}/cpufreq"
            govs[str(c)] = self.shell(f"cat {base}/scaling_governor").strip()
            raw = self.shell(f"cat {base}/cpuinfo_max_freq").strip()
            if not raw.isdigit():
                raise android.ToolOutputError(f"cpu{c} cpuinfo_max_freq is not a number: {raw[:40]!r}")
            freqs[str(c)] = round(int(raw) / 1000)
        return {"governor": govs, "cpu_freq_mhz": freqs}

    def thermal(self) -> dict[str, Any]:
        return android.parse_thermalservice(self.shell("dumpsys thermalservice"))

    def fingerprint_settings(self) -> dict[str, Any]:
        from latbench.export import EXPORTER

        speed = {k: v for k, v in self.settings.items() if k not in CONNECTION_SETTINGS and k != "perf_test"}
        return {
            **speed,
            "perf_test": f"{Path(str(self.settings['perf_test'])).name}:sha256:{self._binary_sha[:16]}",
            "runtime": "onnxruntime_perf_test",
            "exporter": EXPORTER,
        }

    def fingerprint(self) -> DeviceFingerprint:
        p = self._props
        soc = " ".join(x for x in (p.get("ro.soc.manufacturer"), p.get("ro.soc.model")) if x)
        thermal = self.thermal()
        host = {
            "cpu_model": soc or p.get("ro.board.platform") or p.get("ro.hardware", "?"),
            "arch": p.get("ro.product.cpu.abi", "?"),
            "cores_physical": len(self._cpus),
            "cores_logical": len(self._cpus),
            "memory_gb": android.parse_meminfo_gb(self.shell("cat /proc/meminfo")),
            "phone": f"{p.get('ro.product.manufacturer', '?')} {p.get('ro.product.model', '?')}",
            "os": f"Android {p.get('ro.build.version.release', '?')} (SDK {p.get('ro.build.version.sdk', '?')})",
            "build": p.get("ro.build.fingerprint"),
            "serial": self.settings["serial"] or p.get("ro.serialno"),
            **self._cpufreq(),
            "temperature_c": thermal["cpu_c"],
            "thermal_status": thermal["thermal_status"],
        }
        local = library_versions()
        versions = {"latbench": local.get("latbench", "?"), "python": local.get("python", "?")}
        versions.update({f"exporter_{k}": local[k] for k in ("torch", "onnx") if k in local})
        return DeviceFingerprint(backend=self.name, settings=self.fingerprint_settings(), host=host, versions=versions)

    def why_unsupported(self, spec: OpSpec) -> str | None:
        if spec.dtype != "float32":
            return f"dtype {spec.dtype} is not run on {self.name}: ops are exported in float32"
        if spec.type == "zero":
            return "zero ops are skipped blocks and never timed"
        return None

    # ------------------------------------------------------------ running
    def model_path(self, workload: Workload) -> Path:
        from latbench.backends.ort import onnx_file_for, quantize_int8

        src = onnx_file_for(self, workload)
        if self.settings["precision"] == "int8":
            src, _ = quantize_int8(src)
        return src

    def push_model(self, path: Path) -> str:
        """Push a model unless the phone has it (named by its sha256 there); returns its path on the phone."""
        key = str(path)
        if key not in self._pushed:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            remote = f"{self.settings['remote_dir']}/models/{digest}.onnx"
            if f"{digest}.onnx" not in self._on_phone:
                self.adb("push", str(path), remote)
                self._on_phone.add(f"{digest}.onnx")
            self._pushed[key] = remote
        return self._pushed[key]

    def perf_test_command(self, remote_model: str) -> str:
        s = self.settings
        argv = [
            "taskset",
            android.affinity_mask(s["cores"]),
            self._remote_bin,
            "-e",
            "cpu",
            "-m",
            "times",
            "-r",
            str(int(s["runs_per_sample"])),
            "-x",
            str(int(s["threads"])),
            "-y",
            "1",
            "-o",
            str(OPT_LEVELS[s["graph_optimization"]]),
            "-s",
            "-I",
            remote_model,
        ]
        return " ".join(shlex.quote(a) for a in argv)

    def run_once(self, remote_model: str) -> dict[str, Any]:
        """One perf_test invocation on the phone, parsed (milliseconds)."""
        return android.parse_perf_test(self.shell(self.perf_test_command(remote_model)))

    def runner(self, workload: Workload) -> Runner:
        remote = self.push_model(self.model_path(workload))

        def run(n: int) -> list[float]:
            return [float(self.run_once(remote)["p50_ms"]) for _ in range(n)]

        return run

    def _fit(self, config: TimingConfig | None) -> TimingConfig:
        """A calls-are-invocations config: keep counts and drift mode, drop the time-based parts."""
        c = config or self.timing
        return c.with_(warmup_s=0.0, min_warmup_calls=1, min_run_time_s=0.0)

    def thermal_gate(self) -> dict[str, Any]:
        """Wait while the CPU sensors are above ``thermal_pause_c`` until below ``thermal_resume_c``."""
        s = self.settings
        before = self.thermal()
        hot = before["cpu_c"]
        if hot is None or hot < float(s["thermal_pause_c"]):
            return {"paused": False, "temperature_c": hot, "waited_s": 0.0}
        t0 = time.monotonic()
        now = hot
        while now is not None and now > float(s["thermal_resume_c"]):
            if time.monotonic() - t0 > float(s["thermal_max_wait_s"]):
                break
            time.sleep(float(s["thermal_poll_s"]))
            now = self.thermal()["cpu_c"]
        event = {
            "paused": True,
            "temperature_before_c": hot,
            "temperature_c": now,
            "waited_s": round(time.monotonic() - t0, 3),
            "timed_out": now is not None and now > float(s["thermal_resume_c"]),
        }
        self.thermal_events.append(event)
        return event

    def measure(self, workload: Workload, config: TimingConfig | None = None) -> Measurement:
        return super().measure(workload, self._fit(config))

    def measure_many(
        self, workloads: dict[str, Workload], config: TimingConfig | None = None, **kwargs: Any
    ) -> tuple[dict[str, Measurement], dict[str, Any]]:
        gate = self.thermal_gate()
        ms, info = super().measure_many(workloads, self._fit(config), **kwargs)
        info["thermal"] = gate
        for m in ms.values():
            m.meta.update(sample="p50 of one onnxruntime_perf_test invocation", runs=self.settings["runs_per_sample"])
            m.meta["thermal_wait_s"] = gate.get("waited_s", 0.0)
        return ms, info
