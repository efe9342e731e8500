"""`Backend`: the contract every device backend implements.

A backend turns a *workload* into a runner the harness can time:

* an :class:`~latbench.ops.OpSpec` (one table row),
* an arch JSON dict (a whole network of a search space),
* a path to an ``.onnx`` file (backends that run ONNX).

Contract (checked by :class:`latbench.testing.BackendContract`):

* ``available()`` returns ``(ok, reason)`` and never raises; a backend that
  cannot run here raises :class:`~latbench.errors.BackendUnavailable` with that
  reason when made.
* ``fingerprint()`` is stable for the same machine and settings.
* ``supports(spec)`` is True exactly when ``runner(spec)`` can be built.
* ``measure*`` return milliseconds, with raw samples kept.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from latbench.errors import BackendUnavailable, UnsupportedOp
from latbench.fingerprint import DeviceFingerprint, host_info, library_versions
from latbench.measure.harness import Runner, TimingConfig, measure_batch, measure_runner
from latbench.measure.measurement import Measurement
from latbench.ops import OpSpec
from latbench.spaces import Arch

Workload = OpSpec | dict[str, Any] | str | Path

#: the op timed beside every batch to correct for machine drift
SENTINEL_SPEC = OpSpec("mbconv", 28, 40, 40, kernel=5, stride=1, expand=3, act="relu6")
#: How a device profile times the sentinel: its median is the reference every batch is normalised to.
SENTINEL_TIMING = TimingConfig(warmup_s=0.5, min_run_time_s=1.0, min_runs=50)
SENTINEL_ATTEMPTS = 4


def workload_label(w: Workload) -> str:
    if isinstance(w, OpSpec):
        return w.key
    if isinstance(w, dict):
        import hashlib
        import json

        return "arch-" + hashlib.sha1(json.dumps(w, sort_keys=True).encode()).hexdigest()[:12]
    return str(w)


class Backend(ABC):
    """A way to run and time workloads on one device."""

    #: registry name
    name: ClassVar[str] = ""
    #: settings that change speed (recorded in the fingerprint); subclasses list defaults
    default_settings: ClassVar[dict[str, Any]] = {}
    #: default timing for tables on this backend
    timing: TimingConfig = TimingConfig()

    def __init__(self, **settings: Any) -> None:
        ok, reason = self.available()
        if not ok:
            raise BackendUnavailable(f"backend {self.name!r} cannot run here: {reason}")
        unknown = set(settings) - set(self.default_settings)
        if unknown:
            known = ", ".join(sorted(self.default_settings)) or "none"
            raise BackendUnavailable(
                f"backend {self.name!r} has no setting(s) {', '.join(sorted(unknown))} (known: {known})"
            )
        self.settings: dict[str, Any] = {**self.default_settings, **settings}
        self.setup()

    # ------------------------------------------------------------ to implement
    @classmethod
    def available(cls) -> tuple[bool, str]:
        """``(True, "")`` when the backend can run on this machine, else ``(False, reason)``."""
        return True, ""

    def setup(self) -> None:
        """Apply settings (threads, affinity...). Called once from ``__init__``."""

    @abstractmethod
    def why_unsupported(self, spec: OpSpec) -> str | None:
        """``None`` when ``spec`` can run, else the reason it cannot."""

    @abstractmethod
    def runner(self, workload: Workload) -> Runner:
        """A runner (``n -> list of ms``) for ``workload``; raises :class:`UnsupportedOp`."""

    def gpu_info(self) -> dict[str, Any] | None:
        return None

    # ------------------------------------------------------------ provided
    def supports(self, spec: OpSpec) -> bool:
        return self.why_unsupported(spec) is None

    def check_supported(self, spec: OpSpec) -> None:
        why = self.why_unsupported(spec)
        if why is not None:
            raise UnsupportedOp(f"backend {self.name!r} cannot run {spec.key}: {why}")

    def fingerprint_settings(self) -> dict[str, Any]:
        """The settings recorded in (and hashed into) the fingerprint."""
        return dict(self.settings)

    def fingerprint(self) -> DeviceFingerprint:
        return DeviceFingerprint(
            backend=self.name,
            settings=self.fingerprint_settings(),
            host=host_info(),
            gpu=self.gpu_info(),
            versions=library_versions(),
        )

    def sentinel_runner(self) -> Runner:
        return self.runner(SENTINEL_SPEC)

    def measure_sentinel(self, attempts: int = SENTINEL_ATTEMPTS) -> Measurement:
        """Time the drift sentinel for a device profile.

        Its median becomes the reference every later batch is normalised to, so a
        reference timed while something else ran would shift every number by the
        same factor. A noisy result (IQR/median above the noise threshold) is timed
        again, up to ``attempts`` times; the quietest is kept, and ``meta`` says how
        many attempts it took and whether it is still noisy.
        """
        tries: list[Measurement] = []
        while len(tries) < max(attempts, 1):
            tries.append(self.measure(SENTINEL_SPEC, SENTINEL_TIMING))
            if tries[-1].rel_iqr <= SENTINEL_TIMING.noise_threshold:
                break
        best = min(tries, key=lambda m: m.rel_iqr)
        best.meta.update(attempts=len(tries), noisy=best.rel_iqr > SENTINEL_TIMING.noise_threshold)
        return best

    def measure(self, workload: Workload, config: TimingConfig | None = None) -> Measurement:
        """Time one workload on its own (no drift correction)."""
        return measure_runner(self.runner(workload), workload_label(workload), config or self.timing)

    def measure_many(
        self,
        workloads: dict[str, Workload],
        config: TimingConfig | None = None,
        *,
        sentinel_ref_ms: float | None = None,
        on_round: Callable[[int, int], None] | None = None,
    ) -> tuple[dict[str, Measurement], dict[str, Any]]:
        """Time several workloads together with the harness's drift handling."""
        config = config or self.timing
        runners = {k: self.runner(w) for k, w in workloads.items()}
        sentinel = self.sentinel_runner() if config.drift == "sentinel" else None
        return measure_batch(runners, config, sentinel=sentinel, sentinel_ref_ms=sentinel_ref_ms, on_round=on_round)

    def close(self) -> None:
        """Release resources (sessions, GPU memory)."""


def arch_module_and_input(arch: Arch) -> tuple[Any, Any]:
    """The eval-mode torch network of an arch JSON and a deterministic input for it."""
    import torch

    from latbench.spaces import space_of

    space = space_of(arch)
    model = space.build(arch)
    g = torch.Generator().manual_seed(0)
    return model, torch.randn(*space.input_shape, generator=g)


def require_supported(backend: Backend, workload: Workload) -> None:
    if isinstance(workload, OpSpec):
        backend.check_supported(workload)
    elif isinstance(workload, dict):
        from latbench.spaces import space_of

        space = space_of(workload)
        for op in space.ops_of(workload):
            backend.check_supported(op)
    elif not Path(workload).exists():
        raise UnsupportedOp(f"model file not found: {workload}")
