"""Backend registry.

Built-in backends register here by name; third-party packages add theirs with
an entry point in the group ``latbench.backends`` (``name = "pkg.module:Class"``).
Backends whose imports are heavy are loaded lazily.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

from latbench.backends.base import SENTINEL_SPEC, Backend, Workload
from latbench.errors import UnknownNameError

__all__ = ["SENTINEL_SPEC", "Backend", "Workload", "backend_class", "backend_names", "get_backend", "register"]

#: name -> "module:Class" (imported on first use)
_BUILTIN: dict[str, str] = {
    "torch-cpu": "latbench.backends.torch_cpu:TorchCPUBackend",
    "fake": "latbench.backends.fake:FakeBackend",
    "ort-cpu": "latbench.backends.ort:ORTCPUBackend",
    "ort-mobile": "latbench.backends.ort:ORTMobileBackend",
    "torch-cuda": "latbench.backends.torch_cuda:TorchCUDABackend",
    "ssh": "latbench.backends.ssh:SSHBackend",
    "adb": "latbench.backends.adb:ADBBackend",
    # a calibrated emulator (made by DeviceProfile.make_backend from a profile with a [calibration])
    "emulated": "latbench.emulation.backend:EmulatedBackend",
}
_REGISTERED: dict[str, type[Backend]] = {}
ENTRY_POINT_GROUP = "latbench.backends"


def register(cls: type[Backend]) -> type[Backend]:
    """Register a backend class under ``cls.name`` (usable as a decorator)."""
    _REGISTERED[cls.name] = cls
    return cls


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def backend_names() -> list[str]:
    names = set(_BUILTIN) | set(_REGISTERED) | set(_entry_points())
    return sorted(names)


def backend_class(name: str) -> type[Backend]:
    if name in _REGISTERED:
        return _REGISTERED[name]
    target = _BUILTIN.get(name)
    if target is not None:
        module, attr = target.split(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            raise UnknownNameError(f"backend {name!r} is not available in this install ({exc})") from None
        _REGISTERED[name] = cls
        return cls
    eps = _entry_points()
    if name in eps:
        cls = eps[name].load()
        _REGISTERED[name] = cls
        return cls
    raise UnknownNameError(f"unknown backend {name!r}; known: {', '.join(backend_names())}")


def get_backend(name: str, **settings: Any) -> Backend:
    """Make backend ``name`` with ``settings`` (``None`` values take the defaults)."""
    cls = backend_class(name)
    return cls(**{k: v for k, v in settings.items() if v is not None})
