"""What runs on a farm node: the measuring actor, the status probe, and ``farm join``.

A node learns which backend and settings stand for a device from, in order:

1. the host's own profile, handed to the node by ``latbench farm join`` in the
   ``LATBENCH_FARM_PROFILES`` environment variable of its Ray processes;
2. the driver's profile of that device, sent with the actor.

Either way the node computes its *own* fingerprint on its own hardware, and the
driver compares it with the fingerprint the device profile records: a node
whose fingerprint differs is refused and never measures a row.

A node can also serve devices *attached* to it: an SSH board (``ssh``
backend) or an adb phone (``adb``). The actor on the node then drives that
device, and its fingerprint is the board's or the phone's. The node offers one
unit of the device's resource, so one actor (one measurement at a time) runs
per physical device; the board agent's own lock keeps two nodes that reach the
same board from timing on it at once.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from latbench.device import DeviceProfile, load_profile
from latbench.errors import LatbenchError
from latbench.farm import NODE_PROFILES_ENV, FarmError, require_ray, resource_name
from latbench.measure.harness import TimingConfig
from latbench.measure.measurement import Measurement
from latbench.ops import OpSpec


def profile_doc(profile: DeviceProfile) -> dict[str, Any]:
    """The parts of a device profile a node needs (plain JSON)."""
    return {
        "name": profile.name,
        "backend": profile.backend,
        "settings": {k: v for k, v in profile.settings.items() if v is not None},
        "fingerprint_id": (profile.fingerprint or {}).get("id"),
        "sentinel_ms": profile.sentinel_ms,
        "path": str(profile.path) if profile.path else None,
    }


def node_profiles() -> dict[str, dict[str, Any]]:
    """The host's own device profiles, as ``farm join`` handed them to this node (empty when none)."""
    raw = os.environ.get(NODE_PROFILES_ENV)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


#: what a node's ``measure`` sends back of the harness info (the thermal gate and link of attached devices too)
NODE_INFO_KEYS = ("drift", "sentinel_ref_ms", "sentinel_median_ms", "remeasured", "thermal", "reconnects", "row_fields")


def attachment(backend: Any) -> str | None:
    """How a node reaches an attached device (``ssh user@host:port``, ``adb SERIAL``); ``None`` for local ones."""
    if backend is None:
        return None
    target = getattr(backend, "target", None)
    if backend.name == "ssh" and target is not None:
        return f"ssh {target.label}"
    if backend.name == "adb":
        return f"adb {backend.settings.get('serial') or '(the only phone)'}"
    return None


def _node_id() -> str:
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id())
    except Exception:  # outside Ray (unit use)
        return "local"


class DeviceWorker:
    """Measures ops of one device on the node it was placed on (one call at a time).

    Made with ``ray.remote(DeviceWorker).options(resources={"latbench-device:<D>": 1}, ...)``,
    so it holds the node's one unit of the device while the build runs.
    """

    def __init__(self, device: str, driver_profile: dict[str, Any]) -> None:
        self.device = device
        local = node_profiles().get(device)
        doc = local or driver_profile
        self.profile_source = "node" if local else "driver"
        self.node_id = _node_id()
        self.backend: Any = None
        self.fingerprint: dict[str, Any] | None = None
        self.error: str | None = None
        try:
            from latbench.backends import get_backend

            self.backend = get_backend(doc["backend"], **doc.get("settings", {}))
            self.fingerprint = self.backend.fingerprint().to_dict()
        except LatbenchError as exc:
            self.error = str(exc)

    def identity(self) -> dict[str, Any]:
        """Who this node is for the device: fingerprint, settings, timing defaults (or why it cannot run)."""
        b = self.backend
        return {
            "device": self.device,
            "node_id": self.node_id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "profile_source": self.profile_source,
            "fingerprint": self.fingerprint,
            "backend": b.name if b is not None else None,
            "settings": dict(b.settings) if b is not None else None,
            "timing": b.timing.to_dict() if b is not None else None,
            "attached": attachment(b),
            "error": self.error,
        }

    def unsupported(self, specs: list[dict[str, Any]]) -> dict[str, str]:
        """``{op key: reason}`` for the ops this node's backend cannot run."""
        out = {}
        for d in specs:
            spec = OpSpec.from_dict(d)
            why = self.backend.why_unsupported(spec)
            if why is not None:
                out[spec.key] = why
        return out

    def _refusal(self, expected_id: str | None) -> str | None:
        if self.backend is None:
            return self.error or "backend could not be made"
        have = (self.fingerprint or {}).get("id")
        if expected_id is not None and have != expected_id:
            return f"fingerprint {have} does not match {expected_id}"
        return None

    def sentinel_ms(self, expected_id: str | None) -> dict[str, Any]:
        """Time the drift sentinel as ``latbench profile`` does (milliseconds)."""
        why = self._refusal(expected_id)
        if why is not None:
            return {"refused": why}
        return {"sentinel_ms": self.backend.measure_sentinel().median}

    def measure(
        self, spec: dict[str, Any], config: dict[str, Any], sentinel_ref_ms: float | None, expected_id: str | None
    ) -> dict[str, Any]:
        """Check this node's fingerprint, then time one op with the harness (drift sentinel beside it).

        Returns ``{"measurement": Measurement.to_dict(), "info": ..., "node_s": seconds spent}``
        or ``{"refused": reason}`` without timing anything.
        """
        why = self._refusal(expected_id)
        if why is not None:
            return {"refused": why}
        t0 = time.perf_counter()
        op = OpSpec.from_dict(spec)
        res, info = self.backend.measure_many({op.key: op}, TimingConfig(**config), sentinel_ref_ms=sentinel_ref_ms)
        info = {k: v for k, v in info.items() if k in NODE_INFO_KEYS}
        return {"measurement": res[op.key].to_dict(), "info": info, "node_s": time.perf_counter() - t0}

    def close(self) -> None:
        """Release the device (an attached board's SSH channel, GPU memory)."""
        if self.backend is not None:
            self.backend.close()

    def ping(self) -> float:
        """A no-op round trip (for measuring the farm's own overhead)."""
        return time.perf_counter()


def measurement_of(result: dict[str, Any]) -> Measurement:
    return Measurement.from_dict(result["measurement"])


def probe_node(devices: list[str], driver_profiles: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Run on one node by ``farm status``: the node's fingerprint for each device it serves."""
    out: dict[str, Any] = {"hostname": socket.gethostname(), "devices": {}}
    for device in devices:
        doc = driver_profiles.get(device)
        if doc is None and device not in node_profiles():
            out["devices"][device] = {"fingerprint": None, "error": "no profile of this device on the driver or node"}
            continue
        w = DeviceWorker(device, doc or {})
        ident = w.identity()
        out["devices"][device] = {
            "fingerprint": (ident["fingerprint"] or {}).get("id"),
            "profile_source": ident["profile_source"],
            "error": ident["error"],
        }
    return out


# ----------------------------------------------------------------------------------- join
def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (optionally ``ray://`` or ``http://``) -> (host, port); one clear line when malformed."""
    text = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise FarmError(
            f"bad cluster address {address!r}; use HOST:PORT of the Ray head (e.g. 10.0.0.5:6379) or 'auto'"
        )
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail in one line when nothing listens at ``address`` (``auto`` is checked by Ray itself)."""
    if address == "auto":
        return
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise FarmError(
            f"cannot reach a Ray cluster at {address} ({reason}); start its head with `ray start --head` "
            "or check the address"
        ) from None


def ray_cli() -> str:
    """The ``ray`` command of this Python environment."""
    here = Path(sys.executable).parent / "ray"
    if here.exists():
        return str(here)
    found = shutil.which("ray")
    if found is None:
        raise FarmError("the `ray` command is not on PATH; install Ray with: pip install 'latbench[ray]'")
    return found


def node_resources(profiles: list[DeviceProfile]) -> dict[str, float]:
    """The Ray resources of a node serving ``profiles``: one unit of each device."""
    return {resource_name(p.name): 1 for p in profiles}


def node_env(profiles: list[DeviceProfile]) -> dict[str, str]:
    """The environment that tells a node's Ray processes which host profile stands for each device."""
    return {NODE_PROFILES_ENV: json.dumps({p.name: profile_doc(p) for p in profiles})}


def join_command(
    address: str,
    profile: DeviceProfile | list[DeviceProfile],
    *,
    num_cpus: int = 0,
    num_gpus: int | None = None,
    node_ip_address: str | None = None,
    block: bool = False,
) -> tuple[list[str], dict[str, str]]:
    """The ``ray start`` command line and environment that make this host a node serving ``profile``.

    ``profile`` may be several profiles: a host serving its own CPU and the
    boards or phones attached to it. The node offers one unit of
    ``latbench-device:<name>`` per device and ``num_cpus`` CPUs
    (default 0: a device host takes no search trials, so nothing runs beside its timings).
    """
    profiles = profile if isinstance(profile, list) else [profile]
    argv = [
        ray_cli(),
        "start",
        "--address",
        address,
        "--resources",
        json.dumps(node_resources(profiles)),
        "--num-cpus",
        str(int(num_cpus)),
        "--disable-usage-stats",
    ]
    if num_gpus is not None:
        argv += ["--num-gpus", str(int(num_gpus))]
    if node_ip_address:
        argv += ["--node-ip-address", node_ip_address]
    if block:
        argv.append("--block")
    return argv, {**os.environ, **node_env(profiles)}


def local_identity(profile: DeviceProfile) -> dict[str, Any]:
    """Make the device's backend here and compare its fingerprint with the profile's (before joining)."""
    backend = profile.make_backend()
    live = backend.fingerprint().id
    recorded = (profile.fingerprint or {}).get("id")
    if recorded and recorded != live:
        where = profile.path or profile.name
        raise FarmError(
            f"this host does not match device profile {profile.name!r} ({where} records {recorded}, here {live}); "
            f"join as the device it is, or run `latbench profile {profile.backend} --name <name>` here first"
        )
    return {"device": profile.name, "fingerprint": live, "recorded": recorded}


def join(
    address: str,
    device: str,
    *,
    settings: dict[str, Any] | None = None,
    num_cpus: int = 0,
    num_gpus: int | None = None,
    node_ip_address: str | None = None,
    block: bool = False,
) -> dict[str, Any]:
    """Check this host against the device profile, then start a Ray worker node serving it.

    Without ``block`` the node runs in the background (leave with ``ray stop``);
    with it, this call stays in the foreground until the node stops (Ctrl-C).
    """
    require_ray("`latbench farm join`")
    profile = load_profile(device)
    if settings:
        profile.settings = {**profile.settings, **settings}
    ident = local_identity(profile)
    check_reachable(address)
    argv, env = join_command(
        address, profile, num_cpus=num_cpus, num_gpus=num_gpus, node_ip_address=node_ip_address, block=block
    )
    if block:
        proc = subprocess.Popen(argv, env=env)
        try:
            rc = proc.wait()
        except KeyboardInterrupt:  # the normal way to leave: `ray start --block` got the Ctrl-C too
            try:
                rc = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.terminate()
                rc = proc.wait()
        if rc not in (0, -2, -15, 130):
            raise FarmError(f"`ray start` exited with code {rc} (see the lines above)")
        return {**ident, "address": address, "resource": resource_name(profile.name), "returncode": rc}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit code {proc.returncode}"
        raise FarmError(f"`ray start --address {address}` failed: {last}")
    return {**ident, "address": address, "resource": resource_name(profile.name), "returncode": 0}
