"""Device fingerprints: what a number was measured on.

A :class:`DeviceFingerprint` says what a number was measured on: hardware,
backend and the backend settings that change speed (threads, cores, precision).
Its short ``id`` hashes exactly those; library versions are recorded beside it
(a table from an older torch is still this device, but the difference is shown).
Backends make fingerprints; device profiles (:mod:`latbench.device`) store them.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from latbench.errors import LatbenchError


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that change latency numbers."""
    from importlib import metadata

    out = {"python": platform.python_version(), "latbench": _latbench_version()}
    for dist in ("torch", "onnxruntime", "onnx", "numpy", "scikit-learn", "xgboost", "xgboost-cpu"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _latbench_version() -> str:
    from latbench import __version__

    return __version__


def host_info() -> dict[str, Any]:
    import psutil

    freq = None
    try:
        f = psutil.cpu_freq()
        freq = round(f.max or f.current) if f else None
    except (OSError, AttributeError, NotImplementedError):
        freq = None
    try:
        affinity = sorted(psutil.Process().cpu_affinity())
    except (AttributeError, OSError):
        affinity = list(range(os.cpu_count() or 1))
    return {
        "cpu_model": cpu_model(),
        "arch": platform.machine(),
        "cores_physical": psutil.cpu_count(logical=False) or os.cpu_count() or 1,
        "cores_logical": psutil.cpu_count(logical=True) or 1,
        "cpu_freq_mhz": freq,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "affinity_available": affinity,
    }


#: host fields that identify the hardware (others are recorded, not hashed)
_ID_HOST_FIELDS = ("cpu_model", "arch", "cores_physical", "cores_logical", "memory_gb")


@dataclass(frozen=True)
class DeviceFingerprint:
    """What a latency was measured on. ``id`` is a short stable hash of hardware + backend + settings."""

    backend: str
    settings: dict[str, Any]
    host: dict[str, Any]
    gpu: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        ident = {
            "backend": self.backend,
            "settings": self.settings,
            "host": {k: self.host.get(k) for k in _ID_HOST_FIELDS},
            "gpu": {k: (self.gpu or {}).get(k) for k in ("name", "compute_capability")} if self.gpu else None,
        }
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()
        return f"{self.backend}-{digest[:10]}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "backend": self.backend,
            "settings": self.settings,
            "host": self.host,
            "versions": self.versions,
        }
        if self.gpu:
            d["gpu"] = self.gpu
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeviceFingerprint:
        try:
            fp = cls(d["backend"], dict(d["settings"]), dict(d["host"]), d.get("gpu"), dict(d.get("versions", {})))
        except (KeyError, TypeError) as exc:
            raise LatbenchError(f"malformed device fingerprint (missing {exc})") from None
        return fp


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
