"""The README demo's predictor step (runs after the LUT-vs-measured step, see ``latbench.demo.demo_steps``).

Trains an xgboost predictor on the demo's table, fits the end-to-end glue on
half of the networks the previous step measured, and predicts the other half
(no new measurement): the LUT sum misses the glue, the calibrated model does not.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def step_predictor(ctx: Any) -> None:
    """Demo step: train + calibrate a predictor on what the demo already measured."""
    from latbench.predict.glue import fit_glue_on
    from latbench.predict.io import default_predictor_path, save_predictor
    from latbench.predict.metrics import accuracy
    from latbench.predict.training import train_predictor
    from latbench.progress import message

    done = ctx.results.get("lut_vs_measured")
    if not done:
        return
    measured = np.asarray(done["measured_ms"], dtype=np.float64)
    rng = np.random.default_rng(ctx.seed)  # the archs the LUT-vs-measured step drew
    archs = [ctx.space.from_indices(i) for i in ctx.space.sample_indices(rng, len(measured))]
    half = len(archs) // 2
    model = train_predictor("xgboost", [ctx.table], seed=ctx.seed, cv_folds=3, progress=False)
    fit = fit_glue_on(model, archs[:half], measured[:half])
    model.meta["calibration_fit"] = {**fit, "from": "demo step 3 (first half of its archs)"}
    path = save_predictor(model, default_predictor_path(ctx.profile.name, ctx.space.name, "xgboost"))
    pred = model.predict_archs(archs[half:])
    lut = np.asarray(done["lut_ms"], dtype=np.float64)[half:]
    acc_model, acc_lut = accuracy(pred, measured[half:]), accuracy(lut, measured[half:])
    message(
        f"[bold]{ctx.step}. predictor[/bold] xgboost on the table, glue fitted on {half} of those networks "
        f"({fit['scale']:.3f} x op sum + {fit['offset_ms']:.2f} ms), saved to {path}"
    )
    message(
        f"   on the other {len(pred)}: MAPE {100 * acc_model['mape']:.1f}% "
        f"(LUT sum {100 * acc_lut['mape']:.1f}%), within 10%: {100 * acc_model['within_10']:.0f}%"
    )
    ctx.results["predictor"] = {"path": str(path), "model": acc_model, "lut": acc_lut, **model.calibration.to_dict()}
