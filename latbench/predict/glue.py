"""Whole-network glue: the time between ops, fitted on a handful of measured networks.

Ops are timed one at a time; a whole network also pays framework overhead
per layer, gets fused or cache-friendly neighbours, and moves memory between
layers. :func:`fit_glue` fits ``measured = scale * op_sum + offset_ms``
for relative error (least squares of ``(prediction - measured) / measured``)
on ``K`` networks; :func:`measure_and_fit_glue` samples ``K`` archs of a space, measures
them end to end on a backend and sets the model's
:class:`~latbench.predict.base.E2ECalibration`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from latbench.errors import LatbenchError
from latbench.predict.base import E2ECalibration
from latbench.predict.metrics import accuracy
from latbench.spaces import Arch, SearchSpace


def fit_glue(op_sums: Any, measured_ms: Any, *, with_offset: bool | None = None) -> E2ECalibration:
    """``scale`` and ``offset_ms`` so that ``scale * op_sum + offset_ms`` fits ``measured_ms`` (relative error).

    With fewer than 4 networks (or ``with_offset=False``) only ``scale`` is
    fitted; an offset that would come out negative is dropped too.
    """
    x = np.asarray(op_sums, dtype=np.float64)
    y = np.asarray(measured_ms, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise LatbenchError("calibration needs one op sum per measured network")
    if np.any(y <= 0) or np.any(x <= 0):
        raise LatbenchError("calibration needs positive op sums and measured latencies")
    if with_offset is None:
        with_offset = len(x) >= 4 and np.ptp(x) > 0
    w = 1.0 / y
    if with_offset:
        A = np.stack([x * w, w], axis=1)
        (scale, offset), *_ = np.linalg.lstsq(A, np.ones_like(y), rcond=None)
        if offset >= 0 and scale > 0:
            return E2ECalibration(float(scale), float(offset))
    scale = float(np.sum(x * w) / np.sum((x * w) ** 2))
    return E2ECalibration(scale, 0.0)


def calibration_archs(space: SearchSpace, k: int, seed: int) -> list[Arch]:
    """``k`` random archs of ``space`` for calibration (seed chosen apart from evaluation seeds)."""
    rng = np.random.default_rng([seed, 0xCA1])
    return [space.from_indices(i) for i in space.sample_indices(rng, k)]


def fit_glue_on(model: Any, archs: list[Arch], measured_ms: Any, *, with_offset: bool | None = None) -> dict[str, Any]:
    """Fit ``model.calibration`` to archs already measured end to end (ms); returns the fit record."""
    measured = np.asarray(measured_ms, dtype=np.float64)
    if len(archs) != len(measured) or not len(archs):
        raise LatbenchError("calibration needs one measured latency per arch")
    model.calibration = E2ECalibration()
    model.__dict__.pop("_compiled", None)
    sums = np.asarray(model.predict_archs(archs), dtype=np.float64)
    cal = fit_glue(sums, measured, with_offset=with_offset)
    model.calibration = cal
    model.__dict__.pop("_compiled", None)
    after = np.asarray(model.predict_archs(archs), dtype=np.float64)
    return {
        "archs": len(archs),
        "op_sum_ms": sums.tolist(),
        "measured_ms": measured.tolist(),
        "before": accuracy(sums, measured),
        "after_in_sample": accuracy(after, measured),
        **cal.to_dict(),
    }


def load_measurements(path: str | Path) -> tuple[list[Arch], np.ndarray, str]:
    """Archs, median ms and device fingerprint id from a ``latbench measure --arch ... --out`` file."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
        rows = doc["results"]
        archs = [r["arch"] for r in rows]
        ms = np.array([float(r["median_ms"]) for r in rows])
        fp = str(doc["fingerprint"])
    except FileNotFoundError:
        raise LatbenchError(f"measurement file not found: {p}") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise LatbenchError(f"{p}: not a `latbench measure --out` file ({type(exc).__name__}: {exc})") from None
    if not archs or not all(isinstance(a, dict) for a in archs):
        raise LatbenchError(f"{p}: has no measured archs (ONNX measurements cannot calibrate)")
    return archs, ms, fp


def measure_and_fit_glue(
    model: Any,
    backend: Any,
    space: SearchSpace,
    k: int,
    *,
    seed: int = 0,
    sentinel_ref_ms: float | None = None,
    progress: bool = True,
    with_offset: bool | None = None,
) -> dict[str, Any]:
    """Measure ``k`` random archs of ``space`` on ``backend`` and fit ``model.calibration`` to them.

    Returns the fit record (archs, op sums, measured ms, calibration, in-sample
    accuracy before and after), which training stores in the predictor.
    """
    from latbench.measure.networks import measure_archs, network_timing

    if k < 1:
        raise LatbenchError(f"--calib-archs must be >= 1, got {k}")
    archs = calibration_archs(space, k, seed)
    ms, info = measure_archs(backend, archs, network_timing(backend, None, None), sentinel_ref_ms, progress=progress)
    fit = fit_glue_on(model, archs, [m.median for m in ms], with_offset=with_offset)
    return {
        **fit,
        "seed": seed,
        "space": space.name,
        "space_params": space.params,
        "measure_info": {kk: v for kk, v in info.items() if kk != "remeasured"},
    }
