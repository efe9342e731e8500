"""``run(...)``: the whole differentiable search, as ``latbench search proxyless`` runs it.

Steps: resolve the latency source for the *deployment* space, check the target
against the space's reachable range, load the data, build the training variant
of the space (same decisions, small images), train the supernet (resumable),
derive the arch, export ``runs/<run-id>/`` and measure the derived arch on the
device when the source has one that runs here. Every user error is a
:class:`LatbenchError` raised before anything is written.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latbench import paths
from latbench.device import library_versions, now_iso
from latbench.errors import LatbenchError
from latbench.search.proxyless.checkpoint import save_tensors, write_json
from latbench.search.proxyless.derive import DERIVE_METHODS, derive
from latbench.search.proxyless.engine import (
    EpochRecord,
    SupernetTrainer,
    TrainSettings,
    make_trainer,
    torch_device,
)
from latbench.search.proxyless.latency import ExpectedLatency, parse_target, same_decisions
from latbench.search.proxyless.losses import LOSSES, make_loss
from latbench.search.proxyless.report import alpha_csv, plot_trajectory, rows_csv, write_report
from latbench.search.proxyless.supernet import MODES, space_layout
from latbench.spaces import Arch, SearchSpace, get_space
from latbench.torch_ops import torch_threads

RUN_SCHEMA = "latbench.proxyless-run/1"
#: the training variant of each space (digits at 32x32 on a CPU)
TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "proxyless-mobile": {"resolution": 32, "width": 0.35},
    "darts": {"resolution": 32},
}


@dataclass
class SearchResult:
    """What a finished search returns (and writes to ``result.json``); latency in ms."""

    run_id: str
    run_dir: Path
    arch: Arch
    train_arch: Arch
    target_ms: float
    predicted_ms: float
    measured: dict[str, Any] | None
    doc: dict[str, Any] = field(default_factory=dict)

    @property
    def within_target(self) -> bool:
        return bool(self.doc.get("within_target"))

    def to_dict(self) -> dict[str, Any]:
        return self.doc


def training_space(deploy: SearchSpace, num_classes: int, resolution: int | None, width: float | None) -> SearchSpace:
    """The space the supernet trains: ``deploy``'s decisions on small images with the data's classes."""
    defaults = TRAIN_DEFAULTS.get(deploy.name, {})
    params = dict(deploy.params)
    params["num_classes"] = int(num_classes)
    if "resolution" in params:
        params["resolution"] = int(resolution or defaults.get("resolution") or params["resolution"])
    if "width" in params:
        params["width"] = float(width or defaults.get("width") or params["width"])
    elif width is not None:
        raise LatbenchError(f"space {deploy.name!r} has no width multiplier; drop --train-width")
    space = get_space(deploy.name, **params)
    if not same_decisions(space, deploy):
        raise LatbenchError(
            f"the training variant {space.params} of {deploy.name} has other decisions than the deployment space "
            f"{deploy.params}; choose another --train-resolution / --train-width"
        )
    return space


def _runs_dir(runs_dir: str | Path | None) -> Path:
    return Path(runs_dir) if runs_dir is not None else paths.write_dir("runs")


def find_run(run: str | Path, runs_dir: str | Path | None = None) -> Path:
    """A run folder by path or by id under the runs folder."""
    p = Path(run)
    for cand in (p, _runs_dir(runs_dir) / str(run)):
        if (cand / "run.json").exists():
            return cand
    raise LatbenchError(
        f"no proxyless run {run!r} (looked for {p}/run.json and {_runs_dir(runs_dir) / str(run)}/run.json)"
    )


def _source_id(source: Any) -> str:
    model = source.model
    table = getattr(model, "table", None)
    if table is not None:
        return f"table:{table.content_hash()}"
    return f"model:{(model.fingerprint or {}).get('id')}"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(
    *,
    target: str | float | None = None,
    space: str = "proxyless-mobile",
    device: str | None = None,
    table: str | None = None,
    predictor: str | None = None,
    loss: str = "budget",
    mode: str = "binary",
    data: str = "digits",
    epochs: int | None = None,
    warmup: int | None = None,
    seed: int = 0,
    resolution: int | None = None,
    width: float | None = None,
    space_params: dict[str, Any] | None = None,
    train_resolution: int | None = None,
    train_width: float | None = None,
    derive_method: str = "auto",
    top_k: int = 3,
    lam: float | None = None,
    batch_size: int | None = None,
    alpha_lr: float | None = None,
    retrain: int | None = None,
    baseline: int = 0,
    train_device: str = "auto",
    measure: bool = True,
    share_weights: bool | None = None,
    run_id: str | None = None,
    runs_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    train_settings: TrainSettings | None = None,
    loss_params: dict[str, Any] | None = None,
) -> SearchResult:
    """Run (or resume) a differentiable latency-constrained search; see ``latbench search proxyless --help``.

    ``target``: ms (``12``, ``"12ms"``) or a share of the reachable range (``"25%"``).
    ``space_params``: other parameters of the deployment space (e.g. ``{"channels": 8}`` for darts).
    ``retrain``: epochs to train the derived arch from scratch (test accuracy);
    ``baseline``: that many random archs within the same budget are retrained the same way.
    """
    t_start = time.perf_counter()
    if resume is not None:
        run_dir = find_run(resume, runs_dir)
        doc = json.loads((run_dir / "run.json").read_text())
        if doc.get("schema") != RUN_SCHEMA:
            raise LatbenchError(f"{run_dir}/run.json is not a proxyless run ({doc.get('schema')!r})")
        cfg = doc["config"]
        deploy = get_space(cfg["space"], **cfg["space_params"])
        source = _resolve_source(deploy, cfg["source_args"])
        if _source_id(source) != doc["source"]["id"]:
            raise LatbenchError(
                f"the latency source of run {run_dir.name} changed since it started "
                f"({doc['source']['id']} -> {_source_id(source)}); start a new run"
            )
        latency = ExpectedLatency(source.compiled)
        splits = _load_data(cfg["data"], cfg["train_space_params"].get("resolution", 32), cfg["seed"])
        train_space = get_space(cfg["space"], **cfg["train_space_params"])
        settings = TrainSettings.from_dict(cfg["train"])
        loss_obj = make_loss(cfg["loss"], cfg["target_ms"], **cfg.get("loss_params", {}))
        dev = torch_device(cfg.get("train_device", "auto"))
    else:
        if target is None:
            raise LatbenchError("give a latency --target (ms, e.g. 12ms, or a share of the range, e.g. 25%)")
        if mode not in MODES:
            raise LatbenchError(f"unknown --mode {mode!r}; known: {', '.join(MODES)}")
        if loss not in LOSSES:
            raise LatbenchError(f"unknown --loss {loss!r}; known: {', '.join(LOSSES)}")
        if derive_method not in DERIVE_METHODS:
            raise LatbenchError(f"unknown --derive {derive_method!r}; known: {', '.join(DERIVE_METHODS)}")
        deploy = get_space(space, **{"resolution": resolution, "width": width, **(space_params or {})})
        space_layout(deploy)  # a space without one op per decision is refused before anything else
        source_args = {"device": device, "table": table, "predictor": predictor}
        source = _resolve_source(deploy, source_args)
        latency = ExpectedLatency(source.compiled)
        bounds = latency.bounds()
        target_ms = parse_target(target, bounds)
        lp = dict(loss_params or {})
        if lam is not None:
            lp["lam"] = lam
        loss_obj = make_loss(loss, target_ms, **lp)
        dev = torch_device(train_device)
        settings = train_settings or TrainSettings()
        if epochs is not None:
            settings.epochs = int(epochs)
        if warmup is not None:
            settings.warmup_epochs = int(warmup)
        if batch_size is not None:
            settings.batch_size = int(batch_size)
        if alpha_lr is not None:
            settings.alpha_lr = float(alpha_lr)
        if share_weights is not None:
            settings.share_weights = bool(share_weights)
        if settings.epochs < 1 or settings.warmup_epochs < 0:
            raise LatbenchError(
                f"--epochs must be >= 1 and --warmup >= 0, got {settings.epochs}, {settings.warmup_epochs}"
            )
        probe = training_space(deploy, 10, train_resolution, train_width)
        splits = _load_data(data, int(probe.params.get("resolution", 32)), seed)
        train_space = training_space(deploy, splits.num_classes, train_resolution, train_width)
        run_dir = _new_run_dir(runs_dir, run_id, deploy, loss, target_ms)
        doc = {
            "schema": RUN_SCHEMA,
            "run_id": run_dir.name,
            "created": now_iso(),
            "engine": "proxyless",
            "config": {
                "space": deploy.name,
                "space_params": deploy.params,
                "train_space_params": train_space.params,
                "data": data,
                "target": str(target),
                "target_ms": target_ms,
                "loss": loss,
                "loss_params": lp,
                "mode": mode,
                "derive": derive_method,
                "top_k": top_k,
                "seed": seed,
                "train": settings.to_dict(),
                "retrain": retrain,
                "baseline": baseline,
                "train_device": train_device,
                "measure": measure,
                "source_args": source_args,
            },
            "loss_settings": loss_obj.settings(),
            "bounds_ms": list(bounds),
            "source": {
                "id": _source_id(source),
                "description": source.description,
                "device": source.device,
                "fingerprint_id": (source.model.fingerprint or {}).get("id"),
                "fingerprint": source.model.fingerprint,
                "can_measure": source.can_measure,
            },
            "versions": library_versions(),
        }
        write_json(run_dir / "run.json", doc)
        cfg = doc["config"]
    if (run_dir / "result.json").exists():
        done = json.loads((run_dir / "result.json").read_text())
        return _result_from_doc(run_dir, done)
    trainer = make_trainer(
        train_space, cfg["mode"], latency, loss_obj, splits, settings, cfg["seed"], dev, run_dir / "checkpoint"
    )
    resumed = trainer.load_checkpoint()
    if progress:
        from latbench.service import message

        what = f"resuming after epoch {trainer.epoch}" if resumed else "starting"
        message(
            f"proxyless run {run_dir.name}: {what} ({run_dir}); interrupt with Ctrl-C and go on with "
            f"`latbench search proxyless --resume {run_dir.name}`",
            stream="err",
        )
    _fit_with_progress(trainer, cfg, progress)
    with torch_threads(settings.threads if dev.type == "cpu" else None):
        return _finish(run_dir, doc, trainer, deploy, train_space, latency, source, splits, dev, t_start, progress)


def _resolve_source(deploy: SearchSpace, args: dict[str, Any]) -> Any:
    from latbench.service import resolve_latency_source

    src = resolve_latency_source(
        deploy, device=args.get("device"), table=args.get("table"), predictor=args.get("predictor")
    )
    return src


def _load_data(data: str, resolution: int, seed: int) -> Any:
    from latbench.data import load_splits

    return load_splits(data, resolution=resolution, seed=seed)


def _new_run_dir(
    runs_dir: str | Path | None, run_id: str | None, deploy: SearchSpace, loss: str, target_ms: float
) -> Path:
    base = _runs_dir(runs_dir)
    if run_id:
        d = base / run_id
        if (d / "run.json").exists():
            raise LatbenchError(
                f"run {run_id!r} exists ({d}); pass --resume {run_id} to go on, or choose another --run-id"
            )
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"proxyless-{deploy.name}-{loss}-{target_ms:.4g}ms-{stamp}"
        d = base / name
        n = 1
        while d.exists():
            n += 1
            d = base / f"{name}-{n}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _fit_with_progress(trainer: SupernetTrainer, cfg: dict[str, Any], progress: bool) -> None:
    from latbench.service import track

    total = trainer.total_epochs * trainer.steps_per_epoch
    with track(f"proxyless {cfg['loss']}/{cfg['mode']}", total=total, enabled=progress) as update:
        update(trainer.epoch * trainer.steps_per_epoch, total, status="resumed" if trainer.epoch else "")

        def on_step(done: int, total_steps: int, st: dict[str, Any]) -> None:
            if done % 4 and done != total_steps:
                return
            text = f"ep {st['epoch']} loss {st['loss']:.3f} acc {st['acc']:.3f}"
            if "expected_ms" in st:
                text += f" E[LAT] {st['expected_ms']:.2f} derived {st['derived_ms']:.2f} ms (T {cfg['target_ms']:.2f})"
            update(done, total_steps, status=text)

        trainer.fit(on_step)


def _finish(
    run_dir: Path,
    doc: dict[str, Any],
    trainer: SupernetTrainer,
    deploy: SearchSpace,
    train_space: SearchSpace,
    latency: ExpectedLatency,
    source: Any,
    splits: Any,
    dev: torch.device,
    t_start: float,
    progress: bool,
) -> SearchResult:
    from latbench.export import export_onnx

    cfg = doc["config"]
    target_ms = float(cfg["target_ms"])
    probs = trainer.net.probs().detach().cpu().numpy()
    method = cfg["derive"]
    if method == "auto":
        method = "within-budget" if cfg["loss"] == "budget" else "argmax"
    band = getattr(trainer.loss, "band", None)
    floor = target_ms * (1.0 - band) if band is not None else None
    idx = derive(probs, latency, target_ms, method, int(cfg.get("top_k", 3)), floor_ms=floor)
    argmax_idx = probs.argmax(axis=1)
    argmax_ms = latency.of_indices(argmax_idx)
    arch = deploy.from_indices(idx)
    train_arch = train_space.from_indices(idx)
    predicted = latency.of_indices(idx)
    with torch.no_grad():
        expected = float(latency.expected(trainer.net.probs()))
    valid_acc = trainer.evaluate(trainer.xv, trainer.yv, idx)  # also recalibrates BN for the export below
    state = trainer.net.subnet_state(idx)
    weights_from = "supernet (inherited, BN re-estimated)"
    module = train_space.build(train_arch)
    module.load_state_dict(state)
    retrain_doc = baseline_doc = None
    if cfg.get("retrain"):
        from latbench.search.proxyless.retrain import retrain

        res, module = retrain(
            train_space,
            train_arch,
            splits,
            int(cfg["retrain"]),
            seed=int(cfg["seed"]),
            device=dev,
            threads=settings_threads(cfg),
        )
        retrain_doc = res.to_dict()
        state = module.state_dict()
        weights_from = f"retrained from scratch for {cfg['retrain']} epochs"
        if int(cfg.get("baseline") or 0) > 0:
            baseline_doc = _baseline(train_space, latency, target_ms, splits, cfg, dev)
    save_tensors(
        run_dir / "weights.safetensors",
        state,
        metadata={"arch": json.dumps(train_arch), "weights": weights_from, "format": "state_dict of space.build(arch)"},
    )
    g = torch.Generator().manual_seed(0)
    export_onnx((module.eval(), torch.randn(*train_space.input_shape, generator=g)), run_dir / "model.onnx")
    measured, note = None, None
    if cfg.get("measure", True) and source.can_measure:
        from latbench.service import measure_archs, network_timing

        ms, _ = measure_archs(
            source.backend, [arch], network_timing(source.backend, None, None), source.sentinel_ms, progress=progress
        )
        m = ms[0]
        measured = {**m.summary(), "device": source.device, "fingerprint": source.backend.fingerprint().id}
    elif not source.can_measure:
        note = f"the latency source ({source.description}) is not a device that runs here"
    else:
        note = "measurement switched off (--no-measure)"
    gap = predicted / target_ms - 1.0
    choices_table = [
        (d.name, d.options[int(j)], float(probs[i, int(j)]))
        for i, (d, j) in enumerate(zip(deploy.decisions, idx, strict=True))
    ]
    result_doc: dict[str, Any] = {
        "run_id": run_dir.name,
        "run_dir": str(run_dir),
        "engine": "proxyless",
        "space": deploy.name,
        "arch": arch,
        "train_arch": train_arch,
        "target_ms": target_ms,
        "predicted_ms": predicted,
        "gap_pct": 100.0 * gap,
        "derive": method,
        "argmax_ms": argmax_ms,
        "argmax_gap_pct": 100.0 * (argmax_ms / target_ms - 1.0),
        "repaired_decisions": int((np.asarray(idx) != argmax_idx).sum()),
        "settle_steps": trainer.settled,
        "within_target": bool(predicted <= target_ms * 1.05),
        "expected_ms": expected,
        "bounds_ms": doc["bounds_ms"],
        "measured": measured,
        "measured_note": note,
        "measured_vs_predicted_pct": (100.0 * (measured["median_ms"] / predicted - 1.0)) if measured else None,
        "supernet_valid_acc": valid_acc,
        "retrain": retrain_doc,
        "baseline": baseline_doc,
        "weights_from": weights_from,
        "epochs_run": trainer.epoch,
        "seconds": time.perf_counter() - t_start,
        "search_seconds": float(sum(r.seconds for r in trainer.history)),
        "peak_rss_mb": _peak_rss_mb(),
        "train_device": str(dev),
        "source": doc["source"]["description"],
        "choices_table": choices_table,
        "finished": now_iso(),
    }
    write_json(
        run_dir / "arch.json",
        {
            **arch,
            "latbench": {
                "engine": "proxyless",
                "run_id": run_dir.name,
                "predicted_ms": predicted,
                "target_ms": target_ms,
                "measured_ms": measured["median_ms"] if measured else None,
                "source": doc["source"]["description"],
                "train_arch": train_arch,
            },
        },
    )
    paths.atomic_write_text(run_dir / "alpha.csv", alpha_csv(trainer.alpha_log, deploy))
    history = [_record_dict(r) for r in trainer.history]
    paths.atomic_write_text(run_dir / "history.csv", rows_csv(history))
    paths.atomic_write_text(run_dir / "trajectory.csv", rows_csv(trainer.trajectory))
    plot_trajectory(
        trainer.trajectory,
        target_ms,
        tuple(doc["bounds_ms"]),
        run_dir / "trajectory.png",
        f"{deploy.name}, loss {cfg['loss']}, mode {cfg['mode']}: target {target_ms:.2f} ms, derived {predicted:.2f} ms",
    )
    write_report(run_dir, result_doc, doc, history)
    write_json(run_dir / "result.json", result_doc)
    return _result_from_doc(run_dir, result_doc)


def settings_threads(cfg: dict[str, Any]) -> int:
    return int(cfg.get("train", {}).get("threads", 1))


def _record_dict(r: EpochRecord) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(r)


def _baseline(
    train_space: SearchSpace,
    latency: ExpectedLatency,
    target_ms: float,
    splits: Any,
    cfg: dict[str, Any],
    dev: torch.device,
) -> dict[str, Any]:
    from latbench.search.proxyless.retrain import random_archs_under_budget, retrain

    n = int(cfg["baseline"])
    idxs = random_archs_under_budget(latency, target_ms, n, seed=int(cfg["seed"]) + 1)
    accs, preds = [], []
    for idx in idxs:
        res, _ = retrain(
            train_space,
            train_space.from_indices(idx),
            splits,
            int(cfg["retrain"]),
            seed=int(cfg["seed"]),
            device=dev,
            threads=settings_threads(cfg),
        )
        accs.append(res.test_acc)
        preds.append(latency.of_indices(idx))
    return {
        "n": n,
        "test_accs": accs,
        "predicted_ms": preds,
        "median_test_acc": float(np.median(accs)),
        "archs": [train_space.from_indices(i)["choices"] for i in idxs],
    }


def _result_from_doc(run_dir: Path, d: dict[str, Any]) -> SearchResult:
    return SearchResult(
        run_id=d["run_id"],
        run_dir=run_dir,
        arch=d["arch"],
        train_arch=d["train_arch"],
        target_ms=float(d["target_ms"]),
        predicted_ms=float(d["predicted_ms"]),
        measured=d.get("measured"),
        doc=d,
    )
