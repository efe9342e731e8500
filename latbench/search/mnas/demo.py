"""The README demo's MnasNet-reward step (see ``latbench.demo.demo_steps``).

A short evolution search (hard budget half-way across the latency range,
NASWOT zero-cost accuracy on digits) with the calibrated predictor the demo
trained in its predictor step (the table's LUT sum when there is none); prints
the found arch, its predicted latency and its latency measured end to end on
this CPU, beside the budget. About half a minute on two busy cores.
"""

from __future__ import annotations

import time
from typing import Any

#: the short search the demo runs
DEMO_SETTINGS: dict[str, Any] = {
    "strategy": "evolution",
    "evaluator": "zero-cost",
    "trials": 60,
    "reward": "hard",
    "top_k": 1,
}


def step_mnas_search(ctx: Any) -> None:
    """Search ``ctx.space`` under half its latency range; measure the result on the demo device."""
    from latbench.predict.io import load_predictor
    from latbench.predict.lut import TableLatency
    from latbench.search.mnas.api import run
    from latbench.service import message

    t0 = time.perf_counter()
    source, what = ctx.latency_source()
    model = load_predictor(source["predictor"]) if "predictor" in source else TableLatency(ctx.table)
    lo, hi = model.compile(ctx.space).bounds()
    target = lo + 0.5 * (hi - lo)
    res = run(
        **source,
        device=ctx.profile.name,
        space=ctx.space.name,
        resolution=ctx.space.params.get("resolution"),
        target=target,
        seed=ctx.seed,
        runs_dir=ctx.workdir / "runs",
        progress=True,
        **DEMO_SETTINGS,
    )
    r = res.result
    meas = r.get("measured")
    message(
        f"[bold]{ctx.step}. MnasNet-reward search[/bold] (aging evolution, {res.summary['trials']} trials, "
        "hard budget, NASWOT score on digits 32x32, latency of the 224 net)"
    )
    if not r.get("arch"):
        message("   no trial succeeded; see the run's history.csv")
        return
    message(f"   arch       {' '.join(str(v) for v in r['arch']['choices'].values())}")
    line = f"   budget     {target:.2f} ms   predicted {r['predicted_ms']:.2f} ms ({what})   "
    if meas:
        verdict = "within" if r["within_budget"] else f"OVER by {r['over_budget_pct']:.1f}%"
        line += f"measured {meas['median_ms']:.2f} ms (IQR {meas['iqr_ms']:.2f}): {verdict}"
    else:
        line += "not measured"
    message(line)
    if r.get("found"):
        message("   (the found arch measured over the budget; deployed the best measured candidate within it)")
    message(f"   run        {res.run_dir} ({time.perf_counter() - t0:.0f} s; report.md, result.json, deployed.onnx)")
    ctx.results["mnas"] = {
        "run_dir": str(res.run_dir),
        "target_ms": target,
        "predicted_ms": r["predicted_ms"],
        "latency_source": what,
        "measured_ms": meas["median_ms"] if meas else None,
        "within_budget": r["within_budget"],
        "seconds": time.perf_counter() - t0,
    }
