"""What a MnasNet run writes into its run folder: the checkpoint while it searches, the result when it ends.

The checkpoint (``state/state.json`` plus ``state/arrays-N.safetensors``) and
``history.csv`` are kept in step: the state records how many history rows and
bytes it covers, so a resumed run cuts off a half-written tail. The result
follows the shared schema of :mod:`latbench.search.runstore`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latbench import paths
from latbench.device import now_iso
from latbench.errors import LatbenchError
from latbench.search.mnas.engine import SearchEngine
from latbench.search.mnas.history import History
from latbench.search.mnas.problem import SearchProblem
from latbench.search.runstore import (
    RunFolder,
    make_result,
    measurement_record,
    over_budget_line,
    within_with_margin,
)
from latbench.spaces import SearchSpace

STATE_SCHEMA = "latbench.mnas-state/1"
#: extra candidates measured, at most, when the top-k all land over the budget
EXTRA_MEASURED = 3


@dataclass
class RunResult:
    """What :func:`run` returns: the run folder, ``result.json``'s content, the measured top-k, the summary."""

    run_dir: Path
    result: dict[str, Any]
    best: dict[str, Any]
    top: list[dict[str, Any]]
    summary: dict[str, Any]
    config: dict[str, Any]
    engine: SearchEngine | None = field(default=None, repr=False)

    @property
    def run_id(self) -> str:
        return self.run_dir.name


class RunWriter:
    """Appends history rows and writes the resumable checkpoint of a run folder."""

    def __init__(self, folder: RunFolder, history: History, rows: int = 0, nbytes: int | None = None, ckpt: int = 0):
        self.folder = folder
        self.history = history
        self.rows = rows
        self.ckpt = ckpt
        self.csv = folder.history_path
        if nbytes is None:
            paths.atomic_write_text(self.csv, ",".join(history.header()) + "\n")
            nbytes = self.csv.stat().st_size
        self.nbytes = nbytes

    @classmethod
    def open(cls, folder: RunFolder, space: SearchSpace, value_name: str) -> tuple[RunWriter, dict[str, Any] | None]:
        """The writer of a new run, or of a resumed one with its history read back and the checkpoint's state."""
        state_path = folder.state_dir / "state.json"
        if not state_path.is_file():
            return cls(folder, History(space, value_name)), None
        try:
            state = json.loads(state_path.read_text())
        except json.JSONDecodeError as exc:
            raise LatbenchError(f"{state_path}: corrupt checkpoint (invalid JSON at line {exc.lineno})") from None
        if state.get("schema") != STATE_SCHEMA:
            raise LatbenchError(f"{state_path} is not a MnasNet checkpoint (schema {state.get('schema')!r})")
        csv_path = folder.history_path
        if not csv_path.is_file() or csv_path.stat().st_size < int(state["history_bytes"]):
            raise LatbenchError(
                f"{csv_path} is shorter than its checkpoint says ({state['history_bytes']} bytes); "
                "the run folder is damaged, start a new run"
            )
        with open(csv_path, "r+b") as fh:  # cut a tail written after the checkpoint
            fh.truncate(int(state["history_bytes"]))
        history = History.from_csv(space, csv_path.read_text(), value_name)
        if len(history) != int(state["history_rows"]):
            raise LatbenchError(f"{csv_path}: {len(history)} rows but the checkpoint says {state['history_rows']}")
        writer = cls(folder, history, len(history), int(state["history_bytes"]), int(state["checkpoint"]))
        return writer, state

    def checkpoint(self, engine: SearchEngine) -> None:
        from safetensors.numpy import save

        if self.ckpt and len(engine.history) == self.rows:
            # nothing told since the last checkpoint: keep it (the strategy may have asked since, and an
            # interrupted batch must not advance the state a resumed run starts from)
            return
        text = engine.history.csv_rows(self.rows)
        if text:
            with open(self.csv, "a", encoding="utf-8", newline="") as fh:
                fh.write(text)
            self.nbytes = self.csv.stat().st_size
            self.rows = len(engine.history)
        st_state, arrays = engine.strategy.state_dict()
        self.ckpt += 1
        state_dir = self.folder.state_dir
        arrays_name = f"arrays-{self.ckpt}.safetensors"
        paths.atomic_write_bytes(state_dir / arrays_name, save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))
        state = {
            "schema": STATE_SCHEMA,
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
        paths.atomic_write_json(state_dir / "state.json", state)
        for old in state_dir.glob("arrays-*.safetensors"):
            if old.name != arrays_name:
                old.unlink(missing_ok=True)


def restore_state(folder: RunFolder, engine: SearchEngine, state: dict[str, Any]) -> None:
    """Load the checkpoint's strategy, evaluator and engine counters into a set-up engine."""
    from safetensors.numpy import load_file

    path = folder.state_dir / str(state["arrays"])
    try:
        arrays = load_file(str(path))
    except Exception as exc:  # safetensors raises its own types on a torn or foreign file
        raise LatbenchError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    engine.strategy.load_state_dict(state["strategy"], arrays, engine.history.arrays()["indices"])
    engine.evaluator.load_state_dict(state.get("evaluator", {}), engine.history.arrays())
    engine.stats.asked = int(state["engine"]["asked"])
    engine.stats.rejected = int(state["engine"]["rejected"])
    engine._elapsed_before = float(state["engine"]["seconds"])


# ----------------------------------------------------------------------------- the result
def arch_record(engine: SearchEngine, problem: SearchProblem, row: int) -> dict[str, Any]:
    """One candidate of the history: its arch, accuracy or score, predicted latency, reward and counts."""
    a = engine.history.arrays()
    sp = problem.space
    arch = sp.from_indices(a["indices"][row])
    summary = sp.summary(arch)
    return {
        "trial": int(a["trial"][row]),
        "arch": arch,
        engine.history.value_name: float(a["accuracy"][row]),
        "value_source": str(a["source"][row]),
        "predicted_ms": float(a["latency_ms"][row]),
        "reward": float(a["reward"][row]),
        "macs": int(summary["macs"]),
        "params": int(summary["params"]),
        "peak_memory_mb": round(summary["peak_memory_bytes"] / 1e6, 3),
        "measured": None,
    }


def measure_records(records: list[dict[str, Any]], source: Any, progress: bool) -> None:
    """Measure the archs of ``records`` end to end on the source's device; sets each record's ``measured``."""
    from latbench.service import measure_archs, network_timing

    backend = source.backend
    ms, _ = measure_archs(
        backend, [t["arch"] for t in records], network_timing(backend), source.sentinel_ms, progress=progress
    )
    for t, m in zip(records, ms, strict=True):
        t["measured"] = {**measurement_record(m), "samples_ms": [round(x, 5) for x in m.samples_ms]}


def step_to_budget(
    engine: SearchEngine, problem: SearchProblem, source: Any, top: list[dict[str, Any]], progress: bool
) -> dict[str, Any] | None:
    """The best measured candidate within the budget (median + IQR <= target) when the found arch is over it.

    First among the top-k already measured; then up to :data:`EXTRA_MEASURED`
    more of the history (best reward first) whose predicted latency, scaled by
    the found arch's measured / predicted ratio, is within the budget; they are
    measured and appended to ``top``. None when no candidate qualifies.
    """
    target = problem.target_ms
    for t in top[1:]:
        if t["measured"] and within_with_margin(t["measured"], target):
            return t
    first = top[0]
    ratio = first["measured"]["median_ms"] / first["predicted_ms"]
    seen = {json.dumps(t["arch"], sort_keys=True) for t in top}
    extra = []
    for row in engine.top_rows(len(top) + 200):
        rec = arch_record(engine, problem, int(row))
        if json.dumps(rec["arch"], sort_keys=True) in seen or rec["predicted_ms"] * ratio > target:
            continue
        extra.append(rec)
        if len(extra) >= EXTRA_MEASURED:
            break
    if not extra:
        return None
    measure_records(extra, source, progress)
    top.extend(extra)
    return next((t for t in extra if within_with_margin(t["measured"], target)), None)


def _measure_top(
    engine: SearchEngine,
    problem: SearchProblem,
    source: Any,
    top: list[dict[str, Any]],
    args: dict[str, Any],
    progress: bool,
) -> tuple[dict[str, Any], dict[str, Any] | None, str | None]:
    """Measure the top-k where the device runs here; returns (deployed record, found record if stepped, note)."""
    from latbench.service import message

    if not args.get("measure", True):
        return top[0], None, "not measured (--no-measure)"
    if source.backend is None:
        return top[0], None, f"not measured: the latency source's device ({source.device or 'unknown'}) cannot run here"
    try:
        measure_records(top, source, progress)
    except LatbenchError as exc:
        return top[0], None, f"not measured: {exc}"
    first, target = top[0], problem.target_ms
    if first["measured"]["median_ms"] <= target:
        return first, None, None
    run_id = str(args["_run_id"])
    message(over_budget_line(run_id, target, first["measured"]["median_ms"], "the found arch"), stream="err")
    if not args.get("step_to_budget", True):
        return first, None, None
    chosen = step_to_budget(engine, problem, source, top, progress)
    if chosen is None:
        message(f"latbench: warning: run {run_id}: no measured candidate is within the budget", stream="err")
        return first, None, None
    m = chosen["measured"]
    message(
        f"latbench: deploying trial {chosen['trial']} instead: measured {m['median_ms']:.3f} ms "
        f"(IQR {m['iqr_ms']:.3f}) within the {target:g} ms budget",
        stream="err",
    )
    return chosen, first, None


def _export(folder: RunFolder, arch: dict[str, Any], args: dict[str, Any]) -> str | None:
    paths.atomic_write_json(folder.deployed_json, arch)
    if not args.get("export_onnx", True):
        return None
    try:
        from latbench.export import export_arch

        export_arch(arch, folder.deployed_onnx)
    except Exception as exc:  # an exporter failure must not lose the search: say so in the result
        return f"deployed.onnx not written: {type(exc).__name__}: {exc}"
    return None


def _slim(rec: dict[str, Any] | None) -> dict[str, Any] | None:
    if rec is None:
        return None
    m = rec.get("measured")
    return {**rec, "measured": {k: v for k, v in m.items() if k != "samples_ms"} if m else None}


def finish_run(
    folder: RunFolder,
    config: dict[str, Any],
    engine: SearchEngine,
    problem: SearchProblem,
    source: Any,
    args: dict[str, Any],
    progress: bool,
) -> RunResult:
    """Top-k (measured where the device runs here, stepped within budget), result.json, deployed.onnx, plot, report."""
    from latbench.search.mnas.report import pareto_plot, write_report

    args = {**args, "_run_id": folder.run_id}
    vname = engine.history.value_name
    top = [arch_record(engine, problem, int(r)) for r in engine.top_rows(int(args.get("top_k") or 1))]
    summary = engine.summary()
    if not top:
        result = _no_result(folder, config, problem, source, summary)
        write_report(folder.report_path, config, engine, problem, source, top, summary, result, None)
        folder.write_result(result)
        return RunResult(folder.dir, result, {}, [], summary, config, engine)
    deployed, found, note = _measure_top(engine, problem, source, top, args, progress)
    onnx_note = _export(folder, deployed["arch"], args)
    m = deployed["measured"]
    result = make_result(
        engine="mnas",
        run_id=folder.run_id,
        space=problem.space.name,
        target_ms=problem.target_ms,
        predicted_ms=deployed["predicted_ms"],
        predicted_kind=source.kind,
        measured={**{k: m[k] for k in ("median_ms", "iqr_ms", "p90_ms", "n")}, "kind": m.get("kind", "measured")}
        if m
        else None,
        arch=deployed["arch"],
        trained_variant=None,
        accuracy=deployed.get("accuracy"),
        score=deployed.get("score"),
        score_name=config.get("evaluator", {}).get("name") if vname == "score" else None,
        measured_note=note,
        found=_slim(found),
        latency_source=source.description,
        details={
            "trial": deployed["trial"],
            "reward": deployed["reward"],
            "top_k": [_slim(t) for t in top],
            "summary": summary,
            "deployed_onnx": None if onnx_note or not args.get("export_onnx", True) else folder.deployed_onnx.name,
            "onnx_note": onnx_note,
        },
    )
    title = f"{problem.space.name} on {source.description}"
    pareto_plot(engine, problem, top, folder.dir / "pareto.png", title=title)
    write_report(folder.report_path, config, engine, problem, source, top, summary, result, onnx_note)
    folder.write_result(result)
    return RunResult(folder.dir, result, deployed, top, summary, config, engine)


def _no_result(
    folder: RunFolder, config: dict[str, Any], problem: SearchProblem, source: Any, summary: dict[str, Any]
) -> dict[str, Any]:
    doc = make_result(
        engine="mnas",
        run_id=folder.run_id,
        space=problem.space.name,
        target_ms=problem.target_ms,
        predicted_ms=float("nan"),
        predicted_kind=source.kind,
        measured=None,
        arch={},
        trained_variant=None,
        measured_note="no trial succeeded; see history.csv",
        latency_source=source.description,
        details={"summary": summary},
    )
    doc["predicted_ms"] = None
    doc["within_budget"] = False
    return doc
