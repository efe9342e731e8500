"""``run(...)``: the whole differentiable search, as ``latbench search proxyless`` runs it.

Steps: check the settings, resolve the latency source for the *deployment*
space, turn the target into ms and check it against the space's reachable
range, load the data, build the training variant of the space (same
decisions, small images), train the supernet (checkpointed every epoch in the
run's ``state/``), derive the arch, measure it on the device when the source
has one that runs here (stepping to a measured candidate within the budget
when it lands over), and write the run folder of the shared run store
(:mod:`latbench.search.runstore`). Every user error is a :class:`LatbenchError`
raised before anything is written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latbench.errors import LatbenchError
from latbench.search.proxyless.derive import DERIVE_METHODS
from latbench.search.proxyless.engine import SupernetTrainer, TrainSettings, make_trainer, torch_device
from latbench.search.proxyless.finish import finish
from latbench.search.proxyless.latency import ExpectedLatency, same_decisions
from latbench.search.proxyless.losses import LOSSES, LatencyLoss, make_loss
from latbench.search.proxyless.supernet import MODES, space_layout
from latbench.search.runstore import RunFolder, base_config, check_run_id, new_run_id, runs_root, source_record
from latbench.search.target import parse_target, parse_target_spec
from latbench.spaces import Arch, SearchSpace, get_space
from latbench.torch_ops import torch_threads

#: the training variant of each space (digits at 32x32 on a CPU)
TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "proxyless-mobile": {"resolution": 32, "width": 0.35},
    "darts": {"resolution": 32},
}


@dataclass
class SearchResult:
    """What a finished search returns; ``doc`` is its ``result.json`` (the shared result schema). Latency in ms."""

    run_id: str
    run_dir: Path
    arch: Arch
    train_arch: Arch | None
    target_ms: float
    predicted_ms: float
    measured: dict[str, Any] | None
    doc: dict[str, Any] = field(default_factory=dict)

    @property
    def within_budget(self) -> bool:
        return bool(self.doc.get("within_budget"))

    def to_dict(self) -> dict[str, Any]:
        return self.doc


@dataclass
class _Plan:
    """Everything a run needs before its first epoch."""

    cfg: dict[str, Any]
    deploy: SearchSpace
    source: Any
    latency: ExpectedLatency
    splits: Any
    train_space: SearchSpace
    settings: TrainSettings
    loss: LatencyLoss
    device: torch.device


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
    step_to_budget: bool = True,
    share_weights: bool | None = None,
    run_id: str | None = None,
    runs_dir: str | Path | None = None,
    resume: str | None = None,
    progress: bool = True,
    train_settings: TrainSettings | None = None,
    loss_params: dict[str, Any] | None = None,
) -> SearchResult:
    """Run (or resume) a differentiable latency-constrained search; see ``latbench search proxyless --help``.

    ``target``: ``12``, ``"12ms"``, ``"0.012s"``, ``"12000us"`` or a share of the reachable range (``"25%"``).
    ``space_params``: other parameters of the deployment space (e.g. ``{"channels": 8}`` for darts).
    ``retrain``: epochs to train the derived arch from scratch (test accuracy);
    ``baseline``: that many random archs within the same budget are retrained the same way.
    ``step_to_budget``: when the derived arch measures over the budget, derive
    within tighter budgets, measure those and deploy the first within the budget
    by its own noise (median + IQR <= target).
    ``resume``: a run id under ``runs_dir`` (every other setting comes from its ``config.json``).
    """
    t_start = time.perf_counter()
    if resume is not None:
        folder = RunFolder.open(resume, runs_dir, engine="proxyless")
        config = folder.read_config()
        plan = _resume_plan(folder, config)
    else:
        if run_id is not None:
            check_run_id(run_id)  # a bad name is refused before any data is loaded
        args = {k: v for k, v in locals().items() if k not in ("resume", "t_start")}
        plan = _new_plan(args)
        folder = RunFolder.prepare(runs_dir, run_id or _default_id(runs_dir, plan))
        config = base_config(
            "proxyless",
            folder.run_id,
            plan.cfg,
            plan.source,
            plan.deploy,
            {"text": plan.cfg["target"], "ms": plan.cfg["target_ms"], "range_ms": list(plan.latency.bounds())},
        )
        config["loss_settings"] = plan.loss.settings()
        folder.create(config)
    done = folder.read_result()
    if done is not None:
        return result_from_doc(folder.dir, done)
    with folder.running():
        trainer = make_trainer(
            plan.train_space,
            plan.cfg["mode"],
            plan.latency,
            plan.loss,
            plan.splits,
            plan.settings,
            plan.cfg["seed"],
            plan.device,
            folder.state_dir,
        )
        _train(folder, trainer, plan.cfg, progress)
        with torch_threads(plan.settings.threads if plan.device.type == "cpu" else None):
            doc = finish(folder, config, plan, trainer, t_start, progress)
    return result_from_doc(folder.dir, doc)


def _check_names(mode: str, loss: str, derive_method: str) -> None:
    if mode not in MODES:
        raise LatbenchError(f"unknown --mode {mode!r}; known: {', '.join(MODES)}")
    if loss not in LOSSES:
        raise LatbenchError(f"unknown --loss {loss!r}; known: {', '.join(LOSSES)}")
    if derive_method not in DERIVE_METHODS:
        raise LatbenchError(f"unknown --derive {derive_method!r}; known: {', '.join(DERIVE_METHODS)}")


def _train_settings(a: dict[str, Any]) -> TrainSettings:
    """The training settings of a new run, the named options over ``train_settings``; checked."""
    settings = a["train_settings"] or TrainSettings()
    for key, name, cast in (
        ("epochs", "epochs", int),
        ("warmup", "warmup_epochs", int),
        ("batch_size", "batch_size", int),
        ("alpha_lr", "alpha_lr", float),
        ("share_weights", "share_weights", bool),
    ):
        if a[key] is not None:
            setattr(settings, name, cast(a[key]))
    if settings.epochs < 1 or settings.warmup_epochs < 0:
        raise LatbenchError(f"--epochs must be >= 1 and --warmup >= 0, got {settings.epochs}, {settings.warmup_epochs}")
    if settings.batch_size < 1:
        raise LatbenchError(f"--batch-size must be >= 1, got {settings.batch_size}")
    if not (np.isfinite(settings.alpha_lr) and settings.alpha_lr > 0):
        raise LatbenchError(f"--alpha-lr must be > 0, got {settings.alpha_lr}")
    return settings


def _new_plan(a: dict[str, Any]) -> _Plan:
    """Check the settings of a new run and build what it needs; nothing is written."""
    if a["target"] is None:
        raise LatbenchError("give a latency --target (ms, e.g. 12ms, or a share of the range, e.g. 25%)")
    spec = parse_target_spec(a["target"])
    _check_names(a["mode"], a["loss"], a["derive_method"])
    settings = _train_settings(a)
    if int(a["top_k"]) < 1:
        raise LatbenchError(f"--top-k must be >= 1, got {a['top_k']}")
    if int(a["retrain"] or 0) < 0 or int(a["baseline"] or 0) < 0:
        raise LatbenchError(f"--retrain and --baseline must be >= 0, got {a['retrain']}, {a['baseline']}")
    deploy = get_space(a["space"], **{"resolution": a["resolution"], "width": a["width"], **(a["space_params"] or {})})
    space_layout(deploy)  # a space without one op per decision is refused before anything else
    source_args = {"device": a["device"], "table": a["table"], "predictor": a["predictor"]}
    source = _resolve_source(deploy, source_args)
    latency = ExpectedLatency(source.compiled)
    target_ms = parse_target(spec, latency.bounds())
    lp = dict(a["loss_params"] or {})
    if a["lam"] is not None:
        lp["lam"] = a["lam"]
    loss_obj = make_loss(a["loss"], target_ms, **lp)
    dev = torch_device(a["train_device"])
    probe = training_space(deploy, 10, a["train_resolution"], a["train_width"])
    splits = _load_data(a["data"], int(probe.params.get("resolution", 32)), a["seed"])
    train_space = training_space(deploy, splits.num_classes, a["train_resolution"], a["train_width"])
    cfg = {
        "space": deploy.name,
        "space_params": deploy.params,
        "train_space_params": train_space.params,
        "data": a["data"],
        "target": spec.text,
        "target_ms": target_ms,
        "loss": a["loss"],
        "loss_params": lp,
        "mode": a["mode"],
        "derive": a["derive_method"],
        "top_k": int(a["top_k"]),
        "seed": int(a["seed"]),
        "train": settings.to_dict(),
        "retrain": a["retrain"],
        "baseline": int(a["baseline"] or 0),
        "train_device": a["train_device"],
        "measure": bool(a["measure"]),
        "step_to_budget": bool(a["step_to_budget"]),
        "source_args": source_args,
    }
    return _Plan(cfg, deploy, source, latency, splits, train_space, settings, loss_obj, dev)


def _resume_plan(folder: RunFolder, config: dict[str, Any]) -> _Plan:
    """Rebuild a run's plan from its ``config.json``; refuses a latency source that changed since."""
    cfg = config["settings"]
    deploy = get_space(cfg["space"], **cfg["space_params"])
    source = _resolve_source(deploy, cfg["source_args"])
    before = config.get("latency_source", {}).get("vector_hash")
    if before != source_record(source)["vector_hash"]:
        raise LatbenchError(
            f"the latency source of run {folder.run_id} changed since it started ({source.description}); "
            "start a new run"
        )
    latency = ExpectedLatency(source.compiled)
    splits = _load_data(cfg["data"], cfg["train_space_params"].get("resolution", 32), cfg["seed"])
    train_space = get_space(cfg["space"], **cfg["train_space_params"])
    settings = TrainSettings.from_dict(cfg["train"])
    loss_obj = make_loss(cfg["loss"], cfg["target_ms"], **cfg.get("loss_params", {}))
    dev = torch_device(cfg.get("train_device", "auto"))
    return _Plan(cfg, deploy, source, latency, splits, train_space, settings, loss_obj, dev)


def _default_id(runs_dir: str | Path | None, plan: _Plan) -> str:
    cfg = plan.cfg
    return new_run_id(runs_root(runs_dir), "proxyless", cfg["space"], cfg["loss"], f"{cfg['target_ms']:.4g}ms")


def _resolve_source(deploy: SearchSpace, args: dict[str, Any]) -> Any:
    from latbench.service import resolve_latency_source

    return resolve_latency_source(
        deploy, device=args.get("device"), table=args.get("table"), predictor=args.get("predictor")
    )


def _load_data(data: str, resolution: int, seed: int) -> Any:
    from latbench.data import load_splits

    return load_splits(data, resolution=resolution, seed=seed)


def _train(folder: RunFolder, trainer: SupernetTrainer, cfg: dict[str, Any], progress: bool) -> None:
    """Resume from the last checkpoint, say so, and train to the end with a progress line."""
    from latbench.service import message, track

    resumed = trainer.load_checkpoint()
    if progress:
        what = f"resuming after epoch {trainer.epoch}" if resumed else "starting"
        message(
            f"proxyless run {folder.run_id}: {what} ({folder.dir}); interrupt with Ctrl-C and go on with "
            f"`latbench search proxyless --resume {folder.run_id}`",
            stream="err",
        )
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


def result_from_doc(run_dir: Path, d: dict[str, Any]) -> SearchResult:
    tv = d.get("trained_variant")
    return SearchResult(
        run_id=d["run_id"],
        run_dir=run_dir,
        arch=d["arch"],
        train_arch=tv["arch"] if tv else None,
        target_ms=float(d["target_ms"]),
        predicted_ms=float(d["predicted_ms"]),
        measured=d.get("measured"),
        doc=d,
    )
