"""The LUT model on the shipped Pixel-1 table passes the latency-model contract."""

from __future__ import annotations

import pytest

from latbench import paths
from latbench.predict.base import E2ECalibration
from latbench.predict.lut import TableLatency
from latbench.table import LatencyTable
from latbench.testing import LatencyModelContract


class TestTableLatency(LatencyModelContract):
    @pytest.fixture
    def model(self) -> TableLatency:
        return TableLatency(LatencyTable.load(paths.REPO_DIR / "tables" / "pixel1" / "proxyless-mobile.json"))


class TestCalibratedTableLatency(LatencyModelContract):
    space_name = "ofa-mbv3"

    @pytest.fixture
    def model(self) -> TableLatency:
        table = LatencyTable.load(paths.REPO_DIR / "tables" / "note10" / "ofa-mbv3.json")
        return TableLatency(table, E2ECalibration(scale=1.1, offset_ms=2.0))


def test_calibration_applies_to_arch_predictions() -> None:
    table = LatencyTable.load(paths.REPO_DIR / "tables" / "pixel1" / "proxyless-mobile.json")
    plain, cal = TableLatency(table), TableLatency(table, E2ECalibration(scale=1.5, offset_ms=3.0))
    from latbench.spaces import get_space

    arch = get_space("proxyless-mobile").sample(0)
    assert cal.predict_arch(arch) == pytest.approx(1.5 * plain.predict_arch(arch) + 3.0)
