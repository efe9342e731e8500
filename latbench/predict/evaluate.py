"""Accuracy of latency predictions, reported the way nn-Meter does.

:func:`accuracy` gives RMSE (ms), MAPE, the share of predictions within 5% and
10% of measured, and rank agreement (Spearman, Kendall). :func:`scatter_plot`
draws predicted vs measured (PNG). :func:`evaluate_archs` measures archs for
real on a backend (optionally twice, for the harness's own test-retest
agreement) and scores any number of predictors on the same measurements.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latbench.errors import LatbenchError
from latbench.predict.metrics import accuracy


def scatter_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    title: str = "predicted vs measured latency",
) -> Path:
    """Predicted (y) vs measured (x) in ms, one colour per series, with the y=x and +-10% lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6), dpi=110)
    lo, hi = np.inf, -np.inf
    for name, (pred, meas) in series.items():
        p, m = np.asarray(pred, dtype=float), np.asarray(meas, dtype=float)
        ax.scatter(m, p, s=14, alpha=0.75, label=name)
        lo, hi = min(lo, p.min(), m.min()), max(hi, p.max(), m.max())
    pad = 0.05 * (hi - lo if hi > lo else 1.0)
    xs = np.array([lo - pad, hi + pad])
    ax.plot(xs, xs, color="black", lw=1)
    ax.plot(xs, xs * 1.1, color="grey", lw=0.8, ls="--", label="+-10%")
    ax.plot(xs, xs * 0.9, color="grey", lw=0.8, ls="--")
    ax.set_xlim(*xs)
    ax.set_ylim(*xs)
    ax.set_xlabel("measured (ms)")
    ax.set_ylabel("predicted (ms)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(target)
    return target


def evaluate_archs(
    models: dict[str, Any],
    archs: list[dict[str, Any]],
    backend: Any,
    *,
    sentinel_ref_ms: float | None = None,
    retest: bool = False,
    progress: bool = True,
    config: Any = None,
    calib_archs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Measure ``archs`` on ``backend`` and score every model on the same measurements.

    With ``calib_archs`` those extra archs are measured in the same interleaved
    run and every model's end-to-end calibration is refitted on them before it
    is scored (*in-run calibration*: on a shared machine the level of a run
    moves with the load, and the glue is fitted at the level the evaluated
    archs were measured at). They are never scored.

    With ``retest`` everything is measured a second time and the first run is
    scored as a "predictor" of the second: the harness's own repeatability,
    which no predictor can be expected to beat. With ``calib_archs`` the retest
    is also given its in-run calibration (a scale fitted on the calibration
    archs between the two runs), so it gets the same information as the models.
    """
    from latbench.measure.networks import measure_archs, network_timing
    from latbench.predict.glue import fit_glue, fit_glue_on

    if not archs:
        raise LatbenchError("no archs to evaluate")
    calib = list(calib_archs or [])
    k = len(calib)
    config = config or network_timing(backend, None, None)
    ms, info = measure_archs(backend, calib + archs, config, sentinel_ref_ms, progress=progress)
    allm = np.array([m.median for m in ms])
    measured = allm[k:]
    result: dict[str, Any] = {
        "n_archs": len(archs),
        "timing": config.to_dict(),
        "measure_info": {kk: v for kk, v in info.items() if kk not in ("remeasured",)},
        "measured_ms": measured.tolist(),
        "measured_rel_iqr": [m.rel_iqr for m in ms[k:]],
        "models": {},
    }
    if k:
        result["in_run_calibration"] = {"archs": calib, "measured_ms": allm[:k].tolist()}
    for name, model in models.items():
        entry: dict[str, Any] = {}
        if k:
            stored = np.asarray(model.predict_archs(archs), dtype=np.float64)
            entry["with_stored_calibration"] = {
                "calibration": model.calibration.to_dict(),
                **accuracy(stored, measured),
            }
            fit = fit_glue_on(model, calib, allm[:k])
            entry["calibration"] = {"scale": fit["scale"], "offset_ms": fit["offset_ms"]}
        pred = np.asarray(model.predict_archs(archs), dtype=np.float64)
        result["models"][name] = {**entry, "predicted_ms": pred.tolist(), **accuracy(pred, measured)}
    if retest:
        ms2, _ = measure_archs(
            backend, calib + archs, config.with_(seed=config.seed + 1), sentinel_ref_ms, progress=progress
        )
        all2 = np.array([m.median for m in ms2])
        second = all2[k:]
        result["retest"] = {"measured_ms": second.tolist(), **accuracy(measured, second)}
        if k:
            # the first run, carried to the second run's level by the calibration archs, as a predictor of it
            cal = fit_glue(allm[:k], all2[:k])
            result["retest_in_run_calibrated"] = {
                "calibration": cal.to_dict(),
                **accuracy(np.asarray(cal.apply(measured)), second),
            }
    return result
