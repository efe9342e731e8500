"""`scaling`: EfficientNet-style compound scaling (Tan & Le, ICML 2019) under a latency budget.

A base arch is scaled in depth by ``alpha ** phi``, width by ``beta ** phi`` and
resolution by ``gamma ** phi`` with ``alpha * beta**2 * gamma**2`` about 2 (so
each unit of ``phi`` about doubles the FLOPs). EfficientNet picks ``phi`` by a
FLOPs target; here, for every ``(alpha, beta, gamma)`` of a grid, ``phi`` is the
largest one whose scaled arch fits the latency budget (and the params / memory
limits), and those archs are the candidates. Once the grid is evaluated, the
best triple is refined (finer grid, slightly smaller ``phi``).

The multipliers act on the decisions of the space (:func:`scaling_axes`):
``ofa-mbv3``: stage depths, block expand ratios (width of the inverted
bottleneck), and the resolution decision when the space searches it;
``proxyless-mobile``: active blocks per stage (``zero`` ops), expand ratios.
Blocks a deeper arch adds copy the last active block of their stage.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

from latbench.errors import LatbenchError
from latbench.search.mnas.strategies.base import Strategy, register_strategy
from latbench.spaces import SearchSpace

#: space name -> function(space) -> (scale(base_idx, depth_mult, width_mult, res_mult) -> idx, has_resolution)
SCALING_AXES: dict[str, Callable[[SearchSpace], tuple[Callable[..., np.ndarray], bool]]] = {}


def register_scaling_axes(space_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Teach the ``scaling`` strategy how depth / width / resolution map onto another space's decisions."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        SCALING_AXES[space_name] = fn
        return fn

    return deco


def _nearest(options: np.ndarray, value: float) -> int:
    return int(np.argmin(np.abs(options - value) + 1e-9 * options))


@register_scaling_axes("ofa-mbv3")
def _ofa_axes(space: SearchSpace) -> tuple[Callable[..., np.ndarray], bool]:
    depths = np.asarray(space.DEPTHS, dtype=float)  # type: ignore[attr-defined]
    expands = np.asarray(space.EXPANDS, dtype=float)  # type: ignore[attr-defined]
    has_r = space.params.get("resolution") is None
    res = np.asarray(space.RESOLUTIONS, dtype=float)  # type: ignore[attr-defined]

    def scale(base: np.ndarray, dm: float, wm: float, rm: float) -> np.ndarray:
        out = base.copy()
        for s in range(5):
            d0 = int(depths[base[s]])
            d1 = int(np.clip(round(d0 * dm), depths.min(), depths.max()))
            out[s] = _nearest(depths, d1)
            for j in range(4):
                b = 4 * s + j
                src = 4 * s + min(j, d0 - 1)  # new blocks copy the last active one
                out[5 + b] = base[5 + src]
                out[25 + b] = _nearest(expands, expands[base[25 + src]] * wm)
        if has_r:
            out[45] = _nearest(res, res[base[45]] * rm)
        return out

    return scale, has_r


@register_scaling_axes("proxyless-mobile")
def _proxyless_axes(space: SearchSpace) -> tuple[Callable[..., np.ndarray], bool]:
    decisions = space.decisions
    stages: list[list[int]] = []
    start = 0
    for depth in space.DEPTHS:  # type: ignore[attr-defined]
        stages.append(list(range(start, start + depth)))
        start += depth
    opts = [d.options for d in decisions]

    def parse(o: str) -> tuple[int, int]:
        k, e = o.split("_")
        return int(k[1:]), int(e[1:])

    def op_index(block: int, k: int, e: int) -> int:
        return opts[block].index(f"k{k}_e{e}")

    expand_opts = np.array(sorted({parse(o)[1] for o in opts[0] if o != "zero"}), dtype=float)

    def scale(base: np.ndarray, dm: float, wm: float, rm: float) -> np.ndarray:
        out = base.copy()
        for blocks in stages:
            active = [b for b in blocks if opts[b][base[b]] != "zero"]
            required = [b for b in blocks if "zero" not in opts[b]]
            n0 = max(len(active), 1)
            n1 = int(np.clip(round(n0 * dm), len(required) or 1, len(blocks)))
            ops = [opts[b][base[b]] for b in active] or ["k3_e3"]
            for j, b in enumerate(blocks):
                if j < n1:
                    k, e = parse(ops[min(j, len(ops) - 1)])
                    e2 = int(expand_opts[_nearest(expand_opts, e * wm)])
                    out[b] = op_index(b, k, e2)
                else:
                    out[b] = opts[b].index("zero") if "zero" in opts[b] else out[b]
        return out

    return scale, False


@register_strategy
class CompoundScalingStrategy(Strategy):
    """Grid over (alpha, beta, gamma) with alpha * beta^2 * gamma^2 about 2; phi as large as the budget allows."""

    name = "scaling"
    summary = (
        "EfficientNet compound scaling of a base arch (depth, width, resolution), phi picked by the latency budget"
    )

    def __init__(  # type: ignore[no-untyped-def]
        self,
        problem,
        rng,
        *,
        trials: int,
        dedupe: bool = False,
        base: dict[str, Any] | None = None,
        flops_factor: float = 2.0,
        tolerance: float = 0.1,
        step: float = 0.05,
        max_multiplier: float = 2.0,
        phi_max: float = 60.0,
        phi_points: int = 121,
        max_growth: float = 4.0,
    ) -> None:
        super().__init__(problem, rng, trials=trials, dedupe=dedupe)
        maker = SCALING_AXES.get(self.space.name)
        if maker is None:
            raise LatbenchError(
                f"strategy 'scaling' has no depth/width/resolution axes for space {self.space.name!r} "
                f"(known: {', '.join(SCALING_AXES)}); use evolution, random or rl"
            )
        self.scale_fn, self.has_resolution = maker(self.space)
        self.base_arch = base
        self.base = self.space.to_indices(base) if base is not None else problem.latency_range[2].copy()
        self.flops_factor = float(flops_factor)
        self.tolerance = float(tolerance)
        self.step = float(step)
        self.max_multiplier = float(max_multiplier)
        self.phi_max = float(phi_max)
        self.phi_points = int(phi_points)
        self.max_growth = float(max_growth)
        self.queue: list[tuple[np.ndarray, tuple[float, float, float, float]]] = []
        self.asked: set[bytes] = set()
        self.told: set[bytes] = set()
        self.results: dict[bytes, tuple[float, tuple[float, float, float, float]]] = {}
        self.meta: dict[bytes, tuple[float, float, float, float]] = {}
        self.stage = 0  # 0: coarse grid not built, 1: coarse grid queued, 2: refinement queued, 3: done
        self.chosen: tuple[float, float, float, float] | None = None

    @property
    def batch_size(self) -> int:
        return 16

    @property
    def finished(self) -> bool:
        return self.stage >= 3 and not self.queue

    def triples(
        self, center: tuple[float, float, float] | None = None, half_width: float = 0.0
    ) -> list[tuple[float, float, float]]:
        """(alpha, beta, gamma) with alpha * beta^2 * gamma^2 within ``tolerance`` of ``flops_factor``."""
        if center is None:
            grid = np.arange(1.0, self.max_multiplier + 1e-9, self.step)
            a_grid = b_grid = grid
            g_grid = grid if self.has_resolution else np.array([1.0])
        else:
            fine = np.arange(-half_width, half_width + 1e-9, self.step / 2)
            a_grid = np.clip(center[0] + fine, 1.0, None)
            b_grid = np.clip(center[1] + fine, 1.0, None)
            g_grid = np.clip(center[2] + fine, 1.0, None) if self.has_resolution else np.array([1.0])
        out = []
        for a, b, g in itertools.product(a_grid, b_grid, g_grid):
            if abs(a * b * b * g * g - self.flops_factor) <= self.tolerance:
                out.append((round(float(a), 4), round(float(b), 4), round(float(g), 4)))
        return sorted(set(out))

    def _phis(self, triple: tuple[float, float, float]) -> np.ndarray:
        """phi values from 0 to where every multiplier has reached ``max_growth`` (the space's limits)."""
        caps = [np.log(self.max_growth) / np.log(m) for m in triple if m > 1.0 + 1e-9]
        cap = min(max(caps), self.phi_max) if caps else 0.0
        return np.linspace(0.0, cap, self.phi_points) if cap > 0 else np.zeros(1)

    def _fit_phi(
        self, triple: tuple[float, float, float], phis: np.ndarray | None = None
    ) -> list[tuple[np.ndarray, float]]:
        a, b, g = triple
        phis = self._phis(triple) if phis is None else phis
        cands = np.stack([self.scale_fn(self.base, a**p, b**p, g**p) for p in phis])
        lat = self.problem.latency_ms(cands)
        ok = (lat <= self.problem.target_ms) & self.problem.feasible(cands)
        return [(cands[i], float(phis[i])) for i in np.flatnonzero(ok)]

    def _enqueue(self, triple: tuple[float, float, float], extra_below: int = 0) -> None:
        fits = self._fit_phi(triple)
        if not fits:
            return
        picks = [fits[-1]]
        if extra_below:
            distinct = []
            for idx, phi in reversed(fits):
                if all(not np.array_equal(idx, d[0]) for d in distinct):
                    distinct.append((idx, phi))
                if len(distinct) > extra_below:
                    break
            picks = distinct
        for idx, phi in picks:
            key = idx.tobytes()
            if key in self.asked or any(np.array_equal(idx, q[0]) for q in self.queue):
                continue
            self.queue.append((idx, (*triple, phi)))

    def _build(self) -> None:
        if self.stage == 0:
            base_fits = self.problem.latency_ms(self.base[None, :])[0] <= self.problem.target_ms
            if not base_fits:
                raise LatbenchError(
                    f"the base arch of the scaling strategy already exceeds the target {self.problem.target_ms:g} ms; "
                    "give a smaller base arch or a larger target"
                )
            for t in self.triples():
                self._enqueue(t, extra_below=1)
            order = self.rng.permutation(len(self.queue))
            self.queue = [self.queue[i] for i in order]
            self.stage = 1
        elif self.stage == 1:
            self.stage = 2
            if self.results:
                best_key = max(self.results, key=lambda k: self.results[k][0])
                a, b, g, _ = self.results[best_key][1]
                self.chosen = self.results[best_key][1]
                for t in self.triples((a, b, g), half_width=self.step):
                    self._enqueue(t, extra_below=2)
        else:
            self.stage = 3

    def ask(self, n: int) -> np.ndarray:
        while not self.queue and self.stage < 3:
            if self.stage == 1 and len(self.told) < len(self.asked):
                return np.zeros((0, len(self.space.decisions)), dtype=np.int64)  # wait for the grid's results
            self._build()
        take, self.queue = self.queue[:n], self.queue[n:]
        for idx, meta in take:
            self.asked.add(idx.tobytes())
            self.meta[idx.tobytes()] = meta
        if not take:
            return np.zeros((0, len(self.space.decisions)), dtype=np.int64)
        return np.stack([t[0] for t in take])

    def tell(self, indices: np.ndarray, rewards: np.ndarray, feasible: np.ndarray | None = None) -> None:
        for row, r in zip(np.asarray(indices, dtype=np.int64), np.asarray(rewards, dtype=np.float64), strict=True):
            key = row.tobytes()
            self.told.add(key)
            if np.isfinite(r) and key in self.meta:
                prev = self.results.get(key)
                if prev is None or r > prev[0]:
                    self.results[key] = (float(r), self.meta[key])

    def state_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        state, arrays = super().state_dict()
        state.update(
            stage=self.stage,
            queue_meta=[list(m) for _, m in self.queue],
            results=[[r, list(m)] for r, m in self.results.values()],
            asked_meta=[list(self.meta[k]) for k in self.asked],
            chosen=list(self.chosen) if self.chosen else None,
        )
        d = len(self.space.decisions)
        arrays["queue"] = np.stack([q[0] for q in self.queue]) if self.queue else np.zeros((0, d), dtype=np.int64)
        arrays["results"] = (
            np.stack([np.frombuffer(k, dtype=np.int64) for k in self.results])
            if self.results
            else np.zeros((0, d), dtype=np.int64)
        )
        arrays["asked"] = (
            np.stack([np.frombuffer(k, dtype=np.int64) for k in self.asked])
            if self.asked
            else np.zeros((0, d), dtype=np.int64)
        )
        return state, arrays

    def load_state_dict(self, state: dict[str, Any], arrays: dict[str, np.ndarray], history: np.ndarray) -> None:
        super().load_state_dict(state, arrays, history)
        d = len(self.space.decisions)
        self.stage = int(state["stage"])
        q = np.asarray(arrays["queue"], dtype=np.int64).reshape(-1, d)
        self.queue = [(q[i].copy(), tuple(m)) for i, m in enumerate(state["queue_meta"])]  # type: ignore[misc]
        res = np.asarray(arrays["results"], dtype=np.int64).reshape(-1, d)
        self.results = {res[i].tobytes(): (float(r), tuple(m)) for i, (r, m) in enumerate(state["results"])}  # type: ignore[misc]
        asked = np.asarray(arrays["asked"], dtype=np.int64).reshape(-1, d)
        told = {row.tobytes() for row in np.asarray(history, dtype=np.int64)}
        self.asked, self.meta, self.told = set(), {}, set()
        lost = []
        for i, m in enumerate(state["asked_meta"]):
            key = asked[i].tobytes()
            if key in told:
                self.asked.add(key)
                self.told.add(key)
                self.meta[key] = tuple(m)  # type: ignore[assignment]
            else:
                lost.append((asked[i].copy(), tuple(m)))
        self.queue = lost + self.queue  # asked but never told (interrupted): ask again
        self.chosen = tuple(state["chosen"]) if state.get("chosen") else None  # type: ignore[assignment]

    def describe(self) -> dict[str, Any]:
        best = None
        if self.results:
            k = max(self.results, key=lambda key: self.results[key][0])
            a, b, g, phi = self.results[k][1]
            best = {"alpha": a, "beta": b, "gamma": g, "phi": phi}
        return {
            "name": self.name,
            "base": self.space.from_indices(self.base)["choices"],
            "flops_factor": self.flops_factor,
            "tolerance": self.tolerance,
            "has_resolution_axis": self.has_resolution,
            "best_multipliers": best,
        }
