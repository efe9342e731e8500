"""Shapes the reference never published: calibrate on its one table, predict other resolutions and widths.

    python -m latbench.emulation.extrapolate --table EMU --reference REF --new-table EMU_NEW --truth REF_NEW \\
        [--shots 10|all] [--seeds 0-19] [--archs 200] [--json]

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

import argparse
import json
import sys
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
) -> dict[str, Any]:
    """Calibrate ``table`` -> ``reference`` per seed; score the predictions of ``truth``'s ops from ``new_table``."""
    from latbench.emulation.transfer import (
        DEFAULT_MODEL,
        EmulatorTimes,
        calibrate,
        error_metrics,
        fit_calibration,
        reference_archs,
    )
    from latbench.ops import OpSpec

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
    truth_ms = {o.key: truth.latency(o) for o in new_ops}
    archs = reference_archs(truth, set(truth_ms), n_archs, 0)
    from latbench.spaces import space_of

    arch_keys = [[o.key for o in space_of(a).ops_of(a)] for a in archs]
    per_seed = []
    for seed in seeds:
        cal, emu = calibrate(table, reference, shots, parts_path=parts_path, seed=seed, model=model, n_archs=0)
        parts = cal.needs_parts
        if parts:
            raise LatbenchError(f"model {cal.model} reads part timings; use one that does not (e.g. {DEFAULT_MODEL})")
        feats = {o.key: new_emu.features(o, parts=False) for o in new_ops}
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
        if archs:
            sums = np.array([sum(truth_ms[k] for k in keys) for keys in arch_keys])
            row["archs"] = error_metrics(np.array([sum(pred[k] for k in keys) for keys in arch_keys]), sums)
            row["archs_naive_scale"] = error_metrics(
                np.array([sum(pred_naive[k] for k in keys) for keys in arch_keys]), sums
            )
        per_seed.append(row)

    def stats(key: str) -> dict[str, float] | None:
        vals = [r[key]["within_10"] for r in per_seed if key in r]
        if not vals:
            return None
        return {"median": float(np.median(vals)), "worst": float(min(vals)), "mean": float(np.mean(vals))}

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


def main(argv: list[str] | None = None) -> int:
    from latbench.emulation.sweep import parse_seeds
    from latbench.emulation.transfer import load_reference, parse_shots
    from latbench.table import LatencyTable

    ap = argparse.ArgumentParser(prog="python -m latbench.emulation.extrapolate", description=__doc__.split("\n")[0])
    ap.add_argument("--table", required=True, help="emulator table of the reference's shapes")
    ap.add_argument("--reference", required=True, help="reference device's table (the only one the fit sees)")
    ap.add_argument("--new-table", required=True, help="emulator table of the new shapes")
    ap.add_argument("--truth", required=True, help="reference device's table of the new shapes (scoring only)")
    ap.add_argument("--shots", default="10", help="reference ops the fit sees: a number, or 'all' (its whole table)")
    ap.add_argument("--seeds", default="0-19")
    ap.add_argument("--model", default=None)
    ap.add_argument("--archs", type=int, default=200)
    ap.add_argument("--parts", type=Path, default=None, help="parts table of --table (default <table>.parts.json)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        shots = parse_shots(args.shots)
        table = LatencyTable.load(args.table)
        parts = args.parts or (table.path.with_name(table.path.stem + ".parts.json") if table.path else None)
        result = extrapolate(
            table,
            load_reference(args.reference),
            LatencyTable.load(args.new_table),
            load_reference(args.truth),
            shots,
            parse_seeds(args.seeds),
            model=args.model,
            n_archs=args.archs,
            parts_path=parts if parts is not None and parts.exists() else None,
        )
    except LatbenchError as exc:
        print(f"latbench: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"calibrated {result['table']} -> {result['reference']} ({args.shots} shots, model {result['model']})")
    print(
        f"predicting {result['truth']} ({result['new_ops']} ops, {result['archs']} networks) from {result['new_table']}"
    )
    for r in result["per_seed"]:
        a = r.get("archs", {}).get("within_10")
        print(
            f"seed {r['seed']:3d}  ops within 10% {100 * r['ops']['within_10']:5.1f}% "
            f"(one scale {100 * r['ops_naive_scale']['within_10']:5.1f}%)  networks within 10% "
            + (f"{100 * a:5.1f}%" if a is not None else "n/a")
        )
    for key, label in (("ops_within_10", "ops"), ("archs_within_10", "networks")):
        s = result[key]
        if s:
            med, worst, mean = (100 * s[k] for k in ("median", "worst", "mean"))
            print(f"{label:<9} median {med:.1f}%  worst {worst:.1f}%  mean {mean:.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
