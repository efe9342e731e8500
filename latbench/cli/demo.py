"""``latbench demo``: the README's end-to-end run on this CPU."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from latbench.cli.common import JsonOpt, SeedOpt, check_device_name, emit


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    device: Annotated[
        str, typer.Option(callback=check_device_name, help="Name of the device profile the demo writes.")
    ] = "demo-cpu",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Profile this CPU, build the proxyless-mobile table, compare LUT sums with measured networks, search."""
    from latbench import paths
    from latbench.cli.common import RichReporter
    from latbench.demo import run_demo
    from latbench.service import set_reporter

    for kind in ("devices", "tables"):
        paths.ensure_writable_dir(paths.write_dir(kind))
    previous = set_reporter(RichReporter(messages_to_stderr=True)) if as_json else None
    try:
        ctx = run_demo(device, seed)
    finally:
        if previous is not None:
            set_reporter(previous)
    result: dict[str, Any] = {
        "device": ctx.device,
        "fingerprint": (ctx.profile.fingerprint or {}).get("id"),
        "profile": str(ctx.profile.path),
        "table": str(ctx.table.path),
        "results": ctx.results,
    }
    emit(as_json, result, lambda: None)
