"""``latbench search mnas``: sample-based search maximising the MnasNet reward under a latency target."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from latbench.cli.common import emit, out, parse_settings
from latbench.errors import LatbenchError


def register(app: typer.Typer) -> None:
    from latbench.cli import search_app

    search_app.command("mnas")(mnas)


def mnas(
    target: Annotated[str | None, typer.Option(help="Latency target T, e.g. 20ms (milliseconds by default).")] = None,
    device: Annotated[
        str | None, typer.Option(help="Device: its table is the latency source; top-k archs are measured on it.")
    ] = None,
    table: Annotated[str | None, typer.Option(help="Latency table (LUT sum), path or <device>/<space> name.")] = None,
    predictor: Annotated[str | None, typer.Option(help="Trained latency predictor file.")] = None,
    space: Annotated[str, typer.Option(help="Search space.")] = "proxyless-mobile",
    resolution: Annotated[int | None, typer.Option(help="Input resolution of the space.")] = None,
    width: Annotated[float | None, typer.Option(help="Width multiplier of the space.")] = None,
    strategy: Annotated[str, typer.Option(help="random, evolution, rl or scaling.")] = "evolution",
    evaluator: Annotated[
        str, typer.Option(help="Accuracy source: zero-cost[:naswot|synflow|grad-norm], train, python:module:function.")
    ] = "zero-cost",
    trials: Annotated[int | None, typer.Option(help="Candidates to evaluate (default 100).")] = None,
    generations: Annotated[
        int | None, typer.Option(help="Evolution only: trials = population x (generations + 1).")
    ] = None,
    reward: Annotated[
        str, typer.Option(help="soft (alpha=beta=-0.07) or hard (alpha=0, beta=-1, budget enforced).")
    ] = "soft",
    alpha: Annotated[float | None, typer.Option(help="Reward exponent within the budget (<= 0).")] = None,
    beta: Annotated[float | None, typer.Option(help="Reward exponent over the budget (<= 0).")] = None,
    hard_latency: Annotated[
        bool | None,
        typer.Option(
            "--hard-latency/--soft-latency", help="Never propose archs over T (default: on for --reward hard)."
        ),
    ] = None,
    max_params: Annotated[int | None, typer.Option(help="Hard limit on parameters.")] = None,
    max_memory: Annotated[
        float | None, typer.Option(help="Hard limit on peak memory, MB (activations + weights).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed (the search is reproducible from it).")] = 0,
    batch: Annotated[int | None, typer.Option(help="Candidates asked and evaluated at once.")] = None,
    population: Annotated[
        int | None, typer.Option(help="Evolution population (default 100 for long searches).")
    ] = None,
    rl_algo: Annotated[str | None, typer.Option(help="RL update: reinforce or ppo.")] = None,
    base: Annotated[Path | None, typer.Option(help="Scaling: base arch JSON (default: the fastest arch).")] = None,
    strategy_opt: Annotated[list[str] | None, typer.Option(help="Strategy option key=value (repeatable).")] = None,
    evaluator_opt: Annotated[list[str] | None, typer.Option(help="Evaluator option key=value (repeatable).")] = None,
    data: Annotated[str | None, typer.Option(help="train / zero-cost data: digits or an .npz with x and y.")] = None,
    epochs: Annotated[float | None, typer.Option(help="train: epochs per trial.")] = None,
    trial_seconds: Annotated[float | None, typer.Option(help="train: time budget per trial, seconds.")] = None,
    acc_predictor: Annotated[
        bool, typer.Option(help="Screen candidates with an MLP fitted on the archs evaluated so far.")
    ] = False,
    top_k: Annotated[int, typer.Option(help="Best archs to report (and measure for real).")] = 3,
    measure: Annotated[bool, typer.Option(help="Measure the top-k archs on the device when it runs here.")] = True,
    onnx: Annotated[bool, typer.Option(help="Write best.onnx.")] = True,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder of run folders (default ./runs).")] = None,
    run_id: Annotated[str | None, typer.Option(help="Name of the run folder.")] = None,
    resume: Annotated[str | None, typer.Option(help="Run folder (or id under --out) to go on with.")] = None,
    cluster: Annotated[
        str | None, typer.Option(help="Ray cluster address (or 'auto'): trials run as Ray tasks on its workers.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Search archs maximising ACC * (LAT/T)^w on a device; writes runs/<run-id>/ (resumable)."""
    from latbench.search.mnas.api import RunInterrupted, run

    s_opts: dict[str, Any] = parse_settings(strategy_opt)
    e_opts: dict[str, Any] = parse_settings(evaluator_opt)
    if population is not None:
        s_opts["population"] = population
    if rl_algo is not None:
        s_opts["algo"] = rl_algo
    if base is not None:
        try:
            s_opts["base"] = json.loads(base.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise LatbenchError(f"cannot read base arch {base}: {exc}") from None
    for key, value in (("data", data), ("epochs", epochs), ("max_seconds", trial_seconds)):
        if value is not None:
            e_opts[key] = value
    farm = contextlib.ExitStack()  # --cluster: connected to Ray for the whole run
    executor_factory = None
    if cluster is not None:
        from latbench.cli.common import console
        from latbench.farm.search import cluster_executor

        log = None if as_json else lambda m: console.print(f"farm: {m}", markup=False, soft_wrap=True)
        executor_factory = farm.enter_context(cluster_executor(cluster, log=log, acc_predictor=acc_predictor))
    try:
        res = run(
            space=space,
            target=target,
            device=device,
            table=table,
            predictor=predictor,
            resolution=resolution,
            width=width,
            strategy=strategy,
            evaluator=evaluator,
            trials=trials,
            generations=generations,
            reward=reward,
            alpha=alpha,
            beta=beta,
            hard_latency=hard_latency,
            max_params=max_params,
            max_memory_mb=max_memory,
            seed=seed,
            batch=batch,
            strategy_options=s_opts,
            evaluator_options=e_opts,
            acc_predictor=acc_predictor,
            top_k=top_k,
            measure=measure,
            export_onnx=onnx,
            out=out_dir,
            run_id=run_id,
            resume=resume,
            progress=not as_json,
            executor_factory=executor_factory,
        )
    except RunInterrupted as exc:
        print(
            f"latbench: interrupted after {exc.trials} trials; "
            f"resume with: latbench search mnas --resume {exc.run_dir}",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    finally:
        farm.close()

    target_ms = res.config["args"]["target_ms"]
    data_out = {
        "run_dir": str(res.run_dir),
        "target_ms": target_ms,
        "best": res.best or None,
        "top_k": res.top,
        "summary": res.summary,
    }

    def human() -> None:
        out.print(f"run      {res.run_dir}")
        b = res.best
        if not b:
            out.print("no trial succeeded; see history.csv")
            return
        choices = " ".join(f"{k}={v}" for k, v in b["arch"]["choices"].items())
        out.print(f"best     trial {b['trial']}: {choices}")
        out.print(f"accuracy {b['accuracy']:.4g} ({b['accuracy_source']})  reward {b['reward']:.4g}")
        m = b.get("measured")
        line = f"latency  predicted {b['predicted_ms']:.3f} ms"
        if m:
            line += f", measured {m['median_ms']:.3f} ms (IQR {m['iqr_ms']:.3f}, p90 {m['p90_ms']:.3f})"
        lat = m["median_ms"] if m else b["predicted_ms"]
        line += f"; budget {target_ms:g} ms: {'within' if lat <= target_ms else 'OVER'}"
        out.print(line)
        s = res.summary
        out.print(
            f"trials   {s['trials']} ({s['failed']} failed) in {s['seconds']:.1f} s; report {res.run_dir / 'report.md'}"
        )

    emit(as_json, data_out, human)
