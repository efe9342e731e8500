"""Longer checks of the engine on real data: better than chance? do strategies differ? does hard mode hold?

``python -m latbench.search.mnas.experiments NAME --out DIR`` with NAME one of:

* ``train-vs-random``: evolution with the ``train`` evaluator (digits) under a
  budget, against random archs under the same budget trained the same way; the
  found arch is retrained with fresh seeds before the comparison (no winner's
  curse). Writes ``train_vs_random.json`` and every trial's CSV.
* ``compare``: random vs evolution vs RL at equal trials over seeds; writes
  ``compare.csv`` / ``compare.md`` (mean best reward per trial count) and
  ``compare.png``.
* ``hard-mode``: hard reward with a latency predictor over seeds and budgets
  spread across the space's range; every returned arch is measured for real on
  the predictor's device. Writes ``hard_mode.json`` / ``hard_mode.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from latbench import paths
from latbench.device import host_info, library_versions, now_iso
from latbench.predict.base import SpaceLatency
from latbench.search.mnas.api import make_problem, search
from latbench.search.mnas.evaluators import ArchBatch, make_evaluator
from latbench.spaces import SearchSpace


def _table_latency(space: SearchSpace, table: str) -> tuple[SpaceLatency, str]:
    from latbench.predict.lut import TableLatency
    from latbench.table import LatencyTable

    t = LatencyTable.load(table)
    return TableLatency(t).compile(space), f"LUT {t.path}"


def _meta() -> dict[str, Any]:
    return {"created": now_iso(), "host": host_info(), "versions": library_versions()}


# ----------------------------------------------------------------------------- train vs random
def train_vs_random(
    out: Path,
    *,
    space_name: str = "proxyless-mobile",
    table: str = "pixel1/proxyless-mobile",
    target_ms: float = 60.0,
    trials: int = 30,
    random_archs: int = 15,
    retrain_seeds: int = 3,
    seed: int = 0,
    evaluator_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Best arch of a ``train``-evaluator search vs the median random arch under the same budget (accuracy)."""
    from latbench.spaces import get_space

    space = get_space(space_name)
    lat, desc = _table_latency(space, table)
    opts = {"max_seconds": 60.0, **(evaluator_options or {})}
    problem = make_problem(space, lat, target_ms, reward="hard")
    t0 = time.perf_counter()
    found = search(problem, strategy="evolution", evaluator="train", trials=trials, seed=seed, evaluator_options=opts)
    t_search = time.perf_counter() - t0
    rand = search(
        problem, strategy="random", evaluator="train", trials=random_archs, seed=seed + 1000, evaluator_options=opts
    )
    best_idx = found.history.arrays()["indices"][found.best.row]
    ev = make_evaluator("train", opts)
    retrain = []
    for k in range(retrain_seeds):
        ev.setup(problem, seed + 5000 + k)
        retrain.append(float(ev.evaluate(ArchBatch(space, best_idx[None, :], np.array([k]))).accuracy[0]))
    ra = rand.history.arrays()
    rand_acc = ra["accuracy"][ra["status"] == "ok"]
    result = {
        **_meta(),
        "space": space_name,
        "latency_source": desc,
        "target_ms": target_ms,
        "evaluator": ev.describe(),
        "search": {
            "strategy": "evolution",
            "trials": trials,
            "seconds": round(t_search, 1),
            "best_accuracy_in_search": found.best.accuracy,
            "best_latency_ms": found.best.latency_ms,
            "best_arch": space.from_indices(best_idx),
        },
        "best_retrained_accuracy": retrain,
        "best_retrained_mean": float(np.mean(retrain)),
        "random": {
            "n": len(rand_acc),
            "accuracy": rand_acc.tolist(),
            "median": float(np.median(rand_acc)),
            "latency_ms": ra["latency_ms"].tolist(),
        },
        "beats_median_random": bool(np.mean(retrain) > np.median(rand_acc)),
    }
    out.mkdir(parents=True, exist_ok=True)
    paths.atomic_write_text(
        out / "train_search_history.csv", ",".join(found.history.header()) + "\n" + found.history.csv_rows(0)
    )
    paths.atomic_write_text(
        out / "train_random_history.csv", ",".join(rand.history.header()) + "\n" + rand.history.csv_rows(0)
    )
    paths.atomic_write_json(out / "train_vs_random.json", result)
    return result


# ----------------------------------------------------------------------------- strategy comparison
def compare_strategies(
    out: Path,
    *,
    space_name: str,
    table: str,
    target_ms: float,
    evaluator: str,
    trials: int,
    seeds: int = 5,
    strategies: tuple[str, ...] = ("random", "evolution", "rl"),
    reward: str = "hard",
    checkpoints: tuple[int, ...] = (50, 100, 200, 500, 1000, 2000, 5000),
) -> dict[str, Any]:
    """Best reward after each trial count, per strategy, mean and std over ``seeds``; plot + table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latbench.spaces import get_space

    space = get_space(space_name)
    lat, desc = _table_latency(space, table)
    problem = make_problem(space, lat, target_ms, reward=reward)
    curves: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for s in strategies:
        runs = []
        t0 = time.perf_counter()
        for k in range(seeds):
            eng = search(problem, strategy=s, evaluator=evaluator, trials=trials, seed=k)
            c = eng.best_curve()
            runs.append(np.pad(c, (0, trials - len(c)), mode="edge") if len(c) < trials else c[:trials])
        curves[s] = np.vstack(runs)
        seconds[s] = time.perf_counter() - t0
    cps = [c for c in checkpoints if c <= trials] + ([trials] if trials not in checkpoints else [])
    rows = []
    for s, c in curves.items():
        for n in cps:
            v = c[:, n - 1]
            rows.append(
                {
                    "strategy": s,
                    "trials": n,
                    "mean_best_reward": float(np.nanmean(v)),
                    "std": float(np.nanstd(v)),
                    "seeds": int(np.isfinite(v).sum()),
                }
            )
    out.mkdir(parents=True, exist_ok=True)
    csv = "strategy,trials,mean_best_reward,std,seeds\n" + "".join(
        f"{r['strategy']},{r['trials']},{r['mean_best_reward']:.6g},{r['std']:.3g},{r['seeds']}\n" for r in rows
    )
    paths.atomic_write_text(out / "compare.csv", csv)
    md = [
        f"Best reward (mean ± std over {seeds} seeds), {space_name}, {desc}, T = {target_ms:g} ms, "
        f"reward {reward}, evaluator {evaluator}",
        "",
        "| trials | " + " | ".join(strategies) + " |",
        "| --- |" + " --- |" * len(strategies),
    ]
    for n in cps:
        cells = []
        for s in strategies:
            v = curves[s][:, n - 1]
            cells.append(f"{np.nanmean(v):.5f} ± {np.nanstd(v):.5f}")
        md.append(f"| {n} | " + " | ".join(cells) + " |")
    paths.atomic_write_text(out / "compare.md", "\n".join(md) + "\n")
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=110)
    x = np.arange(1, trials + 1)
    for s, c in curves.items():
        m, sd = np.nanmean(c, axis=0), np.nanstd(c, axis=0)
        ax.plot(x, m, label=s)
        ax.fill_between(x, m - sd, m + sd, alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("trials")
    ax.set_ylabel("best reward so far")
    ax.set_title(f"{space_name}, T = {target_ms:g} ms ({seeds} seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "compare.png")
    plt.close(fig)
    final = {s: float(np.nanmean(curves[s][:, -1])) for s in strategies}
    result = {
        **_meta(),
        "space": space_name,
        "latency_source": desc,
        "target_ms": target_ms,
        "evaluator": evaluator,
        "trials": trials,
        "seeds": seeds,
        "final_mean_best_reward": final,
        "seconds": seconds,
        "table": rows,
    }
    paths.atomic_write_json(out / "compare.json", result)
    return result


# ----------------------------------------------------------------------------- hard mode, measured for real
def hard_mode(
    out: Path,
    *,
    space_name: str,
    predictor: str,
    device: str,
    evaluator: str,
    seeds: int = 20,
    budgets: tuple[float, ...] = (0.25, 0.5, 0.75),
    trials: int = 500,
    strategy: str = "evolution",
) -> dict[str, Any]:
    """Every returned arch within the predicted budget; the share within 1.05 x budget when measured here."""
    from latbench.service import measure_archs, network_timing, resolve_latency_source
    from latbench.spaces import get_space

    space = get_space(space_name)
    source = resolve_latency_source(space, predictor=predictor, device=device)
    if source.backend is None:
        raise SystemExit(f"device {device} cannot run here; hard-mode check needs it")
    lo, hi = source.compiled.bounds()
    targets = [lo + f * (hi - lo) for f in budgets]
    found = []
    for t in targets:
        problem = make_problem(space, source.compiled, t, reward="hard")
        for k in range(seeds):
            eng = search(problem, strategy=strategy, evaluator=evaluator, trials=trials, seed=k)
            idx = eng.history.arrays()["indices"][eng.best.row]
            found.append(
                {"target_ms": t, "seed": k, "arch": space.from_indices(idx), "predicted_ms": eng.best.latency_ms}
            )
    ms, info = measure_archs(
        source.backend,
        [f["arch"] for f in found],
        network_timing(source.backend, None, None),
        source.sentinel_ms,
        progress=True,
    )
    for f, m in zip(found, ms, strict=True):
        f["measured_ms"] = m.median
        f["measured_iqr_ms"] = m.iqr
        f["within_predicted"] = f["predicted_ms"] <= f["target_ms"]
        f["within_measured_1.05"] = m.median <= 1.05 * f["target_ms"]
    per = []
    for t in targets:
        sel = [f for f in found if f["target_ms"] == t]
        per.append(
            {
                "target_ms": t,
                "n": len(sel),
                "within_predicted": sum(f["within_predicted"] for f in sel),
                "within_measured_1.05": sum(f["within_measured_1.05"] for f in sel),
                "median_measured_over_target": float(np.median([f["measured_ms"] / t for f in sel])),
            }
        )
    total = len(found)
    result = {
        **_meta(),
        "space": space_name,
        "latency_source": source.description,
        "device": device,
        "range_ms": [lo, hi],
        "evaluator": evaluator,
        "strategy": strategy,
        "trials": trials,
        "per_budget": per,
        "all_within_predicted": all(f["within_predicted"] for f in found),
        "share_within_measured_1.05": sum(f["within_measured_1.05"] for f in found) / total,
        "measure_info": {k: v for k, v in info.items() if k != "remeasured"},
        "archs": found,
    }
    out.mkdir(parents=True, exist_ok=True)
    paths.atomic_write_json(out / "hard_mode.json", result)
    md = [
        f"Hard mode, {space_name}, {source.description}, {seeds} seeds x {len(targets)} budgets, measured on {device}",
        "",
        "| target ms | within predicted | within 1.05 x target measured | median measured / target |",
        "| --- | --- | --- | --- |",
    ]
    for r in per:
        md.append(
            f"| {r['target_ms']:.2f} | {r['within_predicted']}/{r['n']} | {r['within_measured_1.05']}/{r['n']} | "
            f"{r['median_measured_over_target']:.3f} |"
        )
    paths.atomic_write_text(out / "hard_mode.md", "\n".join(md) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m latbench.search.mnas.experiments")
    ap.add_argument("name", choices=["train-vs-random", "compare", "hard-mode"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--space", default="proxyless-mobile")
    ap.add_argument("--table", default="pixel1/proxyless-mobile")
    ap.add_argument("--predictor")
    ap.add_argument("--device")
    ap.add_argument("--target", type=float, default=60.0)
    ap.add_argument("--evaluator", default="zero-cost")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--random-archs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0, help="train-vs-random: search seed")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=2, help="train-vs-random: training seeds averaged per arch")
    a = ap.parse_args(argv)
    if a.name == "train-vs-random":
        r = train_vs_random(
            a.out,
            space_name=a.space,
            table=a.table,
            target_ms=a.target,
            trials=a.trials,
            random_archs=a.random_archs,
            seed=a.seed,
            evaluator_options={"epochs": a.epochs, "repeats": a.repeats},
        )
        print(json.dumps({k: r[k] for k in ("best_retrained_mean", "beats_median_random", "random")}, indent=1))
    elif a.name == "compare":
        r = compare_strategies(
            a.out,
            space_name=a.space,
            table=a.table,
            target_ms=a.target,
            evaluator=a.evaluator,
            trials=a.trials,
            seeds=a.seeds,
        )
        print((a.out / "compare.md").read_text())
    else:
        r = hard_mode(
            a.out,
            space_name=a.space,
            predictor=a.predictor,
            device=a.device,
            evaluator=a.evaluator,
            seeds=a.seeds,
            trials=a.trials,
        )
        print((a.out / "hard_mode.md").read_text())
        print(
            "all within predicted:",
            r["all_within_predicted"],
            "share within 1.05 measured:",
            r["share_within_measured_1.05"],
        )


if __name__ == "__main__":
    main()
