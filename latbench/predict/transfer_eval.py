"""Leave-one-device-out evaluation of few-shot transfer, beside the ridge-on-other-devices baseline.

For each device of the reference file: fit on the other devices plus K shots of
it, score on all its other networks; repeat over shot seeds; print a table per
device and the means. The baseline is a plain ridge regression (alpha 1) of the
device's log-latency on the other devices' standardised log-latencies, fitted
on the same K shots.

    latbench transfer eval -k 10 --seeds 20 [--select pcs] [--extra DATASET]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from latbench.predict.transfer import (
    Design,
    ReferenceMatrix,
    _fit_predict,
    choose_blend,
    choose_config,
    dead_column,
    select_shots,
)


def scores(pred_ms: np.ndarray, true_ms: np.ndarray) -> tuple[float, float, float]:
    """(Spearman, share within 10%, MAPE) as fractions."""
    from scipy.stats import spearmanr

    rel = pred_ms / true_ms - 1.0
    return float(spearmanr(pred_ms, true_ms)[0]), float(np.mean(np.abs(rel) <= 0.10)), float(np.mean(np.abs(rel)))


def ridge_baseline(refs_log: np.ndarray, rows: np.ndarray, y_log: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Ridge of the target's log-latency on the references' standardised log-latencies (intercept not shrunk)."""
    design = Design.of(refs_log, np.zeros((len(refs_log), 0)))
    z = (refs_log - design.mu) / design.sd
    zs, ys = z[rows], y_log
    zm, ym = zs.mean(axis=0), ys.mean()
    w = np.linalg.solve((zs - zm).T @ (zs - zm) + alpha * np.eye(z.shape[1]), (zs - zm).T @ (ys - ym))
    return ym + (z - zm) @ w


@dataclass
class DeviceResult:
    device: str
    config: tuple[float, float | None]
    blend: float
    transfer: tuple[float, float, float]
    baseline: tuple[float, float, float]


def evaluate_device(full: ReferenceMatrix, column: int, k: int, seeds: int, select: str = "random") -> DeviceResult:
    """Leave device ``column`` out: its K shots (per seed) and the others as references."""
    refs = full.without(column)
    target = full.log_ms[:, column]
    config, _ = choose_config(refs, k)
    blend, _ = choose_blend(refs, k, config)
    dead = dead_column(refs.feature_names, refs.features)
    n = len(target)
    t_scores, b_scores = [], []
    for seed in range(seeds):
        if select == "random":
            rows = np.random.default_rng(seed).choice(n, size=k, replace=False)
        else:
            rows = refs.rows_of(select_shots(refs, k, seed=seed))
        keep = np.ones(n, dtype=bool)
        keep[rows] = False
        pred = _fit_predict(refs.log_ms, refs.features, rows, target[rows], config, dead, blend)
        base = ridge_baseline(refs.log_ms, rows, target[rows])
        truth = np.exp(target[keep])
        t_scores.append(scores(np.exp(pred[keep]), truth))
        b_scores.append(scores(np.exp(base[keep]), truth))
    mean = lambda xs: tuple(float(v) for v in np.mean(xs, axis=0))  # noqa: E731
    return DeviceResult(full.names[column], config, blend, mean(t_scores), mean(b_scores))


def lodo(
    full: ReferenceMatrix,
    k: int,
    seeds: int = 20,
    devices: list[str] | None = None,
    select: str = "random",
    progress: Any = None,
) -> list[DeviceResult]:
    """Leave-one-device-out over ``devices`` (default: all columns of ``full``)."""
    names = full.names
    cols = [names.index(d) for d in devices] if devices else list(range(len(names)))
    out = []
    for i, c in enumerate(cols):
        out.append(evaluate_device(full, c, k, seeds, select))
        if progress:
            progress(i + 1, len(cols))
    return out


def lodo_with_and_without(
    full: ReferenceMatrix,
    extra: list[str],
    k: int,
    seeds: int = 20,
    select: str = "random",
    progress: Any = None,
) -> tuple[list[DeviceResult], list[DeviceResult]]:
    """Leave-one-device-out of every device not in ``extra``, with the ``extra`` references and without them.

    Both runs score the same networks (those every dataset holds, e.g. the
    classes a host measured) and the same shot seeds; the ``extra`` devices
    are references only, never left out.
    """
    names = full.names
    missing = [e for e in extra if e not in names]
    if missing:
        raise ValueError(f"no reference device named {missing[0]}")
    targets = [d for d in names if d not in extra]
    without = full
    for e in extra:
        without = without.without(without.names.index(e))
    total = 2 * len(targets)

    def step(offset: int) -> Any:
        return (lambda i, n: progress(offset + i, total)) if progress else None

    with_extra = lodo(full, k, seeds, targets, select, step(0))
    no_extra = lodo(without, k, seeds, targets, select, step(len(targets)))
    return with_extra, no_extra


def format_table(results: list[DeviceResult], k: int, seeds: int, select: str) -> str:
    cols = f"{'Spearman':>8} {'<=10%':>7} {'MAPE':>7}"
    head = (
        f"leave-one-device-out, K={k} shots ({select}), {seeds} seeds; transfer vs ridge on other devices\n"
        f"{'device':<16}{'config':>10} | {cols} | {cols}"
    )
    lines = [head, "-" * len(head.splitlines()[-1])]
    for r in results:
        cfg = f"{r.config[0]:g}/{'-' if r.config[1] is None else f'{r.config[1]:g}'}/{r.blend:g}"
        t, b = r.transfer, r.baseline
        lines.append(
            f"{r.device:<16}{cfg:>10} | {t[0]:8.3f} {t[1]:7.1%} {t[2]:7.1%} | {b[0]:8.3f} {b[1]:7.1%} {b[2]:7.1%}"
        )
    t = np.mean([r.transfer for r in results], axis=0)
    b = np.mean([r.baseline for r in results], axis=0)
    med_t = np.median([r.transfer[2] for r in results])
    med_b = np.median([r.baseline[2] for r in results])
    lines.append(lines[1])
    lines.append(f"{'mean':<16}{'':>10} | {t[0]:8.3f} {t[1]:7.1%} {t[2]:7.1%} | {b[0]:8.3f} {b[1]:7.1%} {b[2]:7.1%}")
    lines.append(f"{'median MAPE':<16}{'':>10} | {'':>8} {'':>7} {med_t:7.1%} | {'':>8} {'':>7} {med_b:7.1%}")
    return "\n".join(lines)
