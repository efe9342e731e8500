"""Device profiles (fingerprints themselves live in :mod:`latbench.fingerprint`).

A :class:`DeviceProfile` is a TOML file in ``devices/``: a name, a backend, its
settings, and - once profiled on a machine - the fingerprint and the drift
sentinel's reference time there.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from latbench import paths
from latbench.errors import LatbenchError, UnknownNameError
from latbench.fingerprint import DeviceFingerprint, cpu_model, host_info, library_versions, now_iso

# the fingerprint names are re-exported: device profiles store fingerprints, and callers find both here
__all__ = [
    "DeviceFingerprint",
    "DeviceProfile",
    "cpu_model",
    "host_info",
    "library_versions",
    "list_profiles",
    "load_profile",
    "now_iso",
    "python_executable",
]


@dataclass
class DeviceProfile:
    """A named device: backend + settings (+ fingerprint and sentinel time once profiled)."""

    name: str
    backend: str
    settings: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] | None = None
    sentinel_ms: float | None = None
    description: str = ""
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def make_backend(self) -> Any:
        from latbench.backends import get_backend

        return get_backend(self.backend, **self.settings)

    def to_toml(self) -> str:
        import tomli_w

        doc: dict[str, Any] = {
            "name": self.name,
            "backend": self.backend,
            "description": self.description,
            "created": self.created or now_iso(),
            "settings": {k: v for k, v in self.settings.items() if v is not None},
        }
        if self.sentinel_ms is not None:
            doc["sentinel_ms"] = round(self.sentinel_ms, 6)
        if self.fingerprint:
            doc["fingerprint"] = _toml_safe(self.fingerprint)
        for k, v in self.extra.items():
            doc[k] = _toml_safe(v)
        return tomli_w.dumps(doc)

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        target = Path(path) if path else paths.write_dir("devices") / f"{self.name}.toml"
        paths.atomic_write_text(target, self.to_toml())
        self.path = target
        return target

    @classmethod
    def from_toml(cls, text: str, path: Path | None = None) -> DeviceProfile:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise LatbenchError(f"{path}: not a valid device profile TOML ({exc})") from None
        for key in ("name", "backend"):
            if key not in doc:
                raise LatbenchError(f"{path}: device profile has no {key!r}")
        known = {"name", "backend", "settings", "fingerprint", "sentinel_ms", "description", "created"}
        return cls(
            name=doc["name"],
            backend=doc["backend"],
            settings=dict(doc.get("settings", {})),
            fingerprint=doc.get("fingerprint"),
            sentinel_ms=doc.get("sentinel_ms"),
            description=doc.get("description", ""),
            created=doc.get("created", ""),
            extra={k: v for k, v in doc.items() if k not in known},
            path=path,
        )


def _toml_safe(value: Any) -> Any:
    """TOML has no null: drop ``None`` values recursively."""
    if isinstance(value, dict):
        return {k: _toml_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_safe(v) for v in value if v is not None]
    return value


def list_profiles() -> list[DeviceProfile]:
    out = []
    for f in paths.listing("devices", "*.toml"):
        try:
            out.append(DeviceProfile.from_toml(f.read_text(), f))
        except LatbenchError:
            continue
    return out


def load_profile(name_or_path: str) -> DeviceProfile:
    """A device by profile name or TOML path; a bare backend name gives that backend's defaults."""
    p = Path(name_or_path)
    if p.suffix == ".toml":
        found = paths.find("devices", p)
        if found is None:
            raise UnknownNameError(f"device profile not found: {name_or_path}")
        return DeviceProfile.from_toml(found.read_text(), found)
    found = paths.find("devices", f"{name_or_path}.toml")
    if found is not None:
        return DeviceProfile.from_toml(found.read_text(), found)
    from latbench.backends import backend_names

    if name_or_path in backend_names():
        return DeviceProfile(name=name_or_path, backend=name_or_path)
    known = sorted({pr.name for pr in list_profiles()} | set(backend_names()))
    raise UnknownNameError(f"unknown device {name_or_path!r}; known: {', '.join(known)} (or run `latbench profile`)")


def python_executable() -> str:
    return sys.executable
