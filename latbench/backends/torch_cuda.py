"""`torch-cuda`: eager PyTorch on an NVIDIA GPU, timed with CUDA events.

Each call is bracketed by two CUDA events on the one (default) stream and the
end event is synchronised, so the time is the GPU's own, without Python launch
jitter after the kernels are queued. Before timing, a workload is run until
its per-call time settles (GPU clocks ramp up under load): medians of
successive blocks of calls must agree within 2 %, for at most ``settle_s``.

Settings (recorded in the fingerprint): ``device`` (CUDA index),
``precision`` (fp32 | fp16 | bf16: the module and input are cast),
``channels_last``, ``batch`` (replaces the op's batch size when set),
``cudnn_benchmark`` (set once per process in ``setup``), ``tf32`` (allow
TF32 matmul/conv on Ampere and newer), ``settle_s``.

The fingerprint's ``gpu`` holds the GPU name, compute capability, memory,
driver, CUDA runtime and cuDNN versions.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from latbench.backends.base import Backend, Workload, arch_module_and_input
from latbench.errors import BackendUnavailable, UnsupportedOp
from latbench.measure.harness import Runner, TimingConfig
from latbench.ops import OpSpec

PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


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


def cuda_event_runner(module: Any, x: Any) -> Runner:
    """Runner timing ``module(x)`` between two CUDA events per call (milliseconds)."""
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


def settle(runner: Runner, max_s: float, block: int = 10, tol: float = 0.02) -> float:
    """Call ``runner`` in blocks until two successive block medians agree within ``tol``; returns the last median ms."""
    t_end = time.perf_counter() + max_s
    prev = float(np.median(runner(block)))
    while True:
        cur = float(np.median(runner(block)))
        if abs(cur - prev) <= tol * max(prev, 1e-6) or time.perf_counter() > t_end:
            return cur
        prev = cur


class TorchCUDABackend(Backend):
    """Eager PyTorch on one NVIDIA GPU: CUDA events, one stream, cudnn.benchmark, fp16/bf16, channels-last."""

    name: ClassVar[str] = "torch-cuda"
    default_settings: ClassVar[dict[str, Any]] = {
        "device": 0,
        "precision": "fp32",
        "channels_last": False,
        "batch": None,
        "cudnn_benchmark": True,
        "tf32": False,
        "settle_s": 2.0,
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
        count = torch.cuda.device_count()
        if not isinstance(s["device"], int) or not 0 <= s["device"] < count:
            raise BackendUnavailable(f"CUDA device {s['device']!r} does not exist (this machine has 0..{count - 1})")
        if s["batch"] is not None and (not isinstance(s["batch"], int) or s["batch"] < 1):
            raise BackendUnavailable(f"batch must be an integer >= 1, got {s['batch']!r}")
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

        effective = bool(torch.backends.cudnn.benchmark)
        return {**self.settings, "cudnn_benchmark_effective": effective, "timer": "cuda-events"}

    def why_unsupported(self, spec: OpSpec) -> str | None:
        if spec.dtype not in ("float32", "float16", "bfloat16"):
            return f"dtype {spec.dtype} is not run on torch-cuda (set precision=fp16/bf16 for half precision)"
        if spec.type == "zero":
            return "zero ops are skipped blocks and never timed"
        return None

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
            spec = workload if self.settings["batch"] is None else workload.with_(batch=int(self.settings["batch"]))
            module, x = self._prepare(spec.build(), spec.example_input())
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
        run = cuda_event_runner(module, x)
        settle(run, float(self.settings["settle_s"]))
        return run

    def close(self) -> None:
        import torch

        torch.cuda.empty_cache()
