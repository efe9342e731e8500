"""Training a predictor end to end: fit on tables, score it honestly, calibrate, record provenance.

:func:`train_predictor` is what ``latbench predictor train`` runs. The
metrics it stores are out-of-sample: op-level accuracy from K-fold
cross-validation over the table rows (``ops``); op-level accuracy off the
table's sizes (``ops_off_range``: the rows at the smallest and the largest
input size and output width of each op type, each group predicted by a model
fitted on all other rows, so every held-out op lies outside the fitted range);
the same for every input size held out in turn (``ops_unseen_hw``: a network
at another resolution has maps inside the table's range that the table never
had); and, when the table covers a search space, arch-level accuracy of the
out-of-fold op predictions summed over 1,000 random archs against the table's
own LUT sums. End-to-end accuracy on measured networks comes from
``latbench predictor eval``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from latbench import paths
from latbench.device import library_versions, now_iso
from latbench.errors import LatbenchError
from latbench.ops import OpSpec
from latbench.predict.glue import fit_glue_on, load_measurements, measure_and_fit_glue
from latbench.predict.metrics import accuracy
from latbench.predict.models import (
    HOLD_OUT_MIN_ROWS,
    OFF_RANGE_FIELDS,
    UNSEEN_BINS,
    cross_val_predict_ops,
    fit_model,
    held_out_predict_ops,
    off_range_groups,
    table_rows,
    unseen_hw_groups,
)
from latbench.spaces import SPACES, SearchSpace, get_space
from latbench.table import LatencyTable


def space_of_tables(tables: list[LatencyTable]) -> SearchSpace | None:
    """The search space of the first table that was built for one (sampled tables have none)."""
    for t in tables:
        if t.space in SPACES:
            return get_space(t.space, **(t.space_params or {}))
    return None


def arch_level_metrics(
    space: SearchSpace, tables: list[LatencyTable], ops: list[Any], op_pred: np.ndarray, *, n: int = 1000, seed: int = 0
) -> dict[str, Any] | None:
    """Out-of-fold op predictions summed over ``n`` random archs vs the tables' LUT sums (None if not covered)."""
    index = {o.key: i for i, o in enumerate(ops)}
    vocab = space.vocabulary
    if any(o.key not in index for o in vocab):
        return None
    pred_vec = np.array([op_pred[index[o.key]] for o in vocab])
    if not np.all(np.isfinite(pred_vec)):
        return None
    lut_vec = np.array([next(t.latency(o) for t in tables if o.key in t) for o in vocab])
    idx = space.sample_indices(np.random.default_rng([seed, 0xA5C]), n)
    ids = space.op_ids(idx)
    pred = np.append(pred_vec, 0.0)[ids].sum(axis=1)
    lut = np.append(lut_vec, 0.0)[ids].sum(axis=1)
    return {"archs": n, "space": space.name, "space_params": space.params, "truth": "lut_sum", **accuracy(pred, lut)}


def train_predictor(
    model_name: str,
    tables: list[LatencyTable],
    *,
    seed: int = 0,
    regressor: Any = None,
    calib_archs: int = 0,
    backend: Any = None,
    device: dict[str, Any] | None = None,
    sentinel_ref_ms: float | None = None,
    cv_folds: int = 5,
    progress: bool = True,
    calib_from: str | None = None,
    out: str | Path | None = None,
) -> Any:
    """Fit ``model_name`` on ``tables``, score it out of sample, calibrate on ``calib_archs`` measured networks.

    ``calib_from`` calibrates on networks already measured on the table's device
    instead (a ``latbench measure --arch ... --out`` file). Everything that can
    be refused (destination, rows, the glue's device) is refused before training.

    The returned model carries ``meta`` (device, versions, space, training
    provenance, metrics, calibration fit) that :func:`~latbench.predict.io.save_predictor` writes.
    """
    ops, ms = _check_request(model_name, tables, regressor, out)
    space = space_of_tables(tables)
    _check_glue_request(tables, space, calib_archs, calib_from, backend)
    model = fit_model(model_name, tables, seed=seed, regressor=regressor)
    if model_name == "lut" and regressor is None:
        metrics: dict[str, Any] = {
            "ops": {"note": "exact lookup: reproduces every table row; cannot predict ops it has not seen"}
        }
    else:
        metrics = _out_of_sample_metrics(model, model_name, tables, space, ops, ms, cv_folds, seed, regressor)
    model.meta = {
        "device": device or tables[0].device,
        "versions": library_versions(),
        "space": space.name if space else tables[0].space,
        "space_params": space.params if space else tables[0].space_params,
        "created": now_iso(),
        "training": _training_record(model, tables, ops, seed, cv_folds),
        "metrics": metrics,
    }
    if calib_from is not None:
        archs, measured, _ = load_measurements(calib_from)
        fit = fit_glue_on(model, archs, measured)
        model.meta["calibration_fit"] = {**fit, "from": str(calib_from)}
        model.meta["metrics"]["calibration_in_sample"] = fit["after_in_sample"]
    if calib_archs:
        fit = measure_and_fit_glue(
            model, backend, space, calib_archs, seed=seed, sentinel_ref_ms=sentinel_ref_ms, progress=progress
        )
        model.meta["calibration_fit"] = fit
        model.meta["metrics"]["calibration_in_sample"] = fit["after_in_sample"]
    return model


def _check_request(
    model_name: str, tables: list[LatencyTable], regressor: Any, out: str | Path | None
) -> tuple[list[OpSpec], np.ndarray]:
    """The training rows, after refusing what cannot train: no table, too few rows, an unwritable destination."""
    if not tables:
        raise LatbenchError("give at least one --table")
    if out is not None:  # the destination first: a read-only folder is one line now, not after the training
        paths.check_writable_target(out)
        paths.ensure_writable_dir(Path(out).parent)
    ops, ms = table_rows(tables)
    names = ", ".join(str(t.path or t.name) for t in tables)
    if not ops:
        raise LatbenchError(f"no training rows: table {names} is empty")
    if len(ops) < 2 and not (model_name == "lut" and regressor is None):
        raise LatbenchError(
            f"only {len(ops)} training row in {names}: model {model_name!r} needs at least 2 (its out-of-sample "
            "metrics hold rows out); measure more ops, or use --model lut"
        )
    return ops, ms


def _check_glue_request(
    tables: list[LatencyTable], space: Any, calib_archs: int, calib_from: str | None, backend: Any
) -> None:
    """Refuse a glue fit that cannot be right before any training: measurements of another device, or no
    device (of the table's fingerprint) to measure networks on."""
    table_id = tables[0].fingerprint_id
    if calib_from is not None:
        if calib_archs:
            raise LatbenchError("give --calib-archs or --calib-from, not both")
        _, _, fp_id = load_measurements(calib_from)
        if fp_id != table_id:
            raise LatbenchError(f"--calib-from {calib_from} was measured on {fp_id}, the table on {table_id}")
    if not calib_archs:
        return
    if backend is None:
        raise LatbenchError(
            f"--calib-archs needs a device to measure networks on; table {tables[0].name} is from "
            f"{tables[0].device.get('backend', '?')} device {table_id}"
        )
    if space is None:
        raise LatbenchError("--calib-archs needs a table of a search space (to sample networks from)")
    if backend.fingerprint().id != table_id:
        raise LatbenchError(
            f"--calib-archs: this device is {backend.fingerprint().id} but the table was measured on "
            f"{table_id}; calibrate on the table's device"
        )


def _out_of_sample_metrics(
    model: Any,
    model_name: str,
    tables: list[LatencyTable],
    space: Any,
    ops: list[OpSpec],
    ms: np.ndarray,
    cv_folds: int,
    seed: int,
    regressor: Any,
) -> dict[str, Any]:
    """Cross-validated op metrics (overall and per op type), the held-out size splits (:func:`held_out_metrics`)
    and, for a space's table, arch-level metrics."""
    oof = cross_val_predict_ops(model_name, ops, ms, folds=cv_folds, seed=seed, regressor=regressor)
    ok = np.isfinite(oof)
    metrics: dict[str, Any] = {
        "ops": {"method": f"{cv_folds}-fold cross-validation over table rows", **accuracy(oof[ok], ms[ok])}
    }
    per_type = {}
    for t in sorted({o.type for o in ops}):
        sel = np.array([o.type == t for o in ops]) & ok
        if sel.sum() >= 3:
            per_type[t] = accuracy(oof[sel], ms[sel])
    metrics["ops_per_type"] = per_type
    metrics.update(held_out_metrics(model_name, ops, ms, seed=seed, regressor=regressor))
    if space is not None:
        # an op whose type has a single row cannot be predicted out of fold: use the full model there
        lone = np.flatnonzero(~ok)
        filled = oof.copy()
        if len(lone):
            filled[lone] = model.predict_ops([ops[i] for i in lone])
        arch = arch_level_metrics(space, tables, ops, filled, seed=seed)
        if arch is not None and len(lone):
            arch["in_sample_ops"] = [ops[i].key for i in lone]
        if arch is not None:
            metrics["archs_vs_lut_sum"] = arch
    return metrics


def held_out_metrics(
    model_name: str, ops: list[OpSpec], ms: np.ndarray, *, seed: int = 0, regressor: Any = None
) -> dict[str, Any]:
    """Accuracy on the two held-out size splits of :mod:`latbench.predict.models`: ``ops_off_range`` (the rows at
    the smallest and the largest ``hw`` and ``cout`` of each op type) and ``ops_unseen_hw`` (leave-one-``hw``-out).

    Each is pooled over every held-out prediction (an op at two ends, e.g. the
    smallest map and the widest output, counts twice) with per-group figures;
    a split is absent when no op type has the rows to hold a group out.
    """
    splits = {
        "ops_off_range": (
            off_range_groups(ops),
            f"per op type with >= {HOLD_OUT_MIN_ROWS} rows, its rows at the smallest and at the largest "
            f"{' and '.join(OFF_RANGE_FIELDS)}, each group predicted by a model fitted on all other rows "
            "(every held-out op lies outside the fitted range)",
        ),
        "ops_unseen_hw": (
            unseen_hw_groups(ops),
            f"per op type with >= {HOLD_OUT_MIN_ROWS} rows, leave-one-hw-out over every input size (at most "
            f"{UNSEEN_BINS} groups of neighbouring sizes), each group predicted by a model fitted on all other rows",
        ),
    }
    out: dict[str, Any] = {}
    for key, (groups, method) in splits.items():
        if not groups:
            continue
        done = held_out_predict_ops(model_name, ops, ms, groups, seed=seed, regressor=regressor)
        pred = np.concatenate([g["predicted_ms"] for g in done])
        truth = np.concatenate([ms[g["rows"]] for g in done])
        per_group = []
        for g in done:
            acc = accuracy(g["predicted_ms"], ms[g["rows"]])
            per_group.append(
                {
                    **{k: g[k] for k in ("op_type", "field", "end", "values", "fitted_range")},
                    **{k: acc[k] for k in ("n", "mape", "bias", "within_10")},
                }
            )
        out[key] = {"method": method, **accuracy(pred, truth), "groups": per_group}
    return out


def stored_held_out(meta: dict[str, Any], key: str = "ops_off_range") -> dict[str, float] | None:
    """The pooled figures of held-out split ``key`` recorded in a loaded predictor's metrics (no per-group list), or
    None when the file has none (trained before the split existed, or not a regression model) or they are malformed."""
    rec = (meta.get("metrics") or {}).get(key) if isinstance(meta.get("metrics"), dict) else None
    need = ("n", "rmse_ms", "mape", "within_5", "within_10", "spearman", "kendall")
    if not isinstance(rec, dict) or not all(isinstance(rec.get(k), (int, float)) for k in need):
        return None
    return {k: v for k, v in rec.items() if k != "groups"}


def _training_record(
    model: Any, tables: list[LatencyTable], ops: list[OpSpec], seed: int, cv_folds: int
) -> dict[str, Any]:
    """What the model was trained on: each table (path, hash, fingerprint, source), rows per op type, settings."""
    return {
        "tables": [
            {
                "path": str(t.path) if t.path else None,
                "name": t.name,
                "space": t.space,
                "content_hash": t.content_hash(),
                "rows": len(t),
                "fingerprint": t.fingerprint_id,
                "source": t.source or None,
            }
            for t in tables
        ],
        "rows": len(ops),
        "op_types": {t: int(sum(o.type == t for o in ops)) for t in sorted({o.type for o in ops})},
        "seed": seed,
        "cv_folds": cv_folds,
        "regressor": _regressor_record(model),
    }


def _regressor_record(model: Any) -> dict[str, Any] | None:
    reg = getattr(model, "regressor", None)
    if reg is None:
        return None
    params = {}
    for k, v in reg.get_params(deep=True).items():
        if v is None or isinstance(v, (bool, int, float, str)):
            params[k] = v
    return {"class": f"{type(reg).__module__}.{type(reg).__name__}", "params": params}
