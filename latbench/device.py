"""Device profiles (fingerprints themselves live in :mod:`latbench.fingerprint`).

A :class:`DeviceProfile` is a TOML file in ``devices/``: a name, a backend, its
settings, and - once profiled on a machine - the fingerprint and the drift
sentinel's reference time there.
"""

from __future__ import annotations

import math
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

    @property
    def emulated(self) -> bool:
        """True for a calibrated profile: its backend is the emulator, its numbers the reference device's."""
        return "calibration" in self.extra

    @property
    def kind(self) -> str:
        """How this device's numbers are obtained: ``"emulated"`` (calibrated emulator) or ``"measured"``."""
        return "emulated" if self.emulated else "measured"

    def make_emulator(self) -> Any:
        """The backend that runs the workloads: the profile's own backend with its settings."""
        from latbench.backends import get_backend

        return get_backend(self.backend, **self.settings)

    def make_backend(self) -> Any:
        """The device's backend; for a calibrated profile an :class:`~latbench.emulation.backend.EmulatedBackend`
        around the emulator (phone-scale numbers), with the profile's ``[glue]`` when it has one."""
        if not self.emulated:
            return self.make_emulator()
        from latbench.backends import get_backend

        # the "emulated" backend kind (latbench.emulation.backend.EmulatedBackend), by name: the device layer
        # does not import the emulation layer above it
        return get_backend(
            "emulated",
            emulator=self.make_emulator(),
            calibration=self.extra["calibration"],
            glue=self.extra.get("glue"),
        )

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
    def from_toml(cls, text: str | bytes, path: Path | None = None) -> DeviceProfile:
        """A profile from TOML text (or bytes), every value checked; one line naming ``path`` otherwise."""
        where = path or "device profile"
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise LatbenchError(f"{where}: not a device profile (not UTF-8 text)") from None
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise LatbenchError(f"{where}: not a valid device profile TOML ({str(exc).splitlines()[0]})") from None
        except RecursionError:
            raise LatbenchError(f"{where}: not a valid device profile TOML (nested too deep)") from None
        for key in ("name", "backend"):
            if key not in doc:
                raise LatbenchError(f"{where}: device profile has no {key!r}")
        check_profile_values(doc, where)
        known = {"name", "backend", "settings", "fingerprint", "sentinel_ms", "description", "created"}
        return cls(
            name=doc["name"],
            backend=doc["backend"],
            settings=dict(doc.get("settings", {})),
            fingerprint=doc.get("fingerprint"),
            sentinel_ms=doc.get("sentinel_ms"),
            description=str(doc.get("description", "")),
            created=str(doc.get("created", "")),
            extra={k: v for k, v in doc.items() if k not in known},
            path=path,
        )

    @classmethod
    def from_file(cls, path: Path) -> DeviceProfile:
        """Read and validate the profile at ``path``."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise LatbenchError(f"cannot read device profile {path}: {exc.strerror or exc}") from None
        return cls.from_toml(data, path)


#: backends that time on another machine: their settings name that machine's cores
REMOTE_BACKENDS = ("ssh", "adb")


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def check_profile_values(doc: dict[str, Any], where: Any) -> None:
    """Refuse a profile whose values cannot be right: a name that cannot be a file name, threads < 1, cores this
    machine does not have, a speed or sentinel time that is not a number > 0, a calibration that would give a
    negative latency."""
    for key in ("name", "backend"):
        if not isinstance(doc[key], str):
            raise LatbenchError(f"{where}: device profile {key} {doc[key]!r} is not text")
    try:
        paths.check_name(doc["name"], "device profile name")
    except LatbenchError as exc:
        raise LatbenchError(f"{where}: {exc}") from None
    settings = doc.get("settings", {})
    if not isinstance(settings, dict):
        raise LatbenchError(f"{where}: [settings] of a device profile must be a table")
    for key in ("threads", "inter_threads", "batch"):
        v = settings.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise LatbenchError(f"{where}: settings.{key} must be an integer >= 1, got {v!r}")
    cores = settings.get("cores")
    if cores is not None:
        # a remote device's cores are the board's or phone's, which this machine cannot count
        total = 1 << 16 if doc["backend"] in REMOTE_BACKENDS else (os.cpu_count() or 1)
        ok = isinstance(cores, list) and cores and all(isinstance(c, int) and not isinstance(c, bool) for c in cores)
        if not ok or len(set(cores)) != len(cores):
            raise LatbenchError(f"{where}: settings.cores must be a list of distinct core numbers, got {cores!r}")
        bad = [c for c in cores if not 0 <= c < total]
        if bad:
            raise LatbenchError(f"{where}: settings.cores {bad} do not exist on this machine (cores 0..{total - 1})")
    for key, v in settings.items():
        if key in ("speed", "gflops", "gbps") or key.endswith("_speed"):
            if not _positive(v):
                raise LatbenchError(f"{where}: settings.{key} must be a number > 0, got {v!r}")
        elif key.endswith("_ms") and not (_positive(v) or v == 0):
            raise LatbenchError(f"{where}: settings.{key} must be a number >= 0 (milliseconds), got {v!r}")
    if "sentinel_ms" in doc and not _positive(doc["sentinel_ms"]):
        raise LatbenchError(f"{where}: sentinel_ms must be a number > 0 (milliseconds), got {doc['sentinel_ms']!r}")
    fp = doc.get("fingerprint")
    if fp is not None and (not isinstance(fp, dict) or not isinstance(fp.get("id", ""), str)):
        raise LatbenchError(f"{where}: [fingerprint] of a device profile must be a table with a text id")
    if "calibration" in doc:
        _check_calibration(doc["calibration"], where)


def _check_calibration(cal: Any, where: Any) -> None:
    """A ``latbench calibrate`` mapping in a profile: as many finite coefficients as features. The emulation layer
    that owns the mapping checks the rest when it loads it (:meth:`latbench.emulation.transfer.Calibration.from_dict`:
    no coefficient that would give a negative latency)."""
    if not isinstance(cal, dict):
        raise LatbenchError(f"{where}: [calibration] must be a table")
    feats, coef = cal.get("features"), cal.get("coefficients")
    if not isinstance(feats, list) or not isinstance(coef, list) or len(feats) != len(coef):
        raise LatbenchError(f"{where}: [calibration] needs as many coefficients as features")
    for f, c in zip(feats, coef, strict=True):
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
            raise LatbenchError(f"{where}: calibration coefficient of {f} is not a finite number: {c!r}")
        if f == "t" and (c < 0 or (c == 0 and len(feats) == 1)):
            raise LatbenchError(
                f"{where}: calibration coefficient of t is {c}: a negative (or zero) time scale would give "
                "negative latencies; calibrate again"
            )


def _toml_safe(value: Any) -> Any:
    """TOML has no null: drop ``None`` values recursively."""
    if isinstance(value, dict):
        return {k: _toml_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_safe(v) for v in value if v is not None]
    return value


def list_profiles() -> list[DeviceProfile]:
    """Every readable profile over the ``devices/`` search dirs; a broken one is skipped with a warning line."""
    from latbench.progress import message

    out = []
    for f in paths.listing("devices", "*.toml"):
        try:
            out.append(DeviceProfile.from_file(f))
        except LatbenchError as exc:
            message(f"warning: skipping device profile {exc}", stream="err")
    return out


def load_profile(name_or_path: str) -> DeviceProfile:
    """A device by profile name or TOML path; a bare backend name gives that backend's defaults."""
    p = Path(name_or_path)
    if p.suffix == ".toml":
        found = paths.find("devices", p)
        if found is None:
            raise UnknownNameError(f"device profile not found: {name_or_path}")
        return DeviceProfile.from_file(found)
    found = paths.find("devices", f"{name_or_path}.toml")
    if found is not None:
        return DeviceProfile.from_file(found)
    from latbench.backends import backend_names

    if name_or_path in backend_names():
        return DeviceProfile(name=name_or_path, backend=name_or_path)
    known = sorted({pr.name for pr in list_profiles()} | set(backend_names()))
    raise UnknownNameError(f"unknown device {name_or_path!r}; known: {', '.join(known)} (or run `latbench profile`)")


def python_executable() -> str:
    return sys.executable
