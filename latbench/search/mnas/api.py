"""The Python API of the MnasNet engine: :func:`search` (in memory) and :func:`run` (a run directory).

``run(...)`` mirrors ``latbench search mnas``: it resolves the latency source,
searches, measures the final top-k for real when the source's device can run
here, and writes ``runs/<run-id>/``: ``config.json``, ``history.csv`` (every
trial), ``best.json``, ``best.onnx``, ``pareto.png`` and ``report.md``, plus
``state.json`` / ``state-N.safetensors`` (the checkpoint a resumed run starts
from). ``run(resume=RUN)`` goes on from the last checkpoint of an interrupted
(or finished, with more ``trials``) run.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latbench import paths
from latbench.device import host_info, library_versions, now_iso
from latbench.errors import LatbenchError
from latbench.predict.base import SpaceLatency
from latbench.search.mnas.engine import SearchEngine
from latbench.search.mnas.evaluators import Evaluator, make_evaluator
from latbench.search.mnas.history import History
from latbench.search.mnas.problem import SearchProblem
from latbench.search.mnas.reward import Constraints, Reward, parse_target
from latbench.search.mnas.strategies import Strategy, make_strategy
from latbench.spaces import SearchSpace, get_space

SCHEMA = "latbench.mnas-run/1"


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run`: the trials told so far are saved in ``run_dir``, which resumes."""

    def __init__(self, run_dir: Path, trials: int) -> None:
        super().__init__(f"interrupted after {trials} trials; resume with --resume {run_dir}")
        self.run_dir = run_dir
        self.trials = trials


def make_problem(
    space: SearchSpace,
    latency: SpaceLatency,
    target_ms: float,
    *,
    reward: str | None = "soft",
    alpha: float | None = None,
    beta: float | None = None,
    hard_latency: bool | None = None,
    max_params: int | None = None,
    max_memory_mb: float | None = None,
) -> SearchProblem:
    """The reward and limits of a search; ``hard_latency`` defaults to on for the ``hard`` reward."""
    rw = Reward.from_preset(reward, parse_target(target_ms), alpha, beta)
    hard = (reward == "hard") if hard_latency is None else bool(hard_latency)
    return SearchProblem(space, latency, rw, Constraints(max_params, max_memory_mb, hard))


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
    """Run a search in memory (no files) and return the finished engine (``.best``, ``.history``, ``.summary()``)."""
    ev = make_evaluator(evaluator, evaluator_options, acc_predictor=acc_predictor)
    st = make_strategy(strategy, problem, seed=seed, trials=trials, dedupe=ev.cache, options=strategy_options)
    engine = SearchEngine(problem, st, ev, trials=trials, batch_size=batch, seed=seed, on_progress=on_progress)
    return engine.run()


# ----------------------------------------------------------------------------- run directories
@dataclass
class RunResult:
    """What :func:`run` returns: the run folder, the best arch and its numbers, the engine summary."""

    run_dir: Path
    best: dict[str, Any]
    top: list[dict[str, Any]]
    summary: dict[str, Any]
    config: dict[str, Any]
    engine: SearchEngine | None = field(default=None, repr=False)


def _run_id(space: str, strategy: str, seed: int, root: Path) -> str:
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{space}-{re.sub(r'[^A-Za-z0-9_.-]', '_', strategy)}-s{seed}"
    rid, i = base, 1
    while (root / rid).exists():
        i += 1
        rid = f"{base}-{i}"
    return rid


def _resolve_run_dir(resume: str | os.PathLike[str], out: str | os.PathLike[str] | None) -> Path:
    p = Path(resume)
    for cand in (p, Path(out or "runs") / p):
        if (cand / "config.json").exists():
            return cand
    raise LatbenchError(
        f"no run to resume at {resume} (looked for {p}/config.json and {Path(out or 'runs') / p}/config.json)"
    )


def _source_identity(source: Any) -> dict[str, Any]:
    model = source.model
    ident: dict[str, Any] = {
        "description": source.description,
        "device": source.device,
        "fingerprint": dict(getattr(model, "fingerprint", {}) or {}).get("id"),
        "measured_here": source.backend is not None,
    }
    table = getattr(model, "table", None)
    if table is not None:
        ident["table"] = str(Path(table.path).resolve()) if table.path else None
        ident["table_hash"] = table.content_hash()
    ident["vector_hash"] = _vector_hash(source.compiled)
    return ident


def _vector_hash(compiled: SpaceLatency) -> str:
    import hashlib

    h = hashlib.sha256(np.round(compiled.vector, 9).tobytes())
    h.update(json.dumps(compiled.calibration.to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:16]


class RunWriter:
    """Appends history rows and writes the resumable checkpoint of a run folder, atomically."""

    def __init__(
        self, run_dir: Path, history: History, rows: int = 0, nbytes: int | None = None, ckpt: int = 0
    ) -> None:
        self.dir = run_dir
        self.history = history
        self.rows = rows
        self.ckpt = ckpt
        self.csv = run_dir / "history.csv"
        if nbytes is None:
            paths.atomic_write_text(self.csv, ",".join(history.header()) + "\n")
            nbytes = self.csv.stat().st_size
        self.nbytes = nbytes

    def checkpoint(self, engine: SearchEngine) -> None:
        from safetensors.numpy import save_file

        if self.ckpt and len(engine.history) == self.rows:
            # nothing told since the last checkpoint: keep it (the strategy may have asked since, and an
            # interrupted batch must not advance the state a resumed run starts from)
            return
        text = engine.history.csv_rows(self.rows)
        if text:
            with open(self.csv, "a", encoding="utf-8", newline="") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            self.nbytes = self.csv.stat().st_size
            self.rows = len(engine.history)
        st_state, arrays = engine.strategy.state_dict()
        self.ckpt += 1
        arrays_name = f"state-{self.ckpt}.safetensors"
        tmp = self.dir / f".{arrays_name}.tmp"
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
        os.replace(tmp, self.dir / arrays_name)
        state = {
            "schema": SCHEMA,
            "checkpoint": self.ckpt,
            "updated": now_iso(),
            "history_rows": self.rows,
            "history_bytes": self.nbytes,
            "arrays": arrays_name,
            "strategy": st_state,
            "evaluator": engine.evaluator.state_dict(),
            "engine": {
                "asked": engine.stats.asked,
                "rejected": engine.stats.rejected,
                "seconds": engine._elapsed_before + (time.perf_counter() - engine._t0),
                "stopped": engine.stats.stopped,
            },
            "best": engine.best.to_dict(),
        }
        paths.atomic_write_json(self.dir / "state.json", state)
        for old in self.dir.glob("state-*.safetensors"):
            if old.name != arrays_name:
                old.unlink(missing_ok=True)


def _measure_top(source: Any, archs: list[dict[str, Any]], progress: bool) -> list[dict[str, Any] | None]:
    from latbench.service import measure_archs, network_timing

    backend = source.backend
    ms, _ = measure_archs(backend, archs, network_timing(backend, None, None), source.sentinel_ms, progress=progress)
    out: list[dict[str, Any] | None] = []
    for m in ms:
        s = m.summary()
        out.append(
            {
                "median_ms": s["median_ms"],
                "iqr_ms": s["iqr_ms"],
                "p90_ms": s["p90_ms"],
                "n": s["n"],
                "samples_ms": [round(x, 5) for x in m.samples_ms],
            }
        )
    return out


def run(
    *,
    space: str = "proxyless-mobile",
    target: str | float | None = None,
    device: str | None = None,
    table: str | None = None,
    predictor: str | None = None,
    resolution: int | None = None,
    width: float | None = None,
    strategy: str = "evolution",
    evaluator: str = "zero-cost",
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
    out: str | os.PathLike[str] | None = None,
    run_id: str | None = None,
    resume: str | os.PathLike[str] | None = None,
    progress: bool = True,
    checkpoint_every_s: float = 10.0,
    executor_factory: Any = None,
) -> RunResult:
    """Search and write a run folder; see the module docstring. Latency in ms, ``max_memory_mb`` in MB.

    ``generations`` (evolution): ``trials = population * (generations + 1)``,
    Once-for-All's budget (100 * 501 with the defaults).
    ``executor_factory(evaluator, problem, seed) -> Executor`` runs the trials
    elsewhere (``latbench.farm.search.cluster_executor``: Ray tasks on a cluster).
    """
    from latbench.service import resolve_latency_source

    if resume is not None:
        run_dir = _resolve_run_dir(resume, out)
        config = json.loads((run_dir / "config.json").read_text())
        args = dict(config["args"])
        if trials is not None:
            args["trials"] = int(trials)
        args.update(top_k=top_k, measure=measure, export_onnx=export_onnx)
    else:
        if target is None:
            raise LatbenchError("give a latency target, e.g. --target 20ms")
        strategy_options = dict(strategy_options or {})
        if generations is not None:
            if strategy != "evolution":
                raise LatbenchError("--generations is an evolution option; use --trials with other strategies")
            pop = int(strategy_options.setdefault("population", 100))
            trials = pop * (int(generations) + 1)
        args = {
            "space": space,
            "resolution": resolution,
            "width": width,
            "target_ms": parse_target(target),
            "device": device,
            "table": str(Path(table).resolve()) if table and Path(table).exists() else table,
            "predictor": predictor,
            "strategy": strategy,
            "evaluator": evaluator,
            "trials": int(trials if trials is not None else 100),
            "reward": reward,
            "alpha": alpha,
            "beta": beta,
            "hard_latency": hard_latency,
            "max_params": max_params,
            "max_memory_mb": max_memory_mb,
            "seed": int(seed),
            "batch": batch,
            "strategy_options": strategy_options,
            "evaluator_options": dict(evaluator_options or {}),
            "acc_predictor": acc_predictor,
            "top_k": top_k,
            "measure": measure,
            "export_onnx": export_onnx,
        }
        run_dir = None

    sp = get_space(args["space"], resolution=args["resolution"], width=args["width"])
    source = resolve_latency_source(sp, device=args["device"], table=args["table"], predictor=args["predictor"])
    problem = make_problem(
        sp,
        source.compiled,
        args["target_ms"],
        reward=args["reward"],
        alpha=args["alpha"],
        beta=args["beta"],
        hard_latency=args["hard_latency"],
        max_params=args["max_params"],
        max_memory_mb=args["max_memory_mb"],
    )
    problem.check_reachable(source.description)
    identity = _source_identity(source)
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

    history: History | None = None
    state: dict[str, Any] | None = None
    if run_dir is not None:
        if config.get("latency_source", {}).get("vector_hash") != identity["vector_hash"]:
            raise LatbenchError(
                f"the latency source of run {run_dir.name} changed since it started ({identity['description']}); "
                "resume needs the same table / predictor"
            )
        state_path = run_dir / "state.json"
        state = json.loads(state_path.read_text()) if state_path.exists() else None
        csv_path = run_dir / "history.csv"
        if state is not None:
            with open(csv_path, "r+b") as fh:
                fh.truncate(int(state["history_bytes"]))
            history = History.from_csv(sp, csv_path.read_text())
            if len(history) != int(state["history_rows"]):
                raise LatbenchError(f"{csv_path}: {len(history)} rows but the checkpoint says {state['history_rows']}")
            writer = RunWriter(run_dir, history, len(history), int(state["history_bytes"]), int(state["checkpoint"]))
        else:
            history = History(sp)
            writer = RunWriter(run_dir, history)
    else:
        root = Path(out) if out is not None else Path("runs")
        run_dir = root / (run_id or _run_id(sp.name, args["strategy"], args["seed"], root))
        if (run_dir / "config.json").exists():
            raise LatbenchError(f"run folder {run_dir} exists; use --resume {run_dir} or another --run-id")
        run_dir.mkdir(parents=True, exist_ok=True)
        lo, hi, _ = problem.latency_range
        config = {
            "schema": SCHEMA,
            "run_id": run_dir.name,
            "created": now_iso(),
            "args": args,
            "space": {"name": sp.name, **sp.params, "decisions": len(sp.decisions)},
            "latency_source": identity,
            "latency_range_ms": [lo, hi],
            "reward": problem.reward.to_dict(),
            "constraints": problem.constraints.to_dict(),
            "strategy": st.describe(),
            "evaluator": ev.describe(),
            "host": host_info(),
            "versions": library_versions(),
        }
        paths.atomic_write_json(run_dir / "config.json", config)
        writer = RunWriter(run_dir, History(sp))
        history = writer.history

    from latbench.service import track

    engine = SearchEngine(
        problem,
        st,
        ev,
        trials=args["trials"],
        batch_size=args["batch"],
        seed=args["seed"],
        history=history,
        on_checkpoint=writer.checkpoint,
        checkpoint_every_s=checkpoint_every_s,
        executor=executor_factory(ev, problem, args["seed"]) if executor_factory is not None else None,
    )
    writer.history = engine.history
    engine.setup()
    if state is not None:
        from safetensors.numpy import load_file

        arrays = load_file(str(run_dir / state["arrays"]))
        st.load_state_dict(state["strategy"], arrays, engine.history.arrays()["indices"])
        ev.load_state_dict(state.get("evaluator", {}), engine.history.arrays())
        engine.stats.asked = int(state["engine"]["asked"])
        engine.stats.rejected = int(state["engine"]["rejected"])
        engine._elapsed_before = float(state["engine"]["seconds"])

    target_ms = problem.target_ms

    def status(e: SearchEngine) -> str:
        b = e.best
        if b.trial < 0:
            return "no result yet"
        rel = "<=" if b.latency_ms <= target_ms else ">"
        return f"best reward {b.reward:.4g}  acc {b.accuracy:.4g}  {b.latency_ms:.2f} ms {rel} {target_ms:g} ms"

    try:
        with track(f"mnas {args['strategy']}", total=args["trials"], enabled=progress) as update:
            engine.on_progress = lambda e: update(e.done, status=status(e))
            engine.run()
    except KeyboardInterrupt:
        _write_best(run_dir, engine, problem, source, [], partial=True)
        raise RunInterrupted(run_dir, engine.done) from None
    return finish_run(run_dir, config, engine, problem, source, args, progress)


def _arch_record(engine: SearchEngine, problem: SearchProblem, row: int) -> dict[str, Any]:
    a = engine.history.arrays()
    sp = problem.space
    arch = sp.from_indices(a["indices"][row])
    summary = sp.summary(arch)
    return {
        "trial": int(a["trial"][row]),
        "arch": arch,
        "accuracy": float(a["accuracy"][row]),
        "accuracy_source": str(a["source"][row]),
        "predicted_ms": float(a["latency_ms"][row]),
        "reward": float(a["reward"][row]),
        "within_budget_predicted": bool(a["latency_ms"][row] <= problem.target_ms),
        "macs": int(summary["macs"]),
        "params": int(summary["params"]),
        "peak_memory_mb": round(summary["peak_memory_bytes"] / 1e6, 3),
    }


def _write_best(
    run_dir: Path,
    engine: SearchEngine,
    problem: SearchProblem,
    source: Any,
    top: list[dict[str, Any]],
    partial: bool = False,
) -> dict[str, Any]:
    if not top and engine.best.row >= 0:
        top = [_arch_record(engine, problem, engine.best.row)]
    doc = {
        "schema": SCHEMA,
        "partial": partial,
        "target_ms": problem.target_ms,
        "latency_source": source.description,
        "device": source.device,
        "best": top[0] if top else None,
        "top_k": top,
        "updated": now_iso(),
    }
    paths.atomic_write_json(run_dir / "best.json", doc)
    return doc


def finish_run(
    run_dir: Path,
    config: dict[str, Any],
    engine: SearchEngine,
    problem: SearchProblem,
    source: Any,
    args: dict[str, Any],
    progress: bool,
) -> RunResult:
    """Top-k (measured for real where the device runs here), best.json, best.onnx, pareto.png, report.md."""
    from latbench.search.mnas.report import pareto_plot, write_report

    rows = engine.top_rows(int(args.get("top_k") or 1))
    top = [_arch_record(engine, problem, int(r)) for r in rows]
    measure_note = None
    if top and args.get("measure", True) and source.backend is not None:
        try:
            measured = _measure_top(source, [t["arch"] for t in top], progress)
            for t, m in zip(top, measured, strict=True):
                t["measured"] = m
                if m is not None:
                    t["within_budget_measured"] = bool(m["median_ms"] <= problem.target_ms)
                    t["measured_over_predicted"] = round(m["median_ms"] / t["predicted_ms"], 4)
        except LatbenchError as exc:
            measure_note = f"not measured: {exc}"
    elif top and source.backend is None:
        measure_note = f"not measured: the latency source's device ({source.device or 'unknown'}) cannot run here"
    elif top:
        measure_note = "not measured (--no-measure)"
    doc = _write_best(run_dir, engine, problem, source, top)
    if measure_note:
        doc["measure_note"] = measure_note
        paths.atomic_write_json(run_dir / "best.json", doc)
    onnx_note = None
    if top and args.get("export_onnx", True):
        try:
            from latbench.export import export_arch

            export_arch(top[0]["arch"], run_dir / "best.onnx")
        except Exception as exc:
            onnx_note = f"best.onnx not written: {type(exc).__name__}: {exc}"
    pareto_plot(engine, problem, top, run_dir / "pareto.png", title=f"{problem.space.name} on {source.description}")
    summary = engine.summary()
    write_report(run_dir / "report.md", config, engine, problem, source, top, summary, measure_note, onnx_note)
    return RunResult(run_dir, top[0] if top else {}, top, summary, config, engine)
