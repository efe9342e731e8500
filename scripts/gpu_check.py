"""GPU side of ``scripts/gpu_check.sh``: table builds per policy, agreement with torch.utils.benchmark.

Writes ``gpu_check.json`` (every figure) under ``--out`` and exits 1 when a
check fails: a table row without its policy, or the ``graph`` policy more than
5% from ``torch.utils.benchmark``'s blocked timing of the same CUDA graph.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

OPS_TEXT = [
    "conv-i224x224x3-o32-k3-s2-e1-g1-d1-relu6-se0-b1-float32",
    "mbconv-i112x112x16-o24-k3-s2-e6-g1-d1-relu6-se0-b1-float32",
    "mbconv-i28x28x40-o40-k5-s1-e3-g1-d1-relu6-se0-b1-float32",
    "mbconv-i14x14x96-o96-k7-s1-e6-g1-d1-relu6-se0-b1-float32",
    "mbconv-i7x7x192-o320-k3-s1-e6-g1-d1-relu6-se0-b1-float32",
    "classifier-i7x7x1280-o1000-k1-s1-e1-g1-d1-none-se0-b1-float32",
]


def table_builds(out: Path) -> dict[str, Any]:
    """``latbench profile`` + ``table build`` of the darts space under each policy (the CLI, as a user runs it)."""
    from latbench.cli import main
    from latbench.table import LatencyTable

    res: dict[str, Any] = {}
    for policy in ("eager", "graph"):
        name = f"cuda-{policy}"
        assert main(["profile", "torch-cuda", "--set", f"policy={policy}", "--name", name]) == 0
        path = out / f"table-{policy}.json"
        t0 = time.perf_counter()
        rc = main(["table", "build", "--device", name, "--space", "darts", "--out", str(path)])
        t = LatencyTable.load(path)
        res[policy] = {
            "rc": rc,
            "rows": len(t),
            "seconds": round(time.perf_counter() - t0, 1),
            "fingerprint": t.fingerprint_id,
            "policy_in_every_row": all(r.get("timing_policy") == policy for r in t.rows.values()),
            "medians_ms": {k: r["median_ms"] for k, r in t.rows.items()},
        }
    res["same_device_id"] = res["eager"]["fingerprint"] == res["graph"]["fingerprint"]
    return res


def benchmark_agreement() -> list[dict[str, Any]]:
    """Per op: latbench eager and graph medians vs torch.utils.benchmark blocked_autorange (ms)."""
    import torch
    from torch.utils import benchmark

    from latbench.backends import get_backend
    from latbench.backends.torch_cuda import capture_graph
    from latbench.ops import OpSpec

    eager = get_backend("torch-cuda", policy="eager")
    graph = get_backend("torch-cuda", policy="graph")
    rows = []
    for text in OPS_TEXT:
        op = OpSpec.from_key(text)
        e, g = eager.measure(op), graph.measure(op)
        module, x = graph._prepare(op.build(), op.example_input())
        cg = capture_graph(module, x)
        with torch.inference_mode():
            t_graph = benchmark.Timer("cg.replay()", globals={"cg": cg}).blocked_autorange(min_run_time=1.0)
            t_eager = benchmark.Timer("m(x)", globals={"m": module, "x": x}).blocked_autorange(min_run_time=1.0)
        bench_graph, bench_eager = t_graph.median * 1e3, t_eager.median * 1e3
        rows.append(
            {
                "op": text,
                "latbench_eager_ms": round(e.median, 5),
                "latbench_graph_ms": round(g.median, 5),
                "bench_graph_ms": round(bench_graph, 5),
                "bench_eager_blocked_ms": round(bench_eager, 5),
                "graph_vs_bench": round(g.median / bench_graph, 4),
                "eager_over_graph": round(e.median / g.median, 3),
            }
        )
        print(
            f"{text[:44]:<44} eager {e.median:8.4f}  graph {g.median:8.4f}  bench(graph) {bench_graph:8.4f}  "
            f"bench(eager, blocked) {bench_eager:8.4f}  graph/bench {g.median / bench_graph:.3f}"
        )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    doc: dict[str, Any] = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}
    doc["tables"] = table_builds(args.out)
    doc["agreement"] = benchmark_agreement()
    failures = []
    for policy in ("eager", "graph"):
        t = doc["tables"][policy]
        if t["rc"] != 0 or not t["policy_in_every_row"] or t["rows"] == 0:
            failures.append(f"table build under {policy}: {t['rc']=}, policy in every row {t['policy_in_every_row']}")
    if not doc["tables"]["same_device_id"]:
        failures.append("the timing policy changed the device id")
    failures += [
        f"{r['op']}: graph {r['latbench_graph_ms']} ms vs torch.utils.benchmark {r['bench_graph_ms']} ms"
        for r in doc["agreement"]
        if abs(r["graph_vs_bench"] - 1) > 0.05
    ]
    doc["failures"] = failures
    (args.out / "gpu_check.json").write_text(json.dumps(doc, indent=2))
    for f in failures:
        print("FAIL:", f)
    print("gpu_check.py:", "ok" if not failures else f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
