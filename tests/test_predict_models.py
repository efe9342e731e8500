"""Latency models: every named model fits, predicts, passes the contract; custom regressors plug in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latbench.backends import get_backend
from latbench.errors import LatbenchError
from latbench.ops import OpSpec
from latbench.predict.featurize import FEATURES, Featurizer, op_features
from latbench.predict.models import (
    MODEL_NAMES,
    FlopsLinearModel,
    OpRegressionModel,
    cross_val_predict_ops,
    fit_model,
    make_model,
    table_rows,
)
from latbench.predict.sampling import sample_ops
from latbench.spaces import get_space
from latbench.table import LatencyTable, build_table
from latbench.testing import LatencyModelContract

FAKE = {"device": "pred-test"}


def fake_table(tmp: Path, ops: list[OpSpec], name: str = "t", space: str | None = None, **settings) -> LatencyTable:
    """A table measured on the deterministic fake backend (no real time passes)."""
    be = get_backend("fake", **{**FAKE, **settings})
    sp = get_space(space) if space else None
    table, _ = build_table(
        be,
        ops,
        tmp / f"{name}.json",
        space=space,
        space_params=sp.params if sp else None,
        device={"name": "fk", "backend": "fake", "settings": be.settings},
    )
    return table


@pytest.fixture(scope="module")
def space_table(tmp_path_factory: pytest.TempPathFactory) -> LatencyTable:
    s = get_space("proxyless-mobile")
    return fake_table(tmp_path_factory.mktemp("t"), s.vocabulary, "px", "proxyless-mobile")


@pytest.fixture(scope="module")
def sampled_table(tmp_path_factory: pytest.TempPathFactory) -> LatencyTable:
    return fake_table(tmp_path_factory.mktemp("s"), sample_ops(300, seed=1), "sampled")


# ----------------------------------------------------------------------------- featurizer
def test_features_split_macs_and_flags() -> None:
    op = OpSpec("mbconv", 28, 40, 80, kernel=5, stride=2, expand=6, act="hswish", se=True)
    raw = dict(zip(FEATURES, op_features(op), strict=True))
    assert raw["macs"] == op.macs
    assert raw["macs_pointwise"] + raw["macs_depthwise"] + raw["macs_se"] == op.macs
    assert raw["macs_depthwise"] == 14 * 14 * 25 * 240
    assert raw["mid"] == 240 and raw["hw_out"] == 14 and raw["se"] == 1.0 and raw["act_hswish"] == 1.0
    assert raw["type_mbconv"] == 1.0 and raw["type_conv"] == 0.0
    assert raw["input_bytes"] == 4 * 28 * 28 * 40 and raw["weight_bytes"] == 4 * op.params
    dw = OpSpec("conv", 14, 64, 64, kernel=3, groups=64)
    rdw = dict(zip(FEATURES, op_features(dw), strict=True))
    assert rdw["depthwise"] == 1.0 and rdw["macs_depthwise"] == dw.macs and rdw["macs_pointwise"] == 0
    X = Featurizer().transform([op, dw])
    assert X.shape == (2, len(FEATURES))
    assert X[0, FEATURES.index("cin")] == pytest.approx(np.log2(41))
    assert X[0, FEATURES.index("se")] == 1.0  # flags stay 0/1
    assert Featurizer(log=False).transform([op])[0, FEATURES.index("macs")] == op.macs


def test_alignment_flags_and_schema_1_columns() -> None:
    aligned, odd = OpSpec("mbconv", 112, 16, 24, kernel=3, stride=2, expand=6), OpSpec("mbconv", 109, 16, 24, expand=6)
    X = Featurizer().transform([aligned, odd])
    cols = [FEATURES.index(n) for n in ("hw_align8", "hw_align4", "hw_out_align8", "hw_out_align4")]
    assert X[0, cols].tolist() == [1.0, 1.0, 1.0, 1.0] and X[1, cols].tolist() == [0.0, 0.0, 0.0, 0.0]
    # a predictor saved before the flags existed reads exactly its own columns
    old_names = [n for n in FEATURES if "align" not in n]
    old = Featurizer.from_dict({"schema": "latbench.features/1", "log": True, "names": old_names})
    assert old.transform([aligned]).shape == (1, len(old_names))
    np.testing.assert_array_equal(old.transform([aligned])[0], np.delete(X[0], cols))
    with pytest.raises(LatbenchError, match="not known"):
        Featurizer.from_dict({"schema": "latbench.features/2", "names": ["hw", "warp_size"]})
    with pytest.raises(LatbenchError, match="not supported"):
        Featurizer.from_dict({"schema": "latbench.features/9", "names": old_names})


# ----------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", [n for n in MODEL_NAMES if n != "lut"])
def test_named_models_fit_and_predict_in_range(name: str, space_table: LatencyTable) -> None:
    m = fit_model(name, [space_table])
    ops, ms = table_rows([space_table])
    pred = m.predict_ops(ops)
    assert pred.shape == ms.shape and np.all(pred > 0)
    rel = np.abs(pred - ms) / ms
    # in-sample on a smooth (analytic) device: tree models nearly reproduce it, baselines are rougher
    limit = {"flops-linear": 0.6, "linear": 0.3}.get(name, 0.1)
    assert np.median(rel) < limit, (name, np.median(rel))
    assert m.fingerprint["id"] == space_table.fingerprint_id
    assert m.predict_ops([OpSpec("zero", 28, 40, 40, act="none")])[0] == 0.0


def test_lut_model_is_exact(space_table: LatencyTable) -> None:
    m = fit_model("lut", [space_table])
    ops, ms = table_rows([space_table])
    np.testing.assert_array_equal(m.predict_ops(ops), ms)


def test_flops_linear_recovers_a_line() -> None:
    ops = [OpSpec("conv", hw, 16, 32, kernel=3) for hw in (8, 16, 24, 32, 48, 64)]
    ms = np.array([0.05 + 2.0 * o.flops / 1e9 for o in ops])
    m = FlopsLinearModel().fit(ops, ms)
    a, b = m.lines_["conv"]
    assert a == pytest.approx(2.0, rel=1e-9) and b == pytest.approx(0.05, rel=1e-9)


def test_unseen_op_type_is_one_clear_error(space_table: LatencyTable) -> None:
    m = fit_model("linear", [space_table])
    with pytest.raises(LatbenchError, match=r"not trained on op type.*sep_conv"):
        m.predict_ops([OpSpec("sep_conv", 16, 16, 16, kernel=3)])


def test_rare_types_share_one_regressor(space_table: LatencyTable) -> None:
    m = fit_model("gbm", [space_table])
    # 67 mbconv rows get their own regressor; the 2 convs and the classifier share one
    assert m.types_ == {"mbconv": "mbconv", "conv": "*", "classifier": "*"}
    assert set(m.frozen_) == {"mbconv", "*"}


def test_frozen_trees_predict_what_sklearn_predicts(sampled_table: LatencyTable) -> None:
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor

    ops, ms = table_rows([sampled_table])
    X = Featurizer().transform(ops)
    for est in (RandomForestRegressor(n_estimators=20, random_state=0), GradientBoostingRegressor(n_estimators=30)):
        m = OpRegressionModel(est, name="t").fit(ops, ms)
        for group, fitted in m.estimators_.items():
            idx = [i for i, o in enumerate(ops) if m.types_[o.type] == group]
            np.testing.assert_allclose(m.frozen_[group].predict(X[idx]), fitted.predict(X[idx]), rtol=1e-12)


def test_any_sklearn_regressor_plugs_in(sampled_table: LatencyTable) -> None:
    from sklearn.neighbors import KNeighborsRegressor

    m = fit_model("knn", [sampled_table], regressor=KNeighborsRegressor(n_neighbors=3))
    ops, _ = table_rows([sampled_table])
    pred = m.predict_ops(ops[:20])
    assert np.all(pred > 0) and not m.saveable()
    with pytest.raises(LatbenchError, match="cannot save regressor KNeighborsRegressor"):
        m.state_dict()


def test_cross_validation_is_out_of_sample(sampled_table: LatencyTable) -> None:
    import xgboost as xgb

    ops, ms = table_rows([sampled_table])
    reg = xgb.XGBRegressor(n_estimators=150, max_depth=4, learning_rate=0.1, n_jobs=1)
    oof = cross_val_predict_ops("xgb", ops, ms, folds=3, regressor=reg)
    in_sample = fit_model("xgb", [sampled_table], regressor=reg).predict_ops(ops)
    ok = np.isfinite(oof)
    assert ok.mean() > 0.95
    err_oof = np.median(np.abs(oof[ok] - ms[ok]) / ms[ok])
    err_in = np.median(np.abs(in_sample - ms) / ms)
    assert err_in < err_oof < 0.25  # honest: held-out error is larger, but the model generalises
    with pytest.raises(LatbenchError, match="lut model cannot predict"):
        cross_val_predict_ops("lut", ops, ms)


def test_model_trained_on_sampled_ops_predicts_space_ops(
    sampled_table: LatencyTable, space_table: LatencyTable
) -> None:
    m = fit_model("xgboost", [sampled_table])
    ops, ms = table_rows([space_table])
    sel = [i for i, o in enumerate(ops) if o.type == "mbconv"]
    rel = np.abs(m.predict_ops([ops[i] for i in sel]) - ms[sel]) / ms[sel]
    assert np.mean(rel < 0.25) > 0.8


def test_unknown_model_name() -> None:
    with pytest.raises(LatbenchError, match="unknown model"):
        make_model("svm")


def test_training_tables_must_share_a_device(tmp_path: Path, space_table: LatencyTable) -> None:
    other = fake_table(tmp_path, sample_ops(20, seed=3), "other", device="another-device")
    with pytest.raises(LatbenchError, match="refusing training rows"):
        fit_model("linear", [space_table, other])


class TestXGBoostContract(LatencyModelContract):
    @pytest.fixture
    def model(self, space_table: LatencyTable) -> OpRegressionModel:
        return fit_model("xgboost", [space_table])


class TestFlopsLinearContract(LatencyModelContract):
    @pytest.fixture
    def model(self, space_table: LatencyTable) -> FlopsLinearModel:
        return fit_model("flops-linear", [space_table])


class TestRandomForestOnSampledOps(LatencyModelContract):
    space_name = "ofa-mbv3"

    @pytest.fixture
    def model(self, sampled_table: LatencyTable) -> OpRegressionModel:
        return fit_model("random-forest", [sampled_table])
