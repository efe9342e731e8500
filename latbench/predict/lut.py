"""`TableLatency`: the exact lookup model (LUT sum) over a latency table."""

from __future__ import annotations

from typing import Any

import numpy as np

from latbench.ops import OpSpec
from latbench.predict.base import E2ECalibration, OpSumModel
from latbench.table import LatencyTable


class TableLatency(OpSumModel):
    """Predicts an op by its table row median; a network by the (calibrated) sum of its rows.

    Ops missing from the table raise :class:`~latbench.errors.TableError` listing them.
    """

    name = "lut"

    def __init__(self, table: LatencyTable, calibration: E2ECalibration | None = None) -> None:
        self.table = table
        self.calibration = calibration or E2ECalibration()
        self.fingerprint: dict[str, Any] = table.fingerprint

    def predict_ops(self, ops: list[OpSpec]) -> np.ndarray:
        ops = list(ops)
        missing = self.table.missing(ops)
        if missing:
            self.table.lut_sum(missing)  # raises with the listing
        return np.array([0.0 if o.type == "zero" else self.table.rows[o.key]["median_ms"] for o in ops])
