"""`SearchEngine`: ask the strategy, price candidates, evaluate them, tell the rewards, keep the history.

The engine owns no evaluation: an :class:`Executor` runs evaluator batches and
hands results back whenever they are ready, in any order (``LocalExecutor``
runs them right away; a Ray executor can run many trials at once). Everything
on the hot path works on batches of option-index vectors:

    ask (strategy) -> latency + limits (SearchProblem, vectorised)
      -> accuracy (evaluator, one call per batch) -> reward (vectorised)
      -> tell (strategy) -> history (column arrays)

A crash inside one trial is a failed row (NaN accuracy + the error) and the
search goes on. Ctrl-C: the engine calls the checkpoint hook with the trials
told so far, then re-raises; a later run resumes from that point.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from latbench.errors import LatbenchError
from latbench.search.mnas.evaluators.base import ArchBatch, EvalResult, Evaluator
from latbench.search.mnas.history import History
from latbench.search.mnas.problem import SearchProblem
from latbench.search.mnas.strategies.base import Strategy


class Executor(Protocol):
    """Runs evaluator batches; results may come back later and in any order."""

    capacity: int

    def submit(self, batch: ArchBatch) -> None: ...

    def collect(self) -> list[tuple[ArchBatch, EvalResult]]:
        """Finished batches; blocks until at least one is ready when any is in flight."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """Evaluates each batch in this process as soon as it is submitted."""

    def __init__(self, evaluator: Evaluator, capacity: int) -> None:
        self.evaluator = evaluator
        self.capacity = int(capacity)
        self._done: list[tuple[ArchBatch, EvalResult]] = []

    def submit(self, batch: ArchBatch) -> None:
        self._done.append((batch, self.evaluator.evaluate(batch)))

    def collect(self) -> list[tuple[ArchBatch, EvalResult]]:
        out, self._done = self._done, []
        return out

    def close(self) -> None:
        return None


class InterruptGuard:
    """Ctrl-C raises at once, except inside :meth:`critical` blocks, where it waits for the block's end.

    So a batch of trials is never half recorded (strategy told, history not
    appended). Only active in the main thread; elsewhere a no-op.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.pending = False
        self.previous: Any = None
        self.active = False

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            try:
                self.previous = signal.signal(signal.SIGINT, self._handler)
                self.active = True
            except ValueError:
                self.active = False
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.active:
            signal.signal(signal.SIGINT, self.previous)
            self.active = False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.depth:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def critical(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending:
                self.pending = False
                raise KeyboardInterrupt


@dataclass
class Best:
    """The best selectable trial so far."""

    trial: int = -1
    row: int = -1
    reward: float = -np.inf
    accuracy: float = np.nan
    latency_ms: float = np.nan

    def to_dict(self) -> dict[str, Any]:
        return {"trial": self.trial, "reward": self.reward, "accuracy": self.accuracy, "latency_ms": self.latency_ms}


@dataclass
class EngineStats:
    asked: int = 0
    rejected: int = 0
    failed: int = 0
    cached: int = 0
    predicted: int = 0
    seconds: float = 0.0
    eval_seconds: float = 0.0
    stopped: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class SearchEngine:
    """Runs a strategy against an evaluator on a :class:`SearchProblem` for ``trials`` evaluations."""

    def __init__(
        self,
        problem: SearchProblem,
        strategy: Strategy,
        evaluator: Evaluator,
        *,
        trials: int,
        batch_size: int | None = None,
        seed: int = 0,
        executor: Executor | None = None,
        on_progress: Callable[[SearchEngine], None] | None = None,
        on_checkpoint: Callable[[SearchEngine], None] | None = None,
        checkpoint_every_s: float = 10.0,
        history: History | None = None,
    ) -> None:
        if int(trials) < 1:
            raise LatbenchError(f"--trials must be >= 1, got {trials}")
        self.problem = problem
        self.strategy = strategy
        self.evaluator = evaluator
        self.trials = int(trials)
        if batch_size is None:
            batch_size = strategy.batch_size if evaluator.batched else min(strategy.batch_size, 8)
        self.batch_size = max(1, int(batch_size))
        self.seed = int(seed)
        self.executor: Executor = executor or LocalExecutor(evaluator, self.batch_size)
        self.on_progress = on_progress
        self.on_checkpoint = on_checkpoint
        self.checkpoint_every_s = float(checkpoint_every_s)
        self.history = history if history is not None else History(problem.space)
        self.stats = EngineStats()
        self.best = Best()
        self._cache: dict[bytes, tuple[float, str]] = {}
        self._elapsed_before = 0.0
        self._t0 = 0.0
        self._in_flight = 0
        self._ready: list[tuple[ArchBatch, EvalResult]] = []
        self._store: dict[str, np.ndarray] = {
            "latency_ms": np.zeros(0),
            "params": np.zeros(0),
            "memory_mb": np.zeros(0),
        }
        self._ok = 0
        self._any_real = False
        self._guard = InterruptGuard()
        self.setup_done = False
        if len(self.history):
            self._rebuild_from_history()

    # ------------------------------------------------------------------ state
    @property
    def done(self) -> int:
        return len(self.history)

    def _rebuild_from_history(self) -> None:
        a = self.history.arrays()
        self._elapsed_before = float(np.nanmax(a["elapsed_s"])) if len(a["elapsed_s"]) else 0.0
        ok = a["status"] == "ok"
        self._ok = int(ok.sum())
        self.stats.failed = int((a["status"] == "failed").sum())
        self.stats.cached = int(a["cached"].sum())
        self.stats.predicted = int((a["source"] == "predicted").sum())
        if self.evaluator.cache:
            for row, acc, src, st in zip(a["indices"], a["accuracy"], a["source"], a["status"], strict=True):
                if st == "ok" and src == "real":
                    self._cache[row.tobytes()] = (float(acc), "real")
        self._rescan_best()

    def selectable(self, a: dict[str, Any] | None = None) -> np.ndarray:
        """Rows that may be returned: evaluated fine, real accuracy when any exists, within budget in hard mode."""
        a = a if a is not None else self.history.arrays()
        ok = (a["status"] == "ok") & np.isfinite(a["reward"])
        real = a["source"] == "real"
        if (ok & real).any():
            ok &= real
        if self.problem.constraints.hard_latency:
            ok &= a["latency_ms"] <= self.problem.target_ms
        return ok

    def _rescan_best(self) -> None:
        """Recompute :attr:`best` over the whole history (at resume, and when the first real accuracy arrives)."""
        a = self.history.arrays()
        self._any_real = bool(((a["status"] == "ok") & (a["source"] == "real")).any())
        self.best = Best()
        self._fold_best(a["trial"], a["status"], a["source"], a["latency_ms"], a["reward"], a["accuracy"], 0)

    def _fold_best(
        self,
        trial: np.ndarray,
        status: Any,
        source: Any,
        latency_ms: np.ndarray,
        reward: np.ndarray,
        accuracy: np.ndarray,
        row0: int,
    ) -> None:
        ok = (np.asarray(status) == "ok") & np.isfinite(reward)
        real = np.asarray(source) == "real"
        if self._any_real:
            ok &= real
        if self.problem.constraints.hard_latency:
            ok &= latency_ms <= self.problem.target_ms
        if not ok.any():
            return
        r = np.where(ok, reward, -np.inf)
        j = int(np.argmax(r))
        if r[j] > self.best.reward:
            self.best = Best(int(trial[j]), row0 + j, float(reward[j]), float(accuracy[j]), float(latency_ms[j]))

    def top_rows(self, k: int) -> np.ndarray:
        """History rows of the ``k`` best distinct selectable archs, best first."""
        a = self.history.arrays()
        sel = np.flatnonzero(self.selectable(a))
        order = sel[np.argsort(-a["reward"][sel], kind="stable")]
        out, seen = [], set()
        for r in order:
            key = a["indices"][r].tobytes()
            if key not in seen:
                seen.add(key)
                out.append(int(r))
            if len(out) >= k:
                break
        return np.asarray(out, dtype=np.int64)

    def best_curve(self) -> np.ndarray:
        """Best selectable reward after each trial (NaN until the first), in history order."""
        a = self.history.arrays()
        r = np.where(self.selectable(a), a["reward"], -np.inf)
        curve = np.maximum.accumulate(r) if len(r) else r
        return np.where(np.isfinite(curve), curve, np.nan)

    # ------------------------------------------------------------------ loop
    def setup(self) -> None:
        if not self.setup_done:
            self.problem.check_reachable()
            self.evaluator.setup(self.problem, self.seed)
            self.setup_done = True

    def _ask(self, k: int) -> np.ndarray:
        parts: list[np.ndarray] = []
        total = 0
        for _ in range(1000):
            idx = self.strategy.ask(k - total)
            if len(idx) == 0:
                break
            idx = np.asarray(idx, dtype=np.int64)[: k - total]
            static = self.problem.measure_static(idx)
            ok = static["feasible"]
            if not ok.all():
                bad = ~ok
                self.stats.rejected += int(bad.sum())
                self.strategy.tell(idx[bad], np.full(int(bad.sum()), np.nan), np.zeros(int(bad.sum()), dtype=bool))
                idx = idx[ok]
                static = {key: v[ok] for key, v in static.items()}
            if len(idx):
                parts.append(idx)
                self._pending_static.append(static)
                total += len(idx)
            if total >= k:
                break
        else:
            raise LatbenchError(
                f"strategy {self.strategy.name!r} proposed only archs over the limits 1000 times in a row "
                f"(target {self.problem.target_ms:g} ms)"
            )
        if not parts:
            return np.zeros((0, len(self.problem.space.decisions)), dtype=np.int64)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _submit(self, k: int) -> int:
        self._pending_static: list[dict[str, np.ndarray]] = []
        idx = self._ask(k)
        n = len(idx)
        if n == 0:
            return 0
        static = (
            self._pending_static[0]
            if len(self._pending_static) == 1
            else {key: np.concatenate([s[key] for s in self._pending_static]) for key in self._pending_static[0]}
        )
        trials = np.arange(self._next_trial, self._next_trial + n, dtype=np.int64)
        self._next_trial += n
        self.stats.asked += n
        batch = ArchBatch(self.problem.space, idx, trials, static["latency_ms"])
        self._store_static(trials, static)
        if self.evaluator.cache:
            hit = np.array([row.tobytes() in self._cache for row in idx], dtype=bool)
            if hit.any():
                vals = [self._cache[row.tobytes()] for row in idx[hit]]
                res = EvalResult(
                    np.array([v[0] for v in vals]),
                    [None] * len(vals),
                    np.zeros(len(vals)),
                    [v[1] for v in vals],
                    ["cached"] * len(vals),
                )
                sub = batch.subset(np.flatnonzero(hit))
                sub.cached = True  # type: ignore[attr-defined]
                self._ready.append((sub, res))
                if hit.all():
                    return n
                batch = batch.subset(np.flatnonzero(~hit))
        self._in_flight += len(batch)
        self.executor.submit(batch)
        return n

    def _store_static(self, trials: np.ndarray, static: dict[str, np.ndarray]) -> None:
        """Keep latency / params / memory by trial id until the trial's result comes back."""
        need = int(trials[-1]) + 1
        cap = len(self._store["latency_ms"])
        if need > cap:
            size = max(need, 2 * cap, 1024)
            for key in self._store:
                grown = np.zeros(size, dtype=self._store[key].dtype)
                grown[:cap] = self._store[key]
                self._store[key] = grown
        for key in self._store:
            self._store[key][trials] = static[key]

    def _static_for(self, batch: ArchBatch) -> dict[str, np.ndarray]:
        return {key: v[batch.trials] for key, v in self._store.items()}

    def _tell(self, batch: ArchBatch, res: EvalResult) -> None:
        n = len(batch)
        if n == 0:
            return
        static = self._static_for(batch)
        acc = np.asarray(res.accuracy, dtype=np.float64)
        failed = ~np.isfinite(acc)
        reward = self.problem.reward(acc, static["latency_ms"])
        cached = bool(getattr(batch, "cached", False))
        with self._guard.critical():
            self.strategy.tell(batch.indices, reward, np.ones(n, dtype=bool))
            start = len(self.history)
            elapsed = self._elapsed_before + (time.perf_counter() - self._t0)
            status = np.where(failed, "failed", "ok").tolist()
            self.history.append(
                trial=batch.trials,
                status=status,
                indices=batch.indices,
                accuracy=acc,
                source=list(res.source),
                latency_ms=static["latency_ms"],
                reward=reward,
                within_budget=static["latency_ms"] <= self.problem.target_ms,
                params=static["params"],
                memory_mb=static["memory_mb"],
                eval_s=np.asarray(res.seconds, dtype=np.float64),
                elapsed_s=np.full(n, elapsed),
                cached=np.full(n, cached),
                error=list(res.errors),
                note=list(res.notes),
            )
            self._in_flight -= 0 if cached else n
            nf = int(failed.sum())
            self.stats.failed += nf
            self._ok += n - nf
            self.stats.cached += n if cached else 0
            self.stats.predicted += sum(1 for s in res.source if s == "predicted")
            self.stats.eval_seconds += float(np.nansum(res.seconds))
            if self.evaluator.cache and not cached:
                for row, a, s in zip(batch.indices, acc, res.source, strict=True):
                    if np.isfinite(a) and s == "real":
                        self._cache[row.tobytes()] = (float(a), s)
            src = np.asarray(res.source)
            if not self._any_real and ((src == "real") & ~failed).any():
                self._rescan_best()  # the first real accuracy: only real ones count from now on
            else:
                self._fold_best(
                    batch.trials, np.where(failed, "failed", "ok"), src, static["latency_ms"], reward, acc, start
                )
        if self._ok == 0 and self.stats.failed >= min(8, self.trials):
            first = next(e for e in self.history.arrays()["error"] if e)
            raise LatbenchError(
                f"evaluator {self.evaluator.describe()['name']!r} failed on the first {self.stats.failed} trials "
                f"(e.g. {first}); see history.csv"
            )

    def run(self) -> SearchEngine:
        """Evaluate until ``trials`` are done (or the strategy has nothing left); returns ``self``."""
        self.setup()
        self._t0 = time.perf_counter()
        self._next_trial = int(self.history.arrays()["trial"].max()) + 1 if len(self.history) else 0
        last_ckpt = time.perf_counter()
        last_progress = 0.0
        empty_asks = 0
        with self._guard:
            try:
                while self.done < self.trials:
                    while self._in_flight < self.executor.capacity:
                        waiting = sum(len(b) for b, _ in self._ready)
                        room = self.trials - self.done - self._in_flight - waiting
                        k = min(self.batch_size, room, self.executor.capacity - self._in_flight)
                        if k <= 0 or self._submit(k) == 0 or self._ready:
                            break
                    results = self._ready + (self.executor.collect() if self._in_flight else [])
                    self._ready = []
                    if not results:
                        if self._in_flight == 0:
                            empty_asks += 1
                            if self.strategy.finished or empty_asks > 100:
                                self.stats.stopped = (
                                    "strategy finished" if self.strategy.finished else "strategy proposed nothing new"
                                )
                                break
                        continue
                    empty_asks = 0
                    for batch, res in results:
                        self._tell(batch, res)
                    now = time.perf_counter()
                    if self.on_progress is not None and (now - last_progress > 0.1 or self.done >= self.trials):
                        last_progress = now
                        self.on_progress(self)
                    if (
                        self.on_checkpoint is not None
                        and self._in_flight == 0
                        and now - last_ckpt > self.checkpoint_every_s
                    ):
                        self.on_checkpoint(self)
                        last_ckpt = time.perf_counter()
            except KeyboardInterrupt:
                self.stats.stopped = "interrupted"
                with self._guard.critical():
                    self._finish()
                raise
            with self._guard.critical():
                self._finish()
        return self

    def _finish(self) -> None:
        self.stats.seconds = self._elapsed_before + (time.perf_counter() - self._t0)
        if self.on_progress is not None:
            self.on_progress(self)
        if self.on_checkpoint is not None:
            self.on_checkpoint(self)

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict[str, Any]:
        s = self.stats
        return {
            "trials": self.done,
            "trials_target": self.trials,
            "ok": self._ok,
            "failed": s.failed,
            "cached": s.cached,
            "predicted": s.predicted,
            "rejected_unevaluated": s.rejected + int(getattr(self.strategy, "rejected", 0)),
            "seconds": round(s.seconds, 4),
            "eval_seconds": round(s.eval_seconds, 4),
            "candidates_per_s": round(self.done / s.seconds, 1) if s.seconds > 0 else None,
            "stopped": s.stopped or "trials done",
            "best": self.best.to_dict(),
        }
