"""`TableLatency`: the exact lookup model (LUT sum) over a latency table; `ResolutionTables`: one table per
input resolution, each network summed over the table of its own resolution."""

from __future__ import annotations

from typing import Any

import numpy as np

from latbench.errors import TableError
from latbench.ops import OpSpec
from latbench.predict.base import E2ECalibration, OpSumModel, SpaceLatency
from latbench.spaces import Arch, SearchSpace, space_of
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


def _arch_resolution(space: SearchSpace, arch: Arch) -> int | None:
    """The input resolution of ``arch``: its space's fixed resolution, or its searched ``r`` choice."""
    res = space.params.get("resolution")
    if res is not None:
        return int(res)
    choice = (arch.get("choices") or {}).get("r") if isinstance(arch, dict) else None
    return int(choice) if choice is not None else None


class ResolutionTables(OpSumModel):
    """LUT sums over one table per input resolution (Once-for-All publishes one Note10 table per resolution).

    Each network is summed over the table of *its* resolution: the tables
    share the keys of resolution-independent ops (the 1x1 feature-mix conv
    and the classifier) at different values, so one merged table would be
    wrong for all but one resolution. The tables must be of one device, one
    space and the same other space parameters (width, classes).
    """

    name = "lut"

    def __init__(self, tables: list[LatencyTable], calibration: E2ECalibration | None = None) -> None:
        if not tables:
            raise TableError("no tables given")
        self.tables: dict[int, LatencyTable] = {}
        first = tables[0]
        others = {k: v for k, v in (first.space_params or {}).items() if k != "resolution"}
        for t in tables:
            res = (t.space_params or {}).get("resolution")
            if res is None:
                raise TableError(f"table {t.path or t.name} records no resolution; import it with its resolution")
            if int(res) in self.tables:
                raise TableError(
                    f"tables {self.tables[int(res)].path or self.tables[int(res)].name} and {t.path or t.name} are "
                    f"both of resolution {res}; give one table per resolution"
                )
            t_others = {k: v for k, v in (t.space_params or {}).items() if k != "resolution"}
            if t.fingerprint_id != first.fingerprint_id or t.space != first.space or t_others != others:
                raise TableError(
                    f"table {t.path or t.name} ({t.fingerprint_id}, {t.space} {t_others}) is not of the device and "
                    f"space of {first.path or first.name} ({first.fingerprint_id}, {first.space} {others})"
                )
            self.tables[int(res)] = t
        self.calibration = calibration or E2ECalibration()
        self.fingerprint: dict[str, Any] = first.fingerprint

    @property
    def resolutions(self) -> list[int]:
        return sorted(self.tables)

    def table_for(self, resolution: int | None) -> LatencyTable:
        if resolution is None:
            if len(self.tables) == 1:
                return next(iter(self.tables.values()))
            raise TableError("which resolution? the tables differ by resolution and the ops do not say")
        t = self.tables.get(int(resolution))
        if t is None:
            raise TableError(f"no table of resolution {resolution} (tables of {self.resolutions})")
        return t

    def predict_ops(self, ops: list[OpSpec], resolution: int | None = None) -> np.ndarray:
        return TableLatency(self.table_for(resolution)).predict_ops(ops)

    def predict_arch(self, arch: Arch) -> float:
        space = space_of(arch)
        ops = space.ops_of(arch)
        return float(self.calibration.apply(float(self.predict_ops(ops, _arch_resolution(space, arch)).sum())))

    def compile(self, space: SearchSpace) -> SpaceLatency:
        res = space.params.get("resolution")
        if res is not None:
            return SpaceLatency(space, self.predict_ops(space.vocabulary, int(res)), self.calibration)
        names = [d.name for d in space.decisions]
        if "r" not in names:
            raise TableError(f"space {space.name} has no resolution decision to pick a table by")
        options = list(space.decisions[names.index("r")].options)
        missing = sorted(set(options) - set(self.tables))
        if missing:
            raise TableError(
                f"space {space.name} searches resolutions {missing} that no table covers (tables of "
                f"{self.resolutions}); set the space's resolutions to {self.resolutions}"
            )
        return _PerResolutionLatency(space, names.index("r"), options, self, self.calibration)


class _PerResolutionLatency(SpaceLatency):
    """A compiled space whose op vector depends on each arch's resolution choice."""

    def __init__(
        self,
        space: SearchSpace,
        r_decision: int,
        options: list[int],
        model: ResolutionTables,
        calibration: E2ECalibration,
    ) -> None:
        # each resolution's vector covers only that resolution's ops (others are never indexed for its archs)
        vectors = []
        for r in options:
            table = model.table_for(r)
            vectors.append(
                [table.rows[o.key]["median_ms"] if o.key in table.rows else np.nan for o in space.vocabulary]
            )
        super().__init__(space, np.nan_to_num(np.asarray(vectors[-1], dtype=np.float64)), calibration)
        self.r_decision = r_decision
        self.vectors = np.stack([np.append(np.asarray(v, dtype=np.float64), 0.0) for v in vectors])

    def op_sum_indices(self, idx: np.ndarray) -> np.ndarray:
        idx = np.atleast_2d(idx)
        ids = self.space.op_ids(idx)
        vals = self.vectors[idx[:, self.r_decision][:, None], ids]
        if np.isnan(vals).any():
            raise TableError("a table lacks an op of its own resolution's networks")
        return vals.sum(axis=1)


def load_tables(spec: str) -> TableLatency | ResolutionTables:
    """``--table`` as one table, or several joined by commas (one per resolution: :class:`ResolutionTables`)."""
    names = [s for s in (x.strip() for x in spec.split(",")) if s]
    if len(names) == 1:
        return TableLatency(LatencyTable.load(names[0]))
    return ResolutionTables([LatencyTable.load(n) for n in names])
