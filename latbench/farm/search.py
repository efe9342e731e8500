"""Parallel search trials on Ray: ``latbench search mnas --cluster HEAD ...``.

:class:`RayExecutor` is an :class:`~latbench.search.mnas.engine.Executor`: the
engine submits evaluator batches, each arch becomes a Ray task that asks for
the CPUs (or GPU) its evaluation uses, and :meth:`RayExecutor.collect` hands
results back as soon as any finish, in any order, so the ask/tell strategy
learns from each trial as it completes (asynchronously, as Ray Tune's
schedulers do) and the engine keeps every trial slot of the cluster busy.

The evaluator is shipped once (before its ``setup``) and set up once per Ray
worker process; trials are seeded from (search seed, trial id) by the
evaluators, so a trial's accuracy does not depend on which worker ran it. A
trial whose node dies is retried once by Ray, then recorded as a failed trial;
a :class:`~latbench.errors.LatbenchError` inside an evaluator (bad data path...)
stops the search in one line, as it does locally.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from latbench.errors import LatbenchError
from latbench.farm import FarmError
from latbench.farm.cluster import connect
from latbench.search.mnas.evaluators.base import ArchBatch, EvalResult, Evaluator

#: per Ray worker process: the evaluator of the current search, set up once
_SET_UP: dict[str, Evaluator] = {}


def evaluate_trials(
    key: str, payload: list[Any], indices: np.ndarray, trials: np.ndarray, latency_ms: np.ndarray | None
) -> dict[str, Any]:
    """Runs as a Ray task: evaluate a few archs with the search's evaluator (set up once per worker)."""
    import ray

    ev = _SET_UP.get(key)
    if ev is None:
        evaluator, problem, seed = ray.get(payload[0])
        evaluator.setup(problem, seed)
        _SET_UP.clear()  # one search at a time per worker process
        _SET_UP[key] = ev = evaluator
    t0 = time.perf_counter()
    res = ev.evaluate(ArchBatch(ev.problem.space, indices, trials, latency_ms))
    return {
        "accuracy": np.asarray(res.accuracy, dtype=np.float64),
        "errors": list(res.errors),
        "seconds": np.asarray(res.seconds, dtype=np.float64),
        "source": list(res.source),
        "notes": list(res.notes),
        "node": ray.get_runtime_context().get_node_id(),
        "task_s": time.perf_counter() - t0,
    }


def trial_resources(evaluator: Evaluator) -> dict[str, float]:
    """What one trial asks Ray for: its torch threads as CPUs, and a GPU when the evaluator trains on one."""
    threads = getattr(evaluator, "threads", None)
    device = str(getattr(evaluator, "device", "cpu") or "cpu")
    return {"num_cpus": float(max(1, int(threads or 1))), "num_gpus": 1.0 if device.startswith("cuda") else 0.0}


class RayExecutor:
    """Runs evaluator batches as Ray tasks, one per arch (``chunk`` archs per task), results in completion order."""

    def __init__(
        self,
        ray: Any,
        evaluator: Evaluator,
        problem: Any,
        seed: int,
        *,
        chunk: int = 1,
        capacity: int | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        max_retries: int = 1,
    ) -> None:
        from latbench.search.mnas.evaluators.surrogate import PredictorAssistedEvaluator

        if isinstance(evaluator, PredictorAssistedEvaluator):
            raise FarmError("--acc-predictor refits its model between trials on the driver; run it without --cluster")
        res = trial_resources(evaluator)
        if num_cpus is not None:
            res["num_cpus"] = float(num_cpus)
        if num_gpus is not None:
            res["num_gpus"] = float(num_gpus)
        total = ray.cluster_resources()
        slots = [int(total.get("CPU", 0.0) // res["num_cpus"])] if res["num_cpus"] > 0 else []
        if res["num_gpus"] > 0:
            slots.append(int(total.get("GPU", 0.0) // res["num_gpus"]))
        free = min(slots) if slots else 1
        if free < 1:
            need = f"{res['num_cpus']:g} CPU(s)" + (f" and {res['num_gpus']:g} GPU(s)" if res["num_gpus"] else "")
            raise FarmError(
                f"the cluster offers {total.get('CPU', 0.0):g} CPU(s) and {total.get('GPU', 0.0):g} GPU(s), "
                f"less than one trial needs ({need}); device nodes join with --num-cpus 0, so add compute nodes "
                "with `ray start --address HEAD` (or `latbench farm join ... --num-cpus N`)"
            )
        self.ray = ray
        self.resources = res
        self.capacity = int(capacity or free)
        self.chunk = max(1, int(chunk))
        self._key = uuid.uuid4().hex
        self._payload = [ray.put((evaluator, problem, int(seed)))]  # nested: workers fetch it only on first use
        self._task = ray.remote(evaluate_trials).options(
            num_cpus=res["num_cpus"], num_gpus=res["num_gpus"], max_retries=int(max_retries)
        )
        self._in_flight: dict[Any, ArchBatch] = {}
        self.trials_by_node: Counter[str] = Counter()
        self.lost = 0
        self.overheads_s: list[float] = []
        self._submitted: dict[Any, float] = {}

    def submit(self, batch: ArchBatch) -> None:
        for i in range(0, len(batch), self.chunk):
            sub = batch.subset(np.arange(i, min(i + self.chunk, len(batch))))
            lat = None if sub.latency_ms is None else np.asarray(sub.latency_ms)
            ref = self._task.remote(self._key, self._payload, sub.indices, sub.trials, lat)
            self._in_flight[ref] = sub
            self._submitted[ref] = time.perf_counter()

    def collect(self) -> list[tuple[ArchBatch, EvalResult]]:
        """Every finished batch; blocks until at least one is ready when any is in flight."""
        if not self._in_flight:
            return []
        ray = self.ray
        refs = list(self._in_flight)
        ready: list[Any] = []
        while not ready:  # short waits, so Ctrl-C is seen at once
            ready, rest = ray.wait(refs, num_returns=1, timeout=1.0)
        if rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready = ready + more
        out = []
        for ref in ready:
            sub = self._in_flight.pop(ref)
            t_sub = self._submitted.pop(ref)
            try:
                d = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, LatbenchError):
                    raise type(cause)(str(cause)) from None
                lines = str(cause or exc).strip().splitlines()
                last = lines[-1] if lines else type(exc).__name__
                raise FarmError(f"a trial task failed on the cluster: {last}") from None
            except ray.exceptions.RayError as exc:  # its node or worker died (after Ray's retry)
                self.lost += len(sub)
                n = len(sub)
                err = f"trial lost on the cluster ({type(exc).__name__})"
                out.append((sub, EvalResult(np.full(n, np.nan), [err] * n, np.zeros(n))))
                continue
            self.trials_by_node[d["node"]] += len(sub)
            self.overheads_s.append(time.perf_counter() - t_sub - float(d["task_s"]))
            out.append((sub, EvalResult(d["accuracy"], d["errors"], d["seconds"], d["source"], d["notes"])))
        return out

    def close(self) -> None:
        for ref in list(self._in_flight):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # already finished or gone
                pass
        self._in_flight.clear()

    def describe(self) -> dict[str, Any]:
        ov = np.array(self.overheads_s) * 1000 if self.overheads_s else None
        return {
            "capacity": self.capacity,
            "resources_per_trial": self.resources,
            "trials_by_node": dict(self.trials_by_node),
            "lost": self.lost,
            "overhead_ms_median": round(float(np.median(ov)), 3) if ov is not None else None,
        }


ExecutorFactory = Callable[[Evaluator, Any, int], RayExecutor]


@contextmanager
def cluster_executor(
    address: str, log: Callable[[str], None] | None = None, *, acc_predictor: bool = False, **options: Any
) -> Iterator[ExecutorFactory]:
    """Connect to the cluster and yield a factory ``(evaluator, problem, seed) -> RayExecutor`` for the engine.

    What can be refused before a run folder is made is refused here, in one line:
    ``acc_predictor`` (the screen learns on the driver) and a cluster without any CPU for trials.
    """
    if acc_predictor:
        raise FarmError("--acc-predictor refits its model between trials on the driver; run it without --cluster")
    with connect(address) as ray:
        if ray.cluster_resources().get("CPU", 0.0) < 1 and options.get("num_gpus") is None:
            raise FarmError(
                f"the cluster at {address} offers no CPU for search trials (device nodes join with --num-cpus 0); "
                "add compute nodes with `ray start --address HEAD`"
            )
        made: list[RayExecutor] = []

        def factory(evaluator: Evaluator, problem: Any, seed: int) -> RayExecutor:
            ex = RayExecutor(ray, evaluator, problem, seed, **options)
            made.append(ex)
            if log is not None:
                need = ", ".join(f"{v:g} {k[4:].upper()}" for k, v in ex.resources.items() if v)
                log(f"{ex.capacity} trial(s) at once on the cluster at {address} ({need} each)")
            return ex

        try:
            yield factory
        finally:
            for ex in made:
                ex.close()
                if log is not None:
                    d = ex.describe()
                    log(
                        f"{sum(d['trials_by_node'].values())} trial(s) ran on {len(d['trials_by_node'])} node(s), "
                        f"{d['lost']} lost; median Ray overhead {d['overhead_ms_median']} ms per trial"
                    )
