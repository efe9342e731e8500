"""Calibration of an emulated device (ONNX Runtime on this CPU) to a real device's published table.

The emulator's numbers rank ops well (Spearman ~0.95 against a Pixel 1) but
their *ratios* differ from the phone's: the phone pays far more for large
activations and for depthwise convolutions than an x86 core with big caches.
A single scale factor therefore leaves most ops off by more than 10 %.

Here the mapping knows op structure. Every op is split into *components*
(the 1x1 pointwise convs, the depthwise conv, the rest: SE, residual add,
glue), each component is timed on the emulator, and analytic counts (MACs
and bytes per component class) are computed. A small model, a linear
combination of such features, is fitted on the K reference ops only
(least squares on relative error, costs non-negative). The default model,
``time-roofline``, is::

    phone_ms = a * t_op + b * pw_MMACs + c * dw_MMACs + d * dw_MB + e

(the emulator's time of the whole op, plus analytic corrections where a
phone differs from an x86 core: it pays more per pointwise MAC and far more
per depthwise MAC and byte, and a fixed cost per op). It needs no timings of
the parts, which on a shared machine disagree with the op's own time by tens
of percent; ``a`` is at least a third of the single scale factor fitted on
the same shots (:data:`TIME_FLOOR`).
``model="auto"`` instead picks among :data:`MODELS` by leave-one-out error
*on the K shots*. Nothing about the other reference ops enters the fit or the
choice of model.

The K shots are chosen to span the space, deterministically from a seed,
from the emulator's side only: candidates are the ops of searchable
positions (a position with alternatives; optionally only those the emulator
times most surely, ``shot_keep`` < 1 with :func:`emulator_doubt`), grouped
by position (input size, channels, stride); K groups are
taken at even spacing over the sorted groups (seeded offset) and, inside
each, kernel and expansion are cycled so that the shots cover every kernel
and expansion. ``latbench emulation sweep`` scores a fit over many shot
seeds.

:func:`calibrate` returns the fitted :class:`Calibration` with its metrics on
the unseen reference ops (Spearman, MAPE, share within 10 %) and on the LUT
sums of random archs of the reference space. :class:`CalibratedLatency`
predicts the reference device's latency (ms) for any op or arch from the
emulator's timings.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latbench.device import library_versions, now_iso
from latbench.errors import LatbenchError, TableError
from latbench.ops import OpSpec
from latbench.predict.base import E2ECalibration, OpSumModel
from latbench.table import LatencyTable, import_published

#: candidate models: name -> (features, what it says about the device)
MODELS: dict[str, tuple[tuple[str, ...], str]] = {
    "scale": (("t",), "phone = a * emulator time (the naive baseline)"),
    "components": (("pw", "dw", "other", "one"), "one scale per component class (pointwise, depthwise, rest) + offset"),
    "components-spatial": (
        ("pw", "pw_log_hw", "dw", "other"),
        "component scales, pointwise cost growing with the spatial size (cache pressure)",
    ),
    "roofline": (("pw_mmacs", "dw_mmacs", "pw_mb", "dw_mb", "one"), "analytic: MACs and bytes per component class"),
    "hybrid": (
        ("pw", "pw_log_hw", "dw_mmacs", "dw_mb", "other"),
        "emulator pointwise time (with spatial growth), analytic depthwise MACs and bytes, emulator rest",
    ),
    "hybrid-small": (("pw", "pw_log_hw", "dw_mmacs", "other"), "like hybrid, without the depthwise byte term"),
    "time-roofline": (
        ("t", "pw_mmacs", "dw_mmacs", "dw_mb", "one"),
        "emulator time of the whole op plus analytic pointwise MACs, depthwise MACs and bytes and a per-op offset "
        "(no part timings)",
    ),
    "time-roofline-nooffset": (
        ("t", "pw_mmacs", "dw_mmacs", "dw_mb"),
        "time-roofline without the per-op offset",
    ),
    "time-dw": (("t", "dw_mmacs", "dw_mb"), "emulator time of the whole op plus analytic depthwise MACs and bytes"),
}
#: the model ``latbench calibrate`` fits unless told otherwise: it needs no part timings (noisy on a shared machine)
DEFAULT_MODEL = "time-roofline"
FEATURES = ("t", "pw", "pw_log_hw", "dw", "other", "pw_mmacs", "dw_mmacs", "pw_mb", "dw_mb", "one")
STATS = ("median", "p25", "p10", "min")
#: features computed from the emulator's timings of op parts
PART_FEATURES = frozenset({"pw", "pw_log_hw", "dw", "other"})


# ------------------------------------------------------------------------ op structure
def components(op: OpSpec) -> dict[str, OpSpec]:
    """The separately timed parts of an op: ``pw_expand``, ``dw``, ``pw_project`` for an MBConv.

    A 1x1 conv is one ``pw`` part, a depthwise conv one ``dw`` part; other ops
    (stem conv, pools, classifier) have no parts: their whole time is "rest".
    """
    if op.type == "mbconv":
        parts: dict[str, OpSpec] = {}
        if op.expand != 1.0:
            parts["pw_expand"] = OpSpec("conv", op.hw, op.cin, op.mid, kernel=1, act=op.act, batch=op.batch)
        parts["dw"] = OpSpec(
            "conv", op.hw, op.mid, op.mid, kernel=op.kernel, stride=op.stride, groups=op.mid, act=op.act, batch=op.batch
        )
        parts["pw_project"] = OpSpec("conv", op.hw_out, op.mid, op.cout, kernel=1, act="none", batch=op.batch)
        return parts
    return {}


def _is_pointwise(op: OpSpec) -> bool:
    return (op.type == "conv" and op.kernel == 1 and op.groups == 1) or op.type == "classifier"


def _is_depthwise(op: OpSpec) -> bool:
    return op.type == "conv" and op.groups == op.cin and op.groups > 1


def op_features(op: OpSpec, t_op: float, part_ms: dict[str, float]) -> dict[str, float]:
    """Features of one op from its emulator time ``t_op`` (ms) and its parts' times (ms).

    ``pw``/``dw``/``other``: emulator ms of the pointwise parts, the depthwise
    part and the rest; ``pw_log_hw``: ``pw * log2(input size)``; ``*_mmacs``:
    millions of MACs; ``*_mb``: megabytes of activations and weights moved.
    """
    e = 4  # float32 bytes
    pw = sum(v for k, v in part_ms.items() if k.startswith("pw"))
    dw = part_ms.get("dw", 0.0)
    if op.type == "mbconv":
        hi, ho, mid = op.hw, op.hw_out, op.mid
        pw_macs = (hi * hi * op.cin * mid if op.expand != 1.0 else 0) + ho * ho * mid * op.cout
        dw_macs = ho * ho * op.kernel**2 * mid
        pw_bytes = ((hi * hi * (op.cin + mid) + op.cin * mid) if op.expand != 1.0 else 0) * e
        pw_bytes += (ho * ho * (mid + op.cout) + mid * op.cout) * e
        dw_bytes = (hi * hi + ho * ho) * mid * e
    elif _is_pointwise(op):
        pw = t_op
        pw_macs, dw_macs, pw_bytes, dw_bytes = op.macs, 0, op.memory_bytes, 0
    elif _is_depthwise(op):
        dw = t_op
        pw_macs, dw_macs, pw_bytes, dw_bytes = 0, op.macs, 0, op.memory_bytes
    else:  # full kxk conv (stem), pools, skip: counted with the dense-compute class, time as "rest"
        pw_macs, dw_macs, pw_bytes, dw_bytes = op.macs, 0, op.memory_bytes, 0
    other = max(t_op - pw - dw, 0.0)
    return {
        "t": t_op,
        "pw": pw,
        "pw_log_hw": pw * math.log2(max(op.hw, 1)),
        "dw": dw,
        "other": other,
        "pw_mmacs": pw_macs / 1e6,
        "dw_mmacs": dw_macs / 1e6,
        "pw_mb": pw_bytes / 1e6,
        "dw_mb": dw_bytes / 1e6,
        "one": 1.0,
    }


def row_ms(row: dict[str, Any], stat: str = "p25") -> float:
    """One number (ms) for a table row: its median, or a lower percentile of its samples.

    On a machine shared with other work, contention only ever adds time, so a
    lower percentile of the samples is closer to the op's own cost than the
    median; rows without samples use their median.
    """
    samples = row.get("samples_ms")
    if stat == "median" or not samples:
        return float(row["median_ms"])
    q = {"p25": 25, "p10": 10, "min": 0}[stat]
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q))


# ------------------------------------------------------------------------ fitting
#: features whose coefficient may be negative (a spatial correction of another term, not a cost of its own)
SIGNED_FEATURES = ("pw_log_hw",)


def fit_nnls_relative(
    x: np.ndarray, y: np.ndarray, signed: tuple[bool, ...] | None = None, floor: np.ndarray | None = None
) -> np.ndarray:
    """Coefficients minimising the squared *relative* error of ``x @ c`` against ``y``.

    Every coefficient is >= 0 (each feature is a cost), except those flagged
    in ``signed`` (corrections that may go either way); ``floor`` raises the
    lower bound of some coefficients above 0.
    """
    from scipy.optimize import lsq_linear, nnls

    w = 1.0 / np.maximum(y, 1e-9)
    a, b = x * w[:, None], y * w
    if (not signed or not any(signed)) and (floor is None or not np.any(floor > 0)):
        coef, _ = nnls(a, b)
        return coef
    lower = np.array([-np.inf if s else 0.0 for s in (signed or (False,) * x.shape[1])])
    if floor is not None:
        lower = np.maximum(lower, floor)
    return np.asarray(lsq_linear(a, b, bounds=(lower, np.full(x.shape[1], np.inf))).x)


#: in a model with emulator time ``t`` beside analytic terms, ``t``'s coefficient is at least this share of the
#: single scale factor fitted on the same shots: the emulator carries at least a third of each op's time, so that
#: shapes the reference never published move with the emulator's real timings, not with MAC counts alone
TIME_FLOOR = 1 / 3


def time_floor(x: np.ndarray, y: np.ndarray, cols: tuple[str, ...]) -> np.ndarray | None:
    """Lower bounds for the coefficients of ``cols`` (:data:`TIME_FLOOR`); ``None`` when ``t`` is alone or absent."""
    if "t" not in cols or len(cols) == 1:
        return None
    i = cols.index("t")
    w = 1.0 / np.maximum(y, 1e-9)
    xt = x[:, i] * w
    scale = float(np.sum(xt) / max(np.sum(xt**2), 1e-300))
    floor = np.zeros(len(cols))
    floor[i] = TIME_FLOOR * scale
    return floor


def loo_error(x: np.ndarray, y: np.ndarray, signed: tuple[bool, ...] | None = None) -> float:
    """Mean absolute relative error of leave-one-out predictions over the rows of ``x``."""
    errs = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        c = fit_nnls_relative(x[keep], y[keep], signed)
        errs.append(abs(float(x[i] @ c) / y[i] - 1.0))
    return float(np.mean(errs))


def _group_key(op: OpSpec) -> tuple[Any, ...]:
    return (op.type, op.hw, op.cin, op.cout, op.stride, op.se, op.act)


#: share of the candidate shots kept when they are ranked by the emulator's confidence in them (1: all; 0.7 helped
#: the offset-free model on a Pixel-1 table and hurt on a Note10 one, so it is off by default)
SHOT_KEEP = 1.0


def select_shots(
    ops: list[OpSpec],
    k: int,
    seed: int = 0,
    quality: dict[str, float] | None = None,
    keep: float = SHOT_KEEP,
) -> list[OpSpec]:
    """``k`` ops spanning ``ops``: evenly spaced over position groups, cycling kernel and expansion.

    Shots come from searchable positions (a position with several ops to
    choose between): a one-off op (stem, classifier) says little about the others. With
    ``quality`` (op key -> how doubtful the emulator's timing of it is, from
    the emulator's own rows only: :func:`emulator_doubt`), only the ``keep``
    share of those ops with the least doubt are candidates: a shot whose
    emulator number is off by 30 % drags the whole fit. Deterministic for a
    given ``seed`` (it moves the starting group and the kernel/expansion cycle).
    """
    if k < 1:
        raise LatbenchError(f"--shots must be at least 1, got {k}")
    if k > len(ops):
        raise LatbenchError(f"asked for {k} shots but only {len(ops)} reference ops are shared with the table")
    # searchable positions only: a position (type, size, channels, stride) with one op has no alternatives to
    # choose between (stem, head convs, classifier, a fixed first block) and says little about the others
    counts: dict[tuple[Any, ...], int] = {}
    for op in ops:
        counts[_group_key(op)] = counts.get(_group_key(op), 0) + 1
    pool = [o for o in ops if counts[_group_key(o)] >= 2]
    if len(pool) < k:
        pool = list(ops)
    if quality:
        ranked = sorted(pool, key=lambda o: (quality.get(o.key, math.inf), o.key))
        pool = ranked[: max(k, math.ceil(keep * len(ranked)))]
    rng = np.random.default_rng(seed)
    groups: dict[tuple[Any, ...], list[OpSpec]] = {}
    for op in sorted(pool, key=lambda o: o.key):
        groups.setdefault(_group_key(op), []).append(op)
    order = sorted(groups, key=lambda g: (-g[1], g[2], g[3], g[4], str(g)))
    kernels = sorted({o.kernel for o in pool})
    expands = sorted({o.expand for o in pool})
    k_off, e_off = int(rng.integers(len(kernels))), int(rng.integers(len(expands)))
    start = float(rng.random())
    n_groups = len(order)
    positions = [int((start + i) * n_groups / k) % n_groups for i in range(k)]
    chosen: list[OpSpec] = []
    taken: set[str] = set()
    for i, gi in enumerate(positions):
        members = [o for o in groups[order[gi]] if o.key not in taken] or [o for o in pool if o.key not in taken]
        # expansion alternates shot by shot, kernel steps every len(expands) shots: all combos are covered
        want_e = expands[(i + e_off) % len(expands)]
        want_k = kernels[(i // len(expands) + k_off) % len(kernels)]
        members.sort(key=lambda o: (abs(o.expand - want_e), abs(o.kernel - want_k), o.key))
        chosen.append(members[0])
        taken.add(members[0].key)
    return chosen


def error_metrics(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """:func:`latbench.predict.metrics.accuracy` of ``pred`` against ``ref`` (fractions)."""
    from latbench.predict.metrics import accuracy

    return accuracy(pred, ref)


def _loo_mape_of(d: dict[str, Any]) -> dict[str, float]:
    """Leave-one-out MAPE per model as fractions (profiles written before the metrics were fractions kept percent)."""
    if "loo_mape" in d:
        return {k: float(v) for k, v in d["loo_mape"].items()}
    return {k: float(v) / 100 for k, v in d.get("loo_mape_pct", {}).items()}


@dataclass
class Calibration:
    """A fitted mapping from emulator features to a reference device's latency (ms)."""

    model: str
    features: tuple[str, ...]
    coef: np.ndarray
    stat: str = "p25"
    shots: list[str] = field(default_factory=list)
    loo_mape: dict[str, float] = field(default_factory=dict)  # fractions
    reference: dict[str, Any] = field(default_factory=dict)
    emulator: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    #: op keys the reference device's table has: any other op's number is an extrapolation
    reference_ops: list[str] = field(default_factory=list)

    @property
    def needs_parts(self) -> bool:
        """Whether the model reads timings of op parts (else an op's own emulator time and its sizes suffice)."""
        return bool(set(self.features) & PART_FEATURES)

    def predict_features(self, feats: list[dict[str, float]]) -> np.ndarray:
        x = np.array([[f[n] for n in self.features] for f in feats], dtype=np.float64)
        return x @ self.coef

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_description": MODELS.get(self.model, ((), ""))[1],
            "features": list(self.features),
            "coefficients": [float(c) for c in self.coef],
            "stat": self.stat,
            "seed": self.seed,
            "shots": list(self.shots),
            "loo_mape": self.loo_mape,
            "reference": self.reference,
            "emulator": self.emulator,
            "metrics": self.metrics,
            "reference_ops": sorted(self.reference_ops),
            "created": now_iso(),
            "versions": library_versions(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        try:
            feats = tuple(d["features"])
            coef = np.asarray(d["coefficients"], dtype=np.float64)
        except (KeyError, TypeError) as exc:
            raise LatbenchError(f"malformed calibration (missing {exc})") from None
        unknown = set(feats) - set(FEATURES)
        if unknown or len(coef) != len(feats):
            raise LatbenchError(f"malformed calibration: features {sorted(unknown)} / {len(coef)} coefficients")
        for f, c in zip(feats, coef, strict=True):
            if not np.isfinite(c) or (
                f not in SIGNED_FEATURES and (c < 0 or (f == "t" and c == 0 and len(feats) == 1))
            ):
                raise LatbenchError(
                    f"calibration coefficient of {f} is {c}: not finite, or a negative (or zero) time scale that "
                    "would give negative latencies; calibrate again"
                )
        return cls(
            model=str(d.get("model", "?")),
            features=feats,
            coef=coef,
            stat=str(d.get("stat", "p25")),
            shots=list(d.get("shots", [])),
            loo_mape=_loo_mape_of(d),
            reference=dict(d.get("reference", {})),
            emulator=dict(d.get("emulator", {})),
            metrics=dict(d.get("metrics", {})),
            seed=int(d.get("seed", 0)),
            reference_ops=[str(k) for k in d.get("reference_ops", [])],
        )


# ------------------------------------------------------------------------ emulator timings
class EmulatorTimes:
    """Emulator milliseconds of ops and of their parts, from a table plus a parts table.

    Parts (and ops) missing from the tables are measured on ``backend`` when
    one is given (and saved to the parts table), else reported as missing.
    """

    def __init__(
        self,
        table: LatencyTable,
        parts: LatencyTable | None,
        stat: str = "p25",
        backend: Any = None,
        parts_path: Path | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if stat not in STATS:
            raise LatbenchError(f"unknown statistic {stat!r}; use one of {', '.join(STATS)}")
        self.table = table
        self.parts = parts
        self.stat = stat
        self.backend = backend
        self.parts_path = parts_path
        self.progress = progress

    def ensure(self, ops: list[OpSpec], parts: bool = True) -> None:
        """Measure (with the backend) every op (and, with ``parts``, every part) of ``ops`` that no table has yet."""
        need = [o for o in ops if o.key not in self.table.rows and (self.parts is None or o.key not in self.parts.rows)]
        for op in ops if parts else []:
            for part in components(op).values():
                if part.key not in self.table.rows and (self.parts is None or part.key not in self.parts.rows):
                    need.append(part)
        need = list({o.key: o for o in need if o.type != "zero"}.values())
        if not need:
            return
        if self.backend is None or self.parts_path is None:
            names = ", ".join(o.key for o in need[:3])
            raise TableError(f"emulator timings missing for {len(need)} op(s)/part(s), e.g. {names}")
        from latbench.table import build_table

        self.parts, _ = build_table(
            self.backend,
            need,
            self.parts_path,
            device=self.table.device,
            resume=self.parts_path.exists(),
            progress=self.progress,
        )

    def ms(self, op: OpSpec) -> float:
        for t in (self.table, self.parts):
            if t is not None and op.key in t.rows:
                return row_ms(t.rows[op.key], self.stat)
        raise TableError(f"no emulator timing for {op.key}")

    def features(self, op: OpSpec, parts: bool = True) -> dict[str, float]:
        """:func:`op_features` of ``op``; without ``parts`` its parts are not looked up (their features are 0)."""
        part_ms = {name: self.ms(p) for name, p in components(op).items()} if parts else {}
        return op_features(op, self.ms(op), part_ms)

    def rel_iqr(self, op: OpSpec) -> float:
        """IQR / median of the row timing ``op`` (0 for rows that record no spread)."""
        for t in (self.table, self.parts):
            if t is not None and op.key in t.rows:
                r = t.rows[op.key]
                v = r.get("rel_iqr")
                return float(v) if v is not None else float(r.get("iqr_ms", 0.0)) / max(float(r["median_ms"]), 1e-12)
        raise TableError(f"no emulator timing for {op.key}")


def emulator_doubt(op: OpSpec, emu: EmulatorTimes) -> float:
    """How far the emulator's timing of ``op`` may be from its cost: the largest relative IQR of its rows (op and
    parts) plus the disagreement between the op's time and the sum of its parts' times.

    Computed from emulator timings only (never the reference's), so ranking shots by it keeps the fit honest.
    """
    parts = components(op)
    spread = max([emu.rel_iqr(op), *(emu.rel_iqr(p) for p in parts.values())])
    if not parts:
        return spread
    t = emu.ms(op)
    return spread + abs(sum(emu.ms(p) for p in parts.values()) / max(t, 1e-12) - 1.0)


# ------------------------------------------------------------------------ the calibration
def emulator_backend(table: LatencyTable) -> Any:
    """The backend that made ``table``, rebuilt from its recorded settings; ``None`` when this is not that device.

    The backend times op parts an emulator table lacks (models that read them). A table that was not measured
    on a backend at all (a published or calibrated table) is refused in one line.
    """
    from latbench.backends import get_backend

    dev = table.device or {}
    name = dev.get("backend") or table.fingerprint.get("backend")
    if not name or name in ("published", "calibrated", "emulated"):
        raise LatbenchError(
            f"table {table.path or table.name} was not measured on an emulator backend (it is {name!r})"
        )
    try:
        backend = get_backend(name, **{k: v for k, v in (dev.get("settings") or {}).items() if v is not None})
    except LatbenchError:
        return None
    if backend.fingerprint().id != table.fingerprint_id:
        backend.close()
        return None
    return backend


def load_reference(path: str | Path, fmt: str | None = None) -> LatencyTable:
    """A reference table: a published YAML LUT (format guessed from its keys) or a latbench table."""
    p = Path(path)
    if p.suffix in (".yaml", ".yml"):
        if fmt is None:
            if not p.exists():
                raise TableError(f"reference LUT not found: {p}")
            head = p.read_text()[:20000]
            fmt = "ofa" if "-se:" in head else "proxyless"
        return import_published(p, fmt)
    return LatencyTable.load(p)


def fit_calibration(
    feats: dict[str, dict[str, float]],
    ref_ms: dict[str, float],
    shots: list[str],
    *,
    model: str = DEFAULT_MODEL,
    stat: str = "p25",
    seed: int = 0,
) -> Calibration:
    """Fit on the ``shots`` keys only; ``model="auto"`` picks the candidate with the lowest LOO error on them."""
    if model != "auto" and model not in MODELS:
        raise LatbenchError(f"unknown calibration model {model!r}; known: auto, {', '.join(MODELS)}")
    y = np.array([ref_ms[k] for k in shots], dtype=np.float64)
    if (y <= 0).any():
        raise LatbenchError("reference latencies must be positive")
    candidates = list(MODELS) if model == "auto" else [model]
    loo: dict[str, float] = {}
    for name in candidates:
        cols = MODELS[name][0]
        if len(shots) <= len(cols) and model == "auto":
            continue  # fewer shots than parameters: not identifiable
        x = np.array([[feats[k][c] for c in cols] for k in shots], dtype=np.float64)
        signed = tuple(c in SIGNED_FEATURES for c in cols)
        loo[name] = round(loo_error(x, y, signed), 5) if len(shots) > 1 else float("nan")
    if not loo:
        loo["scale"] = float("nan")
    # lowest LOO error; among those within 0.005 (half a percentage point) of it, the one with fewest features
    best_err = (
        min(v for v in loo.values() if not math.isnan(v)) if any(not math.isnan(v) for v in loo.values()) else 0.0
    )
    close = [n for n, v in loo.items() if math.isnan(v) or v <= best_err + 0.005]
    chosen = min(close, key=lambda n: (len(MODELS[n][0]), loo[n] if not math.isnan(loo[n]) else 0.0))
    cols = MODELS[chosen][0]
    x = np.array([[feats[k][c] for c in cols] for k in shots], dtype=np.float64)
    coef = fit_nnls_relative(x, y, tuple(c in SIGNED_FEATURES for c in cols), time_floor(x, y, cols))
    return Calibration(model=chosen, features=cols, coef=coef, stat=stat, shots=list(shots), loo_mape=loo, seed=seed)


#: ``calibrate(shots=ALL_SHOTS)``: fit on every shared op
ALL_SHOTS = -1


def parse_shots(text: str) -> int:
    """``--shots``: a whole number >= 1, or ``all`` (:data:`ALL_SHOTS`)."""
    if str(text).strip().lower() == "all":
        return ALL_SHOTS
    try:
        n = int(str(text))
    except ValueError:
        raise LatbenchError(f"--shots must be a whole number or 'all', got {text!r}") from None
    if n < 1:
        raise LatbenchError(f"--shots must be at least 1, got {n}")
    return n


def calibrate(
    table: LatencyTable,
    reference: LatencyTable,
    shots: int,
    *,
    backend: Any = None,
    parts_path: Path | None = None,
    seed: int = 0,
    model: str = DEFAULT_MODEL,
    stat: str = "p25",
    n_archs: int = 200,
    progress: Callable[[int, int], None] | None = None,
    shot_keep: float = SHOT_KEEP,
) -> tuple[Calibration, EmulatorTimes]:
    """Fit ``table`` (emulator) to ``reference`` on ``shots`` reference ops; score on the rest and on archs.

    ``shots=ALL_SHOTS`` fits on every op the two tables share (the reference's
    whole table: for predicting shapes outside it, where nothing of the table
    needs to be held out); the unseen-op metrics are then empty.
    """
    ref_ops = {k: OpSpec.from_dict(r["spec"]) for k, r in reference.rows.items()}
    common = sorted((op for k, op in ref_ops.items() if k in table.rows and op.type != "zero"), key=lambda o: o.key)
    if shots == ALL_SHOTS:
        shots = len(common)
    elif len(common) < shots + 3:
        raise LatbenchError(
            f"table {table.path or table.name} shares only {len(common)} op(s) with the reference "
            f"{reference.path or reference.name}; build the table for the reference's space "
            f"({reference.space} {reference.space_params or ''})"
        )
    emu = EmulatorTimes(table, None, stat=stat, backend=backend, parts_path=parts_path, progress=progress)
    if parts_path is not None and parts_path.exists():
        emu.parts = LatencyTable.load(parts_path)
        emu.parts.check_same_device(table.fingerprint, "parts")
    # part timings only where something reads them: a model with part features, "auto", or the doubt shot filter
    need_parts = shot_keep < 1.0 or model == "auto" or bool(set(MODELS.get(model, ((),))[0]) & PART_FEATURES)
    emu.ensure(common, parts=need_parts)
    feats = {op.key: emu.features(op, parts=need_parts) for op in common}
    ref_ms = {op.key: reference.latency(op) for op in common}
    doubt = {op.key: emulator_doubt(op, emu) for op in common} if shot_keep < 1.0 else None
    shot_ops = list(common) if shots == len(common) else select_shots(common, shots, seed, doubt, keep=shot_keep)
    shot_keys = [o.key for o in shot_ops]
    cal = fit_calibration(feats, ref_ms, shot_keys, model=model, stat=stat, seed=seed)
    cal.reference_ops = sorted(reference.rows)
    cal.reference = {
        "name": reference.name,
        "path": str(reference.path) if reference.path else None,
        "fingerprint": reference.fingerprint_id,
        "source": reference.source.get("origin") or reference.source.get("file"),
        "sha256": reference.source.get("sha256"),
        "description": reference.source.get("description", ""),
        "space": reference.space,
        "space_params": reference.space_params,
    }
    cal.emulator = {
        "table": str(table.path.resolve()) if table.path else table.name,
        "table_hash": table.content_hash(),
        "fingerprint": table.fingerprint_id,
        "device": table.device,
        "parts_table": str(parts_path) if parts_path else None,
    }
    cal.metrics = score(cal, feats, ref_ms, reference, n_archs=n_archs, seed=seed)
    pool = [o for o in common if doubt is not None]
    cal.metrics["shot_selection"] = {
        "rule": "spread over positions, kernels and expansions"
        + (f"; from the {round(100 * shot_keep)}% of candidates the emulator times most surely" if doubt else ""),
        "candidates": len(common),
        "doubt_of_shots": {k: round(doubt[k], 4) for k in shot_keys} if doubt else {},
        "doubt_cutoff": round(sorted(doubt[o.key] for o in pool)[-1], 4) if doubt and pool else None,
    }
    return cal, emu


def score(
    cal: Calibration,
    feats: dict[str, dict[str, float]],
    ref_ms: dict[str, float],
    reference: LatencyTable,
    *,
    n_archs: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics on the reference ops the fit never saw, and on LUT sums of ``n_archs`` random archs.

    Beside each figure: the naive baseline (one scale factor fitted on the
    same shots) for comparison.
    """
    unseen = [k for k in ref_ms if k not in set(cal.shots)]
    pred = dict(zip(ref_ms, cal.predict_features([feats[k] for k in ref_ms]), strict=True))
    naive = fit_calibration(feats, ref_ms, cal.shots, model="scale")
    pred_naive = dict(zip(ref_ms, naive.predict_features([feats[k] for k in ref_ms]), strict=True))
    y = np.array([ref_ms[k] for k in unseen])
    out: dict[str, Any] = {
        "shots": len(cal.shots),
        "unseen_ops": error_metrics(np.array([pred[k] for k in unseen]), y) if unseen else {},
        "unseen_ops_naive_scale": error_metrics(np.array([pred_naive[k] for k in unseen]), y) if unseen else {},
        "emulator_vs_reference_spearman": error_metrics(np.array([feats[k]["t"] for k in unseen]), y)["spearman"]
        if unseen
        else None,
    }
    archs = reference_archs(reference, set(ref_ms), n_archs, seed)
    if archs:
        from latbench.spaces import space_of

        sums_ref, sums_pred, sums_naive = [], [], []
        for a in archs:
            keys = [o.key for o in space_of(a).ops_of(a)]
            sums_ref.append(sum(ref_ms[k] for k in keys))
            sums_pred.append(sum(pred[k] for k in keys))
            sums_naive.append(sum(pred_naive[k] for k in keys))
        out["arch_lut_sums"] = error_metrics(np.array(sums_pred), np.array(sums_ref))
        out["arch_lut_sums_naive_scale"] = error_metrics(np.array(sums_naive), np.array(sums_ref))
        out["arch_lut_sums"]["archs"] = len(archs)
    return out


def reference_archs(reference: LatencyTable, known: set[str], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` random archs of the reference's space whose ops all have reference and emulator rows."""
    if not reference.space or n <= 0:
        return []
    from latbench.spaces import get_space

    try:
        space = get_space(reference.space, **(reference.space_params or {}))
    except LatbenchError:
        return []
    rng = np.random.default_rng(seed + 1000)
    out = []
    for _ in range(20 * n):
        a = space.sample(rng)
        if all(o.key in known for o in space.ops_of(a)):
            out.append(a)
            if len(out) == n:
                break
    return out


# ------------------------------------------------------------------------ prediction
#: what an emulated device's numbers are (never "measured")
KIND = "emulated"


def emulated_fingerprint_id(calibration: Any, emulator_id: str | None) -> str:
    """``emulated-<reference fingerprint>-<hash>``: one id naming the reference device, the emulator and the fit."""
    ref = str(calibration.reference.get("fingerprint") or calibration.reference.get("name") or "reference")
    digest = hashlib.sha256(
        json.dumps(
            {
                "emulator": emulator_id or calibration.emulator.get("fingerprint"),
                "features": list(calibration.features),
                "coef": [round(float(c), 9) for c in calibration.coef],
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:10]
    return f"{KIND}-{ref}-{digest}"


class CalibratedLatency(OpSumModel):
    """Predicts the reference device's latency (ms) of any op or arch from emulator timings.

    ``emulator`` gives the emulator's times of ops and their parts (missing
    ones are measured on its backend when it has one).
    """

    name = "calibrated"

    def __init__(self, calibration: Calibration, emulator: EmulatorTimes, e2e: E2ECalibration | None = None) -> None:
        self.cal = calibration
        self.emulator = emulator
        self.calibration = e2e or E2ECalibration()
        ref = calibration.reference.get("fingerprint") or "reference"
        emulator_id = emulator.table.fingerprint_id or calibration.emulator.get("fingerprint")
        self.fingerprint: dict[str, Any] = {
            "id": emulated_fingerprint_id(calibration, emulator_id),
            "backend": "emulated",
            "settings": {"model": calibration.model, "reference": ref, "emulator": emulator_id},
            "host": {"device": calibration.reference.get("description", "")},
            "versions": library_versions(),
        }
        self.kind = "emulated"

    def is_extrapolated(self, op: OpSpec) -> bool:
        """True when ``op`` is not in the reference device's table (its number rests on the fit alone)."""
        return bool(self.cal.reference_ops) and op.key not in set(self.cal.reference_ops)

    def predict_ops(self, ops: list[OpSpec]) -> np.ndarray:
        ops = list(ops)
        timed = [o for o in ops if o.type != "zero"]
        parts = self.cal.needs_parts
        self.emulator.ensure(timed, parts=parts)
        out = np.zeros(len(ops))
        feats = [self.emulator.features(o, parts=parts) for o in timed]
        vals = self.cal.predict_features(feats) if feats else np.zeros(0)
        j = 0
        for i, o in enumerate(ops):
            if o.type != "zero":
                out[i] = vals[j]
                j += 1
        return out

    def predicted_table(self, ops: list[OpSpec]) -> LatencyTable:
        """A latency table of the reference device predicted for ``ops`` (rows marked ``predicted``)."""
        ops = [o for o in {o.key: o for o in ops}.values() if o.type != "zero"]
        ms = self.predict_ops(ops)
        ref = self.cal.reference
        t = LatencyTable(
            fingerprint=self.fingerprint,
            device={"name": f"emulated-{ref.get('name', 'reference')}", "backend": "emulated", "settings": {}},
            space=self.emulator.table.space,
            space_params=self.emulator.table.space_params,
            source={"calibration": self.cal.to_dict(), "description": "predicted from emulator timings"},
            name=f"calibrated/{self.emulator.table.space or 'ops'}",
        )
        for op, v in zip(ops, ms, strict=True):
            row = {"median_ms": float(v), "iqr_ms": 0.0, "p90_ms": float(v), "n": 0, "noisy": False, "predicted": True}
            if self.is_extrapolated(op):
                row["extrapolated"] = True
            t.add(op, row)
        return t
