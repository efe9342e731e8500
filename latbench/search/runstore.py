"""The run store both search engines write: one folder layout, one result schema, one resume rule.

A run lives in ``<runs-dir>/<run-id>/`` (``runs-dir`` defaults to
``$LATBENCH_HOME/runs``, else ``runs/`` of the checkout):

* ``config.json``   the engine, every setting, the latency source (description
  and kind: looked up / predicted), the device fingerprint, library versions,
  the creation time; a resumed run takes its settings from here;
* ``state/``        the checkpoint (arrays in safetensors, the rest in JSON, each
  written atomically) and ``running.json`` while a process works on the run;
* ``history.csv``   one row per trial (MnasNet) or per epoch (ProxylessNAS);
* ``result.json``   the result (schema below), written last: a run is done when it exists;
* ``deployed.onnx`` / ``deployed.json``  the deployed arch (the main artifact) and its arch JSON;
* ``trained-variant.onnx``  only where the engine trains a small variant of the
  deployed arch (ProxylessNAS trains it at 32 px / width 0.35), labelled as such in the result;
* plots (``*.png``) and ``report.md``.

``result.json`` has the same keys for both engines: ``engine``, ``run_id``,
``space``, ``target_ms``, ``predicted_ms``, ``predicted_kind`` ("predicted" or
"looked up"), ``measured`` (``median_ms``, ``iqr_ms``, ``p90_ms``, ``n``; null
when the source's device cannot run here), ``within_budget`` (exactly: measured
median, else predicted, ``<= target_ms``), ``over_budget_pct``, ``arch``,
``trained_variant`` (or null), ``accuracy`` or ``score`` (the other null), and
``found`` (what the search found, when a measured step to another candidate was
needed to stay within the budget; else null).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latbench import paths
from latbench.errors import LatbenchError

CONFIG_SCHEMA = "latbench.run/1"
RESULT_SCHEMA = "latbench.run-result/1"
ENGINES = ("mnas", "proxyless")


def runs_root(runs_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder of run folders: ``runs_dir`` when given, else ``runs/`` under ``$LATBENCH_HOME`` (or the checkout)."""
    return Path(runs_dir) if runs_dir is not None else paths.write_dir("runs")


def check_run_id(run_id: str) -> str:
    """A run id is a folder name: letters, digits, ``.``, ``_``, ``-`` (no ``..``, separators or newlines)."""
    return paths.check_name(run_id, "run id")


def new_run_id(root: Path, *parts: str) -> str:
    """``<time>-<parts...>``, made unique under ``root``."""
    import re

    stem = "-".join([time.strftime("%Y%m%d-%H%M%S"), *(re.sub(r"[^A-Za-z0-9_.-]", "_", p) for p in parts if p)])
    stem = stem[:120]
    rid, i = stem, 1
    while (root / rid).exists():
        i += 1
        rid = f"{stem}-{i}"
    return rid


@dataclass
class RunFolder:
    """The files of one run (see the module docstring); :meth:`create` and :meth:`open` check the run id."""

    root: Path
    run_id: str

    @property
    def dir(self) -> Path:
        return self.root / self.run_id

    @property
    def config_path(self) -> Path:
        return self.dir / "config.json"

    @property
    def state_dir(self) -> Path:
        return self.dir / "state"

    @property
    def history_path(self) -> Path:
        return self.dir / "history.csv"

    @property
    def result_path(self) -> Path:
        return self.dir / "result.json"

    @property
    def report_path(self) -> Path:
        return self.dir / "report.md"

    @property
    def deployed_onnx(self) -> Path:
        return self.dir / "deployed.onnx"

    @property
    def deployed_json(self) -> Path:
        return self.dir / "deployed.json"

    @property
    def trained_variant_onnx(self) -> Path:
        return self.dir / "trained-variant.onnx"

    @property
    def running_path(self) -> Path:
        return self.state_dir / "running.json"

    # ------------------------------------------------------------------ open / create
    @classmethod
    def prepare(cls, runs_dir: str | os.PathLike[str] | None, run_id: str) -> RunFolder:
        """A folder for a new run (nothing written yet): refuses a bad id or a run that exists."""
        folder = cls(runs_root(runs_dir), check_run_id(run_id))
        if folder.dir.exists() and any(folder.dir.iterdir()):
            raise LatbenchError(
                f"run {run_id!r} exists ({folder.dir}); pass --resume {run_id} to go on, or choose another --run-id"
            )
        return folder

    def create(self, config: dict[str, Any]) -> RunFolder:
        """Make the folder and write ``config.json`` (after every check of the input has passed)."""
        paths.ensure_writable_dir(self.root)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        paths.atomic_write_json(self.config_path, config)
        return self

    @classmethod
    def open(cls, run_id: str, runs_dir: str | os.PathLike[str] | None = None, engine: str | None = None) -> RunFolder:
        """An existing run by id under the runs folder; with ``engine``, refuses a run of the other engine."""
        folder = cls(runs_root(runs_dir), check_run_id(str(run_id)))
        if not folder.config_path.is_file():
            raise LatbenchError(
                f"no run {run_id!r} in {folder.root} (no {folder.config_path}); "
                "`latbench runs list` shows the runs there, --runs-dir names another folder"
            )
        config = folder.read_config()
        if engine is not None and config.get("engine") != engine:
            raise LatbenchError(
                f"run {run_id!r} is a {config.get('engine')} run, not a {engine} run; "
                f"resume it with `latbench search {config.get('engine')} --resume {run_id}`"
            )
        return folder

    # ------------------------------------------------------------------ files
    def read_config(self) -> dict[str, Any]:
        doc = _read_json(self.config_path)
        if doc.get("schema") != CONFIG_SCHEMA or doc.get("engine") not in ENGINES:
            raise LatbenchError(f"{self.config_path} is not a latbench run config (schema {doc.get('schema')!r})")
        return doc

    def read_result(self) -> dict[str, Any] | None:
        if not self.result_path.is_file():
            return None
        return _read_json(self.result_path)

    def write_result(self, result: dict[str, Any]) -> None:
        paths.atomic_write_json(self.result_path, result)

    def status(self) -> str:
        """``done`` (result.json written), ``running`` (a live process holds it) or ``interrupted``."""
        if self.result_path.is_file():
            return "done"
        try:
            info = json.loads(self.running_path.read_text())
        except (OSError, ValueError):
            return "interrupted"
        if info.get("host") == socket.gethostname() and _pid_alive(int(info.get("pid", -1))):
            return "running"
        return "interrupted"

    @contextmanager
    def running(self) -> Iterator[RunFolder]:
        """Mark the run as worked on by this process (``state/running.json``) until the block ends."""
        if self.status() == "running":
            raise LatbenchError(f"run {self.run_id!r} is being worked on by another process ({self.running_path})")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        paths.atomic_write_json(
            self.running_path, {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
        )
        try:
            yield self
        finally:
            self.running_path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _now() -> str:
    from latbench.device import now_iso

    return now_iso()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise LatbenchError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise LatbenchError(f"{path}: not valid JSON (line {exc.lineno}); the run folder is damaged") from None
    if not isinstance(doc, dict):
        raise LatbenchError(f"{path}: expected a JSON object")
    return doc


# ----------------------------------------------------------------------------- config
def source_record(source: Any) -> dict[str, Any]:
    """What a run records about its latency source: description, kind, device, fingerprints, file identity."""
    model = source.model
    fp = dict(getattr(model, "fingerprint", {}) or {})
    rec: dict[str, Any] = {
        "description": source.description,
        "kind": source.kind,
        "device": source.device,
        "fingerprint": fp.get("id"),
        "measured_here": source.backend is not None,
    }
    table = getattr(model, "table", None)
    if table is not None:
        rec["table"] = str(Path(table.path).resolve()) if table.path else None
        rec["table_hash"] = table.content_hash()
    rec["vector_hash"] = vector_hash(source.compiled)
    return rec


def vector_hash(compiled: Any) -> str:
    """A short hash of a compiled latency source's numbers: a resumed run must count latency the same way."""
    import hashlib

    import numpy as np

    h = hashlib.sha256(np.round(np.asarray(compiled.vector, dtype=np.float64), 9).tobytes())
    h.update(json.dumps(compiled.calibration.to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:16]


def device_fingerprint(source: Any) -> dict[str, Any]:
    """The fingerprint of the device the numbers come from (and of the live one, where it runs here)."""
    model = source.model
    out: dict[str, Any] = {"source": dict(getattr(model, "fingerprint", {}) or {}) or None, "live": None}
    if source.backend is not None:
        try:
            out["live"] = source.backend.fingerprint().to_dict()
        except Exception:  # a backend that cannot describe itself still measures
            out["live"] = None
    return out


def base_config(
    engine: str,
    run_id: str,
    settings: dict[str, Any],
    source: Any,
    space: Any,
    target: dict[str, Any],
) -> dict[str, Any]:
    """The keys every ``config.json`` has; an engine adds its own beside them."""
    from latbench.device import host_info, library_versions

    return {
        "schema": CONFIG_SCHEMA,
        "engine": engine,
        "run_id": run_id,
        "created": _now(),
        "space": {"name": space.name, **space.params, "decisions": len(space.decisions)},
        "target": target,
        "settings": settings,
        "latency_source": source_record(source),
        "device_fingerprint": device_fingerprint(source),
        "host": host_info(),
        "versions": library_versions(),
    }


# ----------------------------------------------------------------------------- result
def measurement_record(m: Any) -> dict[str, Any]:
    """``median_ms``, ``iqr_ms``, ``p90_ms``, ``n`` of a :class:`~latbench.measure.Measurement` (or its summary), and
    ``kind``: how the number was obtained, "measured" or, on an emulated device, "emulated"."""
    s = m if isinstance(m, dict) else m.summary()
    kind = s.get("kind") if isinstance(m, dict) else (getattr(m, "meta", None) or {}).get("kind")
    rec: dict[str, Any] = {k: (int(s[k]) if k == "n" else float(s[k])) for k in ("median_ms", "iqr_ms", "p90_ms", "n")}
    rec["kind"] = str(kind or "measured")
    return rec


def budget_verdict(target_ms: float, predicted_ms: float, measured: dict[str, Any] | None) -> tuple[bool, float]:
    """``(within_budget, over_budget_pct)``: the measured median (else the prediction) against the target, no slack.

    ``over_budget_pct`` is how far above the target it is, in percent (0 when within).
    """
    lat = float(measured["median_ms"]) if measured else float(predicted_ms)
    within = bool(lat <= target_ms)
    return within, (0.0 if within else round(100.0 * (lat / target_ms - 1.0), 3))


def within_with_margin(measured: dict[str, Any], target_ms: float) -> bool:
    """A measured candidate is safely within budget when its median plus its own IQR is at most the target."""
    return float(measured["median_ms"]) + float(measured["iqr_ms"]) <= target_ms


def make_result(
    *,
    engine: str,
    run_id: str,
    space: str,
    target_ms: float,
    predicted_ms: float,
    predicted_kind: str,
    measured: dict[str, Any] | None,
    arch: dict[str, Any],
    trained_variant: dict[str, Any] | None,
    accuracy: float | None = None,
    score: float | None = None,
    score_name: str | None = None,
    measured_note: str | None = None,
    found: dict[str, Any] | None = None,
    latency_source: str = "",
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The one result schema of both engines (see the module docstring)."""
    within, over = budget_verdict(target_ms, predicted_ms, measured)
    return {
        "schema": RESULT_SCHEMA,
        "engine": engine,
        "run_id": run_id,
        "space": space,
        "target_ms": float(target_ms),
        "predicted_ms": float(predicted_ms),
        "predicted_kind": predicted_kind,
        "measured": measured,
        "measured_note": measured_note,
        "within_budget": within,
        "over_budget_pct": over,
        "arch": arch,
        "trained_variant": trained_variant,
        "accuracy": accuracy,
        "score": score,
        "score_name": score_name,
        "found": found,
        "latency_source": latency_source,
        "finished": _now(),
        "details": details or {},
    }


def over_budget_line(run_id: str, target_ms: float, measured_ms: float, what: str) -> str:
    """The stderr line when a measured network lands over its budget."""
    pct = 100.0 * (measured_ms / target_ms - 1.0)
    return (
        f"latbench: warning: run {run_id}: {what} measures {measured_ms:.3f} ms, "
        f"OVER the {target_ms:g} ms budget by {pct:.1f}%"
    )


# ----------------------------------------------------------------------------- listing
def run_row(folder: RunFolder) -> dict[str, Any]:
    """One line of ``latbench runs list``: id, engine, space, target, predicted, measured, within budget, state."""
    config = folder.read_config()
    status = folder.status()
    result = folder.read_result() if status == "done" else None
    row: dict[str, Any] = {
        "run_id": folder.run_id,
        "engine": config["engine"],
        "space": config.get("space", {}).get("name"),
        "target_ms": config.get("target", {}).get("ms"),
        "predicted_ms": None,
        "measured_ms": None,
        "within_budget": None,
        "state": status,
        "created": config.get("created"),
        "path": str(folder.dir),
    }
    if result is not None:
        row["predicted_ms"] = result.get("predicted_ms")
        row["measured_ms"] = (result.get("measured") or {}).get("median_ms")
        row["within_budget"] = result.get("within_budget")
    return row


def list_runs(runs_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Every run under the runs folder (either engine), oldest first; folders that are not runs are skipped."""
    root = runs_root(runs_dir)
    rows = []
    if not root.is_dir():
        return rows
    for d in sorted(root.iterdir()):
        if not (d / "config.json").is_file():
            continue
        try:
            folder = RunFolder(root, check_run_id(d.name))
            rows.append(run_row(folder))
        except LatbenchError:
            continue
    rows.sort(key=lambda r: (r.get("created") or "", r["run_id"]))
    return rows


def show_run(run_id: str, runs_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """One run in full: its list row, config, result (or null while running / interrupted) and files."""
    folder = RunFolder.open(run_id, runs_dir)
    files = sorted(str(p.relative_to(folder.dir)) for p in folder.dir.rglob("*") if p.is_file())
    return {**run_row(folder), "config": folder.read_config(), "result": folder.read_result(), "files": files}


def budget_lines(result: dict[str, Any], stepped: str) -> list[str]:
    """The verdict on the budget for ``report.md``, in bold, saying how the numbers were obtained ("measured" or
    "emulated"), and - when the found arch landed over the budget - what was deployed instead (``stepped`` says how
    the engine picked it)."""
    if not result.get("arch"):
        return ["**No result: no trial succeeded.**"]
    m = result.get("measured")
    if m:
        lat = f"{m.get('kind', 'measured')} {m['median_ms']:.3f} ms (IQR {m['iqr_ms']:.3f})"
    else:
        lat = f"{result['predicted_kind']} {result['predicted_ms']:.3f} ms (not measured)"
    verdict = "within" if result["within_budget"] else f"OVER by {result['over_budget_pct']:.1f}%"
    lines = [f"**Budget {result['target_ms']:g} ms: {lat}: {verdict}.**"]
    found = result.get("found")
    if found and found.get("measured"):
        fm = found["measured"]
        lines += [
            "",
            f"**The arch the search found {fm.get('kind', 'measured')} {fm['median_ms']:.3f} ms, OVER the budget; "
            f"the deployed arch is {stepped} (median + IQR <= target).**",
        ]
    elif m and not result["within_budget"]:
        lines += ["", "**The deployed arch is OVER the budget: no measured candidate was within it.**"]
    return lines
