"""``latbench predictor train|eval`` and ``latbench predict``: thin wrappers over :mod:`latbench.predict`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from latbench import paths
from latbench.cli import predictor_app
from latbench.cli.common import (
    ArchSeqOpt,
    JsonOpt,
    SeedOpt,
    console,
    emit,
    new_file,
    out,
    space_params,
    space_tag,
)
from latbench.errors import LatbenchError
from latbench.predict.models import DEFAULT_MODEL, MODEL_NAMES
from latbench.service import open_device


def register(app: typer.Typer) -> None:
    predictor_app.command("train")(predictor_train)
    predictor_app.command("eval")(predictor_eval)
    app.command("predict")(predict)


def _metric_line(name: str, acc: dict[str, Any]) -> str:
    from latbench.predict.metrics import format_accuracy

    return format_accuracy(name, acc)


# ----------------------------------------------------------------------------- train
def predictor_train(
    table: Annotated[
        list[str], typer.Option(help="Training table (path or <device>/<space>); repeat to add sampled tables.")
    ],
    model: Annotated[
        str,
        typer.Option(
            help=f"Model: {', '.join(MODEL_NAMES)}. The default, linear (a power law per op type), "
            "extrapolates to shapes the table lacks; tree models are flat there."
        ),
    ] = DEFAULT_MODEL,
    calib_archs: Annotated[
        int, typer.Option(min=0, help="Measure K random archs end to end to fit the glue (needs the device).")
    ] = 0,
    calib_from: Annotated[
        Path | None, typer.Option(help="Calibrate on archs already measured (a `latbench measure --arch --out` file).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="Device to calibrate on (default: the table's device).")] = None,
    seed: Annotated[
        int, typer.Option(min=0, max=2**32 - 1, help="Seed for the regressor, cross-validation and calibration archs.")
    ] = 0,
    cv_folds: Annotated[int, typer.Option(min=2, help="Folds of the out-of-sample op metrics (at least 2).")] = 5,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Predictor file (default predictors/<device>/<space>-<model>.json).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing predictor file.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a latency predictor on one or more tables of one device and save it (JSON, safe formats)."""
    from latbench.predict.io import default_predictor_path, save_predictor
    from latbench.predict.training import train_predictor
    from latbench.table import LatencyTable

    if model not in MODEL_NAMES:
        raise LatbenchError(f"unknown model {model!r}; known: {', '.join(MODEL_NAMES)}")
    tables = [LatencyTable.load(t) for t in table]
    dev_name = (tables[0].device or {}).get("name") or tables[0].fingerprint_id
    from latbench.predict.training import space_of_tables

    space = space_of_tables(tables)
    # a bert table of another sequence length gets its own default file, as tables do (bert-seq256-lut.json)
    spaced = next((t for t in tables if space is not None and t.space == space.name), None)
    tag = space_tag(spaced.space, spaced.space_params) if spaced else None
    new_file(out_path or default_predictor_path(dev_name, tag, model), force)
    backend = None
    sentinel = None
    dev_record = tables[0].device
    if calib_archs:
        prof, backend = open_device(device or dev_name)
        sentinel = prof.sentinel_ms
        dev_record = {"name": prof.name, "backend": prof.backend, "settings": backend.settings}
    m = train_predictor(
        model,
        tables,
        seed=seed,
        calib_archs=calib_archs,
        backend=backend,
        device=dev_record,
        sentinel_ref_ms=sentinel,
        cv_folds=cv_folds,
        progress=not as_json,
        calib_from=str(calib_from) if calib_from else None,
    )
    target = out_path or default_predictor_path(dev_name, tag, model)
    new_file(target, force)
    save_predictor(m, target)
    metrics = m.meta["metrics"]
    result = {
        "path": str(target),
        "model": model,
        "device": dev_name,
        "fingerprint": m.fingerprint.get("id"),
        "rows": m.meta["training"]["rows"],
        "calibration": m.calibration.to_dict(),
        "metrics": metrics,
    }

    def human() -> None:
        out.print(f"{target}: {model} on {result['rows']} rows of {', '.join(table)} (device {result['fingerprint']})")
        if "mape" in metrics.get("ops", {}):
            out.print("  " + _metric_line("ops (CV)", metrics["ops"]))
        for key, label in (("ops_off_range", "ops off-range"), ("ops_unseen_hw", "ops unseen hw")):
            if key in metrics:
                out.print("  " + _metric_line(label, metrics[key]))
        if "archs_vs_lut_sum" in metrics:
            out.print("  " + _metric_line("archs vs LUT", metrics["archs_vs_lut_sum"]))
        if calib_archs or calib_from:
            c, k = m.calibration, m.meta["calibration_fit"]["archs"]
            out.print(f"  calibration on {k} measured archs: {c.scale:.4f} x op sum + {c.offset_ms:.3f} ms")
            out.print("  " + _metric_line("calib (in-sample)", metrics["calibration_in_sample"]))

    emit(as_json, result, human)


# ----------------------------------------------------------------------------- eval
def predictor_eval(
    predictor: Annotated[list[str], typer.Argument(help="Predictor file(s) or <device>/<space>-<model> names.")],
    arch: Annotated[Path, typer.Option(help="Arch JSON / JSONL to measure and predict.")],
    device: Annotated[str, typer.Option(help="Device to measure on (must be the predictors' device).")],
    retest: Annotated[
        bool, typer.Option(help="Measure the archs a second time: the harness's own test-retest.")
    ] = False,
    calib_archs: Annotated[
        int,
        typer.Option(
            min=0, help="Refit each model's glue on K extra random archs measured in the same run (not scored)."
        ),
    ] = 0,
    seed: SeedOpt = 0,
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Summary JSON to write; the scatter plot goes beside it as <name>.png "
            "(default runs/predictor-eval/<device>-<archs>/summary.json).",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Use predictors of another device anyway; overwrite an existing --out.")
    ] = False,
    space: Annotated[str | None, typer.Option(help="Space of archs that do not name one.")] = None,
    seq: ArchSeqOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure archs for real and score predictors: RMSE, MAPE, within 5% / 10%, Spearman, Kendall, scatter plot."""
    from latbench.device import now_iso
    from latbench.predict.evaluate import evaluate_archs, scatter_plot
    from latbench.predict.io import load_predictor
    from latbench.predict.training import stored_held_out
    from latbench.spaces import load_archs

    archs = arch
    arch_list = load_archs(str(archs), space, space_params(space, seq=seq))
    summary_path = out_path
    if summary_path is None:
        summary_path = paths.write_dir("tables").parent / "runs" / "predictor-eval" / f"{device}-{archs.stem}"
        summary_path = summary_path / "summary.json"
    new_file(summary_path, force)
    png_path = summary_path.with_suffix(".png")
    new_file(png_path, force)
    prof, backend = open_device(device)
    fp = backend.fingerprint()
    models: dict[str, Any] = {}
    for p in predictor:
        m = load_predictor(p, force=force, device=fp.id)
        name = str(m.meta.get("model", p))
        if name in models:
            name = Path(m.meta["path"]).stem
        models[name] = m
    calib: list[dict[str, Any]] = []
    if calib_archs:
        from latbench.predict.glue import calibration_archs
        from latbench.spaces import space_of

        taken = {json.dumps(a, sort_keys=True) for a in arch_list}
        pool = calibration_archs(space_of(arch_list[0]), calib_archs + len(arch_list), seed)
        calib = [a for a in pool if json.dumps(a, sort_keys=True) not in taken][:calib_archs]
    res = evaluate_archs(
        models,
        arch_list,
        backend,
        sentinel_ref_ms=prof.sentinel_ms,
        retest=retest,
        progress=not as_json,
        calib_archs=calib,
    )
    summary = {
        "device": prof.name,
        "fingerprint": fp.id,
        "versions": fp.versions,
        "archs": str(archs),
        "created": now_iso(),
        "predictors": {n: str(m.meta.get("path")) for n, m in models.items()},
        **res,
    }
    series = {n: (r["predicted_ms"], res["measured_ms"]) for n, r in res["models"].items()}
    if retest:
        series["retest (2nd run)"] = (res["retest"]["measured_ms"], res["measured_ms"])
    png = scatter_plot(series, png_path, title=f"predicted vs measured on {prof.name} ({len(arch_list)} archs)")
    summary["scatter_png"] = str(png)
    paths.atomic_write_json(summary_path, summary)
    brief = {
        "summary": str(summary_path),
        "scatter_png": str(png),
        "n_archs": len(arch_list),
        "models": {n: {k: v for k, v in r.items() if k != "predicted_ms"} for n, r in res["models"].items()},
        "table_off_range": {n: off for n, m in models.items() if (off := stored_held_out(m.meta)) is not None},
    }
    if retest:
        brief["retest"] = {k: v for k, v in res["retest"].items() if k != "measured_ms"}
        if "retest_in_run_calibrated" in res:
            brief["retest_in_run_calibrated"] = res["retest_in_run_calibrated"]

    def human() -> None:
        out.print(
            f"{len(arch_list)} archs measured on {prof.name} ({fp.id}); median {np.median(res['measured_ms']):.3f} ms"
        )
        for n, r in res["models"].items():
            out.print("  " + _metric_line(n, r))
        for n, off in brief["table_off_range"].items():  # each model on its own table's ops off the table's sizes
            out.print("  " + _metric_line(f"{n} (table, off-range ops)", off))
        if calib:
            out.print(f"  (each model's glue refitted on {len(calib)} other archs measured in the same run)")
        if retest:
            out.print("  " + _metric_line("test-retest", res["retest"]))
            if "retest_in_run_calibrated" in res:
                out.print("  " + _metric_line("retest, in-run", res["retest_in_run_calibrated"]))
        out.print(f"wrote {summary_path} and {png}")

    emit(as_json, brief, human)


# ----------------------------------------------------------------------------- predict
def predict(
    predictor: Annotated[str, typer.Option(help="Predictor file or <device>/<space>-<model> name.")],
    arch: Annotated[Path | None, typer.Option(help="Arch JSON or JSONL.")] = None,
    onnx: Annotated[Path | None, typer.Option(help="Any ONNX model: split into kernels and predicted.")] = None,
    device: Annotated[str | None, typer.Option(help="Check that the predictor belongs to this device.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Use a predictor of another device anyway.")] = False,
    space: Annotated[str | None, typer.Option(help="Space of archs that do not name one.")] = None,
    seq: ArchSeqOpt = None,
    breakdown: Annotated[bool, typer.Option(help="Print the per-op / per-kernel breakdown.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Predict the latency (ms) of archs or of any ONNX model, with a per-kernel breakdown."""
    from latbench.predict.io import load_predictor
    from latbench.spaces import load_archs, space_of

    if (arch is None) == (onnx is None):
        raise LatbenchError("give exactly one of --arch or --onnx")
    params = space_params(space, seq=seq)
    want = None
    if device is not None:
        _, backend = open_device(device)
        want = backend.fingerprint().id
    model = load_predictor(predictor, force=force, device=want)
    pinfo = {
        "predictor": model.meta.get("path"),
        "model": model.meta.get("model"),
        "fingerprint": model.fingerprint.get("id"),
    }
    if onnx is not None:
        from latbench.predict.onnx_graph import predict_onnx

        res = {**pinfo, **predict_onnx(model, onnx)}

        def human_onnx() -> None:
            if breakdown:
                for k in res["kernels"]:
                    ms = "   n/a   " if k["ms"] is None else f"{k['ms']:9.4f}"
                    label = k["op"] or "+".join(k["op_types"])
                    note = f"  ({k['note']})" if k["note"] else ""
                    out.print(f"  {ms} ms  {k['kind']:<12} {label}{note}")
            out.print(
                f"{onnx}: {res['predicted_ms']:.3f} ms predicted ({len(res['kernels'])} kernels, op sum "
                f"{res['op_sum_ms']:.3f} ms, calibration x{res['calibration']['scale']:.4f} + "
                f"{res['calibration']['offset_ms']:.3f} ms)"
            )
            if res["unknown_node_types"]:
                listing = ", ".join(f"{t} x{c}" for t, c in sorted(res["unknown_node_types"].items()))
                console.print(f"[yellow]unknown node types, not priced:[/yellow] {listing}")
            if res["unpriced_elementwise"]:
                console.print(
                    f"[yellow]{len(res['unpriced_elementwise'])} elementwise kernel(s) not priced "
                    f"(the predictor knows no global-pool ops):[/yellow] {', '.join(res['unpriced_elementwise'][:6])}"
                )

        emit(as_json, res, human_onnx)
        return
    archs = load_archs(str(arch), space, params)
    results = []
    for a in archs:
        s = space_of(a)
        ops = s.ops_of(a)
        lat = model.predict_ops(ops)
        results.append(
            {
                "arch": a,
                "predicted_ms": float(model.predict_arch(a)),
                "op_sum_ms": float(lat.sum()),
                "ops": [{"op": o.key, "ms": float(x)} for o, x in zip(ops, lat, strict=True)],
            }
        )
    doc = {**pinfo, "calibration": model.calibration.to_dict(), "results": results}

    def human() -> None:
        for i, r in enumerate(results):
            if breakdown:
                for o in r["ops"]:
                    out.print(f"  {o['ms']:9.4f} ms  {o['op']}")
            out.print(f"{i:3d}  {r['predicted_ms']:9.3f} ms predicted (op sum {r['op_sum_ms']:.3f} ms)")

    emit(as_json, doc, human)
