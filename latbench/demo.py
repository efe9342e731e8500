"""The end-to-end demo the README's first command runs (CPU only, a few minutes).

1. profile this CPU with ``torch-cpu``;
2. build the ``proxyless-mobile`` table at 224 (resumes if already there);
3. sample 10 archs, measure each end to end, print LUT sum vs measured;
4. a predictor with the glue fitted on half of those networks, then the two search engines (:func:`demo_steps`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latbench import paths
from latbench.backends import get_backend
from latbench.device import DeviceProfile, now_iso
from latbench.predict.metrics import accuracy
from latbench.service import message, track
from latbench.spaces import get_space
from latbench.table import LatencyTable, build_table


@dataclass
class DemoContext:
    """What the demo steps share."""

    device: str
    profile: DeviceProfile
    backend: Any
    table: LatencyTable
    space: Any
    workdir: Path
    seed: int = 0
    results: dict[str, Any] = field(default_factory=dict)
    step: int = 3  # number of the step running, for its heading

    def latency_source(self) -> tuple[dict[str, str], str]:
        """What the searches count latency with: the predictor step's calibrated model, else the LUT sum."""
        path = self.results.get("predictor", {}).get("path")
        if path:
            return {"predictor": path}, "calibrated predictor"
        return {"table": str(self.table.path)}, "LUT sum"


def step_profile(device: str) -> tuple[DeviceProfile, Any]:
    """Profile this CPU as ``device``; an existing profile of this machine is reused, never overwritten."""
    from latbench.device import load_profile
    from latbench.errors import LatbenchError, UnknownNameError

    backend = get_backend("torch-cpu")
    fp = backend.fingerprint()
    try:
        existing: DeviceProfile | None = load_profile(device)
    except UnknownNameError:
        existing = None
    if existing is not None and existing.path is not None:
        if (existing.fingerprint or {}).get("id") != fp.id:
            raise LatbenchError(
                f"device profile {device!r} ({existing.path}) was recorded on another machine or with other "
                f"settings; give the demo another name with --device, or remove that profile"
            )
        message(f"[bold]1. profile[/bold]  {fp.id}  ({existing.path}, reused, sentinel {existing.sentinel_ms:.3f} ms)")
        return existing, backend
    sentinel = backend.measure_sentinel()
    prof = DeviceProfile(
        name=device,
        backend="torch-cpu",
        settings={k: v for k, v in backend.settings.items() if v is not None},
        fingerprint=fp.to_dict(),
        sentinel_ms=sentinel.median,
        description=f"torch-cpu on {fp.host.get('cpu_model')} (demo)",
        created=now_iso(),
    )
    path = prof.save()
    message(f"[bold]1. profile[/bold]  {fp.id}  ({path}, sentinel {sentinel.median:.3f} ms)")
    return prof, backend


def step_table(prof: DeviceProfile, backend: Any, space: Any) -> LatencyTable:
    path = paths.write_dir("tables") / prof.name / f"{space.name}-224.json"
    t0 = time.perf_counter()
    with track("2. table", total=len(space.vocabulary)) as update:
        table, measured = build_table(
            backend,
            space.vocabulary,
            path,
            device={"name": prof.name, "backend": prof.backend, "settings": backend.settings},
            space=space.name,
            space_params=space.params,
            resume=True,
            sentinel_ref_ms=prof.sentinel_ms,
            progress=lambda d, t: update(d, t),
        )
    message(
        f"[bold]2. table[/bold]    {path}: {len(table)} ops, {len(measured)} measured now in "
        f"{time.perf_counter() - t0:.1f} s, {table.summary()['noisy_rows']} noisy"
    )
    return table


def step_lut_vs_measured(ctx: DemoContext, n: int = 10) -> None:
    from latbench.service import measure_archs, network_timing

    rng = np.random.default_rng(ctx.seed)
    archs = [ctx.space.from_indices(i) for i in ctx.space.sample_indices(rng, n)]
    lut = [ctx.table.lut_sum(ctx.space.ops_of(a)) for a in archs]
    ms, _ = measure_archs(ctx.backend, archs, network_timing(ctx.backend, None, None), ctx.profile.sentinel_ms)
    meas = [m.median for m in ms]
    message(f"[bold]{ctx.step}. LUT sum vs measured[/bold] (10 random proxyless-mobile archs, 224, ms)")
    message("   #   LUT sum   measured   error")
    for i, (p, m) in enumerate(zip(lut, meas, strict=True)):
        message(f"  {i:2d}  {p:8.2f}  {m:9.2f}  {100 * (p - m) / m:+6.1f}%")
    acc = accuracy(lut, meas)
    message(
        f"  MAPE {100 * acc['mape']:.1f}%, Spearman {acc['spearman']:.3f} (the LUT sum misses the glue between ops;"
        " `latbench predictor train --calib-archs` fits it)"
    )
    ctx.results["lut_vs_measured"] = {
        "lut_ms": lut,
        "measured_ms": meas,
        "mape": acc["mape"],
        "spearman": acc["spearman"],
    }


def demo_steps() -> list[Callable[[DemoContext], None]]:
    """The steps after the table, in order (imported here: they build on the whole package)."""
    from latbench.predict.demo import step_predictor
    from latbench.search.mnas.demo import step_mnas_search
    from latbench.search.proxyless.demo import step_proxyless_search

    return [step_lut_vs_measured, step_predictor, step_mnas_search, step_proxyless_search]


def run_demo(device: str = "demo-cpu", seed: int = 0) -> DemoContext:
    space = get_space("proxyless-mobile", resolution=224)
    prof, backend = step_profile(device)
    table = step_table(prof, backend, space)
    ctx = DemoContext(device, prof, backend, table, space, paths.write_dir("tables").parent, seed)
    for number, step in enumerate(demo_steps(), start=3):
        ctx.step = number
        step(ctx)
    return ctx
