"""The Python API of the MnasNet engine: :func:`search` (in memory) and :func:`run` (a run folder).

``run(...)`` mirrors ``latbench search mnas``: it checks every setting, resolves
the latency source, searches, measures the final top-k for real when the
source's device runs here, and writes a run folder of the shared run store
(:mod:`latbench.search.runstore`): ``config.json``, ``state/`` (the checkpoint a
resumed run starts from), ``history.csv`` (every trial), ``result.json``,
``deployed.onnx`` / ``deployed.json``, ``pareto.png`` and ``report.md``.
``run(resume=RUN_ID)`` goes on from the last checkpoint of an interrupted (or
finished, with more ``trials``) run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from latbench.errors import LatbenchError
from latbench.predict.base import SpaceLatency
from latbench.search.mnas.engine import SearchEngine
from latbench.search.mnas.evaluators import ArchBatch, Evaluator, make_evaluator
from latbench.search.mnas.history import History
from latbench.search.mnas.problem import SearchProblem
from latbench.search.mnas.reward import Constraints, Reward, ScoreScale, parse_target
from latbench.search.mnas.rundir import RunResult, RunWriter, finish_run, restore_state
from latbench.search.mnas.strategies import Strategy, make_strategy
from latbench.search.runstore import RunFolder, base_config, new_run_id, runs_root
from latbench.search.target import TargetSpec, parse_target_spec
from latbench.spaces import SearchSpace, get_space

#: reference archs scored at the start of a proxy-score search (their median and spread scale the scores)
SCORE_REFERENCE_ARCHS = 16


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run`: the trials told so far are saved in ``run_dir``; ``--resume run_id`` goes on."""

    def __init__(self, run_dir: Path, trials: int) -> None:
        super().__init__(f"interrupted after {trials} trials; resume with --resume {run_dir.name}")
        self.run_dir = run_dir
        self.run_id = run_dir.name
        self.trials = trials


def make_problem(
    space: SearchSpace,
    latency: SpaceLatency,
    target_ms: float | str,
    *,
    reward: str | None = "soft",
    alpha: float | None = None,
    beta: float | None = None,
    hard_latency: bool | None = None,
    max_params: int | None = None,
    max_memory_mb: float | None = None,
    score_scale: ScoreScale | None = None,
) -> SearchProblem:
    """The reward and limits of a search; ``hard_latency`` defaults to on for the ``hard`` reward.

    ``target_ms`` may be any target of the shared grammar (``"50%"`` is half-way
    across the space's latency range under ``latency``).
    """
    spec = parse_target_spec(target_ms)
    rw = Reward.from_preset(reward, spec.value if not spec.is_share else 1.0, alpha, beta)
    hard = (reward == "hard") if hard_latency is None else bool(hard_latency)
    problem = SearchProblem(space, latency, rw, Constraints(max_params, max_memory_mb, hard))
    if spec.is_share:
        lo, hi, _ = problem.latency_range
        problem.reward = replace(rw, target_ms=parse_target(spec, (lo, hi)))
    if score_scale is not None:
        problem.reward = replace(problem.reward, score_scale=score_scale)
    return problem


def search(
    problem: SearchProblem,
    *,
    strategy: str | Strategy = "evolution",
    evaluator: str | Evaluator = "zero-cost",
    trials: int = 100,
    seed: int = 0,
    batch: int | None = None,
    strategy_options: dict[str, Any] | None = None,
    evaluator_options: dict[str, Any] | None = None,
    acc_predictor: bool | dict[str, Any] = False,
    on_progress: Any = None,
) -> SearchEngine:
    """Run a search in memory (no files) and return the finished engine (``.best``, ``.history``, ``.summary()``).

    A proxy-score evaluator gets its :class:`ScoreScale` from a reference sample first (see :func:`score_scale`).
    """
    ev = make_evaluator(evaluator, evaluator_options, acc_predictor=acc_predictor)
    if ev.kind != "accuracy" and problem.reward.score_scale is None:
        ev.setup(problem, seed)
        problem.reward = replace(problem.reward, score_scale=score_scale(problem, ev, seed))
    st = make_strategy(strategy, problem, seed=seed, trials=trials, dedupe=ev.cache, options=strategy_options)
    history = History(problem.space, value_name(ev))
    engine = SearchEngine(
        problem, st, ev, trials=trials, batch_size=batch, seed=seed, on_progress=on_progress, history=history
    )
    return engine.run()


def value_name(evaluator: Evaluator) -> str:
    """``accuracy`` for an accuracy, ``score`` for a proxy score (the name in history, results and reports)."""
    return "accuracy" if evaluator.kind == "accuracy" else "score"


def score_scale(problem: SearchProblem, evaluator: Evaluator, seed: int, n: int = SCORE_REFERENCE_ARCHS) -> ScoreScale:
    """Score ``n`` archs drawn from the seed (trial ids past any search's) and scale scores by them.

    The evaluator must be set up. Deterministic given the seed; a run keeps the
    result in its ``config.json`` so a resumed run uses the same scale.
    """
    space = problem.space
    idx = space.sample_indices(np.random.default_rng([int(seed), 7919]), n)
    base = getattr(evaluator, "base", evaluator)  # the real evaluator under an accuracy predictor
    batch = ArchBatch(space, idx, np.arange(n, dtype=np.int64) + 1_000_000_000, problem.latency_ms(idx))
    return ScoreScale.from_scores(base.evaluate(batch).accuracy)


# ----------------------------------------------------------------------------- run folders
@dataclass
class _Setup:
    """Everything a run needs before its first trial, built from its settings."""

    space: SearchSpace
    source: Any
    problem: SearchProblem
    evaluator: Evaluator
    strategy: Strategy


def _new_settings(**kw: Any) -> dict[str, Any]:
    """The settings of a new run, checked (one-line errors) before anything is loaded or written."""
    spec = _check_target(kw["target"])
    trials = kw["trials"]
    strategy_options = dict(kw["strategy_options"] or {})
    if kw["generations"] is not None:
        if kw["strategy"] != "evolution":
            raise LatbenchError("--generations is an evolution option; use --trials with other strategies")
        if int(kw["generations"]) < 0:
            raise LatbenchError(f"--generations must be >= 0, got {kw['generations']}")
        pop = int(strategy_options.setdefault("population", 100))
        trials = pop * (int(kw["generations"]) + 1)
    trials = int(trials if trials is not None else 100)
    _check_counts(trials=trials, batch=kw["batch"], top_k=kw["top_k"])
    table = kw["table"]
    return {
        "space": kw["space"],
        "resolution": kw["resolution"],
        "width": kw["width"],
        "seq": kw["seq"],
        "target": spec.text,
        "device": kw["device"],
        "table": str(Path(table).resolve()) if table and Path(table).exists() else table,
        "predictor": kw["predictor"],
        "strategy": kw["strategy"],
        "evaluator": kw["evaluator"] or "zero-cost",
        "trials": trials,
        "reward": kw["reward"],
        "alpha": kw["alpha"],
        "beta": kw["beta"],
        "hard_latency": kw["hard_latency"],
        "max_params": kw["max_params"],
        "max_memory_mb": kw["max_memory_mb"],
        "seed": int(kw["seed"]),
        "batch": kw["batch"],
        "strategy_options": strategy_options,
        "evaluator_options": dict(kw["evaluator_options"] or {}),
        "acc_predictor": kw["acc_predictor"],
        "top_k": int(kw["top_k"]),
        "measure": bool(kw["measure"]),
        "export_onnx": bool(kw["export_onnx"]),
        "step_to_budget": bool(kw["step_to_budget"]),
    }


def _check_target(target: Any) -> TargetSpec:
    if target is None:
        raise LatbenchError("give a latency target, e.g. --target 20ms or --target 50%")
    return parse_target_spec(target)


def _check_counts(*, trials: int | None, batch: int | None, top_k: int | None) -> None:
    if trials is not None and int(trials) < 1:
        raise LatbenchError(f"--trials must be >= 1, got {trials}")
    if batch is not None and int(batch) < 1:
        raise LatbenchError(f"--batch must be >= 1, got {batch}")
    if top_k is not None and int(top_k) < 1:
        raise LatbenchError(f"--top-k must be >= 1, got {top_k}")


def _resume_settings(
    folder: RunFolder, config: dict[str, Any], evaluator: str | None, trust_run: bool, overrides: dict[str, Any]
) -> dict[str, Any]:
    """The stored settings of a run, with the few a resumed run may change; refuses to run stored code unasked."""
    args = dict(config["settings"])
    stored = str(args.get("evaluator") or "")
    if stored.startswith("python:") and not trust_run and evaluator != stored:
        raise LatbenchError(
            f"run {folder.run_id} evaluates with {stored}, which runs code named in {folder.config_path}; "
            f"pass --evaluator {stored} again (or --trust-run) to run it"
        )
    if evaluator is not None and evaluator != stored:
        raise LatbenchError(f"run {folder.run_id} was made with --evaluator {stored}, not {evaluator}")
    _check_counts(trials=overrides.get("trials"), batch=None, top_k=overrides.get("top_k"))
    args.update({k: v for k, v in overrides.items() if v is not None})
    return args


def _setup(args: dict[str, Any], stored_scale: dict[str, Any] | None) -> _Setup:
    """Space, latency source, problem (target and reachability checked), evaluator and strategy of a run."""
    from latbench.service import resolve_latency_source

    sp = get_space(args["space"], resolution=args["resolution"], width=args["width"], seq=args.get("seq"))
    source = resolve_latency_source(sp, device=args["device"], table=args["table"], predictor=args["predictor"])
    problem = make_problem(
        sp,
        source.compiled,
        args["target"],
        reward=args["reward"],
        alpha=args["alpha"],
        beta=args["beta"],
        hard_latency=args["hard_latency"],
        max_params=args["max_params"],
        max_memory_mb=args["max_memory_mb"],
        score_scale=ScoreScale(**stored_scale) if stored_scale else None,
    )
    lo, hi, _ = problem.latency_range
    parse_target(problem.target_ms, (lo, hi))
    problem.check_reachable(source.description)
    ev = make_evaluator(args["evaluator"], args["evaluator_options"], acc_predictor=args["acc_predictor"])
    st = make_strategy(
        args["strategy"],
        problem,
        seed=args["seed"],
        trials=args["trials"],
        dedupe=ev.cache,
        options=args["strategy_options"],
    )
    if hasattr(st, "population") and "population" not in args["strategy_options"]:
        args["strategy_options"]["population"] = int(st.population)  # keep the effective value for resume
    return _Setup(sp, source, problem, ev, st)


def _new_config(folder: RunFolder, args: dict[str, Any], s: _Setup) -> dict[str, Any]:
    lo, hi, _ = s.problem.latency_range
    config = base_config(
        "mnas",
        folder.run_id,
        args,
        s.source,
        s.space,
        {"text": args["target"], "ms": s.problem.target_ms, "range_ms": [lo, hi]},
    )
    config.update(
        reward=s.problem.reward.to_dict(),
        constraints=s.problem.constraints.to_dict(),
        strategy=s.strategy.describe(),
        evaluator=s.evaluator.describe(),
        value_name=value_name(s.evaluator),
    )
    return config


def run(
    *,
    space: str = "proxyless-mobile",
    target: str | float | None = None,
    device: str | None = None,
    table: str | None = None,
    predictor: str | None = None,
    resolution: int | None = None,
    width: float | None = None,
    seq: int | None = None,
    strategy: str = "evolution",
    evaluator: str | None = None,
    trials: int | None = None,
    generations: int | None = None,
    reward: str = "soft",
    alpha: float | None = None,
    beta: float | None = None,
    hard_latency: bool | None = None,
    max_params: int | None = None,
    max_memory_mb: float | None = None,
    seed: int = 0,
    batch: int | None = None,
    strategy_options: dict[str, Any] | None = None,
    evaluator_options: dict[str, Any] | None = None,
    acc_predictor: bool | dict[str, Any] = False,
    top_k: int = 3,
    measure: bool = True,
    export_onnx: bool = True,
    step_to_budget: bool = True,
    runs_dir: str | os.PathLike[str] | None = None,
    run_id: str | None = None,
    resume: str | None = None,
    trust_run: bool = False,
    progress: bool = True,
    checkpoint_every_s: float = 10.0,
    executor_factory: Any = None,
) -> RunResult:
    """Search and write a run folder; see the module docstring. Latency in ms, ``max_memory_mb`` in MB.

    ``seq``: the sequence length of a space that has one (``bert``; its default when ``None``).
    ``target``: ``12``, ``"12ms"``, ``"0.012s"``, ``"12000us"`` or ``"50%"`` of the space's latency range.
    ``generations`` (evolution): ``trials = population * (generations + 1)``,
    Once-for-All's budget (100 * 501 with the defaults). ``evaluator``:
    ``zero-cost[:proxy]`` (default), ``train`` or ``python:module_or_file:function``.
    ``resume``: a run id under ``runs_dir``; a run that evaluates with a
    ``python:`` callable is only resumed when ``evaluator`` names the same callable
    again or ``trust_run`` is set (code named in a file is not run unasked).
    ``step_to_budget``: when the found arch measures over the budget, deploy the
    best measured candidate whose median plus IQR is within it.
    ``executor_factory(evaluator, problem, seed) -> Executor`` runs the trials
    elsewhere (``latbench.farm.search.cluster_executor``: Ray tasks on a cluster).
    """
    if resume is not None:
        folder = RunFolder.open(resume, runs_dir, engine="mnas")
        config = folder.read_config()
        overrides = {"trials": trials, "top_k": top_k, "measure": measure, "export_onnx": export_onnx}
        overrides["step_to_budget"] = step_to_budget
        args = _resume_settings(folder, config, evaluator, trust_run, overrides)
        s = _setup(args, config["reward"].get("score_scale"))
        _check_same_source(folder, config, s.source)
    else:
        args = _new_settings(**{k: v for k, v in locals().items() if k not in ("resume", "trust_run")})
        folder = RunFolder.prepare(runs_dir, run_id or _default_id(runs_dir, args))
        s = _setup(args, None)
        if s.evaluator.kind != "accuracy":
            s.evaluator.setup(s.problem, args["seed"])
            s.problem.reward = replace(s.problem.reward, score_scale=score_scale(s.problem, s.evaluator, args["seed"]))
        config = _new_config(folder, args, s)
        folder.create(config)
    with folder.running():
        engine, writer = _engine(folder, s, args, config, checkpoint_every_s, executor_factory)
        _search(folder, engine, writer, args, progress)
        return finish_run(folder, config, engine, s.problem, s.source, args, progress)


def _default_id(runs_dir: str | os.PathLike[str] | None, args: dict[str, Any]) -> str:
    return new_run_id(runs_root(runs_dir), "mnas", args["space"], args["strategy"], f"s{args['seed']}")


def _check_same_source(folder: RunFolder, config: dict[str, Any], source: Any) -> None:
    from latbench.search.runstore import source_record

    before = config.get("latency_source", {}).get("vector_hash")
    if before != source_record(source).get("vector_hash"):
        raise LatbenchError(
            f"the latency source of run {folder.run_id} changed since it started ({source.description}); "
            "resume needs the same table / predictor"
        )


def _engine(
    folder: RunFolder,
    s: _Setup,
    args: dict[str, Any],
    config: dict[str, Any],
    checkpoint_every_s: float,
    executor_factory: Any,
) -> tuple[SearchEngine, RunWriter]:
    """The engine of a run, with its history and strategy state restored from the checkpoint when there is one."""
    vname = config.get("value_name", "accuracy")
    writer, state = RunWriter.open(folder, s.space, vname)
    engine = SearchEngine(
        s.problem,
        s.strategy,
        s.evaluator,
        trials=args["trials"],
        batch_size=args["batch"],
        seed=args["seed"],
        history=writer.history,
        on_checkpoint=writer.checkpoint,
        checkpoint_every_s=checkpoint_every_s,
        executor=executor_factory(s.evaluator, s.problem, args["seed"]) if executor_factory is not None else None,
    )
    writer.history = engine.history
    engine.setup()
    if state is not None:
        restore_state(folder, engine, state)
    return engine, writer


def _search(folder: RunFolder, engine: SearchEngine, writer: RunWriter, args: dict[str, Any], progress: bool) -> None:
    """Run the engine with a progress line; Ctrl-C keeps the checkpoint and raises :class:`RunInterrupted`."""
    from latbench.service import track

    target_ms = engine.problem.target_ms
    vname = writer.history.value_name

    def status(e: SearchEngine) -> str:
        b = e.best
        if b.trial < 0:
            return "no result yet"
        rel = "<=" if b.latency_ms <= target_ms else ">"
        return f"best reward {b.reward:.4g}  {vname} {b.accuracy:.4g}  {b.latency_ms:.2f} ms {rel} {target_ms:g} ms"

    try:
        with track(f"mnas {args['strategy']}", total=args["trials"], enabled=progress) as update:
            engine.on_progress = lambda e: update(e.done, status=status(e))
            engine.run()
    except KeyboardInterrupt:
        raise RunInterrupted(folder.dir, engine.done) from None
