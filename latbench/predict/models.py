"""Latency models behind the one :class:`~latbench.predict.base.LatencyModel` interface.

=================  ==============================================================
``lut``            exact lookup of the table's medians (:class:`TableLatency`)
``flops-linear``   baseline: ``ms = a * GFLOPs + b`` per op type
``linear``         ridge regression on log features -> ``log(ms)`` per op type
``random-forest``  scikit-learn random forest on ``log(ms)`` per op type
``gbm``            scikit-learn gradient boosting on ``log(ms)`` per op type
``xgboost``        xgboost on ``log(ms)`` per op type
=================  ==============================================================

:class:`OpRegressionModel` takes *any* scikit-learn-compatible regressor
(``regressor=``, cloned per op type), so a user can plug in their own.
Op types with fewer than ``min_rows_per_type`` training rows share one
regressor fitted on all rows (the type one-hots tell them apart); an op type
the model never saw raises one clear line instead of guessing.
Whole networks are the calibrated sum of op predictions (``OpSumModel``).

The default model is ``linear`` (:data:`DEFAULT_MODEL`): fitted on log sizes,
it is a power law per op type and keeps scaling off its table (another
resolution or width), where trees are flat. The held-out size splits
(:func:`off_range_groups`, :func:`unseen_hw_groups`) measure exactly that.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from latbench.errors import LatbenchError
from latbench.ops import OpSpec
from latbench.predict.base import E2ECalibration, OpSumModel, SpaceLatency
from latbench.predict.featurize import Featurizer
from latbench.predict.lut import TableLatency
from latbench.predict.regressors import SUPPORTED, FrozenRegressor, freeze, frozen_from_dict
from latbench.spaces import SearchSpace
from latbench.table import LatencyTable

MODEL_NAMES = ("lut", "flops-linear", "linear", "random-forest", "gbm", "xgboost")
#: the model ``latbench predictor train`` fits unless told otherwise: off the table's sizes (another resolution or
#: width) it is the most accurate of these, and close to the best inside them (figures in predictors/README.md)
DEFAULT_MODEL = "linear"
SHARED = "*"  # the regressor shared by rare op types


def make_regressor(name: str, seed: int = 0) -> Any:
    """The default scikit-learn-compatible regressor of a named model."""
    if name == "linear":
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    if name == "random-forest":
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(
            n_estimators=120, max_features=0.5, min_samples_leaf=1, random_state=seed, n_jobs=1
        )
    if name == "gbm":
        from sklearn.ensemble import GradientBoostingRegressor

        return GradientBoostingRegressor(
            n_estimators=400, learning_rate=0.05, max_depth=3, subsample=0.8, random_state=seed
        )
    if name == "xgboost":
        import xgboost as xgb

        return xgb.XGBRegressor(
            n_estimators=500,
            learning_rate=0.05,
            max_depth=4,
            subsample=0.8,
            colsample_bytree=0.8,
            min_child_weight=1.0,
            reg_lambda=1.0,
            random_state=seed,
            n_jobs=1,
            tree_method="exact",
        )
    raise LatbenchError(f"unknown regression model {name!r}; known: {', '.join(MODEL_NAMES)}")


class _CompiledCache:
    """Caches ``compile(space)`` per space and calibration: the vocabulary is predicted once."""

    calibration: E2ECalibration

    def _cache_key(self, space: SearchSpace) -> str:
        return json.dumps([space.name, space.params, self.calibration.to_dict()], sort_keys=True, default=str)

    def compile(self, space: SearchSpace) -> SpaceLatency:
        cache: dict[str, SpaceLatency] = self.__dict__.setdefault("_compiled", {})
        key = self._cache_key(space)
        if key not in cache:
            cache[key] = SpaceLatency(space, self.predict_ops(space.vocabulary), self.calibration)  # type: ignore[attr-defined]
        return cache[key]


def _check_training(ops: list[OpSpec], ms: np.ndarray) -> None:
    if len(ops) != len(ms):
        raise ValueError(f"{len(ops)} ops but {len(ms)} latencies")
    if len(ops) == 0:
        raise LatbenchError("no training rows (the table is empty)")
    if not np.all(np.isfinite(ms)) or np.any(ms <= 0):
        raise LatbenchError("training latencies must be finite and > 0 ms")


def _groups(types: list[str], min_rows: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """Row indices per op type that gets its own regressor, and the rare types (shared regressor)."""
    arr = np.array(types)
    own: dict[str, np.ndarray] = {}
    rare: list[str] = []
    for t in sorted(set(types)):
        idx = np.flatnonzero(arr == t)
        if len(idx) >= min_rows:
            own[t] = idx
        else:
            rare.append(t)
    return own, rare


class OpRegressionModel(_CompiledCache, OpSumModel):
    """Featurizer + one regressor per op type, fitted on ``log(ms)``.

    ``regressor`` is any scikit-learn-compatible regressor (cloned per op
    type); predictions go through its frozen JSON form when it has one (see
    :mod:`latbench.predict.regressors`), so saved models reload bit-identically.
    """

    def __init__(
        self,
        regressor: Any = None,
        *,
        name: str = "custom",
        featurizer: Featurizer | None = None,
        min_rows_per_type: int = 12,
        calibration: E2ECalibration | None = None,
        fingerprint: dict[str, Any] | None = None,
    ) -> None:
        self.regressor = regressor
        self.name = name
        self.featurizer = featurizer or Featurizer()
        self.min_rows_per_type = min_rows_per_type
        self.calibration = calibration or E2ECalibration()
        self.fingerprint: dict[str, Any] = fingerprint or {}
        self.meta: dict[str, Any] = {}

    # ------------------------------------------------------------------ fitting
    def fit(self, ops: list[OpSpec], ms: Any) -> OpRegressionModel:
        """Fit on ops and their measured latencies (milliseconds); returns ``self``."""
        from sklearn.base import clone

        if self.regressor is None:
            raise LatbenchError("OpRegressionModel needs a regressor (or use fit_model(name, ...))")
        ops = [o for o in ops]
        ms = np.asarray(ms, dtype=np.float64)
        _check_training(ops, ms)
        X = self.featurizer.transform(ops)
        y = np.log(ms)
        own, rare = _groups([o.type for o in ops], self.min_rows_per_type)
        self.estimators_: dict[str, Any] = {}
        self.frozen_: dict[str, FrozenRegressor | None] = {}
        for t, idx in own.items():
            self.estimators_[t] = clone(self.regressor).fit(X[idx], y[idx])
        if rare:
            self.estimators_[SHARED] = clone(self.regressor).fit(X, y)
        for t, est in self.estimators_.items():
            self.frozen_[t] = freeze(est)
        self.types_ = {t: (t if t in own else SHARED) for t in {o.type for o in ops}}
        self.rows_per_type_ = {t: int(sum(o.type == t for o in ops)) for t in sorted(self.types_)}
        self.ranges_ = size_ranges(ops)
        self.__dict__.pop("_compiled", None)
        return self

    @property
    def fitted(self) -> bool:
        return hasattr(self, "types_")

    # ---------------------------------------------------------------- predicting
    def _regressor_for(self, group: str) -> Any:
        frozen = self.frozen_.get(group)
        return frozen if frozen is not None else self.estimators_[group]

    def predict_ops(self, ops: list[OpSpec]) -> np.ndarray:
        """Milliseconds per op (``zero`` ops 0); an op type never trained on raises."""
        if not self.fitted:
            raise LatbenchError(f"model {self.name!r} is not fitted")
        ops = list(ops)
        out = np.zeros(len(ops), dtype=np.float64)
        unseen = sorted({o.type for o in ops if o.type != "zero" and o.type not in self.types_})
        if unseen:
            raise LatbenchError(
                f"model {self.name!r} was not trained on op type(s) {', '.join(unseen)} "
                f"(trained on {', '.join(sorted(self.types_))}); add such ops to the training table"
            )
        groups: dict[str, list[int]] = {}
        for i, o in enumerate(ops):
            if o.type != "zero":
                groups.setdefault(self.types_[o.type], []).append(i)
        for g, idx in groups.items():
            X = self.featurizer.transform([ops[i] for i in idx])
            with np.errstate(over="ignore", invalid="ignore"):
                out[idx] = np.exp(self._regressor_for(g).predict(X))
        self.last_outside = warn_outside(self.name, ops, getattr(self, "ranges_", None))
        return _check_predictions(self.name, ops, out)

    # ------------------------------------------------------------------- state
    def saveable(self) -> bool:
        return self.fitted and all(f is not None for f in self.frozen_.values())

    def state_dict(self) -> dict[str, Any]:
        if not self.fitted:
            raise LatbenchError(f"model {self.name!r} is not fitted; nothing to save")
        bad = sorted(type(self.estimators_[g]).__name__ for g, f in self.frozen_.items() if f is None)
        if bad:
            raise LatbenchError(f"cannot save regressor {bad[0]} in a safe format; savable: {SUPPORTED}")
        params: dict[str, Any] = {}
        if self.regressor is not None:
            params = {k: v for k, v in self.regressor.get_params(deep=False).items() if _json_scalar(v)}
        return {
            "regressor": {
                "class": type(self.regressor).__name__ if self.regressor is not None else None,
                "params": params,
            },
            "target": "log_ms",
            "features": self.featurizer.to_dict(),
            "min_rows_per_type": self.min_rows_per_type,
            "types": dict(sorted(self.types_.items())),
            "rows_per_type": self.rows_per_type_,
            "regressors": {g: f.to_dict() for g, f in sorted(self.frozen_.items()) if f is not None},
            "ranges": getattr(self, "ranges_", {}),
        }

    @classmethod
    def from_state(
        cls, name: str, state: dict[str, Any], calibration: E2ECalibration, fingerprint: dict[str, Any]
    ) -> OpRegressionModel:
        m = cls(
            None,
            name=name,
            featurizer=Featurizer.from_dict(state["features"]),
            min_rows_per_type=_min_rows(state, 12),
            calibration=calibration,
            fingerprint=fingerprint,
        )
        m.types_ = _types_of(state)
        m.rows_per_type_ = dict(state.get("rows_per_type") or {})
        m.ranges_ = _ranges_of(state)
        if not isinstance(state["regressors"], dict):
            raise LatbenchError("predictor state 'regressors' is not an object")
        n_features = len(m.featurizer.names)
        m.frozen_ = {g: frozen_from_dict(d, n_features) for g, d in state["regressors"].items()}
        m.estimators_ = {}
        missing = sorted(set(m.types_.values()) - set(m.frozen_))
        if missing:
            raise LatbenchError(f"predictor state has no regressor for op group(s) {', '.join(missing)}")
        return m


#: op sizes whose training range a prediction is checked against (a tree model is flat outside it)
RANGE_FIELDS = ("hw", "cin", "cout", "mid", "kernel")


def size_ranges(ops: list[OpSpec]) -> dict[str, dict[str, list[float]]]:
    """Per op type, ``[min, max]`` of each size in :data:`RANGE_FIELDS` and of MACs over the training ops."""
    out: dict[str, dict[str, list[float]]] = {}
    for o in ops:
        r = out.setdefault(o.type, {})
        for f, v in [*((f, float(getattr(o, f))) for f in RANGE_FIELDS), ("macs", float(o.macs))]:
            lo_hi = r.setdefault(f, [v, v])
            lo_hi[0], lo_hi[1] = min(lo_hi[0], v), max(lo_hi[1], v)
    return out


def outside_range(op: OpSpec, ranges: dict[str, dict[str, list[float]]]) -> list[str]:
    """The sizes of ``op`` outside its type's training range (``"hw 320 > 224"``); empty when inside."""
    r = ranges.get(op.type)
    if not r:
        return []
    out = []
    for f, (lo, hi) in r.items():
        v = float(op.macs) if f == "macs" else float(getattr(op, f, math.nan))
        if v < lo:
            out.append(f"{f} {v:g} < {lo:g}")
        elif v > hi:
            out.append(f"{f} {v:g} > {hi:g}")
    return out


def warn_outside(name: str, ops: list[OpSpec], ranges: dict[str, Any] | None) -> list[str]:
    """Keys of ``ops`` outside the training table's sizes; says so on stderr (once per call) when there are any."""
    if not ranges:
        return []
    bad = {o.key: why for o in ops if o.type != "zero" for why in [outside_range(o, ranges)] if why}
    if bad:
        from latbench.progress import message

        key, why = next(iter(bad.items()))
        how = (
            "a power law there (ops_off_range in its metrics says how well that held on its table)"
            if name in ("linear", "flops-linear")
            else "tree models are flat there: train `--model linear`, which extrapolates as a power law"
        )
        message(
            f"warning: predictor {name!r} extrapolates for {len(bad)} op(s) outside its training table's sizes "
            f"(e.g. {key}: {', '.join(why)}); {how}, or prefer an emulated device (`latbench calibrate`) "
            "for shapes the table never had",
            stream="err",
        )
    return list(bad)


def _ranges_of(state: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """The saved training ranges (absent in predictors saved before ranges were recorded: no check then)."""
    raw = state.get("ranges") or {}
    if not isinstance(raw, dict):
        raise LatbenchError("predictor state 'ranges' is not an object")
    out: dict[str, dict[str, list[float]]] = {}
    for t, r in raw.items():
        if not isinstance(r, dict):
            raise LatbenchError(f"predictor state 'ranges' of {t!r} is not an object")
        out[str(t)] = {}
        for f, v in r.items():
            ok = isinstance(v, list) and len(v) == 2 and all(_json_scalar(x) and not isinstance(x, bool) for x in v)
            if not ok or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in v):
                raise LatbenchError(f"predictor state range {t}.{f} must be [min, max], got {v!r}")
            out[str(t)][str(f)] = [float(v[0]), float(v[1])]
    return out


def _json_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _min_rows(state: dict[str, Any], default: int) -> int:
    v = state.get("min_rows_per_type", default)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise LatbenchError(f"predictor state min_rows_per_type {str(v)[:20]} is not an integer >= 1")
    return v


def _types_of(state: dict[str, Any]) -> dict[str, str]:
    """The saved op type -> regressor group map, checked: known op types, text group names."""
    from latbench.ops import OP_TYPES

    types = state["types"]
    if not isinstance(types, dict) or not types:
        raise LatbenchError("predictor state 'types' is not a non-empty object")
    for t, g in types.items():
        if t not in OP_TYPES or not isinstance(g, str):
            raise LatbenchError(f"predictor state maps op type {t[:40]!r} to {str(g)[:40]!r}; not a latbench op type")
    return dict(types)


def _check_predictions(name: str, ops: list[OpSpec], out: np.ndarray) -> np.ndarray:
    """Refuse a prediction that is not a latency (NaN, infinite or negative): never a silently wrong number."""
    bad = np.flatnonzero(~np.isfinite(out) | (out < 0))
    if len(bad):
        i = int(bad[0])
        raise LatbenchError(
            f"model {name!r} predicts {out[i]!r} ms for op {ops[i].key} (and {len(bad) - 1} more): not a latency; "
            "the predictor is broken, retrain it"
        )
    return out


class FlopsLinearModel(_CompiledCache, OpSumModel):
    """Baseline: ``ms = a * GFLOPs + b`` per op type, fitted for relative error.

    Rare op types (fewer than ``min_rows_per_type`` rows) share one line fitted on all rows.
    """

    name = "flops-linear"

    def __init__(
        self,
        *,
        min_rows_per_type: int = 4,
        calibration: E2ECalibration | None = None,
        fingerprint: dict[str, Any] | None = None,
    ) -> None:
        self.min_rows_per_type = min_rows_per_type
        self.calibration = calibration or E2ECalibration()
        self.fingerprint: dict[str, Any] = fingerprint or {}
        self.meta: dict[str, Any] = {}

    @staticmethod
    def _line(gflops: np.ndarray, ms: np.ndarray) -> tuple[float, float]:
        """Least squares of the relative error ``(a x + b - y) / y``; ``b >= 0``."""
        w = 1.0 / ms
        A = np.stack([gflops * w, w], axis=1)
        (a, b), *_ = np.linalg.lstsq(A, np.ones_like(ms), rcond=None)
        if b < 0 or len(ms) < 2:
            a, b = float(np.sum(gflops * w * 1.0) / max(np.sum((gflops * w) ** 2), 1e-30)), 0.0
        return float(a), float(b)

    def fit(self, ops: list[OpSpec], ms: Any) -> FlopsLinearModel:
        ops = list(ops)
        ms = np.asarray(ms, dtype=np.float64)
        _check_training(ops, ms)
        g = np.array([o.flops / 1e9 for o in ops])
        own, rare = _groups([o.type for o in ops], self.min_rows_per_type)
        self.lines_: dict[str, tuple[float, float]] = {t: self._line(g[idx], ms[idx]) for t, idx in own.items()}
        if rare:
            self.lines_[SHARED] = self._line(g, ms)
        self.types_ = {t: (t if t in own else SHARED) for t in {o.type for o in ops}}
        self.__dict__.pop("_compiled", None)
        return self

    def predict_ops(self, ops: list[OpSpec]) -> np.ndarray:
        ops = list(ops)
        unseen = sorted({o.type for o in ops if o.type != "zero" and o.type not in self.types_})
        if unseen:
            raise LatbenchError(
                f"model 'flops-linear' was not trained on op type(s) {', '.join(unseen)} "
                f"(trained on {', '.join(sorted(self.types_))})"
            )
        out = np.zeros(len(ops))
        for i, o in enumerate(ops):
            if o.type != "zero":
                a, b = self.lines_[self.types_[o.type]]
                out[i] = a * o.flops / 1e9 + b
        return _check_predictions(self.name, ops, out)

    def state_dict(self) -> dict[str, Any]:
        return {
            "target": "ms",
            "features": ["gflops"],
            "min_rows_per_type": self.min_rows_per_type,
            "types": dict(sorted(self.types_.items())),
            "lines": {t: {"ms_per_gflop": a, "intercept_ms": b} for t, (a, b) in sorted(self.lines_.items())},
        }

    @classmethod
    def from_state(
        cls, name: str, state: dict[str, Any], calibration: E2ECalibration, fingerprint: dict[str, Any]
    ) -> FlopsLinearModel:
        del name
        m = cls(min_rows_per_type=_min_rows(state, 4), calibration=calibration, fingerprint=fingerprint)
        m.types_ = _types_of(state)
        if not isinstance(state["lines"], dict):
            raise LatbenchError("predictor state 'lines' is not an object")
        m.lines_ = {}
        for t, v in state["lines"].items():
            a, b = v["ms_per_gflop"], v["intercept_ms"]
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in (a, b)):
                raise LatbenchError(f"predictor line of {t[:40]!r} is not two finite numbers")
            if b < 0:
                raise LatbenchError(f"predictor line of {t[:40]!r} has a negative intercept {b} ms")
            m.lines_[t] = (float(a), float(b))
        missing = sorted(set(m.types_.values()) - set(m.lines_))
        if missing:
            raise LatbenchError(f"predictor state has no line for op group(s) {', '.join(missing)}")
        return m


# ----------------------------------------------------------------------------- training entry points
def table_rows(tables: list[LatencyTable]) -> tuple[list[OpSpec], np.ndarray]:
    """Ops and median latencies (ms) of one or more tables (first table wins on duplicate keys)."""
    seen: dict[str, tuple[OpSpec, float]] = {}
    for t in tables:
        for key, row in t.rows.items():
            if key not in seen:
                seen[key] = (OpSpec.from_dict(row["spec"]), float(row["median_ms"]))
    ops = [v[0] for v in seen.values()]
    return ops, np.array([v[1] for v in seen.values()], dtype=np.float64)


def make_model(name: str, *, seed: int = 0, regressor: Any = None) -> OpRegressionModel | FlopsLinearModel:
    """An unfitted trainable model (every named model but ``lut``), or a custom one around ``regressor``."""
    if regressor is not None:
        return OpRegressionModel(regressor, name=name)
    if name == "flops-linear":
        return FlopsLinearModel()
    if name in ("linear", "random-forest", "gbm", "xgboost"):
        return OpRegressionModel(make_regressor(name, seed), name=name)
    raise LatbenchError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")


def fit_model(
    name: str,
    tables: list[LatencyTable],
    *,
    seed: int = 0,
    regressor: Any = None,
) -> Any:
    """Fit model ``name`` on the rows of ``tables`` (all of one device); returns a :class:`LatencyModel`."""
    if not tables:
        raise LatbenchError("no training table given")
    for t in tables[1:]:
        tables[0].check_same_device(t.fingerprint, "training rows")
    if name == "lut" and regressor is None:
        if len(tables) == 1:
            table = tables[0]
        else:
            table = LatencyTable(
                fingerprint=tables[0].fingerprint,
                device=tables[0].device,
                space=tables[0].space,
                space_params=tables[0].space_params,
                name=tables[0].name,
            )
            for t in tables:
                table.merge(t)
        model: Any = TableLatency(table)
        model.meta = {}
        return model
    ops, ms = table_rows(tables)
    model = make_model(name, seed=seed, regressor=regressor).fit(ops, ms)
    model.fingerprint = tables[0].fingerprint
    return model


def cross_val_predict_ops(
    name: str, ops: list[OpSpec], ms: np.ndarray, *, folds: int = 5, seed: int = 0, regressor: Any = None
) -> np.ndarray:
    """Out-of-fold op predictions (ms): each op predicted by a model that did not see it.

    Folds are stratified by op type so rare types stay in training where possible.
    """
    if name == "lut" and regressor is None:
        raise LatbenchError("the lut model cannot predict ops it has not seen; cross-validation does not apply")
    n = len(ops)
    folds = max(2, min(folds, n))
    rng = np.random.default_rng(seed)
    fold_of = np.zeros(n, dtype=np.int64)
    for t in sorted({o.type for o in ops}):
        idx = np.flatnonzero([o.type == t for o in ops])
        idx = idx[rng.permutation(len(idx))]
        start = int(rng.integers(folds))
        fold_of[idx] = (np.arange(len(idx)) + start) % folds
    pred = np.full(n, np.nan)
    for f in range(folds):
        test = np.flatnonzero(fold_of == f)
        train = np.flatnonzero(fold_of != f)
        if len(test) == 0:
            continue
        if len(train) == 0:
            continue
        train_types = {ops[i].type for i in train}
        model = make_model(name, seed=seed, regressor=regressor).fit([ops[i] for i in train], ms[train])
        model.ranges_ = None  # held-out ops lie outside a fold's sizes by design: no extrapolation warning here
        ok = [i for i in test if ops[i].type in train_types]
        if ok:
            pred[ok] = model.predict_ops([ops[i] for i in ok])
    return pred


# ----------------------------------------------------------------------------- held-out size splits
#: the sizes whose extreme values the off-range split holds out: input feature map and output channels
OFF_RANGE_FIELDS = ("hw", "cout")
#: an op type is held out only with at least this many rows and 3 distinct values of the size (room to hold out)
HOLD_OUT_MIN_ROWS = 12
#: the unseen-size split holds out at most this many groups of sizes per op type (a sampled table has dozens of
#: map sizes: one fit per size would cost more than the training)
UNSEEN_BINS = 5


def _size_groups(ops: list[OpSpec], field: str, ends_only: bool, min_rows: int) -> list[dict[str, Any]]:
    """Per op type with ``min_rows`` rows and 3+ distinct values of ``field``: groups of its rows to hold out, with
    the range of ``field`` left to fit on. ``ends_only``: the rows at the smallest and at the largest value; else
    every value, in at most :data:`UNSEEN_BINS` runs of neighbouring values (one value each when there are few)."""
    groups = []
    for t in sorted({o.type for o in ops}):
        rows = [i for i, o in enumerate(ops) if o.type == t]
        values = sorted({float(getattr(ops[i], field)) for i in rows})
        if len(rows) < min_rows or len(values) < 3:
            continue
        if ends_only:
            picked = [[values[0]], [values[-1]]]
        else:
            picked = [[float(v) for v in b] for b in np.array_split(values, min(UNSEEN_BINS, len(values)))]
        for held in picked:
            rest = [x for x in values if x not in held]
            end = "smallest" if held[0] == values[0] else "largest" if held[-1] == values[-1] else "inside"
            test = [i for i in rows if float(getattr(ops[i], field)) in held]
            fitted = [rest[0], rest[-1]]
            groups.append(
                {"op_type": t, "field": field, "end": end, "values": held, "fitted_range": fitted, "rows": test}
            )
    return groups


def off_range_groups(
    ops: list[OpSpec], *, fields: tuple[str, ...] = OFF_RANGE_FIELDS, min_rows: int = HOLD_OUT_MIN_ROWS
) -> list[dict[str, Any]]:
    """The held-out groups of the *off-range* split: every held-out op lies outside the fitted rows' range.

    Rule: for every op type with at least ``min_rows`` rows and, per size in
    ``fields`` (input feature map ``hw``, output channels ``cout``), at least 3
    distinct values of that size, two groups: the type's rows at the smallest
    value and its rows at the largest. Each group is predicted by a model fitted
    on every other row, so its ops lie outside the fitted range of that size for
    their type (``fitted_range``), as the ops of a network at another resolution
    or width lie outside the table. Types with fewer rows (stem, head,
    classifier: one to three rows each) have no room to hold a group out.
    """
    return [g for f in fields for g in _size_groups(ops, f, True, min_rows)]


def unseen_hw_groups(ops: list[OpSpec], *, min_rows: int = HOLD_OUT_MIN_ROWS) -> list[dict[str, Any]]:
    """The held-out groups of the *unseen feature map* split: leave-one-``hw``-out over every input size of each op
    type (same eligibility as :func:`off_range_groups`); with more than :data:`UNSEEN_BINS` sizes, runs of
    neighbouring sizes are held out together. Either way no fitted op of the type has a held-out size.

    Inner sizes count too: a 160 px network's maps (80, 40, 20, 10) lie inside
    a 224 px table's range (7..112) but none of them is in it, and a tree
    model is a step function between the sizes it saw.
    """
    return _size_groups(ops, "hw", False, min_rows)


def held_out_predict_ops(
    name: str,
    ops: list[OpSpec],
    ms: np.ndarray,
    groups: list[dict[str, Any]],
    *,
    seed: int = 0,
    regressor: Any = None,
) -> list[dict[str, Any]]:
    """Each of ``groups`` with ``predicted_ms``: its rows predicted by a model fitted on every other row.

    Unlike K-fold cross-validation (held-out ops surrounded by training ops of
    the same sizes), this is what a model does on shapes its table never had.
    """
    if name == "lut" and regressor is None:
        raise LatbenchError("the lut model cannot predict ops it has not seen; held-out splits do not apply")
    ms = np.asarray(ms, dtype=np.float64)
    out = []
    for g in groups:
        test = set(g["rows"])
        train = [i for i in range(len(ops)) if i not in test]
        model = make_model(name, seed=seed, regressor=regressor)
        # a type that keeps its own regressor is fitted on its own rows only: the same fit, without refitting the
        # other types' regressors for every group (they never predict the held-out rows)
        own = [i for i in train if ops[i].type == g["op_type"]]
        if len(own) >= model.min_rows_per_type:
            train = own
        model.fit([ops[i] for i in train], ms[train])
        model.ranges_ = None  # held out off the fitted sizes by design: no extrapolation warning here
        out.append({**g, "predicted_ms": model.predict_ops([ops[i] for i in g["rows"]])})
    return out
