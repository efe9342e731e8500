"""Commands of the emulation part: ``latbench calibrate``, ``latbench emulation sweep|extrapolate`` and
``latbench lut-check``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from latbench import paths
from latbench.cli.common import (
    ForceOpt,
    JsonOpt,
    MinTimeOpt,
    SeedOpt,
    SeqOpt,
    check_device_name,
    console,
    emit,
    new_file,
    out,
    positive_finite,
    progress_bar,
    space_params,
    space_tag,
)
from latbench.errors import LatbenchError, TableError
from latbench.service import open_device

emulation_app = typer.Typer(
    help="How far a calibrated emulator can be trusted: over shot seeds, and at shapes the phone never published.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_cmd)
    app.add_typer(emulation_app, name="emulation")
    app.command("lut-check")(lut_check)


# ----------------------------------------------------------------------------- calibrate
def calibrate_cmd(
    table: Annotated[str, typer.Option(help="Emulator table (path or <device>/<space>), e.g. from mobile-1t.")],
    reference: Annotated[
        Path, typer.Option(help="Reference device's table: a published YAML LUT or a latbench table.")
    ],
    shots: Annotated[
        str,
        typer.Option(
            help="How many reference ops the fit may see, or 'all' (the whole table, for shapes outside it; "
            "then nothing is held out to score)."
        ),
    ] = "10",
    name: Annotated[
        str | None,
        typer.Option(callback=check_device_name, help="Write the calibrated device profile devices/<name>.toml."),
    ] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="Format of a YAML reference: proxyless or ofa.")] = None,
    seed: SeedOpt = 0,
    model: Annotated[
        str | None,
        typer.Option(help="Transfer model: time-roofline (default), hybrid, auto (leave-one-out on shots), a name."),
    ] = None,
    stat: Annotated[str, typer.Option(help="Emulator number per row: p25, p10 or median.")] = "p25",
    n_archs: Annotated[
        int, typer.Option(min=0, help="Random archs of the reference space to score LUT sums on.")
    ] = 200,
    parts: Annotated[Path | None, typer.Option(help="Table of op parts (made and resumed here when missing).")] = None,
    write_table: Annotated[
        Path | None, typer.Option(help="Also write the predicted reference-device table here.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing profile (--name) or --write-table file.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Fit emulated latencies to a real device's table on K reference ops; report accuracy on the unseen ones."""
    from latbench.device import DeviceProfile, now_iso
    from latbench.emulation.transfer import (
        CalibratedLatency,
        calibrate,
        emulator_backend,
        load_reference,
        parse_shots,
    )
    from latbench.table import LatencyTable

    n_shots = parse_shots(shots)
    model = _check_model(model, stat)
    emu_table = LatencyTable.load(table)
    ref = load_reference(reference, fmt)
    out_path = None if name is None else paths.write_dir("devices") / f"{name}.toml"
    if out_path is not None and out_path.exists() and not force:
        raise LatbenchError(f"profile {out_path} exists; pass --force to replace it or choose another --name")
    new_file(out_path, True)
    new_file(write_table, force, "--write-table")
    if emu_table.path is None:
        raise TableError(f"table {table} has no file")
    parts_path = _parts_path(emu_table, parts)
    backend = emulator_backend(emu_table)
    with progress_bar("op parts", enabled=not as_json) as update:
        cal, emu = calibrate(
            emu_table,
            ref,
            n_shots,
            backend=backend,
            parts_path=parts_path,
            seed=seed,
            model=model,
            stat=stat,
            n_archs=n_archs,
            progress=lambda done, total: update(done, total),
        )
    result: dict[str, Any] = {"calibration": cal.to_dict()}
    if out_path is not None:
        ref_name = ref.device.get("name") or "reference"
        prof = DeviceProfile(
            name=out_path.stem,
            backend=emu_table.device.get("backend") or emu_table.fingerprint["backend"],
            settings={k: v for k, v in (emu_table.device.get("settings") or {}).items() if v is not None},
            fingerprint=emu_table.fingerprint,
            description=f"{ref_name} emulated by {emu_table.device.get('name', '?')} ({cal.model} calibration, "
            f"{len(cal.shots)} shots)",
            created=now_iso(),
            extra={"calibration": cal.to_dict()},
        )
        prof.save(out_path)
        result["profile"] = str(out_path)
    if write_table is not None:
        model_ = CalibratedLatency(cal, emu)
        t = model_.predicted_table(emu_table.specs())
        t.save(write_table)
        result["predicted_table"] = str(write_table)
    if backend is not None:
        backend.close()

    def human() -> None:
        m = cal.metrics
        out.print(
            f"model {cal.model}: {', '.join(f'{f}={c:.4g}' for f, c in zip(cal.features, cal.coef, strict=True))}"
        )
        out.print(
            f"leave-one-out MAPE on the {len(cal.shots)} shots: "
            + ", ".join(f"{k} {100 * v:.1f}%" for k, v in cal.loo_mape.items() if not math.isnan(v))
        )
        for label, key in (("unseen ops", "unseen_ops"), ("arch LUT sums", "arch_lut_sums")):
            if m.get(key):
                r, b = m[key], m.get(f"{key}_naive_scale", {})
                out.print(
                    f"{label:<14} n={r['n']:<4} Spearman {r['spearman']:.3f}  MAPE {100 * r['mape']:.1f}%  "
                    f"within 10% {100 * r['within_10']:.1f}%   (one scale factor: "
                    f"MAPE {100 * b.get('mape', math.nan):.1f}%, within 10% {100 * b.get('within_10', math.nan):.1f}%)"
                )
        for k in ("profile", "predicted_table"):
            if k in result:
                console.print(f"wrote {result[k]}")

    emit(as_json, result, human)


# ----------------------------------------------------------------------------- emulation sweep / extrapolate
_TableOpt = Annotated[str, typer.Option(help="Emulator table (path or <device>/<space>), e.g. from mobile-1t.")]
_SeedsOpt = Annotated[str, typer.Option(help="Shot seeds: a range 0-19 or a list 0,3,5.")]
_ModelOpt = Annotated[str | None, typer.Option(help="Transfer model: time-roofline (default), auto, or a name.")]
_NArchsOpt = Annotated[int, typer.Option(min=0, help="Random archs of the reference space whose sums are scored.")]
_PartsOpt = Annotated[Path | None, typer.Option(help="Table of op parts (default: <table>.parts.json).")]


def _parts_path(table: Any, parts: Path | None) -> Path:
    """``--parts``, else the op-parts table beside the emulator table (``<table>.parts.json``)."""
    return parts or table.path.with_name(table.path.stem + ".parts.json")


def _share(value: float) -> float:
    """A share of a whole: above 0, at most 1."""
    if not (math.isfinite(value) and 0 < value <= 1):
        raise typer.BadParameter(f"{value} is not a share above 0 and at most 1")
    return value


def _check_model(model: str | None, stat: str = "p25") -> str:
    """The transfer model (default filled in) and the emulator statistic, refused in one line when unknown."""
    from latbench.emulation.transfer import DEFAULT_MODEL, MODELS, STATS

    model = model or DEFAULT_MODEL
    if model not in (*MODELS, "auto"):
        raise LatbenchError(f"unknown --model {model!r}; use auto or one of {', '.join(MODELS)}")
    if stat not in STATS:
        raise LatbenchError(f"unknown --stat {stat!r}; use one of {', '.join(STATS)}")
    return model


def _seed_line(seed: int, ops_label: str, ops: float, naive: float, sums_label: str, sums: float | None) -> None:
    """One seed of a sweep: ops within 10 % beside one scale factor's, then the network sums within 10 %."""
    out.print(
        f"seed {seed:3d}  {ops_label} within 10% {100 * ops:5.1f}%  (one scale {100 * naive:5.1f}%)  "
        f"{sums_label} within 10% " + (f"{100 * sums:5.1f}%" if sums is not None else "  n/a")
    )


def _seed_summary(result: dict[str, Any], rows: list[tuple[str, str]]) -> None:
    """Median, worst and mean over the seeds of each within-10 % share in ``rows`` (result key, label)."""
    for key, label in rows:
        s = result.get(key) or {}
        if s.get("median") is not None:
            med, worst, mean = (100 * s[k] for k in ("median", "worst", "mean"))
            out.print(f"{label:<11} median {med:.1f}%  worst {worst:.1f}%  mean {mean:.1f}%")


@emulation_app.command("sweep")
def emulation_sweep(
    table: _TableOpt,
    reference: Annotated[
        Path, typer.Option(help="Reference device's table: a published YAML LUT or a latbench table.")
    ],
    shots: Annotated[int, typer.Option(min=1, help="Reference ops each fit may see.")] = 10,
    seeds: _SeedsOpt = "0-19",
    fmt: Annotated[str | None, typer.Option("--format", help="Format of a YAML reference: proxyless or ofa.")] = None,
    model: _ModelOpt = None,
    stat: Annotated[str, typer.Option(help="Emulator number per row: p25, p10, min or median.")] = "p25",
    n_archs: _NArchsOpt = 200,
    parts: _PartsOpt = None,
    shot_keep: Annotated[
        float,
        typer.Option(callback=_share, help="Share of candidate shots kept by the emulator's confidence (1: all)."),
    ] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Calibrate once per shot seed; per seed and over seeds: unseen ops and random networks within 10%."""
    from latbench.emulation.sweep import parse_seeds, sweep
    from latbench.emulation.transfer import emulator_backend, load_reference
    from latbench.table import LatencyTable

    model = _check_model(model, stat)
    seed_list = parse_seeds(seeds)
    emu_table = LatencyTable.load(table)
    ref = load_reference(reference, fmt)
    if emu_table.path is None:
        raise TableError(f"table {table} has no file")
    backend = emulator_backend(emu_table)
    try:
        result = sweep(
            emu_table,
            ref,
            shots,
            seed_list,
            model=model,
            stat=stat,
            n_archs=n_archs,
            parts_path=_parts_path(emu_table, parts),
            backend=backend,
            shot_keep=shot_keep,
            show_progress=not as_json,
        )
    finally:
        if backend is not None:
            backend.close()

    def human() -> None:
        out.print(f"{result['table']} -> {result['reference']}: {shots} shots, model {result['model']}, stat {stat}")
        for r in result["per_seed"]:
            _seed_line(
                r["seed"], "unseen ops", r["unseen_ops_within_10"], r["unseen_ops_naive_within_10"], "arch sums",
                r["arch_sums_within_10"],
            )  # fmt: skip
        _seed_summary(result, [("unseen_ops_within_10", "unseen ops"), ("arch_sums_within_10", "arch sums")])

    emit(as_json, result, human)


@emulation_app.command("extrapolate")
def emulation_extrapolate(
    table: Annotated[str, typer.Option(help="Emulator table of the reference's shapes (e.g. 224 px).")],
    reference: Annotated[Path, typer.Option(help="Reference device's table: the only one the fit sees.")],
    new_table: Annotated[str, typer.Option(help="Emulator table of the new shapes (another resolution or width).")],
    truth: Annotated[Path, typer.Option(help="Reference device's table of the new shapes (only to score).")],
    shots: Annotated[
        str, typer.Option(help="Reference ops the fit sees: a number, or 'all' (its whole table).")
    ] = "10",
    seeds: _SeedsOpt = "0-19",
    model: _ModelOpt = None,
    n_archs: _NArchsOpt = 200,
    parts: _PartsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Calibrate on the reference's table only; score its ops and networks at shapes it never published."""
    from latbench.emulation.extrapolate import extrapolate
    from latbench.emulation.sweep import parse_seeds
    from latbench.emulation.transfer import load_reference, parse_shots
    from latbench.table import LatencyTable

    model = _check_model(model)
    n_shots = parse_shots(shots)
    seed_list = parse_seeds(seeds)
    emu_table = LatencyTable.load(table)
    new = LatencyTable.load(new_table)
    ref, true = load_reference(reference), load_reference(truth)
    parts_path = _parts_path(emu_table, parts) if emu_table.path else parts
    result = extrapolate(
        emu_table,
        ref,
        new,
        true,
        n_shots,
        seed_list,
        model=model,
        n_archs=n_archs,
        parts_path=parts_path if parts_path is not None and parts_path.exists() else None,
        show_progress=not as_json,
    )

    def human() -> None:
        out.print(f"calibrated {result['table']} -> {result['reference']} ({shots} shots, model {result['model']})")
        out.print(
            f"predicting {result['truth']} ({result['new_ops']} ops, {result['archs']} networks) "
            f"from {result['new_table']}"
        )
        for r in result["per_seed"]:
            _seed_line(
                r["seed"], "ops", r["ops"]["within_10"], r["ops_naive_scale"]["within_10"], "networks",
                r.get("archs", {}).get("within_10"),
            )  # fmt: skip
        _seed_summary(result, [("ops_within_10", "ops"), ("archs_within_10", "networks")])

    emit(as_json, result, human)


# ----------------------------------------------------------------------------- lut-check
def call_overhead(backend: Any, config: Any) -> dict[str, Any] | None:
    """Latency (ms) of an empty call on ``backend``: an Identity graph on ORT, ``nn.Identity`` on torch-cpu."""
    from latbench.measure.harness import measure_runner

    if backend.name.startswith("ort-"):
        from latbench.backends.ort import empty_model_path

        m = backend.measure(str(empty_model_path()), config)
        what = "ONNX Runtime session call on an Identity graph (1x8 floats), IO binding"
    elif backend.name == "torch-cpu":
        import torch

        from latbench.backends.torch_cpu import torch_module_runner

        m = measure_runner(torch_module_runner(torch.nn.Identity(), torch.zeros(1, 8)), "empty", config)
        what = "torch nn.Identity call under inference_mode"
    else:
        return None
    return {"what": what, **m.summary()}


def lut_check(
    device: Annotated[str, typer.Option(help="Device profile or backend name.")],
    space: Annotated[str, typer.Option(help="Search space.")] = "proxyless-mobile",
    resolution: Annotated[int | None, typer.Option(min=1, help="Input resolution.")] = None,
    width: Annotated[float | None, typer.Option(callback=positive_finite, help="Width multiplier.")] = None,
    seq: SeqOpt = None,
    n_archs: Annotated[int, typer.Option(min=1, help="Random archs to measure end to end.")] = 20,
    table: Annotated[str | None, typer.Option(help="Table to sum (default: built or resumed for the device).")] = None,
    seed: SeedOpt = 0,
    min_time: MinTimeOpt = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="Write the report (with raw samples) as JSON.")] = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """LUT sum vs end-to-end latency on random archs, and the per-call overhead of the device (ms)."""
    from latbench.service import measure_archs, network_timing
    from latbench.spaces import get_space
    from latbench.table import LatencyTable, build_table, default_table_path

    params = space_params(space, resolution=resolution, width=width, seq=seq)
    new_file(out_path, force)
    s = get_space(space, **params)
    prof, backend = open_device(device)
    if table is not None:
        t = LatencyTable.load(table)
        t.check_same_device(backend.fingerprint().to_dict(), "sums for this device")
    else:
        path = default_table_path(prof.name, space_tag(s.name, params), resolution)
        with progress_bar(f"table {prof.name}/{s.name}", total=len(s.vocabulary), enabled=not as_json) as update:
            t, _ = build_table(
                backend,
                s.vocabulary,
                path,
                device={"name": prof.name, "backend": prof.backend, "settings": backend.settings},
                space=s.name,
                space_params=s.params,
                resume=path.exists(),
                sentinel_ref_ms=prof.sentinel_ms,
                progress=lambda done, total: update(done, total),
            )
    rng = np.random.default_rng(seed)
    archs = [s.sample(rng) for _ in range(n_archs)]
    sums = np.array([t.lut_sum(s.ops_of(a)) for a in archs])
    config = network_timing(backend, None, min_time)
    ms, info = measure_archs(backend, archs, config, t.sentinel_ref_ms or prof.sentinel_ms, progress=not as_json)
    e2e = np.array([m.median for m in ms])
    ratio = e2e / sums
    from latbench.predict.metrics import accuracy

    acc = accuracy(sums, e2e)

    overhead = call_overhead(backend, backend.timing)
    n_ops = float(np.mean([len(s.ops_of(a)) for a in archs]))
    report = {
        "device": prof.name,
        "fingerprint": backend.fingerprint().id,
        "table": str(t.path),
        "space": s.name,
        "space_params": s.params,
        "archs": n_archs,
        "mean_ops_per_arch": n_ops,
        "lut_sum_vs_e2e": {
            "mape": acc["mape"],
            "within_10": acc["within_10"],
            "e2e_over_lut_median": round(float(np.median(ratio)), 4),
            "e2e_over_lut_min": round(float(ratio.min()), 4),
            "e2e_over_lut_max": round(float(ratio.max()), 4),
            "spearman": acc["spearman"],
        },
        "call_overhead": overhead,
        "per_arch": [{"lut_sum_ms": round(float(a), 4), **m.summary()} for a, m in zip(sums, ms, strict=True)],
        "timing": config.to_dict(),
        "info": {k: v for k, v in info.items() if k != "remeasured"},
    }
    if out_path is not None:
        paths.atomic_write_json(out_path, report)

    def human() -> None:
        r = report["lut_sum_vs_e2e"]
        out.print(
            f"{prof.name} ({report['fingerprint']}), {n_archs} archs of {s.name}: LUT sum vs end to end "
            f"MAPE {100 * r['mape']:.1f}%, within 10% {100 * r['within_10']:.0f}%, "
            f"e2e/LUT median {r['e2e_over_lut_median']:.3f} [{r['e2e_over_lut_min']:.3f}, "
            f"{r['e2e_over_lut_max']:.3f}], Spearman {r['spearman']:.3f}"
        )
        if overhead:
            out.print(f"per-call overhead: {overhead['median_ms'] * 1000:.2f} us median ({overhead['what']})")

    emit(as_json, report, human)
