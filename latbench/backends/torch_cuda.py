"""`torch-cuda`: PyTorch on an NVIDIA GPU, with an explicit timing policy.

Two policies answer two different questions; every number records which one
produced it (``meta["timing_policy"]`` of each measurement, ``timing_policy``
of each table row):

* ``eager`` - the module is called eagerly and each call is bracketed by two
  CUDA events, then synchronised. For small batch-1 ops the GPU waits for the
  CPU to launch the kernels, so this is *launch-bound* latency: what a Python
  eager deployment sees.
* ``graph`` - the call is captured once in a CUDA graph and the graph is
  replayed in back-to-back blocks between two events (the blocked timing of
  ``torch.utils.benchmark``); each sample is one block's mean per replay. This
  is the kernels' own time, without Python or launch overhead: what a
  compiled / graph deployment sees.

Warmup: GPU clocks ramp up only under sustained load, so before timing a
workload runs for at least ``warmup_min_s`` of continuous work and then until
two successive block medians agree within 2 % (at most ``warmup_max_s``).

The op's batch is the op's own (its key says ``-b<N>-``). The ``batch``
setting applies to whole networks (arch JSON) only; an op of another batch is
refused on a device with ``batch`` set, so a batch-N time can never be stored
under a batch-1 key.

Device identity (the fingerprint id) holds what changes the kernels: GPU,
``precision``, ``channels_last``, ``cudnn_benchmark``, ``tf32``. Timing knobs
(``policy``, warmup times, graph block length, ``batch``) are recorded with the
numbers, not in the id. The fingerprint's ``gpu`` holds the GPU name, compute
capability, memory, driver, CUDA runtime and cuDNN versions.
"""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from latbench.backends.base import SENTINEL_SPEC, Backend, Workload, arch_module_and_input
from latbench.errors import BackendUnavailable, UnsupportedOp
from latbench.measure.harness import Runner, TimingConfig
from latbench.measure.measurement import Measurement
from latbench.ops import OpSpec

PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
POLICIES = ("eager", "graph")
#: settings that decide how a number is taken, not which device took it (kept out of the fingerprint id)
TIMING_SETTINGS = ("policy", "warmup_min_s", "warmup_max_s", "graph_block_ms", "batch")


def cuda_unavailable_reason() -> str | None:
    """``None`` when a CUDA GPU is usable by torch, else one line saying why not."""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed (pip install torch with CUDA)"
    if torch.version.cuda is None:
        return f"this PyTorch ({torch.__version__}) is a CPU-only build; install a CUDA build of torch"
    try:
        ok = torch.cuda.is_available()
    except Exception as exc:  # broken driver installs raise here
        return f"CUDA initialisation failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if not ok:
        return f"no NVIDIA GPU or driver found (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return None


def driver_version() -> str | None:
    """The NVIDIA driver version (nvidia-smi), or ``None`` when it cannot be read."""
    try:
        res = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    line = res.stdout.strip().splitlines()[0] if res.returncode == 0 and res.stdout.strip() else ""
    return line or None


# ----------------------------------------------------------------------------- policy logic (no GPU needed)
def split_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(identity, timing)``: the settings that name the device, and the timing knobs recorded with numbers."""
    identity = {k: v for k, v in settings.items() if k not in TIMING_SETTINGS}
    timing = {k: v for k, v in settings.items() if k in TIMING_SETTINGS}
    return identity, timing


def validate_timing(settings: dict[str, Any]) -> None:
    """One clear line for a bad policy, warmup or block setting."""
    if settings.get("policy") not in POLICIES:
        raise BackendUnavailable(f"policy must be one of {', '.join(POLICIES)}, got {settings.get('policy')!r}")
    lo, hi = settings.get("warmup_min_s"), settings.get("warmup_max_s")
    if not isinstance(lo, (int, float)) or not isinstance(hi, (int, float)) or not 0 <= lo <= hi:
        raise BackendUnavailable(f"need 0 <= warmup_min_s <= warmup_max_s, got {lo!r} and {hi!r}")
    block = settings.get("graph_block_ms")
    if not isinstance(block, (int, float)) or block <= 0:
        raise BackendUnavailable(f"graph_block_ms must be a positive number of milliseconds, got {block!r}")
    batch = settings.get("batch")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise BackendUnavailable(f"batch must be an integer >= 1, got {batch!r}")


def batch_mismatch(spec: OpSpec, batch: int | None) -> str | None:
    """Why an op cannot be timed on a device whose networks run at ``batch`` (``None``: it can)."""
    if batch is None or spec.batch == batch or spec == SENTINEL_SPEC:  # the drift sentinel stays batch 1
        return None
    return (
        f"the op is batch {spec.batch} but this device times batch {batch}; time ops of batch {batch} "
        f"(keys with -b{batch}-), so that no batch-{batch} time is stored under a batch-{spec.batch} key"
    )


def graph_block_size(replay_ms: float, block_ms: float, max_block: int = 10_000) -> int:
    """Replays per timed block so that a block lasts about ``block_ms`` (at least 1)."""
    if not replay_ms > 0:
        return max_block
    return int(min(max_block, max(1, math.ceil(block_ms / replay_ms))))


def split_blocks(n: int, block: int) -> list[int]:
    """``n`` replays as blocks of ``block`` (the last one shorter): one sample per block."""
    if n <= 0:
        return []
    full, rest = divmod(n, block)
    return [block] * full + ([rest] if rest else [])


def settle(
    runner: Runner,
    max_s: float,
    block: int = 10,
    tol: float = 0.02,
    min_s: float = 0.0,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Warm up: call ``runner`` in blocks for at least ``min_s``, then until two successive block medians
    agree within ``tol`` (at most ``max_s``); returns the last median (ms).

    ``min_s`` is what makes clocks ramp: two blocks of a tiny op agree after
    microseconds of work, long before the GPU leaves its idle clocks.
    """
    t0 = clock()
    prev = float(np.median(runner(block)))
    while True:
        cur = float(np.median(runner(block)))
        elapsed = clock() - t0
        agree = abs(cur - prev) <= tol * max(prev, 1e-6)
        if (agree and elapsed >= min_s) or elapsed >= max_s:
            return cur
        prev = cur


# ----------------------------------------------------------------------------- runners (GPU)
def cuda_event_runner(module: Any, x: Any) -> Runner:
    """``eager``: ``module(x)`` between two CUDA events per call, synchronised each call (ms)."""
    import torch

    starts = [torch.cuda.Event(enable_timing=True) for _ in range(64)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(64)]

    def run(n: int) -> list[float]:
        out: list[float] = []
        with torch.inference_mode():
            done = 0
            while done < n:
                m = min(n - done, len(starts))
                for i in range(m):
                    starts[i].record()
                    module(x)
                    ends[i].record()
                    ends[i].synchronize()
                out += [float(starts[i].elapsed_time(ends[i])) for i in range(m)]
                done += m
        return out

    return run


def capture_graph(module: Any, x: Any, warm_calls: int = 3) -> Any:
    """A CUDA graph of ``module(x)`` (warmed on a side stream first, as CUDA graph capture requires)."""
    import torch

    with torch.inference_mode():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warm_calls):
                module(x)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            module(x)
    torch.cuda.synchronize()
    return graph


def cuda_graph_runner(graph: Any, block_ms: float) -> Runner:
    """``graph``: blocks of back-to-back replays between two events; one sample (mean per replay) per block.

    ``runner(n)`` makes ``n`` replays in blocks of about ``block_ms``, so the
    harness's wall-clock budgeting still holds (``n`` x per-call time).
    """
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    state = {"block": 1}

    def timed_block(k: int) -> float:
        start.record()
        for _ in range(k):
            graph.replay()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end)) / k

    state["block"] = graph_block_size(timed_block(10), block_ms)

    def run(n: int) -> list[float]:
        return [timed_block(k) for k in split_blocks(n, state["block"])]

    return run


class TorchCUDABackend(Backend):
    """PyTorch on one NVIDIA GPU: ``eager`` (launch-bound) or ``graph`` (kernels only) timing, recorded per number."""

    name: ClassVar[str] = "torch-cuda"
    default_settings: ClassVar[dict[str, Any]] = {
        "device": 0,
        "precision": "fp32",
        "channels_last": False,
        "cudnn_benchmark": True,
        "tf32": False,
        "policy": "eager",
        "batch": None,
        "warmup_min_s": 0.5,
        "warmup_max_s": 3.0,
        "graph_block_ms": 2.0,
    }
    timing = TimingConfig(warmup_s=0.2, min_run_time_s=0.1, rounds=8)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        reason = cuda_unavailable_reason()
        return (reason is None, reason or "")

    def setup(self) -> None:
        import torch

        s = self.settings
        if s["precision"] not in PRECISIONS:
            raise BackendUnavailable(f"precision must be one of {', '.join(PRECISIONS)}, got {s['precision']!r}")
        validate_timing(s)
        count = torch.cuda.device_count()
        if not isinstance(s["device"], int) or not 0 <= s["device"] < count:
            raise BackendUnavailable(f"CUDA device {s['device']!r} does not exist (this machine has 0..{count - 1})")
        if s["precision"] == "bf16" and not torch.cuda.is_bf16_supported():
            raise BackendUnavailable(f"GPU {torch.cuda.get_device_name(s['device'])} does not support bf16")
        torch.cuda.set_device(s["device"])
        torch.backends.cudnn.benchmark = bool(s["cudnn_benchmark"])
        torch.backends.cuda.matmul.allow_tf32 = bool(s["tf32"])
        torch.backends.cudnn.allow_tf32 = bool(s["tf32"])
        self._device = torch.device("cuda", s["device"])

    def gpu_info(self) -> dict[str, Any] | None:
        import torch

        idx = self.settings["device"]
        props = torch.cuda.get_device_properties(idx)
        return {
            "name": props.name,
            "compute_capability": f"{props.major}.{props.minor}",
            "memory_gb": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "driver": driver_version(),
            "cuda_runtime": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }

    def fingerprint_settings(self) -> dict[str, Any]:
        import torch

        identity, _ = split_settings(self.settings)
        return {**identity, "cudnn_benchmark_effective": bool(torch.backends.cudnn.benchmark), "timer": "cuda-events"}

    def timing_record(self) -> dict[str, Any]:
        """What every number of this backend carries: the policy and the timing knobs."""
        _, timing = split_settings(self.settings)
        return {
            "timing_policy": self.settings["policy"],
            **{f"timing_{k}": v for k, v in timing.items() if k != "policy"},
        }

    def why_unsupported(self, spec: OpSpec) -> str | None:
        if spec.dtype not in ("float32", "float16", "bfloat16"):
            return f"dtype {spec.dtype} is not run on torch-cuda (set precision=fp16/bf16 for half precision)"
        if spec.type == "zero":
            return "zero ops are skipped blocks and never timed"
        return batch_mismatch(spec, self.settings["batch"])

    def _prepare(self, module: Any, x: Any) -> tuple[Any, Any]:
        import torch

        dtype = getattr(torch, PRECISIONS[self.settings["precision"]])
        module = module.to(self._device, dtype=dtype).eval()
        x = x.to(self._device, dtype=dtype)
        if self.settings["channels_last"] and x.dim() == 4:
            module = module.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        return module, x

    def runner(self, workload: Workload) -> Runner:
        if isinstance(workload, OpSpec):
            self.check_supported(workload)
            module, x = self._prepare(workload.build(), workload.example_input())
        elif isinstance(workload, dict):
            module, x = arch_module_and_input(workload)
            if self.settings["batch"] is not None:
                x = x.expand(int(self.settings["batch"]), *x.shape[1:]).contiguous()
            module, x = self._prepare(module, x)
        elif isinstance(workload, (str, Path)):
            if not Path(workload).exists():
                raise UnsupportedOp(f"model file not found: {workload}")
            raise UnsupportedOp(f"torch-cuda cannot run the model file {workload}; use an ONNX Runtime device")
        else:
            raise UnsupportedOp(f"torch-cuda cannot run {type(workload).__name__}")
        s = self.settings
        if s["policy"] == "graph":
            run = cuda_graph_runner(capture_graph(module, x), float(s["graph_block_ms"]))
        else:
            run = cuda_event_runner(module, x)
        settle(run, float(s["warmup_max_s"]), min_s=float(s["warmup_min_s"]))
        return run

    def _stamp(self, ms: dict[str, Measurement]) -> None:
        record = self.timing_record()
        for m in ms.values():
            m.meta.update(record)

    def measure(self, workload: Workload, config: TimingConfig | None = None) -> Measurement:
        m = super().measure(workload, config)
        self._stamp({"m": m})
        return m

    def measure_many(
        self, workloads: dict[str, Workload], config: TimingConfig | None = None, **kwargs: Any
    ) -> tuple[dict[str, Measurement], dict[str, Any]]:
        """The harness's batch timing; each measurement and table row records the timing policy."""
        ms, info = super().measure_many(workloads, config, **kwargs)
        self._stamp(ms)
        info["row_fields"] = self.timing_record()
        return ms, info

    def close(self) -> None:
        import torch

        torch.cuda.empty_cache()
