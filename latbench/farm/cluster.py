"""Connecting to a farm and seeing what it offers (``latbench farm status``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from latbench.device import load_profile
from latbench.errors import LatbenchError
from latbench.farm import RESOURCE_PREFIX, FarmError, require_ray
from latbench.farm.node import check_reachable, probe_node, profile_doc


@dataclass(frozen=True)
class FarmNode:
    """One alive Ray node and the latbench devices it offers."""

    node_id: str
    address: str
    hostname: str
    devices: tuple[str, ...]
    cpus: float
    gpus: float

    @property
    def short(self) -> str:
        return self.node_id[:8]


@contextmanager
def connect(address: str, what: str = "--cluster") -> Iterator[Any]:
    """Connect this process to the Ray cluster at ``address`` (``HOST:PORT`` or ``auto``); yields ``ray``.

    An unreachable address is one clear line. A process already connected
    (a test driving a cluster) keeps its connection and is not disconnected.
    """
    ray = require_ray(what)
    check_reachable(address)
    if ray.is_initialized():
        current = str(ray.get_runtime_context().gcs_address)
        if address not in ("auto", current) and _same_endpoint(address, current) is False:
            raise FarmError(f"this process is already connected to the Ray cluster at {current}, not {address}")
        yield ray
        return
    try:
        ray.init(
            address=address,
            logging_level=logging.ERROR,
            log_to_driver=False,
            include_dashboard=False,
            configure_logging=True,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FarmError(f"cannot connect to the Ray cluster at {address}: {first}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def farm_nodes(ray: Any) -> list[FarmNode]:
    """Every alive node of the connected cluster (devices from its ``latbench-device:*`` resources)."""
    out = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = n.get("Resources", {})
        devices = tuple(sorted(k[len(RESOURCE_PREFIX) :] for k in res if k.startswith(RESOURCE_PREFIX)))
        out.append(
            FarmNode(
                node_id=n["NodeID"],
                address=n.get("NodeManagerAddress", "?"),
                hostname=n.get("NodeManagerHostname", "?"),
                devices=devices,
                cpus=float(res.get("CPU", 0.0)),
                gpus=float(res.get("GPU", 0.0)),
            )
        )
    return sorted(out, key=lambda x: x.node_id)


def nodes_serving(nodes: list[FarmNode], device: str) -> list[FarmNode]:
    return [n for n in nodes if device in n.devices]


def offered_devices(nodes: list[FarmNode]) -> dict[str, int]:
    """``{device: number of nodes serving it}``."""
    out: dict[str, int] = {}
    for n in nodes:
        for d in n.devices:
            out[d] = out.get(d, 0) + 1
    return dict(sorted(out.items()))


def describe_offer(nodes: list[FarmNode]) -> str:
    offer = offered_devices(nodes)
    if not offer:
        return "no node offers a latbench device"
    return "nodes offer " + ", ".join(f"{d} ({k} node{'s' if k > 1 else ''})" for d, k in offer.items())


def farm_status(address: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """What the cluster at ``address`` offers: per device, its nodes with their live fingerprints.

    Each node serving a device is probed (a zero-CPU task pinned to it) for the
    fingerprint it would measure with; it is compared with the driver's profile
    of the device when that profile records one.
    """
    with connect(address, "`latbench farm status`") as ray:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = farm_nodes(ray)
        device_names = sorted({d for n in nodes for d in n.devices})
        profiles: dict[str, dict[str, Any]] = {}
        for d in device_names:
            try:
                profiles[d] = profile_doc(load_profile(d))
            except LatbenchError:
                continue  # a device only the nodes know
        probe = ray.remote(probe_node)
        refs = {
            n.node_id: probe.options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False)
            ).remote(list(n.devices), profiles)
            for n in nodes
            if n.devices
        }
        answers: dict[str, Any] = {}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
        ready_set = set(ready)
        for node_id, ref in refs.items():
            if ref in ready_set:
                try:
                    answers[node_id] = ray.get(ref)
                except Exception as exc:  # a node that died while probed
                    answers[node_id] = {"error": f"probe failed: {type(exc).__name__}"}
            else:
                answers[node_id] = {"error": f"no answer within {timeout_s:.0f} s"}
        cluster = {
            "address": address,
            "nodes": len(nodes),
            "cpus": sum(n.cpus for n in nodes),
            "gpus": sum(n.gpus for n in nodes),
            "plain_nodes": sum(1 for n in nodes if not n.devices),
        }
    devices = []
    for d in device_names:
        expected = (profiles.get(d) or {}).get("fingerprint_id")
        rows = []
        for n in nodes_serving(nodes, d):
            a = answers.get(n.node_id, {})
            info = a.get("devices", {}).get(d, {}) if "devices" in a else {"error": a.get("error")}
            fp = info.get("fingerprint")
            match = None if expected is None or fp is None else fp == expected
            rows.append(
                {
                    "node": n.node_id,
                    "address": n.address,
                    "hostname": a.get("hostname", n.hostname),
                    "fingerprint": fp,
                    "profile_source": info.get("profile_source"),
                    "matches_profile": match,
                    "error": info.get("error"),
                    "cpus": n.cpus,
                    "gpus": n.gpus,
                }
            )
        devices.append(
            {
                "device": d,
                "nodes": len(rows),
                "matching": sum(1 for r in rows if r["matches_profile"]),
                "profile_fingerprint": expected,
                "profile": (profiles.get(d) or {}).get("path"),
                "node_list": rows,
            }
        )
    return {"cluster": cluster, "devices": devices}


def _same_endpoint(a: str, b: str) -> bool:
    """Whether two ``host:port`` addresses name the same endpoint (host names resolved)."""
    import socket

    from latbench.farm.node import split_address

    (ha, pa), (hb, pb) = split_address(a), split_address(b)
    if pa != pb:
        return False
    try:
        return socket.gethostbyname(ha) == socket.gethostbyname(hb)
    except OSError:
        return ha == hb
