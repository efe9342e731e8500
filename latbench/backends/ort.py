"""ONNX Runtime backends: ``ort-cpu`` and ``ort-mobile`` (phone-class emulation).

Every workload becomes an ONNX file (:mod:`latbench.export`: TorchScript
exporter, BatchNorm folded into Conv, constant folding, cached by op key) and
runs in an ``InferenceSession`` on the CPU execution provider with recorded
settings: intra-op threads, sequential execution, graph optimization level,
spinning, precision. Inputs and outputs are bound once with IO binding, so the
timed call is ``run_with_iobinding`` alone (no input copies, no output
allocation).

``precision="int8"`` quantizes each graph statically to QDQ form with
:func:`onnxruntime.quantization.quantize_static` (MinMax calibration over a
:class:`CalibrationReader`: seeded random normal inputs, or the user's own
``.npy``/``.npz`` data). Quantized graphs are cached next to the fp32 ones.

``ort-mobile`` stands for a phone class: 1 to 4 intra-op threads pinned to
as many cores (psutil), fp32 or int8. Shipped profiles: ``devices/mobile-*.toml``.
Its numbers are an emulation; :mod:`latbench.emulation.transfer` maps them onto a real
phone's published table.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from latbench import paths
from latbench.backends.base import Backend, Workload
from latbench.backends.torch_cpu import available_cores, pin_cores
from latbench.errors import BackendUnavailable, LatbenchError, UnsupportedOp
from latbench.measure.harness import Runner
from latbench.ops import OpSpec

PROVIDER = "CPUExecutionProvider"
GRAPH_OPT_LEVELS = ("disabled", "basic", "extended", "all")
EXECUTION_MODES = ("sequential", "parallel")
PRECISIONS = ("fp32", "int8")
QUANT_TYPES = ("uint8", "int8")

#: ONNX tensor element type string (as ORT reports it) -> numpy dtype
_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def ort_version() -> str:
    import onnxruntime as ort

    return str(ort.__version__)


# ------------------------------------------------------------------------ model inputs
def model_inputs(session: Any, batch: int = 1) -> dict[str, tuple[tuple[int, ...], Any]]:
    """``name -> (static shape, numpy dtype)`` of a session's inputs.

    A symbolic first dimension is taken as the batch (``batch``); any other
    symbolic dimension is an error (export with static shapes).
    """
    out: dict[str, tuple[tuple[int, ...], Any]] = {}
    for inp in session.get_inputs():
        dtype = _ORT_DTYPES.get(inp.type)
        if dtype is None:
            raise UnsupportedOp(f"model input {inp.name!r} has type {inp.type}, which latbench cannot feed")
        shape = []
        for i, d in enumerate(inp.shape):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif i == 0:
                shape.append(int(batch))
            else:
                raise UnsupportedOp(
                    f"model input {inp.name!r} has a symbolic dimension {d!r} at axis {i}; export it with static shapes"
                )
        out[inp.name] = (tuple(shape), dtype)
    return out


def random_feed(inputs: dict[str, tuple[tuple[int, ...], Any]], seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic random inputs: standard normal floats, small non-negative integers."""
    rng = np.random.default_rng(seed)
    feed = {}
    for name, (shape, dtype) in inputs.items():
        if np.issubdtype(dtype, np.floating):
            feed[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feed[name] = rng.random(shape) < 0.5
        else:
            feed[name] = rng.integers(0, 2, size=shape).astype(dtype)
    return feed


def onnx_file_for(backend: Backend, workload: Workload) -> Path:
    """The float32 ONNX file of ``workload`` for an ONNX Runtime backend (local or remote): an op or an arch exported
    here (cached by key, after ``backend`` accepts every op), or a user's ONNX file checked. Quantization is the
    backend's own step."""
    from latbench.export import export_onnx

    opset = int(backend.settings["opset"])
    if isinstance(workload, OpSpec):
        backend.check_supported(workload)
        return export_onnx(workload, None, opset=opset)
    if isinstance(workload, dict):
        from latbench.spaces import space_of

        for op in space_of(workload).ops_of(workload):
            backend.check_supported(op)
        return export_onnx(workload, None, opset=opset)
    if isinstance(workload, (str, os.PathLike)):
        return check_onnx_file(workload)
    raise UnsupportedOp(f"{backend.name} cannot run {type(workload).__name__}")


def check_onnx_file(path: str | os.PathLike[str]) -> Path:
    """The path of a readable ONNX model; one clear :class:`UnsupportedOp` line otherwise."""
    import onnx

    p = Path(path)
    if not p.exists():
        raise UnsupportedOp(f"model file not found: {p}")
    if p.is_dir():
        raise UnsupportedOp(f"{p} is a folder, not an ONNX model file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # DecodeError and friends: not protobuf
        raise UnsupportedOp(f"{p} is not an ONNX model ({type(exc).__name__}); give a .onnx file") from None
    if not model.graph.node and not model.graph.output:
        raise UnsupportedOp(f"{p} is not an ONNX model (it has no graph); give a .onnx file")
    return p


def empty_model(path: str | os.PathLike[str], shape: tuple[int, ...] = (1, 8)) -> Path:
    """A one-node ``Identity`` graph: its latency is the fixed cost of one session call (milliseconds)."""
    p = Path(path)
    paths.atomic_write_bytes(p, _empty_model_proto(shape).SerializeToString())
    return p


def _empty_model_proto(shape: tuple[int, ...]) -> Any:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, list(shape))
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "latbench_empty", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="latbench")
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = "latbench.workload", "empty"
    return model


def empty_model_path() -> Path:
    """The cached empty (Identity) model, made on first use."""
    from latbench.export import default_cache_dir

    p = default_cache_dir() / "empty-identity-1x8.onnx"
    if not p.exists():
        empty_model(p)
    return p


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


# ------------------------------------------------------------------------ int8 calibration
def _calibration_reader_base() -> type:
    from onnxruntime.quantization import CalibrationDataReader

    return CalibrationDataReader


class CalibrationReader:
    """Feeds calibration batches to ``quantize_static``: user data where it fits, else seeded random normal.

    ``data`` is ``None`` (random), a ``.npy`` file (samples of the single
    input, stacked on axis 0) or a ``.npz`` file (one array per input name).
    User data must match the model's input shapes; a model it does not fit
    (e.g. one op of a network) is calibrated on random data, and
    :attr:`source` says which was used.
    """

    def __init__(
        self,
        inputs: dict[str, tuple[tuple[int, ...], Any]],
        samples: int = 8,
        data: str | os.PathLike[str] | None = None,
        seed: int = 0,
    ) -> None:
        self.inputs = inputs
        self.samples = int(samples)
        self.batches: list[dict[str, np.ndarray]] = []
        self.source = "random-normal"
        arrays = load_calibration_data(data) if data else None
        if arrays is not None:
            fitted = self._fit(arrays)
            if fitted is not None:
                self.batches = fitted
                self.source = f"file:{Path(str(data)).name}"
        if not self.batches:
            self.batches = [random_feed(inputs, seed + i) for i in range(self.samples)]
        self._it = iter(self.batches)

    def _fit(self, arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]] | None:
        names = list(self.inputs)
        if list(arrays) == ["__single__"] and len(names) == 1:
            arrays = {names[0]: arrays["__single__"]}
        if set(arrays) != set(names):
            return None
        per: dict[str, list[np.ndarray]] = {}
        for name, (shape, dtype) in self.inputs.items():
            a = arrays[name]
            b = shape[0]
            if tuple(a.shape[1:]) != tuple(shape[1:]) or a.shape[0] < b:
                return None
            n = min(self.samples, a.shape[0] // b)
            per[name] = [a[i * b : (i + 1) * b].astype(dtype) for i in range(n)]
        count = min(len(v) for v in per.values())
        return [{name: per[name][i] for name in names} for i in range(count)]

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.batches)


def load_calibration_data(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Arrays of a ``.npy`` (key ``__single__``) or ``.npz`` calibration file; one clear error otherwise."""
    p = Path(path)
    if not p.exists():
        raise LatbenchError(f"calibration data not found: {p}")
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                return {k: np.asarray(z[k]) for k in z.files}
        if p.suffix == ".npy":
            return {"__single__": np.load(p, allow_pickle=False)}
    except (ValueError, OSError) as exc:
        raise LatbenchError(f"{p}: unreadable calibration data ({exc})") from None
    raise LatbenchError(f"calibration data must be a .npy or .npz file, got {p.name}")


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def quantize_int8(
    source: Path,
    *,
    samples: int = 8,
    data: str | None = None,
    activation_type: str = "uint8",
    weight_type: str = "int8",
    per_channel: bool = False,
    cache_dir: Path | None = None,
) -> tuple[Path, str]:
    """Static QDQ int8 copy of ``source`` (cached); returns ``(path, calibration source)``."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from latbench.export import default_cache_dir

    recipe = {
        "src": _file_digest(source),
        "samples": samples,
        "data": _file_digest(Path(data)) if data else None,
        "act": activation_type,
        "w": weight_type,
        "per_channel": per_channel,
        "ort": ort_version(),
    }
    digest = hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    cache = _mkdir(Path(cache_dir) if cache_dir else default_cache_dir() / "int8")
    target = cache / f"{source.stem[:80]}-int8-{digest}.onnx"
    if target.exists():
        meta = {p.key: p.value for p in onnx.load(str(target), load_external_data=False).metadata_props}
        return target, meta.get("latbench.calibration", "?")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    probe = ort.InferenceSession(str(source), so, providers=[PROVIDER])
    inputs = model_inputs(probe)
    del probe
    reader = CalibrationReader(inputs, samples=samples, data=data)
    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    # quantize_static reads and writes files of its own (pre-processed model, calibration data): they live in a
    # private staging folder; only the final model reaches the cache, written atomically
    with tempfile.TemporaryDirectory(prefix="latbench-q-") as tmpdir:
        pre = Path(tmpdir) / "pre.onnx"
        quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        out = Path(tmpdir) / "q.onnx"
        reader_cls = type(
            "_Reader",
            (_calibration_reader_base(),),
            {"get_next": lambda s: reader.get_next(), "rewind": lambda s: reader.rewind()},
        )
        quantize_static(
            str(pre),
            str(out),
            reader_cls(),
            quant_format=QuantFormat.QDQ,
            activation_type=qtype[activation_type],
            weight_type=qtype[weight_type],
            per_channel=per_channel,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"CalibTensorRangeSymmetric": activation_type == "int8"},
        )
        model = onnx.load(str(out))
        for k, v in {"latbench.precision": "int8-qdq", "latbench.calibration": reader.source}.items():
            e = model.metadata_props.add()
            e.key, e.value = k, v
        paths.atomic_write_bytes(target, model.SerializeToString())
    return target, reader.source


# ------------------------------------------------------------------------ the backends
class ORTCPUBackend(Backend):
    """ONNX Runtime, CPU execution provider, IO binding; settings recorded in the fingerprint.

    Settings: ``threads`` (intra-op, default 1), ``inter_threads``,
    ``cores`` (pin, psutil), ``execution_mode`` (sequential | parallel),
    ``graph_optimization`` (disabled | basic | extended | all), ``spinning``
    (intra-op spin-wait), ``precision`` (fp32 | int8), ``activation_type`` /
    ``weight_type`` / ``per_channel`` / ``calibration`` / ``calibration_samples``
    (int8 only), ``opset`` (export), ``io_binding`` (bind inputs once; off
    times ``session.run`` with its copies), ``batch`` (for models with a
    symbolic batch axis).
    """

    name: ClassVar[str] = "ort-cpu"
    default_settings: ClassVar[dict[str, Any]] = {
        "threads": None,
        "inter_threads": 1,
        "cores": None,
        "execution_mode": "sequential",
        "graph_optimization": "all",
        "spinning": True,
        "precision": "fp32",
        "activation_type": "uint8",
        "weight_type": "int8",
        "per_channel": False,
        "calibration": None,
        "calibration_samples": 8,
        "opset": 17,
        "io_binding": True,
        "batch": 1,
    }

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError:
            return False, "onnxruntime is not installed (pip install onnxruntime)"
        if PROVIDER not in ort.get_available_providers():
            return False, f"onnxruntime {ort.__version__} has no {PROVIDER}"
        try:
            import torch  # noqa: F401  (the exporter)
        except ImportError:
            return False, "PyTorch is not installed (needed to export ops to ONNX)"
        return True, ""

    # ------------------------------------------------------------------ settings
    def _default_threads(self, cores: list[int] | None) -> int:
        # one thread unless asked, as torch-cpu: a multi-threaded ORT pool on a shared host
        # measured whole networks 3-9x above their LUT sums here (threads waiting on a taken core)
        return 1

    def setup(self) -> None:
        s = self.settings
        self._previous_affinity = available_cores()
        cores = s.get("cores")
        if cores:
            s["cores"] = sorted(int(c) for c in cores)
        if s["threads"] is None:
            s["threads"] = self._default_threads(s["cores"])
        self._validate()
        if s["cores"]:
            pin_cores(s["cores"])
            weakref.finalize(self, _restore_affinity, self._previous_affinity)
        self._sessions: dict[str, Any] = {}
        self._quant_source: dict[str, str] = {}

    def _validate(self) -> None:
        s = self.settings
        if not isinstance(s["threads"], int) or s["threads"] < 1:
            raise BackendUnavailable(f"threads must be an integer >= 1, got {s['threads']!r}")
        if not isinstance(s["inter_threads"], int) or s["inter_threads"] < 1:
            raise BackendUnavailable(f"inter_threads must be an integer >= 1, got {s['inter_threads']!r}")
        for key, allowed in (
            ("execution_mode", EXECUTION_MODES),
            ("graph_optimization", GRAPH_OPT_LEVELS),
            ("precision", PRECISIONS),
            ("activation_type", QUANT_TYPES),
            ("weight_type", QUANT_TYPES),
        ):
            if s[key] not in allowed:
                raise BackendUnavailable(f"{key} must be one of {', '.join(allowed)}, got {s[key]!r}")
        if not isinstance(s["opset"], int) or not 13 <= s["opset"] <= 21:
            raise BackendUnavailable(f"opset must be 13..21, got {s['opset']!r}")
        if s["calibration"] is not None:
            if s["precision"] != "int8":
                raise BackendUnavailable("calibration data only applies with precision=int8")
            load_calibration_data(s["calibration"])  # one clear line when unusable
        if not isinstance(s["batch"], int) or s["batch"] < 1:
            raise BackendUnavailable(f"batch must be an integer >= 1, got {s['batch']!r}")

    def fingerprint_settings(self) -> dict[str, Any]:
        s = dict(self.settings)
        if s["precision"] != "int8":
            for k in ("activation_type", "weight_type", "per_channel", "calibration", "calibration_samples"):
                s.pop(k)
        elif s["calibration"]:
            s["calibration"] = f"{Path(s['calibration']).name}:sha256:{_file_digest(Path(s['calibration']))[:16]}"
        from latbench.export import EXPORTER

        return {
            **s,
            "provider": PROVIDER,
            "onnxruntime": ort_version(),
            "exporter": EXPORTER,
            "timed_call": "run_with_iobinding" if s["io_binding"] else "run",
        }

    def why_unsupported(self, spec: OpSpec) -> str | None:
        if spec.dtype != "float32":
            extra = " (set the backend's precision=int8 to time int8 kernels)" if spec.dtype == "int8" else ""
            return f"dtype {spec.dtype} is not run on {self.name}: ops are exported in float32{extra}"
        if spec.type == "zero":
            return "zero ops are skipped blocks and never timed"
        return None

    # ------------------------------------------------------------------ sessions
    def session_options(self) -> Any:
        """The ``SessionOptions`` made from this backend's settings."""
        import onnxruntime as ort

        s = self.settings
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(s["threads"])
        so.inter_op_num_threads = int(s["inter_threads"])
        so.execution_mode = (
            ort.ExecutionMode.ORT_SEQUENTIAL if s["execution_mode"] == "sequential" else ort.ExecutionMode.ORT_PARALLEL
        )
        so.graph_optimization_level = {
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[s["graph_optimization"]]
        spin = "1" if s["spinning"] else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        so.add_session_config_entry("session.inter_op.allow_spinning", spin)
        so.log_severity_level = 3
        return so

    def model_path(self, workload: Workload) -> Path:
        """The ONNX file this backend runs for ``workload`` (exported, and quantized when int8)."""
        src = onnx_file_for(self, workload)
        if self.settings["precision"] != "int8":
            return src
        s = self.settings
        try:
            path, source = quantize_int8(
                src,
                samples=int(s["calibration_samples"]),
                data=s["calibration"],
                activation_type=s["activation_type"],
                weight_type=s["weight_type"],
                per_channel=bool(s["per_channel"]),
            )
        except LatbenchError:
            raise
        except Exception as exc:  # the quantizer's own failures on an odd model
            raise UnsupportedOp(f"{self.name} could not quantize {src.name} to int8: {exc}") from None
        self._quant_source[str(path)] = source
        return path

    def session(self, path: Path) -> Any:
        """An ``InferenceSession`` for ``path`` with this backend's options (one per file)."""
        import onnxruntime as ort

        key = str(path)
        if key not in self._sessions:
            try:
                self._sessions[key] = ort.InferenceSession(key, self.session_options(), providers=[PROVIDER])
            except Exception as exc:  # ORT raises its own Fail / InvalidGraph / NotImplemented
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise UnsupportedOp(f"onnxruntime cannot load {Path(key).name}: {first[:300]}") from None
        return self._sessions[key]

    def runner(self, workload: Workload) -> Runner:
        sess = self.session(self.model_path(workload))
        return session_runner(sess, io_binding=bool(self.settings["io_binding"]), batch=int(self.settings["batch"]))

    def close(self) -> None:
        self._sessions.clear()
        if self.settings.get("cores"):
            _restore_affinity(self._previous_affinity)


def _restore_affinity(cores: list[int]) -> None:
    try:
        import psutil

        psutil.Process().cpu_affinity(cores)
    except (OSError, ValueError, AttributeError):
        pass


def session_runner(sess: Any, *, io_binding: bool = True, batch: int = 1, seed: int = 0) -> Runner:
    """Runner timing one inference of ``sess`` per call (``perf_counter_ns``, milliseconds).

    With ``io_binding`` the inputs live in OrtValues bound once and the outputs
    in OrtValues preallocated from a first run, so only ``run_with_iobinding``
    is timed.
    """
    import onnxruntime as ort

    feed = random_feed(model_inputs(sess, batch), seed)
    clock = time.perf_counter_ns
    try:
        first = sess.run(None, feed)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedOp(f"onnxruntime failed to run the model: {first_line[:300]}") from None
    if not io_binding:

        def run_plain(n: int) -> list[float]:
            out = [0.0] * n
            for i in range(n):
                t0 = clock()
                sess.run(None, feed)
                out[i] = (clock() - t0) * 1e-6
            return out

        return run_plain

    binding = sess.io_binding()
    keep = []  # the OrtValues must outlive the binding
    for name, arr in feed.items():
        v = ort.OrtValue.ortvalue_from_numpy(arr, "cpu", 0)
        keep.append(v)
        binding.bind_ortvalue_input(name, v)
    for meta, arr in zip(sess.get_outputs(), first, strict=True):
        v = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr), "cpu", 0)
        keep.append(v)
        binding.bind_ortvalue_output(meta.name, v)
    run_bound = sess.run_with_iobinding

    def run(n: int) -> list[float]:
        _ = keep
        out = [0.0] * n
        for i in range(n):
            t0 = clock()
            run_bound(binding)
            out[i] = (clock() - t0) * 1e-6
        return out

    return run


class ORTMobileBackend(ORTCPUBackend):
    """Phone-class emulation on ONNX Runtime: 1-4 intra-op threads, each pinned to its own core.

    With no ``cores`` given, the first ``threads`` cores this process may use
    are chosen; asking for more threads than there are cores is refused (a
    4-thread phone is not emulated on 2 cores). Default: 1 thread, fp32.
    """

    name: ClassVar[str] = "ort-mobile"
    default_settings: ClassVar[dict[str, Any]] = {**ORTCPUBackend.default_settings, "threads": 1}

    def setup(self) -> None:
        s = self.settings
        threads = s["threads"]
        if not isinstance(threads, int) or not 1 <= threads <= 4:
            raise BackendUnavailable(f"ort-mobile emulates 1 to 4 intra-op threads, got threads={threads!r}")
        if s["inter_threads"] != 1 or s["execution_mode"] != "sequential":
            raise BackendUnavailable("ort-mobile runs sequentially with inter_threads=1 (as phone runtimes do)")
        if not s.get("cores"):
            mine = available_cores()
            if threads > len(mine):
                raise BackendUnavailable(
                    f"ort-mobile with threads={threads} needs {threads} cores, but this process may use only "
                    f"{len(mine)} ({', '.join(map(str, mine))}); choose a profile with fewer threads"
                )
            s["cores"] = mine[:threads]
        elif len(s["cores"]) < threads:
            raise BackendUnavailable(f"ort-mobile threads={threads} needs as many cores, got cores={list(s['cores'])}")
        super().setup()
