"""``latbench search proxyless``: differentiable latency-constrained search (ProxylessNAS / FBNet / DARTS)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from latbench.cli.common import emit, out, parse_settings


def register(app: typer.Typer) -> None:
    from latbench.cli import search_app

    search_app.command("proxyless")(proxyless)


def proxyless(
    target: Annotated[
        str | None,
        typer.Option(help="Latency target: 12, 12ms, 0.012s, 12000us, or a share of the space's range (25%)."),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="Device profile: its table for the space, and where the result is measured.")
    ] = None,
    table: Annotated[
        str | None, typer.Option(help="Latency table (path or <device>/<space>), e.g. pixel1/proxyless-mobile.")
    ] = None,
    predictor: Annotated[str | None, typer.Option(help="Trained latency predictor (path or name).")] = None,
    space: Annotated[str, typer.Option(help="Deployment space: proxyless-mobile or darts.")] = "proxyless-mobile",
    resolution: Annotated[int | None, typer.Option(help="Deployment resolution (latency is counted at it).")] = None,
    width: Annotated[float | None, typer.Option(help="Deployment width multiplier.")] = None,
    space_param: Annotated[
        list[str] | None, typer.Option(help="Other deployment space parameter, key=value (e.g. channels=8 for darts).")
    ] = None,
    loss: Annotated[
        str, typer.Option(help="budget (adapts its multiplier; give only --target), add or mul-log.")
    ] = "budget",
    mode: Annotated[
        str, typer.Option(help="binary (ProxylessNAS paths), gumbel (FBNet) or softmax (DARTS).")
    ] = "binary",
    data: Annotated[str, typer.Option(help="digits, or an .npz with arrays x (images) and y (labels).")] = "digits",
    epochs: Annotated[
        int | None, typer.Option(help="Search epochs (weights + alpha), after the warmup. [default: 30]")
    ] = None,
    warmup: Annotated[int | None, typer.Option(help="Warmup epochs (weights only). [default: 10]")] = None,
    seed: Annotated[int, typer.Option(help="Seed of weights, data order and sampled paths.")] = 0,
    train_resolution: Annotated[
        int | None, typer.Option(help="Image size the supernet trains at. [default: 32]")
    ] = None,
    train_width: Annotated[
        float | None, typer.Option(help="Width multiplier of the trained variant. [default: 0.35]")
    ] = None,
    derive: Annotated[
        str,
        typer.Option(
            help="auto (budget loss: within-budget, else argmax), argmax, or within-budget (most probable arch "
            "<= target among the top-k options; with the budget loss also >= 95 % of it)."
        ),
    ] = "auto",
    top_k: Annotated[int, typer.Option(help="Options per decision --derive within-budget considers.")] = 3,
    lam: Annotated[
        float | None, typer.Option("--lambda", help="Fixed latency weight of --loss add. [default: 0.1]")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size. [default: 64]")] = None,
    alpha_lr: Annotated[
        float | None, typer.Option(help="Adam learning rate of alpha (betas 0, 0.999). [default: 1e-3, ProxylessNAS]")
    ] = None,
    retrain: Annotated[
        int | None, typer.Option(help="Train the derived net from scratch for this many epochs; report test accuracy.")
    ] = None,
    baseline: Annotated[
        int, typer.Option(help="With --retrain: also retrain N random archs within the budget (median accuracy).")
    ] = 0,
    train_device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
    measure: Annotated[
        bool, typer.Option(help="Measure the derived arch on the device (when the source has one here).")
    ] = True,
    step_to_budget: Annotated[
        bool,
        typer.Option(
            help="When the derived arch measures over the budget, derive within tighter budgets and deploy the first "
            "measured within it (median + IQR <= target)."
        ),
    ] = True,
    share_weights: Annotated[
        bool | None,
        typer.Option(help="MBConv candidates of a block share a superkernel. [default: on for proxyless-mobile]"),
    ] = None,
    run_id: Annotated[
        str | None, typer.Option(help="Name of the run folder (default: made from space, loss, target, time).")
    ] = None,
    runs_dir: Annotated[
        Path | None, typer.Option(help="Folder of run folders. [default: runs/ under LATBENCH_HOME or the checkout]")
    ] = None,
    resume: Annotated[
        str | None, typer.Option(help="Id of the run to go on with (other options are taken from it).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Gradient-based search with latency in the loss; writes <runs-dir>/<run-id>/ (resumable with --resume RUN_ID)."""
    from latbench.search.proxyless import run

    res = run(
        target=target,
        space=space,
        device=device,
        table=table,
        predictor=predictor,
        loss=loss,
        mode=mode,
        data=data,
        epochs=epochs,
        warmup=warmup,
        seed=seed,
        resolution=resolution,
        width=width,
        space_params=parse_settings(space_param),
        train_resolution=train_resolution,
        train_width=train_width,
        derive_method=derive,
        top_k=top_k,
        lam=lam,
        batch_size=batch_size,
        alpha_lr=alpha_lr,
        retrain=retrain,
        baseline=baseline,
        train_device=train_device,
        measure=measure,
        step_to_budget=step_to_budget,
        share_weights=share_weights,
        run_id=run_id,
        runs_dir=runs_dir,
        resume=resume,
        progress=not as_json,
    )
    doc = res.to_dict()
    shown = {**doc, "details": {k: v for k, v in doc["details"].items() if k != "choices_table"}}
    emit(as_json, {"run_dir": str(res.run_dir), **shown}, lambda: _print_result(str(res.run_dir), doc))


def _print_result(run_dir: str, d: dict) -> None:  # type: ignore[type-arg]
    """The result for people: the deployed arch, its latency against the budget, the trained variant's accuracy."""
    x = d["details"]
    meas = d.get("measured")
    out.print(f"[bold]run[/bold]        {run_dir}")
    out.print(f"[bold]arch[/bold]       {' '.join(str(v) for v in d['arch']['choices'].values())}")
    out.print(
        f"[bold]latency[/bold]    target {d['target_ms']:.3f} ms, {d['predicted_kind']} {d['predicted_ms']:.3f} ms "
        f"({x['gap_pct']:+.1f} %), E[LAT] {x['expected_ms']:.3f} ms"
    )
    out.print(
        f"[bold]derived[/bold]    {x['derive']}: {x['repaired_decisions']} decision(s) changed from the argmax "
        f"arch ({x['argmax_ms']:.3f} ms, {x['argmax_gap_pct']:+.1f} %)"
    )
    if meas:
        out.print(
            f"[bold]measured[/bold]   {meas['median_ms']:.3f} ms median "
            f"(IQR {meas['iqr_ms']:.3f}, p90 {meas['p90_ms']:.3f}) on {x['measured_device']}"
        )
    else:
        out.print(f"[bold]measured[/bold]   not measured: {d.get('measured_note')}")
    verdict = "within" if d["within_budget"] else f"OVER by {d['over_budget_pct']:.1f}%"
    out.print(
        f"[bold]budget[/bold]     {verdict}"
        + ("  (stepped from the derived arch, which measured over)" if d.get("found") else "")
    )
    out.print(f"[bold]accuracy[/bold]   {d['accuracy']:.3f}: {x['accuracy_of']}")
    if x.get("baseline"):
        out.print(
            f"[bold]baseline[/bold]   median of {x['baseline']['n']} random archs within budget: "
            f"{x['baseline']['median_test_acc']:.4f}"
        )
