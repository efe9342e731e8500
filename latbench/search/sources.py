"""Latency sources for the search engines: a table, a trained predictor, or a device.

``resolve_latency_source`` turns the user's ``--table`` / ``--predictor`` /
``--device`` into a :class:`LatencySource`: a :class:`~latbench.predict.base.LatencyModel`,
its compiled fast path for the space, and - when the source belongs to a device
that can run here - the backend to measure the final archs on for real.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from latbench.errors import LatbenchError
from latbench.predict.base import LatencyModel, SpaceLatency
from latbench.spaces import SearchSpace


@dataclass
class LatencySource:
    """Where a search gets latency (ms) from, and where its result can be measured."""

    model: LatencyModel
    compiled: SpaceLatency
    device: str | None
    backend: Any | None
    description: str
    sentinel_ms: float | None = None

    @property
    def can_measure(self) -> bool:
        return self.backend is not None


def _device_backend(device_name: str | None, fingerprint_id: str | None) -> tuple[Any | None, float | None]:
    """The live backend of a device profile when it can run here and is the device the numbers came from."""
    if not device_name:
        return None, None
    from latbench.cli.common import open_device

    try:
        prof, backend = open_device(device_name)
    except LatbenchError:
        return None, None
    if fingerprint_id and backend.fingerprint().id != fingerprint_id:
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
    """Exactly one of ``table`` / ``predictor`` / ``device`` (device: its table for ``space``, else measured).

    Raises :class:`LatbenchError` (one line) when the source does not cover the space.
    """
    from latbench.predict.lut import TableLatency
    from latbench.table import LatencyTable

    given = [x for x in (table, predictor) if x]
    if len(given) > 1:
        raise LatbenchError("give one latency source: --table or --predictor (with --device to measure results)")
    if table:
        t = LatencyTable.load(table)
        model: Any = TableLatency(t)
        compiled = model.compile(space)
        dev = device or t.device.get("name")
        backend, sentinel = _device_backend(dev, t.fingerprint_id)
        desc = f"LUT {t.path} ({t.device.get('name')}, {t.fingerprint_id})"
        return LatencySource(model, compiled, dev if backend else t.device.get("name"), backend, desc, sentinel)
    if predictor:
        from latbench.predict.io import load_predictor

        model = load_predictor(predictor, force=force)
        compiled = model.compile(space)
        fp_id = model.fingerprint.get("id")
        dev = device or getattr(model, "device_name", None)
        backend, sentinel = _device_backend(dev, fp_id)
        return LatencySource(model, compiled, dev, backend, f"predictor {predictor} ({fp_id})", sentinel)
    if device:
        from latbench import paths
        from latbench.cli.common import open_device

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
