"""The service layer: what every command needs below the CLI, in one place.

It opens a device (refusing a profile recorded elsewhere), resolves where
latency comes from (a table, a predictor, a device: :func:`resolve_latency_source`),
and gathers the lower layers' entry points the commands use: measuring whole
networks (:mod:`latbench.measure.networks`) and reporting progress and messages
through a :class:`~latbench.progress.Reporter` (:mod:`latbench.progress`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from latbench.errors import LatbenchError
from latbench.measure.networks import measure_archs, network_timing
from latbench.progress import NullReporter, Reporter, get_reporter, message, set_reporter, track

__all__ = [
    "LatencySource",
    "NullReporter",
    "Reporter",
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
        live = backend.fingerprint().id
        if live != profile.fingerprint["id"]:
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
    ``"predicted"`` (a predictor) - the numbers of ``backend`` are ``"measured"``.
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
        t = LatencyTable.load(table)
        model: Any = TableLatency(t)
        compiled = model.compile(space)
        dev = device or t.device.get("name")
        backend, sentinel = _device_backend(dev, t.fingerprint_id, explicit=device is not None)
        desc = f"LUT {t.path} ({t.device.get('name')}, {t.fingerprint_id})"
        return LatencySource(model, compiled, dev if backend else t.device.get("name"), backend, desc, sentinel)
    if predictor:
        from latbench.predict.io import load_predictor

        model = load_predictor(predictor, force=force)
        compiled = model.compile(space)
        fp_id = model.fingerprint.get("id")
        dev = device or getattr(model, "device_name", None)
        backend, sentinel = _device_backend(dev, fp_id, explicit=device is not None)
        desc = f"predictor {predictor} ({fp_id})"
        return LatencySource(model, compiled, dev, backend, desc, sentinel, kind="predicted")
    if device:
        from latbench import paths

        prof, backend = open_device(device)
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
                    )
        raise LatbenchError(
            f"device {prof.name!r} has no complete table for {space.name}; run "
            f"`latbench table build --device {prof.name} --space {space.name}` first, or pass --table / --predictor"
        )
    raise LatbenchError("no latency source: give --table, --predictor or --device")


# ----------------------------------------------------------------------------- what a table build measures
def ops_to_measure(
    space: str, *, resolution: int | None = None, width: float | None = None, sample: int | None = None, seed: int = 0
) -> tuple[list[Any], str, dict[str, Any] | None]:
    """``(ops, table space name, space params)`` of a table build: the space's vocabulary, or ``sample`` op
    configs drawn across shapes with ``seed`` (table space ``sampled-<N>-seed<S>``)."""
    if sample is not None:
        from latbench.predict.sampling import sample_ops

        return sample_ops(sample, seed=seed), f"sampled-{sample}-seed{seed}", None
    from latbench.spaces import get_space

    s = get_space(space, resolution=resolution, width=width)
    return s.vocabulary, s.name, s.params
