"""The service layer: what every command needs below the CLI, in one place.

It opens a device (refusing a profile recorded elsewhere), resolves where
latency comes from (a table, a predictor, a device: :func:`resolve_latency_source`),
and gathers the lower layers' entry points the commands use: measuring whole
networks (:mod:`latbench.measure.networks`) and reporting progress and messages
through a :class:`~latbench.progress.Reporter` (:mod:`latbench.progress`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latbench.errors import LatbenchError
from latbench.measure.networks import dataset_timing, measure_archs, network_timing
from latbench.progress import NullReporter, Reporter, get_reporter, message, set_reporter, track

__all__ = [
    "LatencySource",
    "NullReporter",
    "Reporter",
    "dataset_timing",
    "get_reporter",
    "measure_archs",
    "message",
    "network_timing",
    "open_device",
    "ops_to_measure",
    "resolve_latency_source",
    "set_reporter",
    "track",
]

if TYPE_CHECKING:
    from latbench.device import DeviceProfile
    from latbench.predict.base import LatencyModel, SpaceLatency
    from latbench.spaces import SearchSpace


# ----------------------------------------------------------------------------- devices
def open_device(name: str) -> tuple[DeviceProfile, Any]:
    """Resolve a device name (profile or backend) to ``(profile, backend)``.

    A profile recorded on another machine (or with other settings) is refused
    in one line: its numbers would not be this device's.
    """
    from latbench.device import load_profile

    profile = load_profile(name)
    backend = profile.make_backend()
    if profile.fingerprint and profile.fingerprint.get("id"):
        # a calibrated profile records its emulator's fingerprint: the calibration holds only for that emulator
        live = (backend.emulator if profile.emulated else backend).fingerprint().id
        if live != profile.fingerprint["id"]:
            backend.close()
            raise LatbenchError(
                f"device profile {profile.name!r} was recorded on another machine or with other settings "
                f"(profile {profile.fingerprint['id']}, here {live}); run `latbench profile {profile.backend} "
                f"--name {profile.name}` again"
            )
    return profile, backend


# ----------------------------------------------------------------------------- latency sources
@dataclass
class LatencySource:
    """Where a search gets latency (ms) from, and where its result can be measured.

    ``kind`` says how its numbers are obtained: ``"looked up"`` (a table),
    ``"predicted"`` (a predictor), ``"emulated"`` (a calibrated emulator: a
    real device's numbers obtained without it, or a table built that way) -
    the numbers of ``backend`` are ``"measured"`` (``"emulated"`` when the
    backend is an emulated device: see :attr:`measured_kind`).
    """

    model: LatencyModel
    compiled: SpaceLatency
    device: str | None
    backend: Any | None
    description: str
    sentinel_ms: float | None = None
    kind: str = "looked up"

    @property
    def can_measure(self) -> bool:
        return self.backend is not None

    @property
    def measured_kind(self) -> str:
        """What a measurement of a result on ``backend`` is: ``"measured"``, or ``"emulated"`` on an emulated device."""
        from latbench.emulation.backend import KIND, EmulatedBackend

        return KIND if isinstance(self.backend, EmulatedBackend) else "measured"


def _device_backend(
    device_name: str | None, fingerprint_id: str | None, explicit: bool
) -> tuple[Any | None, float | None]:
    """The live backend of ``device_name`` when it can run here and is the device the numbers came from.

    A device the user named (``explicit``) that is not the source's device is
    refused: measuring there would compare one device's numbers with another's.
    """
    if not device_name:
        return None, None
    try:
        prof, backend = open_device(device_name)
    except LatbenchError:
        if explicit:
            raise
        return None, None
    live = backend.fingerprint().id
    if fingerprint_id and live != fingerprint_id:
        if explicit:
            raise LatbenchError(
                f"--device {device_name} is device {live}, but the latency source was made on device "
                f"{fingerprint_id}; give the device the source was made on, or a source of this device"
            )
        return None, None
    return backend, prof.sentinel_ms


def resolve_latency_source(
    space: SearchSpace,
    *,
    device: str | None = None,
    table: str | None = None,
    predictor: str | None = None,
    force: bool = False,
) -> LatencySource:
    """The one resolver of ``--table`` / ``--predictor`` / ``--device`` into a :class:`LatencySource`.

    With a table or predictor, ``device`` names where results are measured and
    must be the device the source was made on. With ``device`` alone, its own
    complete table for ``space`` is used. Raises :class:`LatbenchError` (one
    line) when the source does not cover the space or the devices disagree.
    """
    from latbench.predict.lut import TableLatency
    from latbench.table import LatencyTable

    if table and predictor:
        raise LatbenchError("give one latency source: --table or --predictor (with --device to measure results)")
    if table:
        from latbench.predict.lut import ResolutionTables, load_tables

        model = load_tables(table)
        t = next(iter(model.tables.values())) if isinstance(model, ResolutionTables) else model.table
        compiled = model.compile(space)
        dev = device or t.device.get("name")
        backend, sentinel = _device_backend(dev, t.fingerprint_id, explicit=device is not None)
        where = t.path if not isinstance(model, ResolutionTables) else f"{table} (resolutions {model.resolutions})"
        desc = f"LUT {where} ({t.device.get('name')}, {t.fingerprint_id})"
        kind = "emulated" if _is_emulated_table(t) else "looked up"
        return LatencySource(
            model, compiled, dev if backend else t.device.get("name"), backend, desc, sentinel, kind=kind
        )
    if predictor:
        from latbench.predict.io import load_predictor

        model = load_predictor(predictor, force=force)
        compiled = model.compile(space)
        fp_id = model.fingerprint.get("id")
        recorded = (getattr(model, "meta", None) or {}).get("device") or {}
        dev = device or getattr(model, "device_name", None) or recorded.get("name")
        backend, sentinel = _device_backend(dev, fp_id, explicit=device is not None)
        desc = f"predictor {predictor} ({fp_id})"
        return LatencySource(model, compiled, dev, backend, desc, sentinel, kind="predicted")
    if device:
        from latbench import paths

        prof, backend = open_device(device)
        kind = "emulated" if prof.emulated else "looked up"
        res = space.params.get("resolution")
        for name in (f"{prof.name}/{space.name}-{res}.json", f"{prof.name}/{space.name}.json"):
            found = paths.find("tables", name)
            if found is not None:
                t = LatencyTable.load(found)
                if t.fingerprint_id == backend.fingerprint().id and not t.missing(space.vocabulary):
                    model = TableLatency(t)
                    return LatencySource(
                        model,
                        model.compile(space),
                        prof.name,
                        backend,
                        f"LUT {found} of device {prof.name}",
                        prof.sentinel_ms,
                        kind=kind,
                    )
        if prof.emulated:
            return _emulated_source(space, prof, backend)
        raise LatbenchError(
            f"device {prof.name!r} has no complete table for {space.name}; run "
            f"`latbench table build --device {prof.name} --space {space.name}` first, or pass --table / --predictor"
        )
    raise LatbenchError("no latency source: give --table, --predictor or --device")


def _is_emulated_table(t: Any) -> bool:
    return str(t.fingerprint.get("backend", "")) == "emulated" or str(t.fingerprint_id).startswith("emulated-")


def _emulated_source(space: SearchSpace, prof: DeviceProfile, backend: Any) -> LatencySource:
    """An emulated device without a table of its own for ``space``: the calibration over emulator timings.

    The emulator's ops come from its table when the calibration's table is at
    hand, else (and for every op or part the table lacks: other resolutions,
    widths) they are timed on the emulator now and kept in a parts table
    beside the device's tables, so the next search reuses them.
    """
    from latbench import paths
    from latbench.emulation.transfer import CalibratedLatency, EmulatorTimes
    from latbench.table import LatencyTable

    cal = backend.calibration
    emu_fp = backend.emulator.fingerprint()
    table_path = cal.emulator.get("table")
    emu_table: LatencyTable | None = None
    if table_path:
        found = paths.find("tables", table_path) if not Path(table_path).exists() else Path(table_path)
        if found is not None:
            candidate = LatencyTable.load(found)
            if candidate.fingerprint_id == emu_fp.id:
                emu_table = candidate
    if emu_table is None:
        emu_table = LatencyTable(
            fingerprint=emu_fp.to_dict(),
            device={"name": prof.backend, "backend": prof.backend, "settings": backend.emulator.settings},
        )
    parts_path = paths.write_dir("tables") / prof.name / "emulator-parts.json"
    parts = LatencyTable.load(parts_path) if parts_path.exists() else None
    if parts is not None:
        parts.check_same_device(emu_fp.to_dict(), "emulator parts")
    emu = EmulatorTimes(emu_table, parts, stat=cal.stat, backend=backend.emulator, parts_path=parts_path)
    model = CalibratedLatency(cal, emu, backend.glue)
    missing = [o for o in space.vocabulary if o.type != "zero" and o.key not in emu_table.rows]
    if missing:
        message(
            f"{prof.name}: timing {len(missing)} op(s) of {space.name} on the emulator first (kept in {parts_path})",
            stream="err",
        )
    compiled = model.compile(space)
    extrapolated = [o for o in space.vocabulary if backend.is_extrapolated(o)]
    desc = f"emulated {prof.name} (calibration of {cal.emulator.get('fingerprint')} to {cal.reference.get('name')})"
    if extrapolated:
        desc += f"; {len(extrapolated)} op(s) outside the reference table are extrapolated"
    return LatencySource(model, compiled, prof.name, backend, desc, prof.sentinel_ms, kind="emulated")


# ----------------------------------------------------------------------------- what a table build measures
def ops_to_measure(
    space: str,
    *,
    resolution: int | None = None,
    width: float | None = None,
    sample: int | None = None,
    seed: int = 0,
    family: str = "conv",
    seq: int | None = None,
) -> tuple[list[Any], str, dict[str, Any] | None]:
    """``(ops, table space name, space params)`` of a table build: the space's vocabulary, or ``sample`` op
    configs of ``family`` (conv, transformer, all) drawn across shapes with ``seed`` (table space
    ``sampled-<N>-seed<S>``, with the family unless it is conv). ``seq``: the sequence length of a space that has
    one (``bert``)."""
    if sample is not None:
        from latbench.predict.sampling import sample_ops

        if family not in ("conv", "transformer", "all"):
            raise LatbenchError(f"unknown op family {family!r}; use conv, transformer or all")
        name = f"sampled-{sample}-seed{seed}" + ("" if family == "conv" else f"-{family}")
        return sample_ops(sample, seed=seed, family=family), name, None
    from latbench.spaces import get_space

    s = get_space(space, resolution=resolution, width=width, seq=seq)
    return s.vocabulary, s.name, s.params
