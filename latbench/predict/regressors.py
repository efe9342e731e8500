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
    def from_dict(cls, d: dict[str, Any], n_features: int | None = None) -> FrozenLinear:
        coef = _numbers(d["coef"], "coef")
        if n_features is not None and len(coef) != n_features:
            raise ValueError(f"{len(coef)} coefficients for {n_features} features")
        return cls(coef, _number(d["intercept"], "intercept"))


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
    def from_dict(cls, d: dict[str, Any], n_features: int | None = None) -> FrozenTrees:
        if not isinstance(d["trees"], list) or not d["trees"]:
            raise ValueError("no trees")
        trees = []
        for i, t in enumerate(d["trees"]):
            if not isinstance(t, dict):
                raise ValueError(f"tree {i} is not an object")
            tree = {
                "left": _ints(t["left"], "left"),
                "right": _ints(t["right"], "right"),
                "feature": _ints(t["feature"], "feature"),
                "threshold": _numbers(t["threshold"], "threshold"),
                "value": _numbers(t["value"], "value"),
            }
            check_tree(tree["left"], tree["right"], tree["feature"], n_features, f"tree {i}")
            if len(tree["threshold"]) != len(tree["left"]) or len(tree["value"]) != len(tree["left"]):
                raise ValueError(f"tree {i}: arrays of different lengths")
            trees.append(tree)
        return cls(trees, str(d["combine"]), _number(d["init"], "init"), _number(d["scale"], "scale"))


class FrozenXGBoost:
    """An xgboost booster kept in xgboost's own JSON model format."""

    kind = "xgboost"

    def __init__(self, model_json: dict[str, Any], n_features: int | None = None) -> None:
        import xgboost as xgb

        check_xgboost_json(model_json, n_features)
        self.model_json = model_json
        self.booster = xgb.Booster()
        try:
            self.booster.load_model(bytearray(json.dumps(model_json).encode()))
        except Exception as exc:  # xgboost raises XGBoostError with the native stack trace in its text
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"xgboost cannot read the model ({first[:200]})") from None
        self.booster.set_param({"nthread": 1})
        if n_features is not None and self.booster.num_features() != n_features:
            raise ValueError(f"xgboost model takes {self.booster.num_features()} features, not {n_features}")

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.shape[0] == 0:
            return np.zeros(0)
        return np.asarray(self.booster.inplace_predict(X), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "format": "xgboost-json", "model": self.model_json}

    @classmethod
    def from_dict(cls, d: dict[str, Any], n_features: int | None = None) -> FrozenXGBoost:
        if d.get("format", "xgboost-json") != "xgboost-json" or not isinstance(d["model"], dict):
            raise ValueError("not an xgboost JSON model")
        return cls(d["model"], n_features)


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


def frozen_from_dict(d: dict[str, Any], n_features: int | None = None) -> FrozenRegressor:
    """A frozen regressor from its JSON, every array checked (``n_features``: the columns it must take), so a
    tampered file is refused in one line instead of predicting nonsense or walking a cyclic tree forever."""
    if not isinstance(d, dict):
        raise LatbenchError("a regressor in the predictor is not an object")
    kinds: dict[str, Any] = {"linear": FrozenLinear, "trees": FrozenTrees, "xgboost": FrozenXGBoost}
    kind = d.get("kind")
    cls = kinds.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise LatbenchError(f"unknown regressor kind {str(kind)[:40]!r} in predictor (known: {', '.join(kinds)})")
    try:
        return cls.from_dict(d, n_features)
    except KeyError as exc:
        raise LatbenchError(f"malformed {kind} regressor in predictor (no {exc})") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise LatbenchError(f"malformed {kind} regressor in predictor ({str(exc)[:200]})") from None


# ----------------------------------------------------------------------------- validation of frozen JSON
def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise ValueError(f"{what} {str(v)[:40]} is not a finite number")
    return float(v)


def _numbers(v: Any, what: str) -> np.ndarray:
    if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise ValueError(f"{what} is not a list of numbers")
    arr = np.array(v, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} holds a value that is not finite")
    return arr


def _ints(v: Any, what: str) -> np.ndarray:
    if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise ValueError(f"{what} is not a list of integers")
    if any(abs(x) > 1 << 31 for x in v):
        raise ValueError(f"{what} holds an index out of range")
    return np.array(v, dtype=np.int64)


def check_tree(left: np.ndarray, right: np.ndarray, feature: np.ndarray, n_features: int | None, what: str) -> None:
    """A binary tree in array form: node 0 the root, a leaf has both children ``-1``, an inner node has both
    children in range and after itself (so every walk ends), and splits on a feature that exists."""
    n = len(left)
    if n == 0 or len(right) != n or len(feature) != n:
        raise ValueError(f"{what}: empty, or arrays of different lengths")
    idx = np.arange(n)
    leaf = left == -1
    if np.any(leaf != (right == -1)):
        raise ValueError(f"{what}: a node with one child")
    inner = ~leaf
    for child in (left, right):
        if np.any(inner & ((child <= idx) | (child >= n))):
            raise ValueError(f"{what}: a child index out of range or not after its parent (a cycle)")
    if n_features is not None and np.any(inner & ((feature < 0) | (feature >= n_features))):
        raise ValueError(f"{what}: splits on a feature index out of range (0..{n_features - 1})")


def check_xgboost_json(model: dict[str, Any], n_features: int | None) -> None:
    """The trees of an xgboost JSON model checked like :func:`check_tree` before xgboost reads them
    (xgboost itself loads a tree with a cycle and then predicts forever)."""
    try:
        learner = model["learner"]
        booster = learner["gradient_booster"]
        if booster.get("name") != "gbtree":
            raise ValueError(f"booster {str(booster.get('name'))[:20]!r} is not gbtree")
        trees = booster["model"]["trees"]
        declared = int(learner["learner_model_param"]["num_feature"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not an xgboost gbtree JSON model (no {exc})") from None
    if n_features is not None and declared != n_features:
        raise ValueError(f"xgboost model takes {declared} features, not {n_features}")
    if not isinstance(trees, list) or not trees:
        raise ValueError("xgboost model has no trees")
    for i, t in enumerate(trees):
        if not isinstance(t, dict):
            raise ValueError(f"xgboost tree {i} is not an object")
        left, right = _ints(t.get("left_children"), "left_children"), _ints(t.get("right_children"), "right_children")
        feature = _ints(t.get("split_indices"), "split_indices")
        check_tree(left, right, feature, declared, f"xgboost tree {i}")
        for name in ("split_conditions", "base_weights"):
            if len(_numbers(t.get(name), name)) != len(left):
                raise ValueError(f"xgboost tree {i}: {name} has the wrong length")
        if t.get("categories_nodes"):
            raise ValueError(f"xgboost tree {i} has categorical splits (latbench never trains them)")
