"""Shapes the reference never published: calibrate on its one table, predict other resolutions and widths.

    latbench emulation extrapolate --table EMU --reference REF --new-table EMU_NEW --truth REF_NEW \\
        [--shots 10|all] [--seeds 0-19] [--n-archs 200] [--json]

``EMU`` / ``REF``: the emulator's and the reference device's tables of the
same space (e.g. both at 224 px); the calibration sees ``--shots`` ops of
``REF`` only. ``EMU_NEW``: the emulator's table of the new shapes (another
resolution or width: the emulator times them for real); ``TRUTH``: the
reference device's own table of those shapes, used only to score. Without
a phone at hand, any device can play the reference: ``torch-cpu`` tables at
224 and 160 px, ``mobile-1t`` calibrated to the 224 one only.

Prints per seed and over seeds the share of new-shape ops within 10 % of
the truth and of the sums of random networks of the new space within 10 %,
beside a single scale factor fitted on the same shots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from latbench.errors import LatbenchError


def extrapolate(
    table: Any,
    reference: Any,
    new_table: Any,
    truth: Any,
    shots: int,
    seeds: list[int],
    *,
    model: str | None = None,
    n_archs: int = 200,
    parts_path: Path | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Calibrate ``table`` -> ``reference`` per seed; score the predictions of ``truth``'s ops from ``new_table``."""
    from latbench.emulation.transfer import DEFAULT_MODEL, EmulatorTimes, reference_archs
    from latbench.ops import OpSpec
    from latbench.progress import track
    from latbench.spaces import space_of

    model = model or DEFAULT_MODEL
    new_ops = [
        OpSpec.from_dict(r["spec"])
        for k, r in truth.rows.items()
        if k in new_table.rows and r["spec"]["type"] != "zero"
    ]
    if len(new_ops) < 3:
        raise LatbenchError(
            f"{new_table.path} and {truth.path} share only {len(new_ops)} op(s); build both for one space"
        )
    new_emu = EmulatorTimes(new_table, None)
    new_feats = {o.key: new_emu.features(o, parts=False) for o in new_ops}  # the same for every seed
    truth_ms = {o.key: truth.latency(o) for o in new_ops}
    archs = reference_archs(truth, set(truth_ms), n_archs, 0)
    arch_keys = [[o.key for o in space_of(a).ops_of(a)] for a in archs]
    per_seed: list[dict[str, Any]] = []
    with track("calibration seeds", len(seeds), show_progress) as update:
        for seed in seeds:
            per_seed.append(_one_seed(table, reference, shots, seed, model, parts_path, new_feats, truth_ms, arch_keys))
            update(len(per_seed))
    return _summary(table, reference, new_table, truth, model, shots, new_ops, archs, per_seed)


def _one_seed(
    table: Any,
    reference: Any,
    shots: int,
    seed: int,
    model: str,
    parts_path: Path | None,
    feats: dict[str, dict[str, float]],
    truth_ms: dict[str, float],
    arch_keys: list[list[str]],
) -> dict[str, Any]:
    """One calibration on the reference's shots, scored on the new shapes (ops and network sums)."""
    from latbench.emulation.transfer import DEFAULT_MODEL, calibrate, error_metrics, fit_calibration
    from latbench.ops import OpSpec

    cal, emu = calibrate(table, reference, shots, parts_path=parts_path, seed=seed, model=model, n_archs=0)
    if cal.needs_parts:
        raise LatbenchError(f"model {cal.model} reads part timings; use one that does not (e.g. {DEFAULT_MODEL})")
    pred = dict(zip(truth_ms, cal.predict_features([feats[k] for k in truth_ms]), strict=True))
    # the naive baseline: one scale factor on the same shots
    shot_feats = {k: emu.features(OpSpec.from_dict(reference.rows[k]["spec"]), parts=False) for k in cal.shots}
    naive = fit_calibration(
        shot_feats, {k: reference.rows[k]["median_ms"] for k in cal.shots}, cal.shots, model="scale"
    )
    pred_naive = dict(zip(truth_ms, naive.predict_features([feats[k] for k in truth_ms]), strict=True))
    y = np.array(list(truth_ms.values()))
    row: dict[str, Any] = {
        "seed": seed,
        "shots": cal.shots,
        "ops": error_metrics(np.array([pred[k] for k in truth_ms]), y),
        "ops_naive_scale": error_metrics(np.array([pred_naive[k] for k in truth_ms]), y),
    }
    if arch_keys:
        sums = np.array([sum(truth_ms[k] for k in keys) for keys in arch_keys])
        row["archs"] = error_metrics(np.array([sum(pred[k] for k in keys) for keys in arch_keys]), sums)
        row["archs_naive_scale"] = error_metrics(
            np.array([sum(pred_naive[k] for k in keys) for keys in arch_keys]), sums
        )
    return row


def _summary(
    table: Any,
    reference: Any,
    new_table: Any,
    truth: Any,
    model: str,
    shots: int,
    new_ops: list[Any],
    archs: list[Any],
    per_seed: list[dict[str, Any]],
) -> dict[str, Any]:
    """The result: per seed, and the median / worst / mean over seeds of each within-10 % share."""

    from latbench.emulation.sweep import seed_stats

    def stats(key: str) -> dict[str, float | None]:
        return seed_stats([r[key]["within_10"] for r in per_seed if key in r])

    return {
        "table": str(table.path),
        "reference": str(reference.path),
        "new_table": str(new_table.path),
        "truth": str(truth.path),
        "truth_space": [truth.space, truth.space_params],
        "model": model,
        "shots": shots,
        "new_ops": len(new_ops),
        "archs": len(archs),
        "ops_within_10": stats("ops"),
        "ops_naive_within_10": stats("ops_naive_scale"),
        "archs_within_10": stats("archs"),
        "archs_naive_within_10": stats("archs_naive_scale"),
        "per_seed": per_seed,
    }
