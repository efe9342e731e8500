"""How well does a calibration transfer? The same fit over many shot seeds, scored on what it never saw.

    python -m latbench.emulation.sweep --table T --reference R --shots 10 --seeds 0-19 [--model hybrid] [--json]

``T`` is an emulator table (e.g. ``latbench table build --device mobile-1t
--space proxyless-mobile``), ``R`` the reference device's table (a shipped
``tables/pixel1/proxyless-mobile.json`` or a published YAML LUT). For each
seed latbench chooses the shots (spread over positions, kernels and
expansions: :func:`latbench.emulation.transfer.select_shots`), fits on them
only, and scores the unseen ops and the LUT sums of random archs. The output
gives per seed the shots chosen, the share of unseen ops within 10 % and of
arch sums within 10 %, and over the seeds the median and the worst.

Emulator timings of op parts come from ``--parts`` (default: beside the
table, ``<table>.parts.json``, as ``latbench calibrate`` writes it); parts
missing from it are timed on the emulator when the table's device can run
here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from latbench.errors import LatbenchError


def parse_seeds(text: str) -> list[int]:
    """``"0-19"`` -> 0..19, ``"0,3,5"`` -> those; refuses anything else in one line."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                out += range(lo, hi + 1)
            elif part:
                out.append(int(part))
    except ValueError:
        raise LatbenchError(f"--seeds must look like 0-19 or 0,3,5, got {text!r}") from None
    if not out:
        raise LatbenchError("--seeds names no seed")
    return out


def sweep(
    table: Any,
    reference: Any,
    shots: int,
    seeds: list[int],
    *,
    model: str | None = None,
    stat: str = "p25",
    n_archs: int = 200,
    parts_path: Path | None = None,
    backend: Any = None,
    shot_keep: float | None = None,
) -> dict[str, Any]:
    """Calibrate once per seed; per-seed unseen-op and arch-sum figures, with their median and worst."""
    from latbench.emulation.transfer import DEFAULT_MODEL, SHOT_KEEP, calibrate

    model = model or DEFAULT_MODEL
    keep = SHOT_KEEP if shot_keep is None else shot_keep
    per_seed = []
    for seed in seeds:
        cal, _ = calibrate(
            table,
            reference,
            shots,
            backend=backend,
            parts_path=parts_path,
            seed=seed,
            model=model,
            stat=stat,
            n_archs=n_archs,
            shot_keep=keep,
        )
        m = cal.metrics
        per_seed.append(
            {
                "seed": seed,
                "model": cal.model,
                "shots": cal.shots,
                "unseen_ops_within_10": m["unseen_ops"].get("within_10"),
                "unseen_ops_mape": m["unseen_ops"].get("mape"),
                "unseen_ops_naive_within_10": m["unseen_ops_naive_scale"].get("within_10"),
                "arch_sums_within_10": (m.get("arch_lut_sums") or {}).get("within_10"),
                "arch_sums_mape": (m.get("arch_lut_sums") or {}).get("mape"),
                "unseen_ops": m["unseen_ops"].get("n"),
                "archs": (m.get("arch_lut_sums") or {}).get("archs", 0),
            }
        )

    def stats(key: str) -> dict[str, float | None]:
        vals = [r[key] for r in per_seed if r[key] is not None]
        if not vals:
            return {"median": None, "worst": None, "mean": None}
        return {"median": float(np.median(vals)), "worst": float(min(vals)), "mean": float(np.mean(vals))}

    return {
        "table": str(table.path or table.name),
        "reference": str(reference.path or reference.name),
        "shots": shots,
        "model": model,
        "stat": stat,
        "shot_keep": keep,
        "seeds": seeds,
        "unseen_ops_within_10": stats("unseen_ops_within_10"),
        "unseen_ops_naive_within_10": stats("unseen_ops_naive_within_10"),
        "arch_sums_within_10": stats("arch_sums_within_10"),
        "per_seed": per_seed,
    }


def _emulator_backend(table: Any) -> Any:
    """The table's emulator backend when this machine is that device (to time missing parts), else ``None``."""
    from latbench.backends import get_backend

    name = (table.device or {}).get("backend") or table.fingerprint.get("backend")
    if not name or name in ("published", "calibrated", "emulated"):
        return None
    try:
        be = get_backend(
            name, **{k: v for k, v in ((table.device or {}).get("settings") or {}).items() if v is not None}
        )
    except LatbenchError:
        return None
    if be.fingerprint().id != table.fingerprint_id:
        be.close()
        return None
    return be


def main(argv: list[str] | None = None) -> int:
    from latbench.emulation.transfer import load_reference
    from latbench.table import LatencyTable

    ap = argparse.ArgumentParser(prog="python -m latbench.emulation.sweep", description=__doc__.split("\n")[0])
    ap.add_argument("--table", required=True, help="emulator table (path or <device>/<space>)")
    ap.add_argument("--reference", required=True, help="reference device's table or published YAML LUT")
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--seeds", default="0-19", help="e.g. 0-19 or 0,3,5")
    ap.add_argument("--model", default=None, help="calibration model (default time-roofline; auto, or a model name)")
    ap.add_argument("--stat", default="p25", help="emulator number per row: p25, p10, min or median")
    ap.add_argument("--archs", type=int, default=200, help="random archs whose LUT sums are scored")
    ap.add_argument("--parts", type=Path, default=None, help="table of op parts (default <table>.parts.json)")
    ap.add_argument(
        "--shot-keep", type=float, default=None, help="share of candidate shots kept by emulator confidence (1 = all)"
    )
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    try:
        table = LatencyTable.load(args.table)
        reference = load_reference(args.reference)
        seeds = parse_seeds(args.seeds)
        if table.path is None:
            raise LatbenchError(f"table {args.table} has no file")
        parts = args.parts or table.path.with_name(table.path.stem + ".parts.json")
        backend = _emulator_backend(table)
        try:
            result = sweep(
                table,
                reference,
                args.shots,
                seeds,
                model=args.model,
                stat=args.stat,
                n_archs=args.archs,
                parts_path=parts,
                backend=backend,
                shot_keep=args.shot_keep,
            )
        finally:
            if backend is not None:
                backend.close()
    except LatbenchError as exc:
        print(f"latbench: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{result['table']} -> {result['reference']}: {args.shots} shots, model {result['model']}, stat {args.stat}")
    for r in result["per_seed"]:
        arch = r["arch_sums_within_10"]
        print(
            f"seed {r['seed']:3d}  unseen ops within 10% {100 * r['unseen_ops_within_10']:5.1f}%  "
            f"(one scale {100 * r['unseen_ops_naive_within_10']:5.1f}%)  arch sums within 10% "
            + (f"{100 * arch:5.1f}%" if arch is not None else "  n/a")
        )
    for key, label in (("unseen_ops_within_10", "unseen ops"), ("arch_sums_within_10", "arch sums")):
        s = result[key]
        if s["median"] is not None:
            med, worst, mean = (100 * s[k] for k in ("median", "worst", "mean"))
            print(f"{label:<11} median {med:.1f}%  worst {worst:.1f}%  mean {mean:.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
