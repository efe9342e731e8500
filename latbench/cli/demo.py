"""``latbench demo``: the README's end-to-end run on this CPU."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    device: Annotated[str, typer.Option(help="Name of the device profile the demo writes.")] = "demo-cpu",
    seed: Annotated[int, typer.Option(help="Seed for the sampled archs and searches.")] = 0,
) -> None:
    """Profile this CPU, build the proxyless-mobile table, compare LUT sums with measured networks, search."""
    from latbench.demo import run_demo

    run_demo(device, seed)
