"""Reusable contract test suites (optuna-style): every backend must pass `BackendContract`.

Use in a third-party package's tests::

    from latbench.testing import BackendContract

    class TestMyBackend(BackendContract):
        backend_name = "my-device"
        settings = {"threads": 1}

pytest collects the inherited ``test_*`` methods. A backend that cannot run on
the machine is skipped with its own reason.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
import pytest

from latbench.backends import Backend, get_backend
from latbench.device import DeviceFingerprint
from latbench.errors import LatbenchError, UnsupportedOp
from latbench.measure.harness import TimingConfig
from latbench.measure.measurement import Measurement
from latbench.ops import DTYPE_BYTES, OpSpec

SMALL_OPS = (
    OpSpec("conv", 16, 3, 8, kernel=3, stride=2, act="relu6"),
    OpSpec("mbconv", 8, 8, 8, kernel=3, expand=3, act="relu6"),
    OpSpec("mbconv", 8, 8, 16, kernel=5, stride=2, expand=6, act="hswish", se=True),
    OpSpec("classifier", 4, 16, 10, act="none"),
)
QUICK = TimingConfig(warmup_s=0.0, min_warmup_calls=1, min_run_time_s=0.01, min_runs=8, rounds=2, max_retries=1)


class BackendContract:
    """Contract every :class:`~latbench.backends.Backend` passes. Set ``backend_name`` and ``settings``."""

    backend_name: ClassVar[str] = ""
    settings: ClassVar[dict[str, Any]] = {}
    #: ops the contract times; override for backends with a narrower op set
    ops: ClassVar[tuple[OpSpec, ...]] = SMALL_OPS

    @pytest.fixture
    def backend(self) -> Backend:
        from latbench.backends import backend_class

        cls = backend_class(self.backend_name)
        ok, reason = cls.available()
        if not ok:
            pytest.skip(f"{self.backend_name} unavailable here: {reason}")
        return get_backend(self.backend_name, **self.settings)

    def test_available_returns_reason(self) -> None:
        from latbench.backends import backend_class

        ok, reason = backend_class(self.backend_name).available()
        assert isinstance(ok, bool) and isinstance(reason, str)
        assert ok or reason, "an unavailable backend must say why"

    def test_name_registered(self, backend: Backend) -> None:
        assert backend.name == self.backend_name

    def test_fingerprint_stable_and_serialisable(self, backend: Backend) -> None:
        a, b = backend.fingerprint(), backend.fingerprint()
        assert isinstance(a, DeviceFingerprint)
        assert a.id == b.id and a.id.startswith(self.backend_name)
        d = json.loads(json.dumps(a.to_dict()))
        assert DeviceFingerprint.from_dict(d).id == a.id
        assert d["versions"].get("python")

    def test_supports_small_ops(self, backend: Backend) -> None:
        for op in self.ops:
            assert backend.supports(op), backend.why_unsupported(op)

    def test_runner_returns_positive_ms(self, backend: Backend) -> None:
        run = backend.runner(self.ops[0])
        times = run(5)
        assert len(times) == 5
        assert all(isinstance(t, float) and 0 < t < 10_000 for t in times)

    def test_measure_keeps_samples_and_stats(self, backend: Backend) -> None:
        m = backend.measure(self.ops[1], QUICK)
        assert isinstance(m, Measurement)
        assert m.n >= 8 and len(m.samples_ms) == m.n
        assert 0 < m.median <= m.p90 and m.iqr >= 0
        assert float(np.median(m.samples_ms)) == pytest.approx(m.median)

    def test_bigger_op_is_slower(self, backend: Backend) -> None:
        small = OpSpec("conv", 8, 8, 8, kernel=1, act="relu")
        big = OpSpec("conv", 56, 64, 64, kernel=3, act="relu")
        ms, _ = backend.measure_many({"small": small, "big": big}, QUICK.with_(drift="interleave"))
        assert ms["big"].median > 2 * ms["small"].median

    def test_measure_many_returns_every_key(self, backend: Backend) -> None:
        work = {op.key: op for op in self.ops}
        ms, info = backend.measure_many(work, QUICK)
        assert set(ms) == set(work)
        assert info["drift"] in ("sentinel", "interleave", "none")
        assert all(m.median > 0 for m in ms.values())

    def test_dtypes_run_or_are_refused_in_one_line(self, backend: Backend) -> None:
        """For every dtype an op can carry: a backend that says it supports the op runs it (positive times),
        one that does not says why in one line and its runner raises :class:`UnsupportedOp`. Both halves apply
        to every backend, so the contract never skips on one that happens to run every dtype."""
        refused, ran = [], []
        for dtype in DTYPE_BYTES:
            op = OpSpec("conv", 8, 8, 8, kernel=1, dtype=dtype)
            if backend.supports(op):
                times = backend.runner(op)(2)
                assert len(times) == 2 and all(t > 0 for t in times), (dtype, times)
                ran.append(dtype)
            else:
                reason = backend.why_unsupported(op)
                assert reason and "\n" not in reason, (dtype, reason)
                with pytest.raises(UnsupportedOp):
                    backend.runner(op)
                refused.append(dtype)
        assert "float32" in ran, f"{self.backend_name} refuses float32 ops"
        assert len(ran) + len(refused) == len(DTYPE_BYTES)

    def test_missing_model_file_is_a_latbench_error(self, backend: Backend, tmp_path: Any) -> None:
        with pytest.raises(LatbenchError):
            backend.runner(tmp_path / "missing.onnx")


class LatencyModelContract:
    """Contract every latency model passes. Implement the ``model`` fixture (and optionally ``space``).

    Example::

        class TestMyModel(LatencyModelContract):
            @pytest.fixture
            def model(self):
                return MyModel(...)
    """

    space_name: ClassVar[str] = "proxyless-mobile"
    space_params: ClassVar[dict[str, Any]] = {}

    @pytest.fixture
    def space(self) -> Any:
        from latbench.spaces import get_space

        return get_space(self.space_name, **self.space_params)

    @pytest.fixture
    def model(self) -> Any:  # pragma: no cover - provided by subclasses
        raise NotImplementedError("subclasses provide a `model` fixture")

    def test_is_a_latency_model(self, model: Any) -> None:
        from latbench.predict.base import LatencyModel

        assert isinstance(model, LatencyModel)
        assert model.fingerprint.get("id")

    def test_op_predictions_are_positive_ms_and_zero_is_free(self, model: Any, space: Any) -> None:
        ops = space.vocabulary[:12]
        pred = np.asarray(model.predict_ops(ops))
        assert pred.shape == (len(ops),) and np.all(np.isfinite(pred)) and np.all(pred > 0)
        zero = OpSpec("zero", 28, 40, 40, act="none")
        assert float(np.asarray(model.predict_ops([zero]))[0]) == 0.0

    def test_arch_prediction_is_consistent_across_paths(self, model: Any, space: Any) -> None:
        rng = np.random.default_rng(0)
        archs = [space.from_indices(i) for i in space.sample_indices(rng, 8)]
        single = np.array([model.predict_arch(a) for a in archs])
        batched = np.asarray(model.predict_archs(archs))
        compiled = model.compile(space).predict_indices(np.stack([space.to_indices(a) for a in archs]))
        assert np.all(single > 0)
        np.testing.assert_allclose(batched, single, rtol=1e-9)
        np.testing.assert_allclose(compiled, single, rtol=1e-9)

    def test_bigger_arch_is_slower(self, model: Any, space: Any) -> None:
        small = space.from_indices(np.zeros(len(space.decisions), dtype=np.int64))
        big = space.from_indices(space.cardinalities - 1)
        lats = model.compile(space).predict_indices(np.stack([space.to_indices(small), space.to_indices(big)]))
        lo, hi = model.compile(space).bounds()
        assert lo <= lats.min() and lats.max() <= hi * (1 + 1e-9)
        assert lo < hi
