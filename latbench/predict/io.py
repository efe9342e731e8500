"""Saving and loading predictors: one JSON file, safe formats only.

File format (``schema: "latbench.predictor/1"``)::

    {"schema", "model", "kind", "device": {"name", "backend", ...},
     "fingerprint": {..., "id"}, "versions": {...},       # of the training run
     "space", "space_params", "features": [...],
     "training": {"tables": [{"path", "content_hash", "rows", "fingerprint"}], "rows", "seed", "created", ...},
     "calibration": {"scale", "offset_ms", ...}, "metrics": {...},
     "state": {...}}                                       # model-specific, plain JSON

``state`` holds linear coefficients, tree arrays, or an xgboost model in
xgboost's own JSON format; never pickle. A predictor is for one device:
:func:`load_predictor` refuses it for another device (``device=``) or from
another device's folder (``predictors/<device>/...``) unless ``force``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from latbench import paths
from latbench.device import DeviceFingerprint, DeviceProfile, library_versions, now_iso
from latbench.errors import LatbenchError
from latbench.ops import json_error_text, strict_json_loads
from latbench.predict.base import E2ECalibration, LatencyModel
from latbench.table import LatencyTable

SCHEMA = "latbench.predictor/1"
REQUIRED = (
    "schema",
    "model",
    "kind",
    "device",
    "fingerprint",
    "versions",
    "features",
    "training",
    "calibration",
    "metrics",
    "state",
)


class PredictorError(LatbenchError):
    """A missing, corrupt, foreign or incompatible predictor file."""


def model_kind(model: Any) -> str:
    from latbench.predict.lut import TableLatency
    from latbench.predict.models import FlopsLinearModel, OpRegressionModel

    if isinstance(model, TableLatency):
        return "table-lookup"
    if isinstance(model, FlopsLinearModel):
        return "flops-linear"
    if isinstance(model, OpRegressionModel):
        return "op-regression"
    raise PredictorError(f"cannot save a {type(model).__name__}: not a latbench model")


def _state(model: Any, kind: str) -> dict[str, Any]:
    if kind == "table-lookup":
        keep = ("spec", "median_ms", "iqr_ms", "p90_ms", "n")
        return {"rows": {k: {f: r[f] for f in keep if f in r} for k, r in sorted(model.table.rows.items())}}
    return model.state_dict()


def predictor_doc(model: Any) -> dict[str, Any]:
    """The JSON document of a trained model (``model.meta`` supplies device, training and metrics)."""
    kind = model_kind(model)
    meta = dict(getattr(model, "meta", {}) or {})
    fp = dict(model.fingerprint or {})
    if "id" not in fp:
        raise PredictorError("cannot save a predictor without a device fingerprint (train it from a table)")
    if kind == "table-lookup":
        features: list[str] = ["op_key"]
        meta.setdefault("space", model.table.space)
        meta.setdefault("space_params", model.table.space_params)
        meta.setdefault("device", model.table.device)
    elif kind == "flops-linear":
        features = ["gflops"]
    else:
        features = list(model.featurizer.names)
    return {
        "schema": SCHEMA,
        "model": getattr(model, "name", kind),
        "kind": kind,
        "device": meta.get("device") or {},
        "fingerprint": fp,
        "versions": meta.get("versions") or library_versions(),
        "space": meta.get("space"),
        "space_params": meta.get("space_params"),
        "features": features,
        "training": meta.get("training") or {},
        "calibration": {**model.calibration.to_dict(), **(meta.get("calibration_fit") or {})},
        "metrics": meta.get("metrics") or {},
        "created": meta.get("created") or now_iso(),
        "state": _state(model, kind),
    }


def _clean(value: Any) -> Any:
    """JSON has no NaN / infinity: they are written as null."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def save_predictor(model: Any, path: str | Path) -> Path:
    """Write ``model`` to ``path`` atomically as a predictor JSON; returns the path."""
    doc = _clean(predictor_doc(model))
    target = Path(path)
    paths.atomic_write_text(target, dumps_predictor(doc))
    return target


def dumps_predictor(doc: dict[str, Any]) -> str:
    """The document as text: metadata indented for people, the (large) model state on one compact line."""
    head = json.dumps({k: v for k, v in doc.items() if k != "state"}, indent=1, allow_nan=False)
    state = json.dumps(doc["state"], separators=(",", ":"), allow_nan=False)
    return head[: -len("\n}")] + ',\n "state": ' + state + "\n}\n"


def default_predictor_path(device_name: str, space: str | None, model_name: str) -> Path:
    return paths.write_dir("predictors") / device_name / f"{space or 'ops'}-{model_name}.json"


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    found = paths.find("predictors", p) or (
        paths.find("predictors", p.with_suffix(".json")) if p.suffix != ".json" else None
    )
    if found is None or not found.is_file():
        raise PredictorError(f"predictor not found: {path}")
    return found


def _device_id(device: Any) -> str | None:
    if device is None:
        return None
    if isinstance(device, DeviceFingerprint):
        return device.id
    if isinstance(device, DeviceProfile):
        return (device.fingerprint or {}).get("id")
    if isinstance(device, dict):
        return device.get("id")
    return str(device)


def read_predictor_doc(path: str | Path) -> tuple[dict[str, Any], Path]:
    """The validated JSON document of a predictor file (schema and required fields checked)."""
    found = _resolve(path)
    try:
        doc = strict_json_loads(found.read_bytes())
    except ValueError as exc:
        raise PredictorError(f"{found}: corrupt predictor file ({json_error_text(exc)})") from None
    except OSError as exc:
        raise PredictorError(f"cannot read predictor {found}: {exc.strerror or exc}") from None
    if not isinstance(doc, dict) or "schema" not in doc:
        raise PredictorError(f"{found}: not a latbench predictor (no schema field)")
    if doc["schema"] != SCHEMA:
        raise PredictorError(
            f"{found}: predictor schema {doc['schema']!r} is not supported (this latbench reads {SCHEMA})"
        )
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise PredictorError(f"{found}: predictor lacks field(s) {', '.join(missing)}; retrain it")
    if not isinstance(doc["fingerprint"], dict) or not isinstance(doc["fingerprint"].get("id"), str):
        raise PredictorError(f"{found}: predictor fingerprint has no id")
    objects = ("device", "versions", "training", "calibration", "metrics", "state")
    bad = [k for k in objects if not isinstance(doc[k], dict)]
    bad += [k for k in ("space_params",) if doc.get(k) is not None and not isinstance(doc[k], dict)]
    bad += [k for k in ("model", "kind") if not isinstance(doc[k], str)]
    bad += [k for k in ("space",) if doc.get(k) is not None and not isinstance(doc[k], str)]
    if not isinstance(doc["features"], list):
        bad.append("features")
    if bad:
        raise PredictorError(f"{found}: predictor field(s) {', '.join(bad)} have the wrong type; retrain it")
    return doc, found


def read_glue(cal: dict[str, Any], found: Path) -> E2ECalibration:
    """The whole-network glue of a predictor: ``scale`` a finite number > 0, ``offset_ms`` a finite number >= 0
    (what :func:`latbench.predict.glue.fit_glue` can produce); anything else would scale every prediction wrong."""
    scale, offset = cal.get("scale", 1.0), cal.get("offset_ms", 0.0)
    for name, v in (("scale", scale), ("offset_ms", offset)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise PredictorError(f"{found}: predictor calibration {name} {str(v)[:40]} is not a finite number")
    if scale <= 0 or offset < 0:
        raise PredictorError(
            f"{found}: predictor calibration (scale {scale}, offset {offset} ms) would give wrong or negative "
            "latencies: the scale must be > 0 and the offset >= 0"
        )
    return E2ECalibration(float(scale), float(offset))


def check_device(doc: dict[str, Any], found: Path, device: Any = None, *, force: bool = False) -> None:
    """Refuse a predictor for another device (by fingerprint id), or one filed under another device's folder."""
    if force:
        return
    fp_id = doc["fingerprint"]["id"]
    want = _device_id(device)
    if want is not None and want != fp_id:
        raise PredictorError(
            f"{found}: predictor is for device {fp_id}, not {want}; use a predictor of this device or pass --force"
        )
    parent = found.parent
    dev_name = (doc.get("device") or {}).get("name")
    if parent.parent.name == "predictors" and dev_name and parent.name != dev_name:
        raise PredictorError(
            f"{found}: predictor of device {dev_name!r} ({fp_id}) is filed under predictors/{parent.name}/; "
            "move it or pass --force"
        )


def load_predictor(path: str | Path, *, force: bool = False, device: Any = None) -> LatencyModel:
    """Load a predictor saved by :func:`save_predictor`.

    ``path`` is a file or ``<device>/<space>-<model>`` under the ``predictors/``
    search dirs. ``device`` (a fingerprint id, fingerprint dict,
    :class:`DeviceFingerprint` or profile) must match the predictor's
    fingerprint unless ``force``. The returned model carries the document
    (without its state) as ``model.meta``.
    """
    doc, found = read_predictor_doc(path)
    check_device(doc, found, device, force=force)
    calibration = read_glue(doc["calibration"], found)
    kind, state, fp = doc["kind"], doc["state"], doc["fingerprint"]
    try:
        model = _build(kind, doc, state, calibration, fp, found)
    except LatbenchError as exc:
        if isinstance(exc, PredictorError):
            raise
        raise PredictorError(f"{found}: {exc}") from None
    except KeyError as exc:
        raise PredictorError(f"{found}: malformed predictor state (no {str(exc)[:60]})") from None
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise PredictorError(f"{found}: malformed predictor state ({type(exc).__name__}: {str(exc)[:200]})") from None
    model.meta = {k: v for k, v in doc.items() if k != "state"}
    model.meta["path"] = str(found)
    return model


def _build(
    kind: str, doc: dict[str, Any], state: dict[str, Any], calibration: E2ECalibration, fp: dict[str, Any], found: Path
) -> Any:
    from latbench.predict.lut import TableLatency
    from latbench.predict.models import FlopsLinearModel, OpRegressionModel

    if kind == "table-lookup":
        table = LatencyTable.from_dict(
            {
                "schema": "latbench.table/1",
                "fingerprint": fp,
                "rows": state["rows"],
                "device": doc.get("device") or {},
                "space": doc.get("space"),
                "space_params": doc.get("space_params"),
                "name": f"predictor {found.name}",
            },
            found,
        )
        return TableLatency(table, calibration)
    if kind == "flops-linear":
        return FlopsLinearModel.from_state(doc["model"], state, calibration, fp)
    if kind == "op-regression":
        return OpRegressionModel.from_state(doc["model"], state, calibration, fp)
    if kind == "transfer":
        from latbench.predict.transfer import TransferModel

        return TransferModel.from_doc(doc, str(found))
    raise PredictorError(
        f"{found}: unknown predictor kind {kind!r} (known: table-lookup, flops-linear, op-regression, transfer)"
    )
