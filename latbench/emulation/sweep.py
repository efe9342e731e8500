"""How well does a calibration transfer? The same fit over many shot seeds, scored on what it never saw.

    latbench emulation sweep --table T --reference R --shots 10 --seeds 0-19 [--model hybrid] [--json]

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


def seed_stats(values: list[float]) -> dict[str, float | None]:
    """Median, worst (lowest) and mean of per-seed shares; all ``None`` when there is none."""
    if not values:
        return {"median": None, "worst": None, "mean": None}
    return {"median": float(np.median(values)), "worst": float(min(values)), "mean": float(np.mean(values))}


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
    show_progress: bool = True,
) -> dict[str, Any]:
    """Calibrate once per seed; per-seed unseen-op and arch-sum figures, with their median and worst."""
    from latbench.emulation.transfer import DEFAULT_MODEL, SHOT_KEEP
    from latbench.progress import track

    model = model or DEFAULT_MODEL
    keep = SHOT_KEEP if shot_keep is None else shot_keep
    per_seed: list[dict[str, Any]] = []
    with track("calibration seeds", len(seeds), show_progress) as update:
        for seed in seeds:
            per_seed.append(_one_seed(table, reference, shots, seed, model, stat, n_archs, parts_path, backend, keep))
            update(len(per_seed))

    def stats(key: str) -> dict[str, float | None]:
        return seed_stats([r[key] for r in per_seed if r[key] is not None])

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


def _one_seed(
    table: Any,
    reference: Any,
    shots: int,
    seed: int,
    model: str,
    stat: str,
    n_archs: int,
    parts_path: Path | None,
    backend: Any,
    keep: float,
) -> dict[str, Any]:
    """One calibration of the sweep and its figures."""
    from latbench.emulation.transfer import calibrate

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
    return {
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
