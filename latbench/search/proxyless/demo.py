"""The README demo's differentiable-search step (see ``latbench.demo.demo_steps``).

A short budget search (binary paths, half-way target) with the demo's
calibrated predictor (the table's LUT sum when there is none); prints the
derived arch, its predicted latency and its latency measured end to end on
this CPU. About one to two minutes on two busy cores.
"""

from __future__ import annotations

import time
from typing import Any

#: the short search the demo runs (the full default search is 10 warmup + 30 search epochs)
DEMO_SETTINGS: dict[str, Any] = {"target": "50%", "epochs": 12, "warmup": 4, "loss": "budget", "mode": "binary"}


def step_proxyless_search(ctx: Any) -> None:
    """Search ``ctx.space`` under 50 % of its latency range; measure the result on ``ctx.backend``.

    Prints the derived arch with its predicted and measured latency.
    """
    from latbench.search.proxyless.api import run
    from latbench.service import message

    t0 = time.perf_counter()
    source, what = ctx.latency_source()
    res = run(
        **source,
        device=ctx.profile.name,
        space=ctx.space.name,
        resolution=ctx.space.params.get("resolution"),
        seed=ctx.seed,
        **DEMO_SETTINGS,
    )
    d = res.to_dict()
    meas = d.get("measured")
    number = ctx.step
    message(
        f"[bold]{number}. differentiable search[/bold] (ProxylessNAS binary paths, budget loss, "
        f"{DEMO_SETTINGS['warmup']}+{DEMO_SETTINGS['epochs']} epochs on digits 32x32, latency of the 224 net)"
    )
    message(f"   arch       {' '.join(str(v) for v in d['arch']['choices'].values())}")
    message(
        f"   target     {d['target_ms']:.2f} ms   predicted {d['predicted_ms']:.2f} ms "
        f"({d['details']['gap_pct']:+.1f} %)   "
        + (f"measured {meas['median_ms']:.2f} ms (IQR {meas['iqr_ms']:.2f})" if meas else "not measured")
        + ("" if d["within_budget"] else f": OVER by {d['over_budget_pct']:.1f}%")
    )
    if d.get("found"):
        message("   (the derived arch measured over the budget; deployed a tighter one measured within it)")
    message(f"   (predicted = {what}" + (", which misses the glue between ops)" if what == "LUT sum" else ")"))
    message(f"   run        {res.run_dir} ({time.perf_counter() - t0:.0f} s; report.md, result.json, deployed.onnx)")
    ctx.results["proxyless"] = {
        "run_dir": str(res.run_dir),
        "target_ms": d["target_ms"],
        "predicted_ms": d["predicted_ms"],
        "latency_source": what,
        "measured_ms": meas["median_ms"] if meas else None,
        "within_budget": d["within_budget"],
        "seconds": time.perf_counter() - t0,
    }
