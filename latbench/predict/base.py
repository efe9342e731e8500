"""`LatencyModel`: what every latency predictor gives the search engines.

Contract (checked by :class:`latbench.testing.LatencyModelContract`):

* ``predict_ops(ops) -> np.ndarray`` of milliseconds, one per op (``zero`` -> 0);
* ``predict_arch(arch) -> float`` milliseconds of the whole network (op sum plus
  any end-to-end calibration the model carries);
* ``predict_archs(archs) -> np.ndarray`` batched;
* ``compile(space) -> SpaceLatency``: the fast path search engines use, predicting
  100,000s of archs a second from option-index vectors;
* ``fingerprint`` (dict with ``id``) of the device the model predicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from latbench.ops import OpSpec
from latbench.spaces import Arch, SearchSpace, space_of


@dataclass(frozen=True)
class E2ECalibration:
    """Whole-network latency = ``scale * sum(op latencies) + offset_ms`` (the glue between ops)."""

    scale: float = 1.0
    offset_ms: float = 0.0

    def apply(self, op_sum: np.ndarray | float) -> np.ndarray | float:
        return self.scale * op_sum + self.offset_ms

    def to_dict(self) -> dict[str, float]:
        return {"scale": self.scale, "offset_ms": self.offset_ms}


class SpaceLatency:
    """A latency model compiled for one space: a vector of per-op latencies over the space's vocabulary.

    ``predict_indices(idx)`` sums ``vector[op_ids]`` and applies the end-to-end
    calibration; ``decision_latencies()`` gives, for spaces where each decision
    picks one op (ProxylessNAS, DARTS), the latency of every option of every
    decision (for the differentiable expectation ``sum_i p_i * lat_i``).
    """

    def __init__(self, space: SearchSpace, op_ms: np.ndarray, calibration: E2ECalibration | None = None) -> None:
        if len(op_ms) != len(space.vocabulary):
            raise ValueError(f"expected {len(space.vocabulary)} op latencies, got {len(op_ms)}")
        self.space = space
        self.calibration = calibration or E2ECalibration()
        self.vector = np.append(np.asarray(op_ms, dtype=np.float64), 0.0)  # id -1 -> 0 ms

    def op_sum_indices(self, idx: np.ndarray) -> np.ndarray:
        return self.vector[self.space.op_ids(idx)].sum(axis=1)

    def predict_indices(self, idx: np.ndarray) -> np.ndarray:
        """Milliseconds for a batch of option-index vectors, shape ``(n,)``."""
        return np.asarray(self.calibration.apply(self.op_sum_indices(idx)), dtype=np.float64)

    def predict(self, arch: Arch) -> float:
        return float(self.predict_indices(self.space.to_indices(arch)[None, :])[0])

    def fixed_ms(self) -> float:
        """Latency of the ops every arch runs (stem, head...), before calibration."""
        idx = np.zeros((1, len(self.space.decisions)), dtype=np.int64)
        ids = set(self.space.op_ids(idx)[0].tolist())
        for j in range(1, int(self.space.cardinalities.max())):
            alt = np.minimum(j, self.space.cardinalities - 1)[None, :]
            ids &= set(self.space.op_ids(alt)[0].tolist())
        ids.discard(-1)
        return float(sum(self.vector[i] for i in ids))

    def decision_latencies(self) -> list[np.ndarray]:
        """Per decision, the latency (ms, uncalibrated) of each option; needs one op per decision."""
        base = np.zeros((1, len(self.space.decisions)), dtype=np.int64)
        base_ids = self.space.op_ids(base)[0]
        n_fixed = len(base_ids) - len(self.space.decisions)
        if n_fixed < 0:
            raise ValueError(f"space {self.space.name} does not map one op per decision")
        out = []
        for d_i, d in enumerate(self.space.decisions):
            idx = np.repeat(base, len(d), axis=0)
            idx[:, d_i] = np.arange(len(d))
            ids = self.space.op_ids(idx)
            if ids.shape[1] != len(base_ids):
                raise ValueError(f"space {self.space.name} does not map one op per decision")
            out.append(self.vector[ids[:, n_fixed + d_i]])
        return out

    def bounds(self) -> tuple[float, float]:
        """(smallest, largest) predicted latency over the space (ms).

        Exact for one-op-per-decision spaces; for gated spaces (OFA depth) a
        coordinate search from the extremes and the best of 20,000 samples.
        """
        try:
            lats = self.decision_latencies()
        except ValueError:
            return self._searched_extreme(-1.0), self._searched_extreme(1.0)
        fixed = self.op_sum_indices(np.zeros((1, len(lats)), dtype=np.int64))[0] - sum(x[0] for x in lats)
        lo = fixed + sum(float(x.min()) for x in lats)
        hi = fixed + sum(float(x.max()) for x in lats)
        return float(self.calibration.apply(lo)), float(self.calibration.apply(hi))

    def _searched_extreme(self, sign: float) -> float:
        """Max of ``sign * latency`` by coordinate ascent over decisions (sign -1: the minimum)."""
        rng = np.random.default_rng(0)
        card = self.space.cardinalities
        starts = np.concatenate([np.zeros((1, len(card)), dtype=np.int64), (card - 1)[None, :]])
        samples = self.space.sample_indices(rng, 20000)
        best_sample = samples[np.argmax(sign * self.predict_indices(samples))][None, :]
        best_val = -np.inf
        for cur in np.concatenate([starts, best_sample]):
            cur = cur.copy()
            val = float(sign * self.predict_indices(cur[None, :])[0])
            improved = True
            while improved:
                improved = False
                for d, n in enumerate(card):
                    cand = np.repeat(cur[None, :], n, axis=0)
                    cand[:, d] = np.arange(n)
                    vals = sign * self.predict_indices(cand)
                    j = int(np.argmax(vals))
                    if vals[j] > val + 1e-12:
                        cur, val, improved = cand[j], float(vals[j]), True
            best_val = max(best_val, val)
        return float(sign * best_val)


@runtime_checkable
class LatencyModel(Protocol):
    """Anything that predicts op and network latency in milliseconds for one device."""

    fingerprint: dict[str, Any]

    def predict_ops(self, ops: list[OpSpec]) -> np.ndarray: ...

    def predict_arch(self, arch: Arch) -> float: ...

    def predict_archs(self, archs: list[Arch]) -> np.ndarray: ...

    def compile(self, space: SearchSpace) -> SpaceLatency: ...


class OpSumModel:
    """Mixin: whole-network predictions as the calibrated sum of ``predict_ops``."""

    calibration: E2ECalibration

    def predict_ops(self, ops: list[OpSpec]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_arch(self, arch: Arch) -> float:
        ops = space_of(arch).ops_of(arch)
        return float(self.calibration.apply(float(self.predict_ops(ops).sum())))

    def predict_archs(self, archs: list[Arch]) -> np.ndarray:
        if not archs:
            return np.zeros(0)
        space = space_of(archs[0])
        compiled = self.compile(space)
        return compiled.predict_indices(np.stack([space.to_indices(a) for a in archs]))

    def compile(self, space: SearchSpace) -> SpaceLatency:
        return SpaceLatency(space, self.predict_ops(space.vocabulary), self.calibration)
