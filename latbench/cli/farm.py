"""``latbench farm join|status``: a device farm on Ray (the optional ``ray`` extra)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from latbench.cli import farm_app
from latbench.cli.common import JsonOpt, check_settings, console, emit, out, parse_settings


def register(app: typer.Typer) -> None:
    farm_app.command("join")(join)
    farm_app.command("status")(status)


def join(
    device: Annotated[str, typer.Option(help="Device profile this host serves (its devices/<name>.toml).")],
    address: Annotated[str, typer.Option(help="Address of the Ray head, HOST:PORT.")],
    num_cpus: Annotated[
        int, typer.Option(min=0, help="CPUs this node lends to search trials (0: nothing runs beside its timings).")
    ] = 0,
    num_gpus: Annotated[int | None, typer.Option(min=0, help="GPUs this node lends to search trials.")] = None,
    node_ip_address: Annotated[str | None, typer.Option(help="This host's address as the head sees it.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Backend setting for this host, key=value (repeatable).")
    ] = None,
    block: Annotated[bool, typer.Option(help="Stay in the foreground until Ctrl-C (then the node leaves).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Make this host a farm node serving DEVICE: checks its fingerprint, then `ray start --address HEAD`."""
    from latbench.farm.node import join as join_farm

    result = join_farm(
        address,
        device,
        settings=check_settings(parse_settings(set_)),
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        node_ip_address=node_ip_address,
        block=block,
    )
    emit(
        as_json,
        result,
        lambda: out.print(
            f"joined {address} serving {result['device']} (resource {result['resource']}, "
            f"fingerprint {result['fingerprint']})" + ("" if block else "; leave the farm with `ray stop` on this host")
        ),
    )


def status(
    address: Annotated[str, typer.Option(help="Address of the Ray head, HOST:PORT, or 'auto'.")] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """List the devices a cluster offers: per device its nodes, their fingerprints and whether they match."""
    from latbench.farm.cluster import farm_status

    data = farm_status(address)

    def human() -> None:
        c = data["cluster"]
        out.print(
            f"cluster {c['address']}: {c['nodes']} node(s), {c['cpus']:g} CPU(s), {c['gpus']:g} GPU(s), "
            f"{len(data['devices'])} device(s), {c['plain_nodes']} node(s) without a device"
        )
        if not data["devices"]:
            console.print("no node offers a latbench device; run `latbench farm join --device D --address HEAD` on one")
        for d in data["devices"]:
            profile = f"profile {d['profile_fingerprint']}" if d["profile_fingerprint"] else "profile records none"
            out.print(f"[bold]{d['device']}[/bold]  {d['nodes']} node(s), {d['matching']} match ({profile})")
            for n in d["node_list"]:
                out.print(f"    {n['node'][:8]}  {n['address']:<15} {n['fingerprint'] or '?':<22} {_verdict(n)}")

    emit(as_json, data, human)


def _verdict(n: dict[str, Any]) -> str:
    if n.get("error"):
        return f"cannot measure: {n['error']}"
    if n["matches_profile"] is None:
        return f"({n['profile_source']} profile)"
    return "ok" if n["matches_profile"] else "MISMATCH: refused by builds"
