"""Sharded table builds: ``latbench table build --cluster HEAD --device A [--device B] ...``.

For each device the driver places one :class:`~latbench.farm.node.DeviceWorker`
actor on every node that serves it (the actor holds the node's single
``latbench-device:<D>`` unit, so a node never times two things at once), asks
each for its fingerprint, refuses the nodes whose fingerprint does not match
the device profile, then hands ops to the accepted nodes one at a time. Rows
come back as they finish and :func:`latbench.table.build_table` saves each one
atomically, exactly as a local build saves its chunks. A node that dies loses
only the op it was timing; that op goes back to the queue for another node.
Several devices build at once, one thread each.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latbench.device import DeviceFingerprint, DeviceProfile, load_profile
from latbench.errors import LatbenchError, TableError
from latbench.farm import FarmError, resource_name
from latbench.farm.cluster import FarmNode, connect, describe_offer, farm_nodes, nodes_serving
from latbench.farm.node import DeviceWorker, measurement_of, profile_doc
from latbench.measure.harness import DRIFT_MODES, TimingConfig
from latbench.measure.measurement import Measurement
from latbench.ops import OpSpec
from latbench.table import LatencyTable, build_table, default_table_path

Log = Callable[[str], None]


class RemoteDevice:
    """Stands in for a backend in :func:`build_table` when the device lives on farm nodes.

    Its fingerprint is the accepted nodes' fingerprint; what it supports and its
    timing defaults are what the nodes answered.
    """

    def __init__(
        self,
        name: str,
        settings: dict[str, Any],
        fingerprint: dict[str, Any],
        timing: dict[str, Any],
        unsupported: dict[str, str],
    ) -> None:
        self.name = name
        self.settings = settings
        self.timing = TimingConfig(**timing)
        self._fingerprint = fingerprint
        self._unsupported = unsupported

    def fingerprint(self) -> DeviceFingerprint:
        return DeviceFingerprint.from_dict(self._fingerprint)

    def why_unsupported(self, spec: OpSpec) -> str | None:
        return self._unsupported.get(spec.key)

    def supports(self, spec: OpSpec) -> bool:
        return self.why_unsupported(spec) is None


@dataclass
class _Worker:
    node: FarmNode
    actor: Any
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"node {self.node.short} ({self.node.address})"


class DevicePool:
    """The actors measuring one device, one per node that serves it and matches its profile."""

    def __init__(self, ray: Any, profile: DeviceProfile, nodes: list[FarmNode], log: Log, wait_s: float = 60.0) -> None:
        self.ray = ray
        self.profile = profile
        self.device = profile.name
        self.nodes = nodes
        self.log = log
        self.wait_s = wait_s
        self.workers: list[_Worker] = []
        self.refused: list[dict[str, Any]] = []
        self.lost: list[dict[str, Any]] = []
        self.expected_id: str | None = None
        self.expected_source = ""
        self.rows_by_node: Counter[str] = Counter()
        self.roundtrips: list[tuple[float, float]] = []  # (driver round trip s, time inside the node s)
        self.stop = threading.Event()
        self._all: list[_Worker] = []

    # ------------------------------------------------------------------ placing and checking
    def _refuse(self, w: _Worker, reason: str) -> None:
        self.refused.append({"node": w.node.node_id, "address": w.node.address, "reason": reason})
        self.log(f"{w.label} refused for {self.device}: {reason}")
        if w in self.workers:
            self.workers.remove(w)
        self._kill(w)

    def _kill(self, w: _Worker) -> None:
        try:
            self.ray.kill(w.actor)
        except Exception:  # already gone with its node
            pass

    def start(self, table_fingerprint_id: str | None = None) -> None:
        """Place one actor per serving node, read their fingerprints, refuse the ones that do not match."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray = self.ray
        remote_cls = ray.remote(DeviceWorker)
        doc = profile_doc(self.profile)
        pending = []
        for node in self.nodes:
            actor = remote_cls.options(
                num_cpus=0,
                resources={resource_name(self.device): 1},
                scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
                max_restarts=0,
                max_task_retries=0,
            ).remote(self.device, doc)
            w = _Worker(node, actor)
            self._all.append(w)
            pending.append((w, actor.identity.remote()))
        ready, _ = ray.wait([r for _, r in pending], num_returns=len(pending), timeout=self.wait_s)
        ready_set = set(ready)
        candidates: list[_Worker] = []
        for w, ref in pending:
            if ref not in ready_set:
                self._refuse(w, f"no answer within {self.wait_s:.0f} s (its device unit may be held by another build)")
                continue
            try:
                w.identity = ray.get(ref)
            except ray.exceptions.RayError as exc:
                self._refuse(w, f"died before answering ({type(exc).__name__})")
                continue
            if w.identity.get("error"):
                self._refuse(w, w.identity["error"])
                continue
            candidates.append(w)
        recorded = (self.profile.fingerprint or {}).get("id")
        if recorded:
            self.expected_id, self.expected_source = recorded, f"profile {self.profile.path or self.profile.name}"
        elif table_fingerprint_id:
            self.expected_id, self.expected_source = table_fingerprint_id, "the table being resumed"
        elif candidates:
            counts = Counter(w.identity["fingerprint"]["id"] for w in candidates)
            self.expected_id = counts.most_common(1)[0][0]
            self.expected_source = (
                "most nodes serving it (the profile records no fingerprint; `latbench profile` pins one)"
            )
        for w in candidates:
            have = w.identity["fingerprint"]["id"]
            if have != self.expected_id:
                self._refuse(w, f"its fingerprint {have} does not match {self.expected_id} of {self.expected_source}")
            else:
                self.workers.append(w)
        if not self.workers:
            reasons = "; ".join(f"{r['node'][:8]}: {r['reason']}" for r in self.refused) or "none answered"
            raise FarmError(f"no node serving {self.device} can measure it ({reasons})")

    def remote_device(self, ops: list[OpSpec]) -> RemoteDevice:
        """The backend stand-in for :func:`build_table`, from the first accepted node's answers."""
        specs = [o.to_dict() for o in ops if o.type != "zero"]
        for w in list(self.workers):
            try:
                unsupported = self.ray.get(w.actor.unsupported.remote(specs))
            except self.ray.exceptions.RayActorError:
                self._lose(w, None)
                continue
            ident = w.identity
            return RemoteDevice(ident["backend"], ident["settings"], ident["fingerprint"], ident["timing"], unsupported)
        raise FarmError(f"every node serving {self.device} was lost before the build started")

    def close(self) -> None:
        for w in self._all:
            self._kill(w)

    # ------------------------------------------------------------------ measuring
    def _time_sentinel(self) -> float:
        """The drift sentinel's reference time, timed on the first node that answers (ms)."""
        for w in list(self.workers):
            try:
                res = self.ray.get(w.actor.sentinel_ms.remote(self.expected_id))
            except self.ray.exceptions.RayActorError:
                self._lose(w, None)
                continue
            if "refused" in res:
                self._refuse(w, res["refused"])
                continue
            return float(res["sentinel_ms"])
        raise FarmError(f"every node serving {self.device} was lost or refused before the sentinel was timed")

    def _lose(self, w: _Worker, op: OpSpec | None) -> None:
        self.lost.append({"node": w.node.node_id, "address": w.node.address, "op": op.key if op else None})
        what = f"; {op.key} goes to another node" if op else ""
        self.log(f"{w.label} serving {self.device} was lost{what}")
        if w in self.workers:
            self.workers.remove(w)

    def stream(
        self, todo: dict[str, OpSpec], config: TimingConfig, sentinel_ref_ms: float | None
    ) -> Iterator[tuple[str, Measurement, dict[str, Any]]]:
        """The ``measure_stream`` of :func:`build_table`: one op per node at a time, rows as they finish."""
        ray = self.ray
        first_info: dict[str, Any] = {}
        if sentinel_ref_ms is None:
            sentinel_ref_ms = self._time_sentinel()
            first_info = {"sentinel_ref_ms": sentinel_ref_ms}
        cfg = config.to_dict()
        queue = deque(todo.values())
        idle = list(self.workers)
        in_flight: dict[Any, tuple[_Worker, OpSpec, float]] = {}

        def dispatch() -> None:
            nonlocal idle
            idle = [w for w in idle if w in self.workers]
            while idle and queue:
                w, op = idle.pop(0), queue.popleft()
                ref = w.actor.measure.remote(op.to_dict(), cfg, sentinel_ref_ms, self.expected_id)
                in_flight[ref] = (w, op, time.perf_counter())

        while queue or in_flight:
            if self.stop.is_set():
                return
            dispatch()
            if not in_flight:
                raise FarmError(
                    f"every node serving {self.device} was lost or refused; {len(queue)} op(s) not measured "
                    "(rows measured so far are saved; re-run with --resume when nodes are back)"
                )
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            rows: list[tuple[str, Measurement, dict[str, Any]]] = []
            for ref in done:
                w, op, t0 = in_flight.pop(ref)
                try:
                    res = ray.get(ref)
                except ray.exceptions.RayActorError:
                    self._lose(w, op)
                    queue.appendleft(op)
                    continue
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.cause if isinstance(getattr(exc, "cause", None), LatbenchError) else exc
                    line = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
                    raise FarmError(f"{w.label} failed to measure {op.key} on {self.device}: {line}") from None
                except ray.exceptions.RayError:
                    self._lose(w, op)
                    queue.appendleft(op)
                    continue
                if "refused" in res:
                    self._refuse(w, res["refused"])
                    queue.appendleft(op)
                    continue
                idle.append(w)
                self.roundtrips.append((time.perf_counter() - t0, float(res["node_s"])))
                self.rows_by_node[w.node.node_id] += 1
                info = {
                    "row_fields": {**res.get("info", {}).get("row_fields", {}), "farm_node": w.node.node_id},
                    **first_info,
                }
                first_info = {}
                rows.append((op.key, measurement_of(res), info))
            dispatch()  # the freed nodes start their next op before the driver saves these rows
            yield from rows

    def overhead_ms(self) -> dict[str, float] | None:
        """Median per-op farm overhead: driver round trip minus the time spent inside the node (ms)."""
        if not self.roundtrips:
            return None
        rt = np.array([a for a, _ in self.roundtrips]) * 1000
        inside = np.array([b for _, b in self.roundtrips]) * 1000
        return {
            "roundtrip_ms_median": round(float(np.median(rt)), 3),
            "node_ms_median": round(float(np.median(inside)), 3),
            "overhead_ms_median": round(float(np.median(rt - inside)), 3),
        }


class _DeviceProgress:
    """One progress report over the devices of a sharded build (thread-safe updates)."""

    def __init__(self, update: Callable[..., None]) -> None:
        self._update = update
        self._lock = threading.Lock()
        self._state: dict[str, tuple[int, int]] = {}

    def updater(self, name: str) -> Callable[[int, int], None]:
        def update(done: int, total: int) -> None:
            with self._lock:
                self._state[name] = (done, total)
                done_all = sum(d for d, _ in self._state.values())
                total_all = sum(t for _, t in self._state.values())
                status = "  ".join(f"{n} {d}/{t}" for n, (d, t) in self._state.items())
                self._update(done_all, total_all, status=status)

        return update


def cluster_table_build(
    cluster: str,
    devices: list[str],
    *,
    space: str = "proxyless-mobile",
    resolution: int | None = None,
    width: float | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    as_json: bool = False,
    drift: str | None = None,
    min_time: float | None = None,
    sample: int | None = None,
    seed: int = 0,
    adaptive: bool = False,
    sample_family: str = "conv",
    wait_s: float = 60.0,
    log: Log | None = None,
) -> list[dict[str, Any]]:
    """Build the table of ``space`` for every device in ``devices`` on the Ray cluster at ``cluster``.

    ``drift`` and ``min_time`` (seconds of timed calls per op) change the
    devices' default timing as in a local build; ``sample`` measures ``sample``
    op configs drawn across shapes (seeded) instead of the space.

    Everything that can be checked before touching the cluster is (profiles,
    space, existing files), then every device must have a node serving it, so a
    bad command fails in one line with nothing written. Returns one summary per
    table; status lines go to ``log`` (else to the reporter, unless ``as_json``).
    """
    from latbench.service import message

    if drift is not None and drift not in DRIFT_MODES:
        raise FarmError(f"--drift must be one of {', '.join(DRIFT_MODES)}, got {drift!r}")
    ops, space_name, space_params = _ops_to_build(
        devices, space, resolution, width, out, sample, seed, adaptive, sample_family
    )
    targets = _table_targets(devices, space_name, resolution, out, resume)

    def say(msg: str) -> None:
        if log is not None:
            log(msg)
        elif not as_json:
            message(f"farm: {msg}", stream="err")

    build = _ShardedBuild(cluster, ops, space_name, space_params, resume, drift, min_time, as_json)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    with connect(cluster) as ray:
        nodes = farm_nodes(ray)
        for prof, _, _ in targets:
            if not nodes_serving(nodes, prof.name):
                raise FarmError(
                    f"no node of the cluster at {cluster} serves device {prof.name!r} ({describe_offer(nodes)}); "
                    f"on a host of that device run `latbench farm join --device {prof.name} --address {cluster}`"
                )
        pools: dict[str, DevicePool] = {}
        try:
            for prof, _, existing_id in targets:
                pool = DevicePool(ray, prof, nodes_serving(nodes, prof.name), say, wait_s=wait_s)
                pools[prof.name] = pool
                pool.start(existing_id)
                say(
                    f"{prof.name}: {len(pool.workers)} of {len(pool.nodes)} node(s) accepted, "
                    f"fingerprint {pool.expected_id}"
                )
            outcomes = build.run_all(targets, pools)
            for prof, path, _ in targets:
                got = outcomes.get(prof.name)
                if isinstance(got, BaseException):
                    errors.append(got)
                else:
                    results.append(build.finish(got, path, pools[prof.name]))
        finally:
            for pool in pools.values():
                pool.close()
    if errors:
        if isinstance(errors[0], LatbenchError) and results:
            say("finished: " + ", ".join(f"{r['path']} ({r['rows']} rows)" for r in results))
        raise errors[0]
    return results


def _ops_to_build(
    devices: list[str],
    space: str,
    resolution: int | None,
    width: float | None,
    out: str | Path | None,
    sample: int | None,
    seed: int,
    adaptive: bool,
    sample_family: str = "conv",
) -> tuple[list[Any], str, dict[str, Any] | None]:
    """The ops of the request (the space's vocabulary, or ``sample`` sampled configs), checked up front."""
    if not devices:
        raise FarmError("give at least one --device")
    if len(set(devices)) != len(devices):
        raise FarmError(f"a device is given twice: {', '.join(devices)}")
    if out is not None and len(devices) > 1:
        raise FarmError(
            "--out names one table file; with several --device values leave it out (tables/<device>/<space>.json)"
        )
    if adaptive:
        raise FarmError("--adaptive is not sharded (it fits a model between rounds); grow the sampled table locally")
    from latbench.service import ops_to_measure

    return ops_to_measure(space, resolution=resolution, width=width, sample=sample, seed=seed, family=sample_family)


def _table_targets(
    devices: list[str], space_name: str, resolution: int | None, out: str | Path | None, resume: bool
) -> list[tuple[DeviceProfile, Path, str | None]]:
    """``(profile, table path, fingerprint id of the table already there)`` per device; refuses what it must."""
    targets: list[tuple[DeviceProfile, Path, str | None]] = []
    for prof in [load_profile(d) for d in devices]:
        path = Path(out) if out is not None else default_table_path(prof.name, space_name, resolution)
        existing_id = None
        if path.exists():
            if not resume:
                raise TableError(
                    f"{path} exists; pass --resume to measure only its missing rows, or choose another --out"
                )
            existing = LatencyTable.load(path)
            existing_id = existing.fingerprint_id
            recorded = (prof.fingerprint or {}).get("id")
            if recorded and recorded != existing_id:
                existing.check_same_device(prof.fingerprint or {}, "new rows")
        targets.append((prof, path, existing_id))
    return targets


@dataclass
class _ShardedBuild:
    """One table build per device, each sharded over the device's pool of node workers, run side by side."""

    cluster: str
    ops: list[Any]
    space_name: str
    space_params: dict[str, Any] | None
    resume: bool
    drift: str | None
    min_time: float | None
    quiet: bool

    def run_all(
        self, targets: list[tuple[DeviceProfile, Path, str | None]], pools: dict[str, DevicePool]
    ) -> dict[str, Any]:
        """Build every target in its own thread; returns ``{device: (table, measured) or the exception}``."""
        from latbench.progress import track

        outcomes: dict[str, Any] = {}
        with track(f"table {self.space_name}", total=None, enabled=not self.quiet) as update:
            prog = _DeviceProgress(update)
            threads = [
                threading.Thread(target=self._run_one, args=(prof, path, pools[prof.name], prog, outcomes), daemon=True)
                for prof, path, _ in targets
            ]
            for t in threads:
                t.start()
            try:
                while any(t.is_alive() for t in threads):
                    for t in threads:
                        t.join(timeout=0.2)
            except KeyboardInterrupt:
                for pool in pools.values():
                    pool.stop.set()
                for t in threads:
                    t.join(timeout=10)
                raise
        return outcomes

    def _run_one(
        self, prof: DeviceProfile, path: Path, pool: DevicePool, prog: _DeviceProgress, outcomes: dict[str, Any]
    ) -> None:
        try:
            remote = pool.remote_device(self.ops)
            config = remote.timing
            if self.drift:
                config = config.with_(drift=self.drift)
            if self.min_time:
                config = config.with_(min_run_time_s=self.min_time)
            outcomes[prof.name] = build_table(
                remote,
                self.ops,
                path,
                device={"name": prof.name, "backend": prof.backend, "settings": remote.settings},
                space=self.space_name,
                space_params=self.space_params,
                resume=self.resume,
                config=config,
                sentinel_ref_ms=prof.sentinel_ms,
                progress=prog.updater(prof.name),
                measure_stream=pool.stream,
            )
        except BaseException as exc:  # handed to the main thread
            outcomes[prof.name] = exc

    def finish(self, built: tuple[LatencyTable, list[Any]], path: Path, pool: DevicePool) -> dict[str, Any]:
        """Record where the rows came from in the table and summarise it."""
        table, measured = built
        if measured:
            farm = {
                "cluster": self.cluster,
                "fingerprint_source": pool.expected_source,
                "rows_by_node": dict(pool.rows_by_node),
                "refused": pool.refused,
                "lost": pool.lost,
            }
            table.source = {**table.source, "farm": farm}
            table.save(path)
        return {
            **table.summary(),
            "measured_now": len(measured),
            "already_there": len(table) - len(measured),
            "nodes_used": len(pool.rows_by_node),
            "refused": pool.refused,
            "lost": pool.lost,
            "overhead": pool.overhead_ms(),
        }
