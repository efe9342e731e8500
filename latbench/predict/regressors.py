"""Fitted regressors as plain JSON, and the evaluators that predict from that JSON.

No pickle: a fitted scikit-learn or xgboost regressor is turned into a
*frozen regressor* (:class:`FrozenLinear`, :class:`FrozenTrees`,
:class:`FrozenXGBoost`) whose whole state is JSON, and the predictor always
predicts through the frozen form, so a model reloaded in a fresh process
predicts bit-identically to the one that was trained.

Supported: scikit-learn linear models (anything with ``coef_`` /
``intercept_``: ``LinearRegression``, ``Ridge``, ``Lasso``...), a ``Pipeline``
of ``StandardScaler`` then a linear model, ``DecisionTreeRegressor``,
``RandomForestRegressor``, ``ExtraTreesRegressor``,
``GradientBoostingRegressor`` (squared error), and xgboost's ``XGBRegressor``
(kept in xgboost's own JSON format). Other regressors still train and predict
in memory; saving them raises one clear line.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import numpy as np

from latbench.errors import LatbenchError

SUPPORTED = (
    "LinearRegression, Ridge, Lasso, ElasticNet (and other sklearn linear models), Pipeline(StandardScaler, linear), "
    "DecisionTreeRegressor, RandomForestRegressor, ExtraTreesRegressor, GradientBoostingRegressor, XGBRegressor"
)


class FrozenRegressor(Protocol):
    kind: str

    def predict(self, X: np.ndarray) -> np.ndarray: ...

    def to_dict(self) -> dict[str, Any]: ...


class FrozenLinear:
    """``X @ coef + intercept`` (a standard scaler folded in)."""

    kind = "linear"

    def __init__(self, coef: np.ndarray, intercept: float) -> None:
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = float(intercept)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.coef + self.intercept

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "coef": self.coef.tolist(), "intercept": self.intercept}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FrozenLinear:
        return cls(np.array(d["coef"], dtype=np.float64), float(d["intercept"]))


class FrozenTrees:
    """An ensemble of binary regression trees: ``init + scale * combine(tree values)``.

    ``combine`` is ``mean`` (random forests) or ``sum`` (gradient boosting).
    Inputs are compared as float32, like scikit-learn's trees do, so the frozen
    trees predict what the fitted estimator predicts.
    """

    kind = "trees"

    def __init__(self, trees: list[dict[str, np.ndarray]], combine: str, init: float = 0.0, scale: float = 1.0) -> None:
        if combine not in ("mean", "sum"):
            raise ValueError(f"combine must be mean or sum, got {combine!r}")
        self.trees = trees
        self.combine = combine
        self.init = float(init)
        self.scale = float(scale)
        # all trees packed into one node array for a vectorised walk
        offsets = np.cumsum([0] + [len(t["feature"]) for t in trees[:-1]])
        self._roots = offsets.astype(np.int64)
        self._left = np.concatenate(
            [np.where(t["left"] >= 0, t["left"] + o, -1) for t, o in zip(trees, offsets, strict=True)]
        )
        self._right = np.concatenate(
            [np.where(t["right"] >= 0, t["right"] + o, -1) for t, o in zip(trees, offsets, strict=True)]
        )
        self._feature = np.concatenate([t["feature"] for t in trees]).astype(np.int64)
        self._threshold = np.concatenate([t["threshold"] for t in trees]).astype(np.float64)
        self._value = np.concatenate([t["value"] for t in trees]).astype(np.float64)
        self._leaf = self._left < 0
        self._feature_safe = np.where(self._leaf, 0, self._feature)

    def predict(self, X: np.ndarray) -> np.ndarray:
        X32 = np.asarray(X, dtype=np.float32)
        n = X32.shape[0]
        if n == 0:
            return np.zeros(0)
        node = np.broadcast_to(self._roots[:, None], (len(self._roots), n)).copy()  # (trees, samples)
        cols = np.broadcast_to(np.arange(n)[None, :], node.shape)
        while True:
            leaf = self._leaf[node]
            if leaf.all():
                break
            x = X32[cols, self._feature_safe[node]].astype(np.float64)
            nxt = np.where(x <= self._threshold[node], self._left[node], self._right[node])
            node = np.where(leaf, node, nxt)
        vals = self._value[node]  # (trees, samples)
        total = np.zeros(n, dtype=np.float64)
        for row in vals:  # fixed order of accumulation: stable across processes
            total += row
        if self.combine == "mean":
            total /= len(self.trees)
        return self.init + self.scale * total

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "combine": self.combine,
            "init": self.init,
            "scale": self.scale,
            "trees": [
                {
                    "left": t["left"].tolist(),
                    "right": t["right"].tolist(),
                    "feature": t["feature"].tolist(),
                    "threshold": t["threshold"].tolist(),
                    "value": t["value"].tolist(),
                }
                for t in self.trees
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FrozenTrees:
        trees = [
            {
                "left": np.array(t["left"], dtype=np.int64),
                "right": np.array(t["right"], dtype=np.int64),
                "feature": np.array(t["feature"], dtype=np.int64),
                "threshold": np.array(t["threshold"], dtype=np.float64),
                "value": np.array(t["value"], dtype=np.float64),
            }
            for t in d["trees"]
        ]
        return cls(trees, d["combine"], d["init"], d["scale"])


class FrozenXGBoost:
    """An xgboost booster kept in xgboost's own JSON model format."""

    kind = "xgboost"

    def __init__(self, model_json: dict[str, Any]) -> None:
        import xgboost as xgb

        self.model_json = model_json
        self.booster = xgb.Booster()
        self.booster.load_model(bytearray(json.dumps(model_json).encode()))
        self.booster.set_param({"nthread": 1})

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.shape[0] == 0:
            return np.zeros(0)
        return np.asarray(self.booster.inplace_predict(X), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "format": "xgboost-json", "model": self.model_json}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FrozenXGBoost:
        return cls(d["model"])


def _sk_tree(tree: Any) -> dict[str, np.ndarray]:
    t = tree.tree_
    if t.value.shape[1] != 1:
        raise LatbenchError("only single-output trees can be saved")
    return {
        "left": np.asarray(t.children_left, dtype=np.int64),
        "right": np.asarray(t.children_right, dtype=np.int64),
        "feature": np.asarray(t.feature, dtype=np.int64),
        "threshold": np.asarray(t.threshold, dtype=np.float64),
        "value": np.asarray(t.value[:, 0, 0], dtype=np.float64),
    }


def freeze(est: Any) -> FrozenRegressor | None:
    """The frozen (JSON-able) form of a fitted regressor, or ``None`` when its type is not supported."""
    from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingRegressor, RandomForestRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeRegressor

    if isinstance(est, Pipeline):
        steps = [s for _, s in est.steps if s is not None and s != "passthrough"]
        if len(steps) == 2 and isinstance(steps[0], StandardScaler):
            inner = freeze(steps[1])
            if isinstance(inner, FrozenLinear):
                sc = steps[0]
                mean = np.zeros_like(inner.coef) if sc.mean_ is None else np.asarray(sc.mean_, dtype=np.float64)
                scale = np.ones_like(inner.coef) if sc.scale_ is None else np.asarray(sc.scale_, dtype=np.float64)
                coef = inner.coef / scale
                return FrozenLinear(coef, inner.intercept - float(mean @ coef))
        if len(steps) == 1:
            return freeze(steps[0])
        return None
    if isinstance(est, DecisionTreeRegressor):
        return FrozenTrees([_sk_tree(est)], "mean")
    if isinstance(est, (RandomForestRegressor, ExtraTreesRegressor)):
        return FrozenTrees([_sk_tree(t) for t in est.estimators_], "mean")
    if isinstance(est, GradientBoostingRegressor):
        if est.loss != "squared_error":
            return None
        init = est.init_
        if init == "zero":
            base = 0.0
        elif hasattr(init, "constant_"):
            base = float(np.ravel(init.constant_)[0])
        else:
            return None
        return FrozenTrees([_sk_tree(t) for t in est.estimators_[:, 0]], "sum", base, est.learning_rate)
    try:
        import xgboost as xgb
    except ImportError:  # pragma: no cover - xgboost is a dependency
        xgb = None
    if xgb is not None and isinstance(est, xgb.XGBModel):
        raw = est.get_booster().save_raw("json")
        return FrozenXGBoost(json.loads(bytes(raw).decode()))
    coef = getattr(est, "coef_", None)
    if coef is not None and np.ndim(coef) == 1 and hasattr(est, "intercept_"):
        return FrozenLinear(np.asarray(coef, dtype=np.float64), float(np.ravel(est.intercept_)[0]))
    return None


def frozen_from_dict(d: dict[str, Any]) -> FrozenRegressor:
    kinds: dict[str, Any] = {"linear": FrozenLinear, "trees": FrozenTrees, "xgboost": FrozenXGBoost}
    cls = kinds.get(d.get("kind", ""))
    if cls is None:
        raise LatbenchError(f"unknown regressor kind {d.get('kind')!r} in predictor (known: {', '.join(kinds)})")
    try:
        return cls.from_dict(d)
    except (KeyError, TypeError, ValueError) as exc:
        raise LatbenchError(f"malformed {d.get('kind')} regressor in predictor ({type(exc).__name__}: {exc})") from None
