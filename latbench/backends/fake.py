"""`fake`: a deterministic backend for tests.

Latency is an analytic roofline of the op (MACs at ``gflops``, bytes at
``gbps``, plus ``overhead_ms``) times ``speed``, with seeded multiplicative
noise. No time passes unless ``sleep=True`` (then each call really sleeps its
latency, so a build can be interrupted mid-way). Its host is a made-up device
named by ``device``, so two fake devices have different fingerprints.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from latbench.backends.base import Backend, Workload
from latbench.errors import UnsupportedOp
from latbench.fingerprint import DeviceFingerprint, library_versions
from latbench.measure.harness import Runner, TimingConfig
from latbench.ops import OpSpec


class FakeBackend(Backend):
    name = "fake"
    default_settings = {
        "device": "fake-0",
        "speed": 1.0,
        "gflops": 20.0,
        "gbps": 10.0,
        "overhead_ms": 0.02,
        "noise": 0.02,
        "sleep": False,
        "unsupported": [],
    }
    # no time passes on the fake device, so the sentinel is timed only at round boundaries (a wall-clock tick
    # would make its noise draws, and so the results, depend on how busy the host is)
    timing = TimingConfig(
        warmup_s=0.0, min_warmup_calls=1, min_run_time_s=0.0, min_runs=16, rounds=4, sentinel_every_s=1e9
    )

    def why_unsupported(self, spec: OpSpec) -> str | None:
        if spec.type in self.settings["unsupported"]:
            return f"op type {spec.type} is marked unsupported on this fake device"
        return None

    def fingerprint(self) -> DeviceFingerprint:
        host = {
            "cpu_model": f"latbench fake device {self.settings['device']}",
            "arch": "fake",
            "cores_physical": 1,
            "cores_logical": 1,
            "memory_gb": 1.0,
        }
        return DeviceFingerprint(self.name, self.fingerprint_settings(), host, None, library_versions())

    def fingerprint_settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.settings.items() if k not in ("sleep", "noise")}

    def op_latency_ms(self, spec: OpSpec) -> float:
        """The noise-free latency of ``spec`` on this fake device."""
        s = self.settings
        compute = spec.macs / (s["gflops"] * 1e6)
        memory = spec.memory_bytes / (s["gbps"] * 1e6)
        return float(s["speed"]) * (s["overhead_ms"] + max(compute, memory) + 0.3 * min(compute, memory))

    def _latency(self, workload: Workload) -> tuple[float, str]:
        if isinstance(workload, OpSpec):
            self.check_supported(workload)
            return self.op_latency_ms(workload), workload.key
        if isinstance(workload, dict):
            from latbench.spaces import space_of

            space = space_of(workload)
            ops = space.ops_of(workload)
            for op in ops:
                self.check_supported(op)
            glue = (0.3 + 0.02 * len(ops)) * float(self.settings["speed"])  # call overhead + per-op glue
            total = sum(self.op_latency_ms(op) for op in ops) + glue
            return total, hashlib.sha1(repr(sorted(workload["choices"].items())).encode()).hexdigest()
        raise UnsupportedOp(f"the fake backend cannot run the model file {Path(workload)}")

    def runner(self, workload: Workload) -> Runner:
        lat, label = self._latency(workload)
        rng = np.random.default_rng(zlib.crc32(label.encode()) + zlib.crc32(self.settings["device"].encode()))
        noise = float(self.settings["noise"])
        sleep = bool(self.settings["sleep"])

        def run(n: int) -> list[float]:
            out = (lat * np.exp(rng.normal(0.0, noise, n))).tolist()
            if sleep:
                time.sleep(sum(out) / 1000.0)
            return out

        return run
