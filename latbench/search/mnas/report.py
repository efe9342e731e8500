"""Run outputs for people: the accuracy-vs-latency plot (``pareto.png``) and ``report.md``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from latbench import paths
from latbench.search.mnas.engine import SearchEngine
from latbench.search.mnas.problem import SearchProblem
from latbench.search.runstore import budget_lines as runstore_budget_lines


def pareto_front(latency: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats in both latency (lower) and accuracy (higher), by latency."""
    order = np.lexsort((-accuracy, latency))
    best = -np.inf
    out = []
    for i in order:
        if accuracy[i] > best:
            out.append(i)
            best = accuracy[i]
    return np.asarray(out, dtype=np.int64)


def pareto_plot(
    engine: SearchEngine, problem: SearchProblem, top: list[dict[str, Any]], path: Path, title: str = ""
) -> None:
    """Accuracy vs predicted latency of every trial, the Pareto front, the budget line, the top-k (measured too)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = engine.history.arrays()
    vname = engine.history.value_name
    ok = (a["status"] == "ok") & np.isfinite(a["accuracy"])
    lat, acc = a["latency_ms"][ok], a["accuracy"][ok]
    real = a["source"][ok] == "real"
    fig, ax = plt.subplots(figsize=(7, 4.6), dpi=110)
    if len(lat) > 20000:
        pick = np.random.default_rng(0).choice(len(lat), 20000, replace=False)
    else:
        pick = np.arange(len(lat))
    ax.scatter(lat[pick][real[pick]], acc[pick][real[pick]], s=6, alpha=0.35, color="tab:blue", label="trials", lw=0)
    if (~real).any():
        ax.scatter(
            lat[pick][~real[pick]],
            acc[pick][~real[pick]],
            s=6,
            alpha=0.25,
            color="tab:gray",
            label=f"predicted {vname}",
            lw=0,
        )
    if len(lat):
        front = pareto_front(lat[real] if real.any() else lat, acc[real] if real.any() else acc)
        fl, fa = (lat[real] if real.any() else lat)[front], (acc[real] if real.any() else acc)[front]
        ax.step(fl, fa, where="post", color="tab:green", lw=1.2, label="Pareto front")
    ax.axvline(problem.target_ms, color="tab:red", ls="--", lw=1.2, label=f"budget {problem.target_ms:g} ms")
    for i, t in enumerate(top):
        ax.scatter(
            [t["predicted_ms"]],
            [t[vname]],
            marker="*",
            s=140 if i == 0 else 70,
            color="tab:orange",
            edgecolor="black",
            lw=0.6,
            zorder=5,
            label="best (predicted)" if i == 0 else None,
        )
        m = t.get("measured")
        if m:
            ax.scatter(
                [m["median_ms"]],
                [t[vname]],
                marker="D",
                s=40,
                color="tab:purple",
                zorder=5,
                label="measured here" if i == 0 else None,
            )
            ax.plot([t["predicted_ms"], m["median_ms"]], [t[vname]] * 2, color="tab:purple", lw=0.8)
    ax.set_xlabel("latency (ms, predicted)")
    ax.set_ylabel("accuracy" if vname == "accuracy" else f"score ({engine.evaluator.describe()['name']})")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    paths.atomic_write_bytes(path, buf.getvalue())


def _fmt_choices(arch: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in arch["choices"].items())


def write_report(
    path: Path,
    config: dict[str, Any],
    engine: SearchEngine,
    problem: SearchProblem,
    source: Any,
    top: list[dict[str, Any]],
    summary: dict[str, Any],
    result: dict[str, Any],
    onnx_note: str | None,
) -> None:
    """A short Markdown report: the verdict on the budget first, then what ran and predicted vs measured latency."""
    vname = engine.history.value_name
    lines = [f"# MnasNet-reward search `{config['run_id']}`", "", *budget_lines(result), ""]
    lines += _settings_lines(config, engine, problem, source, summary)
    lines += ["", "## Candidates", ""]
    if not top:
        lines.append("No trial succeeded (see history.csv for the errors).")
    else:
        lines += [
            f"| rank | trial | {vname} | predicted ms | measured ms (median, IQR) | budget | reward | MMACs | params |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for i, t in enumerate(top):
            m = t.get("measured")
            meas = f"{m['median_ms']:.3f} ({m['iqr_ms']:.3f})" if m else "-"
            lat = m["median_ms"] if m else t["predicted_ms"]
            lines.append(
                f"| {i + 1} | {t['trial']} | {t[vname]:.4g} | {t['predicted_ms']:.3f} | {meas} | "
                f"{'within' if lat <= problem.target_ms else 'OVER'} | {t['reward']:.4g} | {t['macs'] / 1e6:.1f} | "
                f"{t['params']} |"
            )
        lines += ["", f"Deployed arch: `{_fmt_choices(result['arch'])}`", ""]
    if result.get("measured_note"):
        lines += [f"Measurement: {result['measured_note']}.", ""]
    if onnx_note:
        lines += [f"{onnx_note}", ""]
    if vname == "score":
        sc = problem.reward.score_scale
        lines += [
            f"The evaluator gives a proxy score, not an accuracy: in the reward it is mapped to (0, 1) by a logistic "
            f"of (score - {sc.center:.4g}) / {sc.scale:.4g} (median and spread of {sc.n} reference archs)."
            if sc
            else "The evaluator gives a proxy score, not an accuracy.",
            "",
        ]
    lines += [
        "Files: `config.json` (settings, source, device, versions), `history.csv` (every trial), `result.json`,",
        "`deployed.onnx` / `deployed.json` (the deployed arch), `pareto.png` (diamonds: measured here), `state/`.",
        "",
        "![pareto](pareto.png)",
        "",
    ]
    paths.atomic_write_text(path, "\n".join(lines))


def budget_lines(result: dict[str, Any]) -> list[str]:
    """The verdict on the budget, in bold, and what was deployed instead when the found arch measured over it."""
    found = result.get("found") or {}
    return runstore_budget_lines(
        result, f"the best measured candidate within it (the search found trial {found.get('trial', '?')})"
    )


def _settings_lines(
    config: dict[str, Any], engine: SearchEngine, problem: SearchProblem, source: Any, summary: dict[str, Any]
) -> list[str]:
    r = problem.reward
    c = problem.constraints
    lo, hi = config.get("target", {}).get("range_ms", [None, None])
    return [
        f"- space: `{problem.space.name}` {problem.space.params} ({len(problem.space.decisions)} decisions)",
        f"- latency source: {source.description} ({source.kind})" + (f" (range {lo:.2f} .. {hi:.2f} ms)" if lo else ""),
        f"- target T = {r.target_ms:g} ms (`{config.get('target', {}).get('text')}`); reward ACC * (LAT/T)^w, "
        f"w = {r.alpha:g} within / {r.beta:g} over" + (f" (preset {r.preset})" if r.preset else ""),
        f"- hard limits: latency {'<= T (rejection)' if c.hard_latency else 'soft (in the reward)'}"
        + (f", params <= {c.max_params}" if c.max_params else "")
        + (f", memory <= {c.max_memory_mb:g} MB" if c.max_memory_mb else ""),
        f"- strategy: {engine.strategy.describe()}",
        f"- evaluator: {engine.evaluator.describe()}",
        f"- trials: {summary['trials']} of {summary['trials_target']} ({summary['failed']} failed, "
        f"{summary['cached']} cached, "
        f"{summary['predicted']} predicted by the MLP, {summary['rejected_unevaluated']} rejected unevaluated); "
        f"{summary['seconds']:.1f} s, {summary['candidates_per_s']} candidates/s; stopped: {summary['stopped']}",
    ]
