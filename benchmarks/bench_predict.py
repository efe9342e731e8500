"""Prediction speed: archs per second, batched, as the search engines use the models.

Targets (issue 5): the ``lut`` model >= 100,000 archs/s batched; tree models
(random forest, gbm, xgboost) >= 5,000 archs/s batched. Two paths are timed:

* ``compiled``: ``model.compile(space).predict_indices(idx)`` on 10,000 index
  vectors (what MnasNet-style search loops call);
* ``archs``: ``model.predict_archs(list_of_arch_dicts)`` on 2,000 arch JSON
  dicts (validation and index conversion included; the vocabulary is
  predicted once per space and cached, so tree cost is per op, not per arch).

The models are trained on the shipped Pixel-1 table (real phone data).
"""

from __future__ import annotations

import numpy as np
import pytest

from latbench import paths
from latbench.predict.models import fit_model
from latbench.spaces import get_space
from latbench.table import LatencyTable

TARGET = {
    "lut": 100_000,
    "flops-linear": 100_000,
    "linear": 5_000,
    "random-forest": 5_000,
    "gbm": 5_000,
    "xgboost": 5_000,
}


@pytest.fixture(scope="module")
def table() -> LatencyTable:
    return LatencyTable.load(paths.REPO_DIR / "tables" / "pixel1" / "proxyless-mobile.json")


@pytest.fixture(scope="module")
def space():
    return get_space("proxyless-mobile")


@pytest.mark.parametrize("name", list(TARGET))
def test_compiled_archs_per_second(benchmark, name: str, table: LatencyTable, space) -> None:
    """Archs/s of ``compile(space).predict_indices`` on 10,000 archs (compile included once, outside)."""
    model = fit_model(name, [table])
    idx = space.sample_indices(np.random.default_rng(0), 10_000)
    compiled = model.compile(space)
    out = benchmark(compiled.predict_indices, idx)
    assert out.shape == (10_000,) and np.all(out > 0)
    rate = 10_000 / benchmark.stats.stats.median
    benchmark.extra_info["archs_per_s"] = rate
    assert rate >= TARGET[name], f"{name}: {rate:,.0f} archs/s < {TARGET[name]:,}"


@pytest.mark.parametrize("name", list(TARGET))
def test_predict_archs_per_second(benchmark, name: str, table: LatencyTable, space) -> None:
    """Archs/s of ``predict_archs`` on 2,000 arch dicts (what a user script or the CLI calls)."""
    model = fit_model(name, [table])
    archs = [space.from_indices(i) for i in space.sample_indices(np.random.default_rng(1), 2_000)]
    out = benchmark(model.predict_archs, archs)
    assert out.shape == (2_000,)
    rate = 2_000 / benchmark.stats.stats.median
    benchmark.extra_info["archs_per_s"] = rate
    assert rate >= min(TARGET[name], 5_000), f"{name}: {rate:,.0f} archs/s"


@pytest.mark.parametrize("name", ["random-forest", "gbm", "xgboost"])
def test_compile_cost_is_per_op(benchmark, name: str, table: LatencyTable, space) -> None:
    """Seconds to predict the whole vocabulary (70 ops) once: what a tree model pays per space."""
    model = fit_model(name, [table])
    vocab = space.vocabulary
    out = benchmark(model.predict_ops, vocab)
    assert out.shape == (len(vocab),)
    benchmark.extra_info["ms_per_vocabulary"] = 1e3 * benchmark.stats.stats.median
