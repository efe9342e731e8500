"""`torch-cpu`: eager PyTorch on the CPU, inference mode, pinned threads and cores."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from latbench.backends.base import Backend, Workload, arch_module_and_input
from latbench.errors import BackendUnavailable, UnsupportedOp
from latbench.measure.harness import Runner
from latbench.ops import OpSpec


def available_cores() -> list[int]:
    try:
        import psutil

        return sorted(psutil.Process().cpu_affinity())
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def pin_cores(cores: list[int] | None) -> None:
    """Pin this process to ``cores`` (psutil); one clear error for cores that do not exist."""
    if not cores:
        return
    import psutil

    total = psutil.cpu_count(logical=True) or 1
    bad = [c for c in cores if not 0 <= int(c) < total]
    if bad:
        raise BackendUnavailable(f"cores {bad} do not exist on this machine (it has cores 0..{total - 1})")
    try:
        psutil.Process().cpu_affinity([int(c) for c in cores])
    except (OSError, ValueError) as exc:
        raise BackendUnavailable(f"cannot pin to cores {cores}: {exc}") from None


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def tune_allocator() -> bool:
    """Keep freed tensor memory in the heap (glibc ``mallopt``), as an inference runtime's arena does.

    By default glibc serves large blocks with mmap and returns them on free, so every
    eager PyTorch call page-faults its activations in again: networks ran ~2x slower
    and far noisier here than the sum of their ops. Returns whether it applied.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok_trim = libc.mallopt(M_TRIM_THRESHOLD, 1 << 29)
        ok_mmap = libc.mallopt(M_MMAP_THRESHOLD, 1 << 28) or libc.mallopt(M_MMAP_THRESHOLD, 1 << 25)
    except (OSError, AttributeError):
        return False
    return bool(ok_trim and ok_mmap)


def torch_module_runner(module: Any, x: Any, sync: Any = None) -> Runner:
    """Runner timing ``module(x)`` with perf_counter_ns under ``torch.inference_mode``."""
    import torch

    clock = time.perf_counter_ns

    def run(n: int) -> list[float]:
        out = [0.0] * n
        with torch.inference_mode():
            for i in range(n):
                t0 = clock()
                module(x)
                if sync is not None:
                    sync()
                out[i] = (clock() - t0) * 1e-6
        return out

    return run


class TorchCPUBackend(Backend):
    """Eager PyTorch on the CPU: eval + inference mode, ``threads`` intra-op threads (default 1), optional pinning."""

    name = "torch-cpu"
    default_settings = {"threads": None, "cores": None, "channels_last": False, "allocator": "arena"}

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import torch  # noqa: F401
        except ImportError:
            return False, "PyTorch is not installed (pip install torch)"
        return True, ""

    def setup(self) -> None:
        import torch

        cores = self.settings.get("cores")
        if cores:
            self.settings["cores"] = sorted(int(c) for c in cores)
        pin_cores(self.settings["cores"])
        if self.settings["threads"] is None:
            # one thread unless asked: multi-threaded timings on a shared host swing by 10x
            # when another process takes a core; pinned single-thread numbers repeat
            self.settings["threads"] = 1
        if int(self.settings["threads"]) < 1:
            raise BackendUnavailable(f"threads must be >= 1, got {self.settings['threads']}")
        torch.set_num_threads(int(self.settings["threads"]))
        if self.settings["allocator"] not in ("arena", "system"):
            raise BackendUnavailable(f"allocator must be arena or system, got {self.settings['allocator']!r}")
        if self.settings["allocator"] == "arena" and not tune_allocator():
            self.settings["allocator"] = "system"  # not glibc: record what really ran

    def fingerprint_settings(self) -> dict[str, Any]:
        return {**self.settings, "mode": "eager-inference"}

    def why_unsupported(self, spec: OpSpec) -> str | None:
        if spec.dtype != "float32":
            return f"dtype {spec.dtype} is not run on torch-cpu (float32 only)"
        return None

    def _prepare(self, module: Any, x: Any) -> tuple[Any, Any]:
        import torch

        torch.set_num_threads(int(self.settings["threads"]))
        if self.settings["channels_last"] and x.dim() == 4:
            module = module.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        return module, x

    def runner(self, workload: Workload) -> Runner:
        if isinstance(workload, OpSpec):
            self.check_supported(workload)
            module, x = self._prepare(workload.build(), workload.example_input())
        elif isinstance(workload, dict):
            module, x = self._prepare(*arch_module_and_input(workload))
        elif isinstance(workload, (str, Path)):
            raise UnsupportedOp(f"torch-cpu cannot run the model file {workload}; use an ONNX Runtime device")
        else:
            raise UnsupportedOp(f"torch-cpu cannot run {type(workload).__name__}")
        return torch_module_runner(module, x)
