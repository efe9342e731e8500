"""``latbench search mnas``: sample-based search maximising the MnasNet reward under a latency target."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from latbench.cli.common import SeqOpt, emit, out, parse_settings, space_params
from latbench.errors import LatbenchError


def register(app: typer.Typer) -> None:
    from latbench.cli import search_app

    search_app.command("mnas")(mnas)


def mnas(
    target: Annotated[
        str | None, typer.Option(help="Latency target T: 20, 20ms, 0.02s, 20000us, or 50% of the space's range.")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="Device: its table is the latency source; top-k archs are measured on it.")
    ] = None,
    table: Annotated[str | None, typer.Option(help="Latency table (LUT sum), path or <device>/<space> name.")] = None,
    predictor: Annotated[str | None, typer.Option(help="Trained latency predictor file.")] = None,
    space: Annotated[str, typer.Option(help="Search space.")] = "proxyless-mobile",
    resolution: Annotated[int | None, typer.Option(help="Input resolution of the space.")] = None,
    width: Annotated[float | None, typer.Option(help="Width multiplier of the space.")] = None,
    seq: SeqOpt = None,
    strategy: Annotated[str, typer.Option(help="random, evolution, rl or scaling.")] = "evolution",
    evaluator: Annotated[
        str | None,
        typer.Option(
            help="Accuracy source: zero-cost[:naswot|synflow|grad-norm] (a proxy score), train, supernet "
            "(autoformer, bert: weight-sharing), python:module_or_file.py:function. [default: zero-cost]"
        ),
    ] = None,
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
        int | None, typer.Option(min=1, help="Evolution population (default 100 for long searches).")
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
    top_k: Annotated[int, typer.Option(min=1, help="Best archs to report (and measure for real).")] = 3,
    measure: Annotated[bool, typer.Option(help="Measure the top-k archs on the device when it runs here.")] = True,
    onnx: Annotated[bool, typer.Option(help="Write deployed.onnx.")] = True,
    step_to_budget: Annotated[
        bool,
        typer.Option(
            help="When the found arch measures over the budget, deploy the best measured candidate within it "
            "(median + IQR <= target)."
        ),
    ] = True,
    runs_dir: Annotated[
        Path | None,
        typer.Option("--runs-dir", help="Folder of run folders. [default: runs/ under LATBENCH_HOME or the checkout]"),
    ] = None,
    run_id: Annotated[str | None, typer.Option(help="Name of the run folder.")] = None,
    resume: Annotated[
        str | None, typer.Option(help="Id of the run to go on with (settings are taken from it).")
    ] = None,
    trust_run: Annotated[
        bool, typer.Option(help="On --resume, run the python: evaluator the run's config.json names.")
    ] = False,
    cluster: Annotated[
        str | None, typer.Option(help="Ray cluster address (or 'auto'): trials run as Ray tasks on its workers.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Search archs maximising ACC * (LAT/T)^w; writes <runs-dir>/<run-id>/ (resumable with --resume RUN_ID)."""
    from latbench.search.mnas.api import RunInterrupted, run

    if resume is not None and target is not None:
        raise LatbenchError("--resume takes the target from the run; drop --target")
    if resume is not None and seq is not None:
        raise LatbenchError("--resume takes the space from the run; drop --seq")
    if resume is None:
        space_params(space, resolution=resolution, width=width, seq=seq)
    s_opts, e_opts = _options(
        strategy_opt, evaluator_opt, population, rl_algo, base, data=data, epochs=epochs, max_seconds=trial_seconds
    )
    farm = contextlib.ExitStack()  # --cluster: connected to Ray for the whole run
    try:
        executor_factory = _cluster(farm, cluster, acc_predictor, as_json)
        res = run(
            space=space,
            target=target,
            device=device,
            table=table,
            predictor=predictor,
            resolution=resolution,
            width=width,
            seq=seq,
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
            step_to_budget=step_to_budget,
            runs_dir=runs_dir,
            run_id=run_id,
            resume=resume,
            trust_run=trust_run,
            progress=not as_json,
            executor_factory=executor_factory,
        )
    except RunInterrupted as exc:
        print(
            f"latbench: interrupted after {exc.trials} trials; resume with: latbench search mnas --resume {exc.run_id}"
            + (f" --runs-dir {runs_dir}" if runs_dir is not None else ""),
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    finally:
        farm.close()
    emit(as_json, {"run_dir": str(res.run_dir), **res.result}, lambda: _print_result(res))


def _options(
    strategy_opt: list[str] | None,
    evaluator_opt: list[str] | None,
    population: int | None,
    rl_algo: str | None,
    base: Path | None,
    **evaluator_values: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Strategy and evaluator options from their key=value lists and the named options."""
    s_opts: dict[str, Any] = parse_settings(strategy_opt)
    e_opts: dict[str, Any] = parse_settings(evaluator_opt)
    if population is not None:
        if population < 2:
            raise LatbenchError(f"--population must be >= 2, got {population}")
        s_opts["population"] = population
    if rl_algo is not None:
        s_opts["algo"] = rl_algo
    if base is not None:
        try:
            s_opts["base"] = json.loads(base.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise LatbenchError(f"cannot read base arch {base}: {exc}") from None
    for key, value in evaluator_values.items():
        if value is not None:
            e_opts[key] = value
    return s_opts, e_opts


def _cluster(farm: contextlib.ExitStack, cluster: str | None, acc_predictor: bool, as_json: bool) -> Any:
    """The executor factory of ``--cluster`` (connected for the whole run), or None."""
    if cluster is None:
        return None
    from latbench.cli.common import console
    from latbench.farm.search import cluster_executor

    log = None if as_json else lambda m: console.print(f"farm: {m}", markup=False, soft_wrap=True)
    return farm.enter_context(cluster_executor(cluster, log=log, acc_predictor=acc_predictor))


def _print_result(res: Any) -> None:
    """The result for people: arch, accuracy or score, latency against the budget, where the files are."""
    r = res.result
    out.print(f"run      {res.run_dir}")
    if not r.get("arch"):
        out.print("no trial succeeded; see history.csv")
        return
    choices = " ".join(f"{k}={v}" for k, v in r["arch"]["choices"].items())
    d = r["details"]
    out.print(f"deployed trial {d['trial']}: {choices}")
    if r.get("score") is not None:
        out.print(
            f"score    {r['score']:.4g} ({r['score_name']}, a proxy score, not an accuracy)  reward {d['reward']:.4g}"
        )
    else:
        out.print(f"accuracy {r['accuracy']:.4g}  reward {d['reward']:.4g}")
    m = r.get("measured")
    line = f"latency  {r['predicted_kind']} {r['predicted_ms']:.3f} ms"
    if m:
        line += f", measured {m['median_ms']:.3f} ms (IQR {m['iqr_ms']:.3f}, p90 {m['p90_ms']:.3f})"
    verdict = "within" if r["within_budget"] else f"OVER by {r['over_budget_pct']:.1f}%"
    out.print(line + f"; budget {r['target_ms']:g} ms: {verdict}")
    if r.get("found"):
        f = r["found"]
        out.print(f"found    trial {f['trial']} measured {f['measured']['median_ms']:.3f} ms, over the budget: stepped")
    s = d["summary"]
    out.print(
        f"trials   {s['trials']} ({s['failed']} failed) in {s['seconds']:.1f} s; report {res.run_dir / 'report.md'}"
    )
