"""The service layer: what every command needs below the CLI.

One place that opens a device (refusing a profile recorded elsewhere), resolves
where latency comes from (a table, a predictor, a device), measures whole
networks, and reports progress and messages through a :class:`Reporter`.

The library never prints with rich and never imports the CLI: long work calls
:func:`track` and :func:`message`, which go to the reporter the application
installed with :func:`set_reporter` (the CLI installs a rich one; the default
says nothing). A Python user can install their own, e.g. one that logs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from latbench.errors import LatbenchError

if TYPE_CHECKING:
    from latbench.device import DeviceProfile
    from latbench.measure.harness import TimingConfig
    from latbench.predict.base import LatencyModel, SpaceLatency
    from latbench.spaces import SearchSpace

#: ``update(completed, total=None, status="")``
ProgressUpdate = Callable[..., None]


class Reporter(Protocol):
    """Where long work reports to. ``progress`` bars go to the user's terminal, ``message`` lines to stdout
    (``stream="out"``, results) or stderr (``stream="err"``, status). Text may carry rich markup
    (``[bold]``); a plain reporter strips it."""

    def progress(self, description: str, total: int | None) -> AbstractContextManager[ProgressUpdate]: ...

    def message(self, text: str, stream: str = "out") -> None: ...


class NullReporter:
    """Says nothing: the default for library use."""

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[ProgressUpdate]:
        yield lambda *a, **k: None

    def message(self, text: str, stream: str = "out") -> None:
        return None


_reporter: Reporter = NullReporter()


def set_reporter(reporter: Reporter) -> Reporter:
    """Install ``reporter`` for this process; returns the previous one."""
    global _reporter
    previous, _reporter = _reporter, reporter
    return previous


def get_reporter() -> Reporter:
    return _reporter


@contextmanager
def track(description: str, total: int | None = None, enabled: bool = True) -> Iterator[ProgressUpdate]:
    """A progress report of the installed reporter; yields ``update(completed, total=None, status="")``."""
    if not enabled:
        yield lambda *a, **k: None
        return
    with _reporter.progress(description, total) as update:
        yield update


def message(text: str, stream: str = "out") -> None:
    """A line for the user through the installed reporter (``stream`` "out" for results, "err" for status)."""
    _reporter.message(text, stream)


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


def network_timing(backend: Any, drift: str | None = None, min_time: float | None = None) -> TimingConfig:
    """Timing for whole networks: longer per item than ops, same drift handling."""
    cfg = backend.timing.with_(min_run_time_s=0.6, rounds=8, min_runs=16, warmup_s=0.1)
    if drift:
        cfg = cfg.with_(drift=drift)
    if min_time:
        cfg = cfg.with_(min_run_time_s=min_time)
    return cfg


def measure_archs(
    backend: Any,
    archs: list[dict[str, Any]],
    config: TimingConfig | None = None,
    sentinel_ref_ms: float | None = None,
    progress: bool = True,
) -> tuple[list[Any], dict[str, Any]]:
    """Measure whole networks together (interleaved, drift-corrected); returns measurements in arch order."""
    config = config or network_timing(backend)
    workloads = {f"arch{i:04d}": a for i, a in enumerate(archs)}
    with track("measure", total=config.rounds, enabled=progress) as update:
        res, info = backend.measure_many(
            workloads, config, sentinel_ref_ms=sentinel_ref_ms, on_round=lambda r, n: update(r, n)
        )
    return [res[k] for k in workloads], info


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
