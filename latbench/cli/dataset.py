"""``latbench dataset import|show|measure``, ``latbench shots`` and ``latbench transfer train|eval|predict``.

Few-shot transfer in two commands (plus measuring)::

    latbench shots --space nb201 -k 10 --out shots.jsonl         # which networks to measure
    latbench dataset measure --device cpu --arch shots.jsonl --out shots.csv   # or measure them any way: arch,ms
    latbench transfer train --shots shots.csv --name mydev --out predictors/mydev/nb201-transfer.json
    latbench search mnas --space nb201 --predictor predictors/mydev/nb201-transfer.json --target 8ms
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from latbench.cli.common import SeqOpt, emit, out, space_params, space_tag
from latbench.errors import LatbenchError

dataset_app = typer.Typer(help="Network latency datasets: import, show, measure.", no_args_is_help=True)
transfer_app = typer.Typer(
    help="Few-shot latency transfer to a new device: train, eval, predict.", no_args_is_help=True
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
RefsOpt = Annotated[
    list[str] | None,
    typer.Option("--references", help="Reference dataset file (every column) or FILE:DEVICE; repeat to add."),
]
DEFAULT_REFS = ["nb201/published-13"]


def _say(text: str) -> None:
    out.print(text, markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    dataset_app.command("import")(dataset_import)
    dataset_app.command("show")(dataset_show)
    dataset_app.command("measure")(dataset_measure)
    transfer_app.command("train")(transfer_train)
    transfer_app.command("eval")(transfer_eval)
    transfer_app.command("predict")(transfer_predict)
    app.command("shots")(shots)
    app.add_typer(dataset_app, name="dataset")
    app.add_typer(transfer_app, name="transfer")


# ----------------------------------------------------------------------------- dataset
def dataset_import(
    file: Annotated[Path, typer.Argument(help="Published CSV: [index,]arch,<device>,... (ms).")],
    space: Annotated[str, typer.Option(help="Search space of the archs.")] = "nb201",
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="Folder (default datasets/<space>/).")] = None,
    source: Annotated[str, typer.Option(help="Where the numbers come from (kept as provenance).")] = "",
    force: Annotated[bool, typer.Option(help="Replace existing datasets.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Import a published latency table: one dataset (CSV + JSON sidecar) per device column."""
    from latbench import paths
    from latbench.dataset import import_published

    target = out_dir or paths.REPO_DIR / "datasets" / space
    written = import_published(file, space, target, citation=source, force=force)
    emit(as_json, {"written": [str(p) for p in written]}, lambda: _say(f"wrote {len(written)} datasets to {target}"))


def dataset_show(
    file: Annotated[str, typer.Argument(help="Dataset file (or name under datasets/).")],
    as_json: JsonOpt = False,
) -> None:
    """Validate a dataset file and summarise each device column."""
    import numpy as np

    from latbench.dataset import load_datasets

    sets = load_datasets(file)
    rows = [
        {
            "id": d.id,
            "device": d.name,
            "space": d.space,
            "archs": len(d),
            "min_ms": float(d.ms.min()),
            "median_ms": float(np.median(d.ms)),
            "max_ms": float(d.ms.max()),
            "provenance": d.provenance.get("kind"),
            "fingerprint": d.fingerprint,
        }
        for d in sets
    ]

    def human() -> None:
        for r in rows:
            _say(
                f"{r['id']:<32} {r['space']:<6} {r['archs']:>6} archs  {r['min_ms']:.4g}..{r['max_ms']:.4g} ms "
                f"(median {r['median_ms']:.4g})  {r['provenance']}  {r['fingerprint']}"
            )

    emit(as_json, rows, human)


def dataset_measure(
    device: Annotated[str, typer.Option(help="Local device (profile or backend name).")],
    space: Annotated[str, typer.Option(help="Search space.")] = "nb201",
    seq: SeqOpt = None,
    all_archs: Annotated[bool, typer.Option("--all", help="Every distinct network (nb201: one per class).")] = False,
    sample: Annotated[int | None, typer.Option(help="Measure N distinct networks drawn with --seed.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --sample.")] = 0,
    archs: Annotated[
        Path | None, typer.Option("--arch", help="Measure these archs (.json / .jsonl), e.g. from `shots`.")
    ] = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Dataset CSV (default datasets/<space>[-seq<N>]/<device>.csv).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Keep what the file holds and measure what is missing.")] = False,
    force: Annotated[bool, typer.Option(help="Start the file again.")] = False,
    min_time: Annotated[float | None, typer.Option(help="Seconds of timing per network (all rounds).")] = None,
    scale_of: Annotated[
        Path | None,
        typer.Option(help="Normalise to this dataset's sentinel reference (a retest or extension in another file)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure whole networks of a space on a local device into a dataset (resumable)."""
    from latbench import paths
    from latbench.dataset import distinct_archs, load_dataset
    from latbench.dataset_measure import measure_dataset
    from latbench.service import dataset_timing, open_device
    from latbench.spaces import get_space, load_archs

    params = space_params(space, seq=seq)
    sp = get_space(space, **params)
    if archs is not None:
        if all_archs or sample is not None:
            raise LatbenchError("give --arch, --all or --sample N, not several")
        todo = load_archs(str(archs), default_space=space, default_params=params)
        selection = f"archs from {archs.name}"
    else:
        todo = distinct_archs(sp, all_archs=all_archs, sample=sample, seed=seed)
        selection = "all distinct" if all_archs else f"sample {sample} seed {seed}"
    paths.check_name(device, "device")
    target = out_path or paths.REPO_DIR / "datasets" / space_tag(space, params) / f"{device}.csv"
    _, backend = open_device(device)
    config = dataset_timing(backend, min_time=min_time)
    ref = _sentinel_ref_of(scale_of, backend.fingerprint().id) if scale_of is not None else None
    written = measure_dataset(
        device, sp, target, todo, resume=resume, force=force, config=config, selection=selection, sentinel_ref_ms=ref
    )
    ds = load_dataset(written)
    emit(
        as_json,
        {"path": str(written), "archs": len(ds), "fingerprint": ds.fingerprint},
        lambda: _say(f"{written}: {len(ds)} networks measured on {ds.name}"),
    )


def _sentinel_ref_of(path: Path, fp_id: str) -> float:
    """The sentinel reference a dataset measured on this device was normalised to."""
    from latbench.dataset import load_dataset

    ds = load_dataset(path)
    have = (ds.device.get("fingerprint") or {}).get("id")
    if have != fp_id:
        raise LatbenchError(f"--scale-of {path}: measured on device {have}, this device is {fp_id}")
    ref = ds.provenance.get("sentinel_ref_ms")
    if not isinstance(ref, (int, float)) or isinstance(ref, bool) or not ref > 0:
        raise LatbenchError(f"--scale-of {path}: the dataset records no sentinel reference (measured without one)")
    return float(ref)


# ----------------------------------------------------------------------------- shots
def shots(
    space: Annotated[str, typer.Option(help="Search space (its reference datasets pick the shots).")] = "nb201",
    k: Annotated[int, typer.Option("-k", "--k", help="How many networks to measure.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed (the first shot; the rest follow deterministically).")] = 0,
    references: RefsOpt = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Reference device to leave out; repeat.")] = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Write the archs as JSONL (for dataset measure).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite --out.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Pick the K networks to measure on a new device: spread over the reference devices' principal components."""
    from latbench import paths
    from latbench.dataset import arch_from_key
    from latbench.predict.transfer import load_references, select_shots

    refs = load_references(references or DEFAULT_REFS, exclude or [])
    if refs.space.name != space:
        raise LatbenchError(f"the reference datasets are of space {refs.space.name}, not {space}")
    keys = select_shots(refs, k, seed=seed)
    archs = [arch_from_key(refs.space, key) for key in keys]
    if out_path is not None:
        if out_path.exists() and not force:
            raise LatbenchError(f"{out_path} exists; pass --force to overwrite it")
        paths.atomic_write_text(out_path, "".join(json.dumps(a) + "\n" for a in archs))
    rows = [{"arch": key, "json": a} for key, a in zip(keys, archs, strict=True)]

    def human() -> None:
        for r in rows:
            _say(f"{r['arch']}\t{json.dumps(r['json'])}")

    emit(as_json, rows, human)


# ----------------------------------------------------------------------------- transfer
def transfer_train(
    shots_file: Annotated[Path, typer.Option("--shots", help="Measured shots: CSV arch,ms or a dataset file.")],
    name: Annotated[str, typer.Option(help="Name of the new device.")],
    space: Annotated[str, typer.Option(help="Search space.")] = "nb201",
    references: RefsOpt = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Reference device to leave out; repeat.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulated tasks that pick the shrinkage.")] = 0,
    out_path: Annotated[Path | None, typer.Option("--out", help="Predictor file.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite --out.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Fit a few-shot transfer predictor for a new device from K measured networks."""
    from latbench import paths
    from latbench.predict.transfer import fit_transfer, load_references, read_shots

    paths.check_name(name, "device name")
    refs = load_references(references or DEFAULT_REFS, exclude or [])
    if refs.space.name != space:
        raise LatbenchError(f"the reference datasets are of space {refs.space.name}, not {space}")
    measured = read_shots(shots_file, refs.space)
    target = out_path or paths.write_dir("predictors") / name / f"{space}-transfer.json"
    if Path(target).exists() and not force:
        raise LatbenchError(f"{target} exists; pass --force to overwrite it")
    fingerprint = None
    if shots_file.suffix == ".csv" and shots_file.with_suffix(".json").is_file():
        from latbench.dataset import load_dataset

        fp = load_dataset(shots_file).device.get("fingerprint") or {}
        if fp.get("id"):  # measured by latbench: the predictor is for that device
            fingerprint = {"id": fp["id"], "kind": "measured shots"}
    model = fit_transfer(refs, measured, device={"name": name}, fingerprint=fingerprint, seed=seed)
    model.save(target, force=force)
    m = model.meta["metrics"]
    info = {
        "path": str(target),
        "k": len(measured),
        "config": list(model.config),
        "blend": model.blend,
        "references": refs.names,
        **m,
    }
    emit(
        as_json,
        info,
        lambda: _say(
            f"{target}: K={len(measured)} shots, {len(refs.names)} reference devices, "
            f"shrinkage {model.config}, blend {model.blend:g}; "
            f"leave-one-shot-out: {m['loo_within_10']:.0%} within 10%, MAPE {m['loo_mape']:.1%}"
        ),
    )


def transfer_eval(
    k: Annotated[int, typer.Option("-k", "--k", help="Shots of the left-out device.")] = 10,
    seeds: Annotated[int, typer.Option(help="Shot draws per device.")] = 20,
    references: Annotated[str, typer.Option(help="Dataset file with one column per device.")] = DEFAULT_REFS[0],
    device: Annotated[list[str] | None, typer.Option(help="Only these devices; repeat.")] = None,
    select: Annotated[str, typer.Option(help="random shots, or pcs (`latbench shots`).")] = "random",
    extra: Annotated[
        list[Path] | None,
        typer.Option(help="Extra reference dataset (e.g. this machine's): figures with and without it; repeat."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Leave-one-device-out: each device predicted from the others plus K of its networks, beside ridge."""
    from latbench.dataset import load_datasets
    from latbench.predict.transfer import load_references
    from latbench.predict.transfer_eval import format_table, lodo, lodo_with_and_without
    from latbench.service import track

    if select not in ("random", "pcs"):
        raise LatbenchError(f"--select must be random or pcs, got {select!r}")
    if extra and device:
        raise LatbenchError("give --extra or --device, not both (--extra leaves out every published device)")
    full = load_references([references, *[str(e) for e in extra or []]])
    extra_names = full.names[len(full.names) - sum(len(load_datasets(str(e))) for e in extra or []) :]

    def rows_of(results: list[Any]) -> list[dict[str, Any]]:
        return [
            {
                "device": r.device,
                "config": list(r.config),
                "blend": r.blend,
                "transfer": dict(zip(("spearman", "within_10", "mape"), r.transfer, strict=True)),
                "ridge": dict(zip(("spearman", "within_10", "mape"), r.baseline, strict=True)),
            }
            for r in results
        ]

    if not extra_names:
        with track("leave-one-device-out", total=len(device or full.names), enabled=not as_json) as update:
            results = lodo(full, k, seeds, device, select, progress=lambda i, n: update(i, n))
        emit(as_json, rows_of(results), lambda: _say(format_table(results, k, seeds, select)))
        return
    with track("leave-one-device-out, with and without", total=1, enabled=not as_json) as update:
        with_x, without_x = lodo_with_and_without(full, extra_names, k, seeds, select, lambda i, n: update(i, n))
    n_archs = len(full.keys)
    doc = {"extra": extra_names, "archs": n_archs, "with": rows_of(with_x), "without": rows_of(without_x)}

    def human() -> None:
        _say(f"with {', '.join(extra_names)} as reference ({n_archs} networks every dataset holds):")
        _say(format_table(with_x, k, seeds, select))
        _say(f"\nwithout it (the same {n_archs} networks, the same shot seeds):")
        _say(format_table(without_x, k, seeds, select))

    emit(as_json, doc, human)


def transfer_predict(
    predictor: Annotated[Path, typer.Argument(help="Transfer predictor file.")],
    arch: Annotated[
        str | None, typer.Option(help="Arch JSON file (.json / .jsonl) or a benchmark arch string.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Use a predictor filed under another device.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Predicted latency (ms) of archs, or a summary of the predictor over its whole space."""
    import numpy as np

    from latbench.dataset import arch_from_key, arch_key
    from latbench.predict.transfer_io import load_transfer
    from latbench.spaces import load_archs

    model = load_transfer(predictor, force=force)
    if arch is None:
        allp = model.predict_all()
        info = {
            "archs": len(allp),
            "min_ms": float(allp.min()),
            "median_ms": float(np.median(allp)),
            "max_ms": float(allp.max()),
        }
        emit(as_json, info, lambda: _say(json.dumps(info)))
        return
    archs = load_archs(arch, model.space.name) if Path(arch).exists() else [arch_from_key(model.space, arch)]
    rows = [
        {"arch": arch_key(model.space, a), "predicted_ms": float(v)}
        for a, v in zip(archs, model.predict_archs(archs), strict=True)
    ]

    def human() -> None:
        for r in rows:
            _say(f"{r['predicted_ms']:.3f} ms  {r['arch']}")

    emit(as_json, rows, human)
