"""Core commands: devices, profile, space, table, measure, lut-sum."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from latbench import paths
from latbench.cli.common import (
    ArchSeqOpt,
    ForceOpt,
    JsonOpt,
    MinTimeOpt,
    SeedOpt,
    SeqOpt,
    check_device_name,
    check_settings,
    check_threads,
    console,
    emit,
    new_file,
    out,
    parse_cores,
    parse_settings,
    positive_finite,
    progress_bar,
    space_params,
    space_tag,
)
from latbench.device import DeviceProfile, list_profiles, now_iso
from latbench.errors import LatbenchError, TableError
from latbench.service import measure_archs, network_timing, open_device, ops_to_measure
from latbench.spaces import SPACES, get_space, load_archs, space_of
from latbench.table import LatencyTable, build_table, default_table_path, import_published

ResolutionOpt = Annotated[int | None, typer.Option(min=1, help="Input resolution of the space.")]
WidthOpt = Annotated[float | None, typer.Option(callback=positive_finite, help="Width multiplier of the space.")]
DriftOpt = Annotated[str | None, typer.Option(help="Drift handling: sentinel, interleave or none.")]

space_app = typer.Typer(help="Search spaces: list them, sample archs.", no_args_is_help=True)
table_app = typer.Typer(help="Latency lookup tables: build, show, export, import.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("devices")(devices)
    app.command("profile")(profile)
    app.add_typer(space_app, name="space")
    app.add_typer(table_app, name="table")
    app.command("measure")(measure)
    app.command("lut-sum")(lut_sum)


# ----------------------------------------------------------------------------- devices
def devices(as_json: JsonOpt = False) -> None:
    """List device profiles (shipped and profiled) and backends."""
    from latbench.backends import backend_class, backend_names

    profiles = [
        {
            "name": p.name,
            "backend": p.backend,
            "fingerprint": (p.fingerprint or {}).get("id"),
            "path": str(p.path),
            "description": p.description,
        }
        for p in list_profiles()
    ]
    backends = []
    for name in backend_names():
        try:
            ok, reason = backend_class(name).available()
        except LatbenchError as exc:
            ok, reason = False, str(exc)
        backends.append({"name": name, "available": ok, "reason": reason})

    def human() -> None:
        out.print("[bold]device profiles[/bold]")
        for p in profiles:
            out.print(f"  {p['name']:<20} {p['backend']:<12} {p['fingerprint'] or '(template)':<24} {p['path']}")
        out.print("[bold]backends[/bold]")
        for b in backends:
            state = "ok" if b["available"] else f"unavailable: {b['reason']}"
            out.print(f"  {b['name']:<20} {state}")

    emit(as_json, {"profiles": profiles, "backends": backends}, human)


def profile(
    backend: Annotated[
        str, typer.Argument(help="Backend to profile: torch-cpu, ort-cpu, ort-mobile, torch-cuda, ssh, adb, fake.")
    ],
    threads: Annotated[int | None, typer.Option(help="Intra-op threads (1 to the number of cores).")] = None,
    cores: Annotated[str | None, typer.Option(help="Pin to these cores, e.g. 0,1 or 0-3.")] = None,
    name: Annotated[
        str | None,
        typer.Option(callback=check_device_name, help="Profile name (file devices/<name>.toml; default the backend)."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="ssh: the board's host name or address.")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="ssh: the board's SSH port.")] = None,
    user: Annotated[str | None, typer.Option(help="ssh: the user to log in as.")] = None,
    key: Annotated[Path | None, typer.Option(help="ssh: the private key file.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Other backend setting, key=value (repeatable).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing profile of that name (its tables no longer match it).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Fingerprint a device, time the drift sentinel, write devices/<name>.toml, print the id."""
    from latbench.backends import get_backend
    from latbench.device import REMOTE_BACKENDS

    local = backend not in REMOTE_BACKENDS  # a board's or phone's threads and cores are not this machine's
    settings: dict[str, Any] = parse_settings(set_)
    remote = {"host": host, "port": port, "user": user, "key": str(key) if key is not None else None}
    settings.update({k: v for k, v in remote.items() if v is not None})
    if threads is not None:
        settings["threads"] = check_threads(threads, local=local)
    if cores is not None:
        settings["cores"] = parse_cores(cores, local)
    check_settings(settings, local)
    target = paths.write_dir("devices") / f"{paths.check_name(name or backend, 'profile name')}.toml"
    if target.exists() and not force:
        raise LatbenchError(
            f"profile {target} exists (tables measured with it would no longer match); pass --force to replace it "
            "or choose another --name"
        )
    paths.check_writable_target(target)
    paths.ensure_writable_dir(target.parent)
    be = get_backend(backend, **settings)
    fp = be.fingerprint()
    sentinel = be.measure_sentinel()
    prof = DeviceProfile(
        name=name or backend,
        backend=backend,
        settings={k: v for k, v in be.settings.items() if v is not None},
        fingerprint=fp.to_dict(),
        sentinel_ms=sentinel.median,
        description=f"{backend} on {fp.host.get('cpu_model', '?')}",
        created=now_iso(),
    )
    path = prof.save(target)
    result = {
        "name": prof.name,
        "id": fp.id,
        "path": str(path),
        "settings": prof.settings,
        "sentinel_ms": round(sentinel.median, 5),
        "sentinel_rel_iqr": round(sentinel.rel_iqr, 4),
        "sentinel_attempts": sentinel.meta["attempts"],
        "sentinel_noisy": sentinel.meta["noisy"],
    }
    emit(as_json, result, lambda: out.print(fp.id))
    if not as_json:
        console.print(f"wrote {path} (sentinel {sentinel.median:.4f} ms, IQR/median {sentinel.rel_iqr:.3f})")
    if sentinel.meta["noisy"]:
        console.print(
            f"[yellow]warning:[/yellow] the sentinel stayed noisy after {sentinel.meta['attempts']} attempts; "
            "every measurement on this device is normalised to it, so profile again on a quieter machine"
        )


# ----------------------------------------------------------------------------- spaces
@space_app.command("list")
def space_list(as_json: JsonOpt = False) -> None:
    """List the search spaces with their size."""
    rows = []
    for name in SPACES:
        s = get_space(name)
        rows.append({"name": name, "params": s.params, "decisions": len(s.decisions), "unique_ops": len(s.vocabulary)})

    def human() -> None:
        for r in rows:
            out.print(f"{r['name']:<18} {get_space(r['name']).describe():<48} params {r['params']}")

    emit(as_json, rows, human)


@space_app.command("sample")
def space_sample(
    space: Annotated[str, typer.Argument(help="Space name.")],
    n: Annotated[int, typer.Option("--n", min=1, help="How many archs.")] = 10,
    seed: SeedOpt = 0,
    resolution: ResolutionOpt = None,
    width: WidthOpt = None,
    seq: SeqOpt = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="Write archs as JSONL here.")] = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Sample random archs of a space (uniform over each decision)."""
    s = get_space(space, **space_params(space, resolution=resolution, width=width, seq=seq))
    new_file(out_path, force)
    rng = np.random.default_rng(seed)
    archs = [s.from_indices(i) for i in s.sample_indices(rng, n)]
    text = "".join(json.dumps(a) + "\n" for a in archs)
    if out_path:
        paths.atomic_write_text(out_path, text)
        console.print(f"wrote {n} archs to {out_path}")
    if as_json:
        emit(True, archs)
    elif not out_path:
        out.print(text, end="")


# ----------------------------------------------------------------------------- tables
@table_app.command("build")
def table_build(
    device: Annotated[
        list[str], typer.Option(help="Device profile or backend name (repeat for several with --cluster).")
    ],
    space: Annotated[str, typer.Option(help="Search space whose ops to measure.")] = "proxyless-mobile",
    resolution: ResolutionOpt = None,
    width: WidthOpt = None,
    seq: SeqOpt = None,
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="Table file (default tables/<device>/<space>[-seq<N>].json)."),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Measure only rows missing from an existing table.")] = False,
    sample: Annotated[
        int | None, typer.Option(min=1, help="Instead of the space, measure N op configs sampled across shapes.")
    ] = None,
    seed: SeedOpt = 0,
    sample_family: Annotated[
        str, typer.Option(help="With --sample: op family to draw, conv, transformer or all.")
    ] = "conv",
    adaptive: Annotated[bool, typer.Option(help="With --sample: adaptive sampling where a model errs most.")] = False,
    drift: DriftOpt = None,
    min_time: MinTimeOpt = None,
    cluster: Annotated[
        str | None, typer.Option(help="Ray cluster address (or 'auto') to shard the build over.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Microbenchmark every op of a space on a device into a lookup table (resumable)."""
    if seq is not None and (sample is not None or adaptive):
        raise LatbenchError("--seq is the sequence length of --space; --sample draws its own ops (text lengths 16-512)")
    params = space_params(space, resolution=resolution, width=width, seq=seq)
    if cluster is not None:
        if seq is not None:
            raise LatbenchError("--seq is not supported with --cluster yet; build the table on one device")
        _cluster_table_build(
            cluster,
            device,
            space,
            resolution,
            width,
            out_path,
            resume,
            drift,
            min_time,
            sample,
            seed,
            adaptive,
            as_json,
        )
        return
    if len(device) != 1:
        raise LatbenchError("several --device values need --cluster (a local build times one device)")
    if out_path is not None:
        paths.check_writable_target(out_path)
        paths.ensure_writable_dir(out_path.parent)
    prof, backend = open_device(device[0])
    config = backend.timing
    if drift:
        config = config.with_(drift=drift)
    if min_time:
        config = config.with_(min_run_time_s=min_time)
    if adaptive:
        ops, space_name, table_params = _adaptive_ops(out_path, sample, seed, as_json)
        resume = True
    else:
        ops, space_name, table_params = ops_to_measure(space, **params, sample=sample, seed=seed, family=sample_family)
    path = out_path or default_table_path(prof.name, space_tag(space_name, params), resolution)
    paths.check_writable_target(path)
    paths.ensure_writable_dir(path.parent)
    t0 = time.perf_counter()
    with progress_bar(f"table {prof.name}/{space_name}", total=len(ops), enabled=not as_json) as update:
        table, measured = build_table(
            backend,
            ops,
            path,
            device={"name": prof.name, "backend": backend.name, "settings": backend.settings},
            space=space_name,
            space_params=table_params,
            resume=resume,
            config=config,
            sentinel_ref_ms=prof.sentinel_ms,
            progress=lambda done, total: update(done, total),
        )
    result = {
        **table.summary(),
        "space_params": table.space_params,
        "measured_now": len(measured),
        "already_there": len(table) - len(measured),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    emit(
        as_json,
        result,
        lambda: out.print(
            f"{path}: {len(table)} rows ({len(measured)} measured now in {result['seconds']:.1f} s, "
            f"{result['noisy_rows']} noisy), "
            f"device {table.fingerprint_id}"
        ),
    )


def _adaptive_ops(
    out_path: Path | None, sample: int | None, seed: int, quiet: bool
) -> tuple[list[Any], str, dict[str, Any] | None]:
    """``--sample N --adaptive``: N new ops where a model fitted on the sampled table at ``out_path`` errs most."""
    from latbench.predict.sampling import adaptive_table_ops

    if sample is None:
        raise LatbenchError("--adaptive needs --sample N (how many new ops to add)")
    if out_path is None or not out_path.exists():
        raise LatbenchError("--adaptive grows an existing sampled table: build it with --sample first, pass --out")
    grown = LatencyTable.load(out_path)
    ops, info = adaptive_table_ops(grown, sample, seed=seed)
    if not quiet:
        console.print(
            f"adaptive: {info['new_ops']} new ops near the worst-predicted rows "
            f"(out-of-fold MAPE now {100 * info['oof_mape_before']:.1f}%)"
        )
    return ops, grown.space or "sampled", grown.space_params


def _cluster_table_build(
    cluster: str,
    devices: list[str],
    space: str,
    resolution: int | None,
    width: float | None,
    out_path: Path | None,
    resume: bool,
    drift: str | None,
    min_time: float | None,
    sample: int | None,
    seed: int,
    adaptive: bool,
    as_json: bool,
    sample_family: str = "conv",
) -> None:
    """``table build --cluster``: one build per device, sharded over the Ray nodes that serve it."""
    from latbench.farm.build import cluster_table_build

    results = cluster_table_build(
        cluster,
        devices,
        space=space,
        resolution=resolution,
        width=width,
        out=out_path,
        resume=resume,
        as_json=as_json,
        drift=drift,
        min_time=min_time,
        sample=sample,
        seed=seed,
        adaptive=adaptive,
        sample_family=sample_family,
    )

    def human() -> None:
        for r in results:
            out.print(
                f"{r['path']}: {r['rows']} rows ({r['measured_now']} measured now on {r['nodes_used']} "
                f"node(s), {r['noisy_rows']} noisy), device {r['fingerprint']}"
            )

    emit(as_json, results if len(results) > 1 else results[0], human)


@table_app.command("show")
def table_show(
    table: Annotated[str, typer.Argument(help="Table path or <device>/<space> name.")],
    rows: Annotated[bool, typer.Option(help="List every row.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Summary (and rows) of a table."""
    t = LatencyTable.load(table)
    data = {**t.summary(), "space_params": t.space_params}
    if rows:
        data["rows_detail"] = {
            k: {f: r.get(f) for f in ("median_ms", "iqr_ms", "p90_ms", "n", "noisy")} for k, r in t.rows.items()
        }

    def human() -> None:
        for k, v in data.items():
            if k not in ("source", "rows_detail"):
                out.print(f"{k:<12} {v}")
        if t.source:
            out.print(f"{'source':<12} {t.source.get('origin')} ({t.source.get('description')})")
        if rows:
            for k, r in sorted(t.rows.items(), key=lambda kv: kv[1]["median_ms"]):
                flag = " NOISY" if r.get("noisy") else ""
                out.print(
                    f"  {r['median_ms']:10.4f} ms  IQR {r['iqr_ms']:.4f}  p90 {r['p90_ms']:.4f}"
                    f"  n={r['n']:<5} {k}{flag}"
                )

    emit(as_json, data, human)


@table_app.command("export")
def table_export(
    table: Annotated[str, typer.Argument(help="Table path or name.")],
    csv_path: Annotated[Path, typer.Option("--csv", help="CSV file to write.")],
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Export a table as CSV (one row per op)."""
    t = LatencyTable.load(table)
    new_file(csv_path, force, "--csv")
    paths.atomic_write_text(csv_path, t.to_csv())
    emit(
        as_json,
        {"table": str(t.path), "csv": str(csv_path), "rows": len(t)},
        lambda: console.print(f"wrote {len(t)} rows to {csv_path}"),
    )


@table_app.command("merge")
def table_merge(
    target: Annotated[Path, typer.Argument(help="Table to add rows to (written in place).")],
    sources: Annotated[list[Path], typer.Argument(help="Tables whose missing rows are added.")],
    force: Annotated[
        bool, typer.Option("--force", help="Also take rows measured on another device (marked merged_from).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add rows other tables have and TARGET lacks; other devices' rows only with --force."""
    t = LatencyTable.load(target)
    added: list[str] = []
    for src in sources:
        added += t.merge(LatencyTable.load(src), force=force)
    t.save(t.path)
    emit(
        as_json,
        {"added": len(added), "rows": len(t)},
        lambda: out.print(f"{t.path}: added {len(added)} rows, {len(t)} in all"),
    )


@table_app.command("import")
def table_import(
    yaml_path: Annotated[Path, typer.Argument(help="Published YAML LUT (ProxylessNAS or Once-for-All).")],
    fmt: Annotated[str, typer.Option("--format", help="proxyless or ofa.")],
    resolution: Annotated[
        int | None,
        typer.Option(min=1, help="Input resolution of the LUT (checked against its stem op; default: read from it)."),
    ] = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="Table file to write.")] = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Turn a published phone LUT into a latbench table (one table per input resolution)."""
    t = import_published(yaml_path, fmt, resolution=resolution)
    res = (t.space_params or {}).get("resolution", 224)
    target = out_path or paths.write_dir("tables") / t.device["name"] / f"{t.space}-{res}.json"
    if target.exists() and not force:
        raise TableError(f"{target} exists; pass --force to overwrite it or choose another --out")
    new_file(target, True)
    t.save(target)
    emit(
        as_json,
        t.summary(),
        lambda: out.print(f"{target}: {len(t)} rows from {yaml_path.name} ({t.source['description']})"),
    )


# ----------------------------------------------------------------------------- end to end
def measure(
    device: Annotated[str, typer.Option(help="Device profile or backend name.")],
    arch: Annotated[Path | None, typer.Option(help="Arch JSON or JSONL (one arch per line).")] = None,
    onnx: Annotated[Path | None, typer.Option(help="An ONNX model file (ORT devices).")] = None,
    space: Annotated[str | None, typer.Option(help="Space of archs that do not name one.")] = None,
    seq: ArchSeqOpt = None,
    drift: DriftOpt = None,
    min_time: MinTimeOpt = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="Write results (with raw samples) as JSON.")] = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure whole networks end to end on a device (median, IQR, p90 in ms)."""
    if (arch is None) == (onnx is None):
        raise LatbenchError("give exactly one of --arch or --onnx")
    if onnx is not None and seq is not None:
        raise LatbenchError("--seq fills in archs of --arch; an ONNX model has its sequence length built in")
    params = space_params(space, seq=seq)
    new_file(out_path, force)
    archs = load_archs(str(arch), space, params) if arch is not None else []
    prof, backend = open_device(device)
    config = network_timing(backend, drift, min_time)
    if onnx is not None:
        from latbench.backends.base import require_supported

        require_supported(backend, str(onnx))
        res, info = backend.measure_many({str(onnx): str(onnx)}, config, sentinel_ref_ms=prof.sentinel_ms)
        ms = [res[str(onnx)]]
        labels: list[Any] = [str(onnx)]
    else:
        ms, info = measure_archs(backend, archs, config, prof.sentinel_ms, progress=not as_json)
        labels = archs
    rows = [{"arch": a, **m.summary(), **_how_obtained(m)} for a, m in zip(labels, ms, strict=True)]
    info = {k: v for k, v in info.items() if k != "remeasured"}
    doc = {
        "device": prof.name,
        "fingerprint": backend.fingerprint().id,
        "timing": config.to_dict(),
        "info": info,
        "results": rows,
    }
    if out_path:
        doc_full = {**doc, "results": [{"arch": a, **m.to_dict()} for a, m in zip(labels, ms, strict=True)]}
        paths.atomic_write_json(out_path, doc_full)

    def human() -> None:
        for i, r in enumerate(rows):
            flag = " NOISY" if r["noisy"] else ""
            out.print(
                f"{i:3d}  median {r['median_ms']:9.3f} ms  IQR {r['iqr_ms']:.3f}  p90 {r['p90_ms']:.3f}"
                f"  n={r['n']}{flag}  ({r['kind']})"
            )
            for k in r.get("kernels", []):
                extra = "  extrapolated" if k.get("extrapolated") else ""
                out.print(f"       {k['median_ms']:9.3f} ms  {k['op']}{extra}", markup=False)

    emit(as_json, doc, human)


def _how_obtained(m: Any) -> dict[str, Any]:
    """How a number was obtained ("measured", or "emulated" with its per-kernel breakdown)."""
    meta = getattr(m, "meta", None) or {}
    row: dict[str, Any] = {"kind": meta.get("kind", "measured")}
    for key in ("kernels", "extrapolated_ops"):
        if key in meta:
            row[key] = meta[key]
    return row


def lut_sum(
    table: Annotated[str, typer.Option(help="Table path or name.")],
    arch: Annotated[Path, typer.Option(help="Arch JSON or JSONL.")],
    space: Annotated[str | None, typer.Option(help="Space of archs that do not name one.")] = None,
    seq: ArchSeqOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sum a table's rows over the ops of each arch (milliseconds)."""
    params = space_params(space, seq=seq)
    t = LatencyTable.load(table)
    archs = load_archs(str(arch), space, params)
    sums = [t.lut_sum(space_of(a).ops_of(a)) for a in archs]
    emit(
        as_json,
        {"table": str(t.path), "lut_sum_ms": sums},
        lambda: [out.print(f"{i:3d}  {s:9.3f} ms") for i, s in enumerate(sums)],
    )
