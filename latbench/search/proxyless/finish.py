"""The end of a ProxylessNAS run: derive the arch, measure it, keep within budget, write the run folder.

In order: derive the arch from the final alphas; measure the deployed
(deployment-space) arch where the source's device runs here and, when it lands
over the budget, derive within tighter budgets, measure those and deploy the
first within the budget by its own noise; export ``deployed.onnx``; build the
*trained variant* (the same choices on the small training images, with the
supernet's or retrained weights: ``trained-variant.onnx`` /
``trained-variant.safetensors``, labelled as such, never the deployed network);
then ``history.csv``, ``alpha.csv``, the trajectory, ``report.md`` and, last,
``result.json``.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from latbench import paths
from latbench.search.proxyless.checkpoint import save_tensors
from latbench.search.proxyless.derive import derive
from latbench.search.proxyless.engine import SupernetTrainer
from latbench.search.proxyless.latency import ExpectedLatency
from latbench.search.proxyless.report import alpha_csv, plot_trajectory, rows_csv, write_report
from latbench.search.runstore import RunFolder, make_result, measurement_record, over_budget_line, within_with_margin
from latbench.spaces import SearchSpace

if TYPE_CHECKING:
    from latbench.search.proxyless.api import _Plan

#: tighter budgets (as a share of target * predicted / measured) tried when the derived arch measures over budget
STEP_FACTORS = (1.0, 0.97, 0.94)


def finish(
    folder: RunFolder, config: dict[str, Any], plan: _Plan, trainer: SupernetTrainer, t_start: float, progress: bool
) -> dict[str, Any]:
    """Derive, measure (and step within budget), export, write every output; returns ``result.json``'s content."""
    cfg = plan.cfg
    probs = trainer.net.probs().detach().cpu().numpy()
    derived = _derive(probs, plan.latency, trainer, cfg)
    idx, measured, found, note = _measure_and_step(folder, plan, probs, derived, progress)
    arch = plan.deploy.from_indices(idx)
    predicted = plan.latency.of_indices(idx)
    paths.atomic_write_json(folder.deployed_json, arch)
    from latbench.export import export_arch

    export_arch(arch, folder.deployed_onnx)
    variant = _trained_variant(folder, plan, trainer, idx)
    with torch.no_grad():
        expected = float(plan.latency.expected(trainer.net.probs()))
    target_ms = float(cfg["target_ms"])
    details = {
        "gap_pct": 100.0 * (predicted / target_ms - 1.0),
        "derive": derived["method"],
        "argmax_ms": derived["argmax_ms"],
        "argmax_gap_pct": 100.0 * (derived["argmax_ms"] / target_ms - 1.0),
        "repaired_decisions": int((np.asarray(idx) != derived["argmax_idx"]).sum()),
        "settle_steps": trainer.settled,
        "expected_ms": expected,
        "bounds_ms": list(plan.latency.bounds()),
        "measured_device": plan.source.device if measured else None,
        "measured_fingerprint": plan.source.backend.fingerprint().id if measured else None,
        "measured_vs_predicted_pct": (100.0 * (measured["median_ms"] / predicted - 1.0)) if measured else None,
        "accuracy_of": variant.pop("accuracy_of"),
        "retrain": variant.pop("retrain"),
        "baseline": variant.pop("baseline"),
        "epochs_run": trainer.epoch,
        "seconds": time.perf_counter() - t_start,
        "search_seconds": float(sum(r.seconds for r in trainer.history)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "train_device": str(plan.device),
        "choices_table": [
            (d.name, d.options[int(j)], float(probs[i, int(j)]))
            for i, (d, j) in enumerate(zip(plan.deploy.decisions, idx, strict=True))
        ],
    }
    doc = make_result(
        engine="proxyless",
        run_id=folder.run_id,
        space=plan.deploy.name,
        target_ms=target_ms,
        predicted_ms=predicted,
        predicted_kind=plan.source.kind,
        measured=measured,
        arch=arch,
        trained_variant=variant,
        accuracy=variant.pop("accuracy"),
        measured_note=note,
        found=found,
        latency_source=plan.source.description,
        details=details,
    )
    _write_outputs(folder, config, plan, trainer, doc)
    folder.write_result(doc)
    return doc


def _derive(probs: np.ndarray, latency: ExpectedLatency, trainer: SupernetTrainer, cfg: dict[str, Any]) -> dict:
    """The derived arch's indices (``auto``: within-budget for the budget loss, else argmax) and the argmax arch."""
    target_ms = float(cfg["target_ms"])
    method = cfg["derive"]
    if method == "auto":
        method = "within-budget" if cfg["loss"] == "budget" else "argmax"
    band = getattr(trainer.loss, "band", None)
    floor = target_ms * (1.0 - band) if band is not None else None
    idx = derive(probs, latency, target_ms, method, int(cfg.get("top_k", 3)), floor_ms=floor)
    argmax_idx = probs.argmax(axis=1)
    return {"idx": idx, "method": method, "argmax_idx": argmax_idx, "argmax_ms": latency.of_indices(argmax_idx)}


def _measure(plan: _Plan, archs: list[dict[str, Any]], progress: bool) -> list[dict[str, Any]]:
    from latbench.service import measure_archs, network_timing

    backend = plan.source.backend
    ms, _ = measure_archs(backend, archs, network_timing(backend), plan.source.sentinel_ms, progress=progress)
    return [measurement_record(m) for m in ms]


def _measure_and_step(
    folder: RunFolder, plan: _Plan, probs: np.ndarray, derived: dict[str, Any], progress: bool
) -> tuple[np.ndarray, dict[str, Any] | None, dict[str, Any] | None, str | None]:
    """Measure the derived arch; over budget, step to a tighter derived arch measured within it.

    Returns (deployed indices, its measurement or None, the found arch's record when stepped, note).
    """
    from latbench.service import message

    cfg = plan.cfg
    idx = derived["idx"]
    if not cfg.get("measure", True):
        return idx, None, None, "measurement switched off (--no-measure)"
    if not plan.source.can_measure:
        return idx, None, None, f"the latency source ({plan.source.description}) is not a device that runs here"
    target = float(cfg["target_ms"])
    measured = _measure(plan, [plan.deploy.from_indices(idx)], progress)[0]
    if measured["median_ms"] <= target:
        return idx, measured, None, None
    message(over_budget_line(folder.run_id, target, measured["median_ms"], "the derived arch"), stream="err")
    if not cfg.get("step_to_budget", True):
        return idx, measured, None, None
    predicted = plan.latency.of_indices(idx)
    cands = _tighter(probs, plan.latency, target * predicted / measured["median_ms"], idx, int(cfg.get("top_k", 3)))
    found = {"arch": plan.deploy.from_indices(idx), "predicted_ms": predicted, "measured": measured}
    if cands:
        results = _measure(plan, [plan.deploy.from_indices(c) for c in cands], progress)
        for c, m in zip(cands, results, strict=True):
            if within_with_margin(m, target):
                message(
                    f"latbench: deploying a tighter derived arch instead: measured {m['median_ms']:.3f} ms "
                    f"(IQR {m['iqr_ms']:.3f}) within the {target:g} ms budget",
                    stream="err",
                )
                return c, m, found, None
    message(f"latbench: warning: run {folder.run_id}: no measured candidate is within the budget", stream="err")
    return idx, measured, None, None


def _tighter(
    probs: np.ndarray, latency: ExpectedLatency, scaled_ms: float, idx: np.ndarray, top_k: int
) -> list[np.ndarray]:
    """Distinct archs derived within budgets tighter than ``scaled_ms`` (other than ``idx``), most probable first."""
    from latbench.errors import LatbenchError

    lo, _ = latency.bounds()
    out: list[np.ndarray] = []
    for f in STEP_FACTORS:
        t = max(lo, scaled_ms * f)
        try:
            c = derive(probs, latency, t, "within-budget", max(top_k, 3))
        except LatbenchError:
            continue
        if not np.array_equal(c, idx) and not any(np.array_equal(c, o) for o in out):
            out.append(c)
    return out


def _trained_variant(folder: RunFolder, plan: _Plan, trainer: SupernetTrainer, idx: np.ndarray) -> dict[str, Any]:
    """The deployed arch's choices on the training images, with weights: ONNX + safetensors, labelled."""
    from latbench.export import export_onnx

    cfg, train_space = plan.cfg, plan.train_space
    train_arch = train_space.from_indices(idx)
    valid_acc = trainer.evaluate(trainer.xv, trainer.yv, idx)  # also recalibrates BN for the export below
    state = trainer.net.subnet_state(idx)
    weights_from = "supernet (inherited, BN re-estimated)"
    module = train_space.build(train_arch)
    module.load_state_dict(state)
    accuracy, accuracy_of = valid_acc, f"the trained variant with supernet weights, on the valid split of {cfg['data']}"
    retrain_doc = baseline_doc = None
    if cfg.get("retrain"):
        from latbench.search.proxyless.retrain import retrain

        res, module = retrain(
            train_space, train_arch, plan.splits, int(cfg["retrain"]), seed=int(cfg["seed"]), device=plan.device,
            threads=int(cfg.get("train", {}).get("threads", 1)),
        )  # fmt: skip
        retrain_doc = res.to_dict()
        state = module.state_dict()
        weights_from = f"retrained from scratch for {cfg['retrain']} epochs"
        accuracy, accuracy_of = (
            res.test_acc,
            f"the trained variant retrained from scratch, on the test split of {cfg['data']}",
        )
        if int(cfg.get("baseline") or 0) > 0:
            baseline_doc = _baseline(train_space, plan.latency, float(cfg["target_ms"]), plan.splits, cfg, plan.device)
    weights = folder.dir / "trained-variant.safetensors"
    save_tensors(
        weights, state,
        metadata={"arch": json.dumps(train_arch), "weights": weights_from, "format": "state_dict of space.build(arch)"},
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    export_onnx((module.eval(), torch.randn(*train_space.input_shape, generator=g)), folder.trained_variant_onnx)
    return {
        "label": (
            f"training variant, not the deployed network: the deployed arch's choices at {train_space.params} "
            f"(the deployed arch is {plan.deploy.params}); its latency is not the reported one"
        ),
        "arch": train_arch,
        "onnx": folder.trained_variant_onnx.name,
        "weights": weights.name,
        "weights_from": weights_from,
        "supernet_valid_acc": valid_acc,
        "accuracy": accuracy,
        "accuracy_of": accuracy_of,
        "retrain": retrain_doc,
        "baseline": baseline_doc,
    }


def _write_outputs(
    folder: RunFolder, config: dict[str, Any], plan: _Plan, trainer: SupernetTrainer, doc: dict[str, Any]
) -> None:
    cfg = plan.cfg
    target_ms = float(cfg["target_ms"])
    paths.atomic_write_text(folder.dir / "alpha.csv", alpha_csv(trainer.alpha_log, plan.deploy))
    history = [asdict(r) for r in trainer.history]
    paths.atomic_write_text(folder.history_path, rows_csv(history))
    paths.atomic_write_text(folder.dir / "trajectory.csv", rows_csv(trainer.trajectory))
    plot_trajectory(
        trainer.trajectory,
        target_ms,
        tuple(doc["details"]["bounds_ms"]),
        folder.dir / "trajectory.png",
        f"{plan.deploy.name}, loss {cfg['loss']}, mode {cfg['mode']}: target {target_ms:.2f} ms, "
        f"derived {doc['predicted_ms']:.2f} ms",
    )
    write_report(folder.dir, doc, config, history)


def _baseline(
    train_space: SearchSpace,
    latency: ExpectedLatency,
    target_ms: float,
    splits: Any,
    cfg: dict[str, Any],
    dev: torch.device,
) -> dict[str, Any]:
    """``cfg["baseline"]`` random archs within the budget, retrained with the same recipe (median test accuracy)."""
    from latbench.search.proxyless.retrain import random_archs_under_budget, retrain

    n = int(cfg["baseline"])
    idxs = random_archs_under_budget(latency, target_ms, n, seed=int(cfg["seed"]) + 1)
    accs, preds = [], []
    for idx in idxs:
        res, _ = retrain(
            train_space, train_space.from_indices(idx), splits, int(cfg["retrain"]), seed=int(cfg["seed"]),
            device=dev, threads=int(cfg.get("train", {}).get("threads", 1)),
        )  # fmt: skip
        accs.append(res.test_acc)
        preds.append(latency.of_indices(idx))
    return {
        "n": n,
        "test_accs": accs,
        "predicted_ms": preds,
        "median_test_acc": float(np.median(accs)),
        "archs": [train_space.from_indices(i)["choices"] for i in idxs],
    }
