"""An emulated device: a real phone's latency without the phone.

:class:`EmulatedBackend` is a :class:`~latbench.backends.base.Backend` whose
numbers are the *reference device's* milliseconds. It wraps the emulator
backend (ONNX Runtime mobile emulation, ``ort-mobile``) and a
:class:`~latbench.emulation.transfer.Calibration` fitted by ``latbench
calibrate``:

* an op is timed on the emulator for real, together with its parts (the
  pointwise convs and the depthwise conv of an MBConv), call by call; each
  call's features go through the calibration, so every sample is a
  phone-scale millisecond;
* a network (arch JSON) is the sum of its ops' mapped samples plus the
  device's whole-network glue (``scale * op_sum + offset_ms``; identity until
  networks measured on the phone say otherwise);
* an ONNX model is split into kernels (:func:`latbench.predict.onnx_graph.split_onnx`),
  each kernel mapped as an op; what no kernel covers (elementwise nodes,
  reshapes) is the emulator's remainder of the whole model scaled like the
  calibration's "rest".

Its fingerprint names both devices (``emulated-<reference>-<hash>`` over the
emulator's fingerprint id and the calibration), so a table it builds is
never taken for the emulator's own table nor merged with it. Every number an
:class:`EmulatedBackend` gives is *emulated*: ops outside the reference
table are marked ``extrapolated``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from latbench.backends.base import Backend, Workload
from latbench.emulation.transfer import KIND, emulated_fingerprint_id
from latbench.errors import BackendUnavailable, LatbenchError
from latbench.fingerprint import DeviceFingerprint, host_info, library_versions
from latbench.measure.harness import Runner, TimingConfig
from latbench.measure.measurement import Measurement
from latbench.ops import OpSpec
from latbench.predict.base import E2ECalibration

#: emulator calls per emulated sample of an op (the fastest is mapped: see :meth:`EmulatedBackend.op_runner`)
REPEAT = 3


def glue_of(doc: Any) -> E2ECalibration:
    """The whole-network glue of a profile's ``[glue]`` table (``scale``, ``offset_ms``); identity when absent."""
    if doc is None:
        return E2ECalibration()
    if not isinstance(doc, dict):
        raise LatbenchError("[glue] of an emulated device profile must be a table with scale and offset_ms")
    scale, offset = doc.get("scale", 1.0), doc.get("offset_ms", 0.0)
    for name, v in (("scale", scale), ("offset_ms", offset)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise LatbenchError(f"[glue] {name} must be a number, got {v!r}")
    if scale <= 0 or offset < 0:
        raise LatbenchError(f"[glue] needs scale > 0 and offset_ms >= 0, got {scale} / {offset}")
    return E2ECalibration(float(scale), float(offset))


class EmulatedBackend(Backend):
    """A reference device (a phone) emulated: an emulator backend's timings mapped through a calibration.

    Made by :meth:`latbench.device.DeviceProfile.make_backend` for a profile
    with a ``[calibration]`` (as ``latbench calibrate --out`` writes), or
    directly with ``EmulatedBackend(emulator=<Backend>, calibration=<Calibration or dict>)``.
    """

    name: ClassVar[str] = "emulated"
    default_settings: ClassVar[dict[str, Any]] = {"emulator": None, "calibration": None, "glue": None}

    def setup(self) -> None:
        from latbench.emulation.transfer import Calibration

        inner, cal = self.settings.get("emulator"), self.settings.get("calibration")
        if not isinstance(inner, Backend):
            raise BackendUnavailable("an emulated device needs its emulator backend (emulator=<Backend>)")
        if isinstance(cal, dict):
            cal = Calibration.from_dict(cal)
        if not isinstance(cal, Calibration):
            raise BackendUnavailable("an emulated device needs a calibration (calibrate it with `latbench calibrate`)")
        self.emulator: Backend = inner
        self.calibration = cal
        glue = self.settings.get("glue")
        self.glue = glue if isinstance(glue, E2ECalibration) else glue_of(glue)
        self.timing = inner.timing
        self.reference_keys = set(cal.reference_ops)
        self._runners: dict[str, Runner] = {}
        #: per-workload-label, per-op phone-scale samples of the last measurement (for the per-kernel breakdown)
        self._kernel_samples: dict[str, dict[str, list[float]]] = {}
        # the public settings: what the fingerprint and a table's device record show (no live objects)
        self.settings = {
            "emulator": inner.fingerprint().id,
            "emulator_backend": inner.name,
            "reference": cal.reference.get("fingerprint") or cal.reference.get("name"),
            "model": cal.model,
            "glue": self.glue.to_dict(),
        }

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> DeviceFingerprint:
        fp = _NamedFingerprint(
            backend=self.name,
            settings={
                **self.settings,
                "features": list(self.calibration.features),
                "coefficients": [round(float(c), 9) for c in self.calibration.coef],
            },
            host=host_info(),
            versions=library_versions(),
            fixed_id=emulated_fingerprint_id(self.calibration, self.emulator.fingerprint().id),
        )
        return fp

    def why_unsupported(self, spec: OpSpec) -> str | None:
        return self.emulator.why_unsupported(spec)

    def is_extrapolated(self, op: OpSpec) -> bool:
        """True when ``op`` is not in the reference device's table: its number rests on the fit alone."""
        return bool(self.reference_keys) and op.key not in self.reference_keys

    # ------------------------------------------------------------------ runners
    def _inner_runner(self, op: OpSpec) -> Runner:
        r = self._runners.get(op.key)
        if r is None:
            r = self.emulator.runner(op)
            self._runners[op.key] = r
        return r

    def op_runner(self, op: OpSpec) -> Runner:
        """``n -> n`` phone-scale ms of ``op``: each sample times the op (and its parts, when the calibration reads
        them) :data:`REPEAT` times on the emulator and maps the fastest of them.

        On a shared machine a preempted call costs milliseconds more, which
        the calibration's scale (x5 to x15 for a phone) would multiply; the
        fastest of 3 calls drops such spikes, and its median sits near the
        25th percentile of single calls, the statistic the calibration was
        fitted on (``stat="p25"``).
        """
        from latbench.emulation.transfer import components, op_features

        if op.type == "zero":
            return lambda n: [0.0] * n
        self.emulator.check_supported(op)
        whole = self._inner_runner(op)
        needs_parts = self.calibration.needs_parts
        parts = {name: self._inner_runner(p) for name, p in components(op).items()} if needs_parts else {}
        cal = self.calibration

        def fastest(r: Runner, n: int) -> np.ndarray:
            return np.asarray(r(n * REPEAT), dtype=np.float64).reshape(n, REPEAT).min(axis=1)

        def run(n: int) -> list[float]:
            t_op = fastest(whole, n)
            t_parts = {name: fastest(r, n) for name, r in parts.items()}
            feats = [op_features(op, float(t_op[i]), {k: float(v[i]) for k, v in t_parts.items()}) for i in range(n)]
            return [max(float(v), 0.0) for v in cal.predict_features(feats)]

        return run

    def _ops_runner(self, ops: list[OpSpec], label: str, extra: Runner | None = None) -> Runner:
        """Sum of the ops' mapped samples (plus ``extra``), glue applied; per-op samples kept under ``label``."""
        runners = [(op.key, self.op_runner(op)) for op in ops if op.type != "zero"]
        store: dict[str, list[float]] = {}
        self._kernel_samples[label] = store

        def run(n: int) -> list[float]:
            total = np.zeros(n)
            per_key: dict[str, np.ndarray] = {}
            for key, r in runners:
                v = np.asarray(r(n), dtype=np.float64)
                total += v
                per_key[key] = per_key.get(key, 0.0) + v
            if extra is not None:
                v = np.asarray(extra(n), dtype=np.float64)
                total += v
                per_key["(rest)"] = v
            for key, v in per_key.items():
                store.setdefault(key, []).extend(v.tolist())
            return [float(x) for x in self.glue.apply(total)]

        return run

    def runner(self, workload: Workload) -> Runner:
        from latbench.backends.base import workload_label

        if isinstance(workload, OpSpec):
            return self.op_runner(workload)
        if isinstance(workload, dict):
            from latbench.spaces import space_of

            ops = space_of(workload).ops_of(workload)
            return self._ops_runner(ops, workload_label(workload))
        return self._onnx_runner(Path(workload))

    def _onnx_runner(self, path: Path) -> Runner:
        """An ONNX model: its kernels mapped as ops, the rest of the graph scaled like the calibration's rest."""
        from latbench.predict.onnx_graph import split_onnx

        split = split_onnx(path)
        ops = [k.spec for k in split.kernels if k.spec is not None and self.emulator.supports(k.spec)]
        whole = self.emulator.runner(str(path))
        kernel_runners = [self._inner_runner(o) for o in ops]
        rest_scale = self._rest_scale()

        def rest(n: int) -> list[float]:
            t_whole = np.asarray(whole(n), dtype=np.float64)
            t_kernels = sum((np.asarray(r(n), dtype=np.float64) for r in kernel_runners), np.zeros(n))
            return list(rest_scale * np.maximum(t_whole - t_kernels, 0.0))

        return self._ops_runner(ops, str(path), extra=rest)

    def _rest_scale(self) -> float:
        """Emulator ms -> phone ms for time no kernel accounts for: the calibration's rest (or single) scale."""
        coef = dict(zip(self.calibration.features, self.calibration.coef, strict=True))
        for name in ("other", "t", "pw"):
            if coef.get(name, 0.0) > 0:
                return float(coef[name])
        return 1.0

    # ------------------------------------------------------------------ measuring
    def measure_many(
        self,
        workloads: dict[str, Workload],
        config: TimingConfig | None = None,
        *,
        sentinel_ref_ms: float | None = None,
        on_round: Any = None,
    ) -> tuple[dict[str, Measurement], dict[str, Any]]:
        """As :meth:`Backend.measure_many` (the emulator's own drift handling), each result marked emulated
        with its per-kernel breakdown (phone ms) in ``meta``."""
        config = config or self.timing
        if config.drift == "sentinel":
            config = config.with_(drift="interleave")  # the sentinel is a phone-scale number here, not a drift probe
        res, info = super().measure_many(workloads, config, sentinel_ref_ms=None, on_round=on_round)
        for key, m in res.items():
            self.annotate(m, workloads[key])
        info["kind"] = KIND
        return res, info

    def measure(self, workload: Workload, config: TimingConfig | None = None) -> Measurement:
        m = super().measure(workload, config)
        self.annotate(m, workload)
        return m

    def annotate(self, m: Measurement, workload: Workload) -> None:
        """Mark ``m`` emulated; for networks add the per-kernel breakdown and the extrapolated ops."""
        from latbench.backends.base import workload_label

        m.meta["kind"] = KIND
        m.meta["reference"] = self.settings["reference"]
        if isinstance(workload, OpSpec):
            m.meta["extrapolated"] = self.is_extrapolated(workload)
            return
        label = workload_label(workload) if isinstance(workload, dict) else str(Path(workload))
        samples = self._kernel_samples.get(label, {})
        kernels = [
            {"op": k, "median_ms": round(float(np.median(v)), 6), "extrapolated": self._key_extrapolated(k)}
            for k, v in samples.items()
        ]
        m.meta["kernels"] = kernels
        m.meta["extrapolated_ops"] = sorted(k["op"] for k in kernels if k["extrapolated"])
        m.meta["glue"] = self.glue.to_dict()

    def _key_extrapolated(self, key: str) -> bool:
        return bool(self.reference_keys) and key != "(rest)" and key not in self.reference_keys

    def close(self) -> None:
        self._runners.clear()
        self.emulator.close()


@dataclass(frozen=True)
class _NamedFingerprint(DeviceFingerprint):
    """A fingerprint whose id is given (the emulated device's id names the reference and the emulator)."""

    fixed_id: str = ""

    @property
    def id(self) -> str:  # type: ignore[override]
        return self.fixed_id or super().id
