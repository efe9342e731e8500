"""The predictors shipped in `predictors/`: loadable, trained on the shipped tables, accurate on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latbench import paths
from latbench.predict.io import load_predictor
from latbench.predict.models import MODEL_NAMES
from latbench.spaces import get_space
from latbench.table import LatencyTable
from latbench.testing import LatencyModelContract

SHIPPED = {"pixel1": "proxyless-mobile", "note10": "ofa-mbv3"}
FILES = [paths.REPO_DIR / "predictors" / d / f"{s}-{m}.json" for d, s in SHIPPED.items() for m in MODEL_NAMES]


def test_every_model_is_shipped_for_both_phones() -> None:
    missing = [str(f) for f in FILES if not f.exists()]
    assert not missing, missing
    assert not (paths.REPO_DIR / "predictors" / "__init__.py").exists()


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_shipped_predictor_matches_its_table(path) -> None:
    doc = json.loads(path.read_text())
    device = path.parent.name
    table = LatencyTable.load(paths.REPO_DIR / "tables" / device / f"{SHIPPED[device]}.json")
    # trained on exactly the shipped table (retrain when the table changes)
    assert doc["training"]["tables"][0]["content_hash"] == table.content_hash()
    assert doc["fingerprint"]["id"] == table.fingerprint_id and doc["device"]["name"] == device
    model = load_predictor(f"{device}/{path.stem}")
    space = get_space(SHIPPED[device], **table.space_params)
    archs = [space.from_indices(i) for i in space.sample_indices(np.random.default_rng(3), 200)]
    pred = model.predict_archs(archs)
    lut = np.array([table.lut_sum(space.ops_of(a)) for a in archs])
    rel = np.abs(pred - lut) / lut
    if doc["model"] == "lut":
        np.testing.assert_allclose(pred, lut, rtol=1e-12)
        return
    # in-sample agreement with the phone's LUT sum (the out-of-sample figures are in the file)
    limit = {"flops-linear": 0.35, "linear": 0.10}.get(doc["model"], 0.05)
    assert np.median(rel) < limit, (path.name, np.median(rel))
    ops_metrics = doc["metrics"]["ops"]
    assert 0 < ops_metrics["mape"] < 0.35 and ops_metrics["n"] >= 70
    # the held-out size splits: the MBConv rows at the ends of hw and cout, and every hw held out in turn
    off, unseen = doc["metrics"]["ops_off_range"], doc["metrics"]["ops_unseen_hw"]
    assert (off["n"], unseen["n"]) == {"pixel1": (30, 69), "note10": (38, 91)}[device]
    assert 0 < off["mape"] < 0.6 and len(off["groups"]) == 4
    assert doc["metrics"]["archs_vs_lut_sum"]["archs"] == 1000


def test_pixel1_sums_are_in_the_published_range() -> None:
    """ProxylessNAS: any net of the mobile space is about 30..190 ms on the Pixel 1."""
    model = load_predictor("pixel1/proxyless-mobile-xgboost")
    lo, hi = model.compile(get_space("proxyless-mobile")).bounds()
    assert 25 < lo < 60 and 120 < hi < 200


class TestShippedXGBoost(LatencyModelContract):
    @pytest.fixture
    def model(self):
        return load_predictor("pixel1/proxyless-mobile-xgboost")


class TestShippedNote10Linear(LatencyModelContract):
    space_name = "ofa-mbv3"

    @pytest.fixture
    def model(self):
        return load_predictor("note10/ofa-mbv3-linear")
