"""What a run writes besides its checkpoint.

``alpha.csv``, ``history.csv`` (one row per epoch), ``trajectory.csv`` / ``trajectory.png`` and ``report.md``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from latbench import paths
from latbench.search.runstore import budget_lines


def alpha_csv(alpha_log: list[np.ndarray], space: Any) -> str:
    """One row per (epoch, decision, option): alpha and its softmax probability."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["epoch", "decision", "option", "alpha", "prob"])
    for epoch, alpha in enumerate(alpha_log, start=1):
        for i, d in enumerate(space.decisions):
            a = np.asarray(alpha[i, : len(d)], dtype=np.float64)
            p = np.exp(a - a.max())
            p /= p.sum()
            for j, opt in enumerate(d.options):
                w.writerow([epoch, d.name, opt, f"{a[j]:.6g}", f"{p[j]:.6g}"])
    return buf.getvalue()


def rows_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if not rows:
        return ""
    fields = [k for k in rows[0] if not isinstance(rows[0][k], (list, dict))]
    w = csv.writer(buf)
    w.writerow(fields)
    for r in rows:
        w.writerow([f"{r[k]:.6g}" if isinstance(r[k], float) else r[k] for k in fields])
    return buf.getvalue()


def plot_trajectory(
    trajectory: list[dict[str, Any]], target_ms: float, bounds: tuple[float, float], path: Path, title: str
) -> Path | None:
    """E[LAT] and the derived arch's latency per alpha step, the target and its 5 % band, and the multiplier."""
    if not trajectory:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in trajectory]
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot(steps, [r["expected_ms"] for r in trajectory], label="E[LAT] of the supernet (ms)", color="tab:blue")
    ax.plot(steps, [r["derived_ms"] for r in trajectory], label="derived (argmax) arch (ms)", color="tab:orange")
    ax.axhline(target_ms, color="black", lw=1, label=f"target {target_ms:.2f} ms")
    ax.axhspan(target_ms * 0.95, target_ms * 1.05, color="grey", alpha=0.15, label="target +-5 %")
    ax.set_ylim(bounds[0] * 0.95, bounds[1] * 1.02)
    ax.set_ylabel("latency (ms)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="best")
    bx.plot(steps, [r["multiplier"] for r in trajectory], color="tab:green")
    bx.axhline(0, color="black", lw=0.5)
    bx.set_ylabel("multiplier")
    bx.set_xlabel("alpha step")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    paths.atomic_write_bytes(path, buf.getvalue())
    return path


def _fmt(v: Any, unit: str = "", nd: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{nd}f}{unit}"
    return f"{v}{unit}"


def write_report(run_dir: Path, result: dict[str, Any], config: dict[str, Any], history: list[dict[str, Any]]) -> Path:
    """``report.md``: the verdict on the budget first, then where the numbers come from."""
    cfg = config["settings"]
    d = result["details"]
    meas = result.get("measured")
    tv = result.get("trained_variant") or {}
    lines = [f"# ProxylessNAS search {result['run_id']}", "", *_budget_lines(result), ""]
    lines += [
        f"Loss `{cfg['loss']}`, mode `{cfg['mode']}`, derive `{cfg['derive']}`, seed {cfg['seed']}, "
        f"{cfg['train']['warmup_epochs']} warmup + {cfg['train']['epochs']} search epochs on `{cfg['data']}`.",
        "",
        "## Result",
        "",
        "| | ms |",
        "| --- | --- |",
        f"| target | {result['target_ms']:.3f} |",
        f"| deployed arch, {result['predicted_kind']} | {result['predicted_ms']:.3f} "
        f"({d['gap_pct']:+.1f} % vs target) |",
        f"| deployed arch, measured (median) | {_fmt(meas and meas['median_ms'])}"
        + (f" (IQR {meas['iqr_ms']:.3f}, p90 {meas['p90_ms']:.3f}, n={meas['n']}) |" if meas else " |"),
        f"| argmax arch at the end, predicted | {d['argmax_ms']:.3f} ({d['argmax_gap_pct']:+.1f} %) |",
        f"| supernet E[LAT] at the end | {d['expected_ms']:.3f} |",
        f"| reachable range of the space | {d['bounds_ms'][0]:.3f} - {d['bounds_ms'][1]:.3f} |",
        "",
        f"Derived with `{d['derive']}`: {d['repaired_decisions']} decision(s) differ from the argmax arch; "
        f"settling took {d['settle_steps']} alpha step(s).",
    ]
    if not meas:
        lines += ["", f"Not measured: {result.get('measured_note') or 'no device to run on here'}."]
    lines += [
        "",
        "## What was trained and what was timed",
        "",
        f"- **Latency is counted on the deployment space** `{cfg['space']}` {cfg['space_params']} "
        f"with {result['latency_source']}; `deployed.onnx` / `deployed.json` are that network.",
        f"- **Weights and alpha were trained on** `{cfg['data']}` with the variant {cfg['train_space_params']} "
        "(same decisions and options).",
        f"- `trained-variant.onnx` and `trained-variant.safetensors` are the **training variant** "
        f"({tv.get('weights_from', 'supernet')} weights), not the deployed network. Accuracy "
        f"{_fmt(result.get('accuracy'))}: {d.get('accuracy_of')}.",
        "",
        "## Latency trajectory",
        "",
        "![latency trajectory](trajectory.png)",
        "",
        "E[LAT] is the supernet's expected latency `fixed + sum p * lat`; the derived arch is the argmax of alpha. "
        "The multiplier is the weight on E[LAT]/T (adapted for the budget loss).",
        "",
        "## Epochs",
        "",
        "| epoch | phase | train loss | train acc | valid acc (argmax net) | E[LAT] ms | derived ms | multiplier | s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in history:
        lines.append(
            f"| {r['epoch']} | {r['phase']} | {r['train_loss']:.3f} | {r['train_acc']:.3f} | {r['valid_acc']:.3f} | "
            f"{r['expected_ms']:.2f} | {r['derived_ms']:.2f} | {r['multiplier']:.3f} | {r['seconds']:.1f} |"
        )
    lines += ["", "## Deployed arch", "", "| decision | choice | p |", "| --- | --- | --- |"]
    for name, choice, p in d["choices_table"]:
        lines.append(f"| {name} | {choice} | {p:.3f} |")
    lines += _retrain_lines(d)
    lines += [
        "",
        "## Settings and provenance",
        "",
        f"- latency source: {result['latency_source']} ({result['predicted_kind']}; "
        f"fingerprint `{config['latency_source'].get('fingerprint')}`)",
        f"- training device: {d.get('train_device')}; wall time {d['seconds']:.1f} s; "
        f"peak RSS {d['peak_rss_mb']:.0f} MB",
        f"- loss settings: {config.get('loss_settings')}",
        f"- train settings: {cfg['train']}",
        f"- library versions: {config['versions']}",
        "",
    ]
    path = run_dir / "report.md"
    paths.atomic_write_text(path, "\n".join(lines))
    return path


def _budget_lines(result: dict[str, Any]) -> list[str]:
    return budget_lines(result, "derived within a tighter budget and measured within the target")


def _retrain_lines(d: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    rt = d.get("retrain")
    if rt:
        lines += [
            "",
            "## Retrained from scratch",
            "",
            f"{rt['epochs']} epochs on train + valid, accuracy on the held-out test split: **{rt['test_acc']:.4f}** "
            f"({rt['seconds']:.0f} s).",
        ]
    bl = d.get("baseline")
    if bl:
        accs = ", ".join(f"{a:.4f}" for a in bl["test_accs"])
        lines += [
            "",
            f"Baseline: {bl['n']} random archs within the same budget, same recipe: median test accuracy "
            f"**{bl['median_test_acc']:.4f}** (each: {accs}; predicted ms: "
            + ", ".join(f"{m:.1f}" for m in bl["predicted_ms"])
            + ").",
        ]
    return lines
