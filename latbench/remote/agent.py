# ruff: noqa: UP031, B905, RUF005  (the agent runs on old board Pythons too: no f-strings past 3.6, no zip strict)
"""The latbench board agent: copied to a Linux board and started over SSH by the ``ssh`` backend.

It speaks JSON lines on stdin / stdout (one request, one reply) and needs only
the Python standard library, numpy and onnxruntime on the board. It never
imports latbench: the driver keeps the harness (warmup by time, interleaved
rounds, drift sentinel) and asks the agent for *timed calls*; each call is
timed here, on the board, with ``perf_counter_ns`` around
``run_with_iobinding``, exactly as the local ``ort-cpu`` backend does.

Requests (``{"op": ..., ...}``) and replies (``{"ok": true, ...}`` or
``{"ok": false, "error": "one line"}``):

* ``hello``: the board's facts (CPU model, cores, governor, frequency,
  temperature, memory, runtime versions) and the agent's pid;
* ``have`` / ``put``: which models (named by sha256) are cached on the board,
  and upload one (base64) - many per connection;
* ``load``: an ``InferenceSession`` for a cached model with the given thread,
  core and graph settings; returns a handle;
* ``run``: ``n`` timed calls of a handle (milliseconds) and the temperature;
* ``thermal_wait``: wait while the board is above ``pause_c`` until it is
  below ``resume_c`` (at most ``max_s``); returns what happened;
* ``bye``.

One measurement at a time per board: every block of timed calls holds an
exclusive lock file (``flock``) on the board, so two agents (two builds, two
farm nodes reaching one board) never time at the same moment; a second agent
waits for the lock (at most ``lock_wait_s``).
"""

import base64
import hashlib
import json
import os
import platform
import sys
import time

PROTOCOL = 1


def _read(path, default=None):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return default


def cpu_model():
    text = _read("/proc/cpuinfo", "") or ""
    fields = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            fields.setdefault(k.strip(), v.strip())
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        if fields.get(key):
            return fields[key]
    if fields.get("CPU part"):
        return "ARM implementer %s part %s" % (fields.get("CPU implementer", "?"), fields["CPU part"])
    return platform.processor() or platform.machine()


def physical_cores():
    text = _read("/proc/cpuinfo", "") or ""
    pairs = set()
    phys = core = None
    for line in text.splitlines() + [""]:
        if line.startswith("physical id"):
            phys = line.split(":", 1)[1].strip()
        elif line.startswith("core id"):
            core = line.split(":", 1)[1].strip()
        elif not line.strip():
            if core is not None:
                pairs.add((phys, core))
            phys = core = None
    return len(pairs) or os.cpu_count() or 1


def memory_gb():
    for line in (_read("/proc/meminfo", "") or "").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) * 1024 / 2**30, 1)
    return None


def temperature_c(path=None):
    """The hottest thermal zone in degrees C (or the one file ``path`` names), ``None`` when unreadable."""
    paths = [path] if path else []
    if not paths:
        base = "/sys/class/thermal"
        try:
            paths = [os.path.join(base, z, "temp") for z in sorted(os.listdir(base)) if z.startswith("thermal_zone")]
        except OSError:
            paths = []
    temps = []
    for p in paths:
        raw = _read(p)
        try:
            v = float(raw)
        except (TypeError, ValueError):
            continue
        temps.append(v / 1000.0 if v > 1000 else v)
    return round(max(temps), 1) if temps else None


def cpufreq(cpu=0):
    base = "/sys/devices/system/cpu/cpu%d/cpufreq/" % cpu

    def mhz(name):
        v = _read(base + name)
        return round(int(v) / 1000) if v and v.isdigit() else None

    return {
        "governor": _read(base + "scaling_governor"),
        "cpu_freq_mhz": mhz("cpuinfo_max_freq"),
        "cpu_cur_freq_mhz": mhz("scaling_cur_freq"),
    }


def facts(thermal_path=None):
    import numpy
    import onnxruntime

    out = {
        "cpu_model": cpu_model(),
        "arch": platform.machine(),
        "cores_physical": physical_cores(),
        "cores_logical": os.cpu_count() or 1,
        "memory_gb": memory_gb(),
        "os": "%s %s" % (platform.system(), platform.release()),
        "hostname": platform.node(),
        "temperature_c": temperature_c(thermal_path),
        "affinity_available": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    out.update(cpufreq(0))
    versions = {
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "agent_protocol": str(PROTOCOL),
    }
    return {"host": out, "versions": versions, "pid": os.getpid(), "providers": onnxruntime.get_available_providers()}


_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


class Agent:
    def __init__(self, cache_dir, lock_path=None, lock_wait_s=600.0):
        self.cache_dir = cache_dir
        os.makedirs(cache_dir, exist_ok=True)
        self.lock_path = lock_path or os.path.join(os.path.dirname(cache_dir.rstrip("/")) or ".", "board.lock")
        self.lock_wait_s = lock_wait_s
        self.sessions = {}
        self.next_handle = 1
        self.thermal_path = None

    # ------------------------------------------------------------ requests
    def hello(self, req):
        self.thermal_path = req.get("thermal_path") or None
        return facts(self.thermal_path)

    def have(self, req):
        return {"have": [n for n in req["names"] if os.path.exists(self._model(n))]}

    def put(self, req):
        data = base64.b64decode(req["data"])
        name = req["name"]
        if hashlib.sha256(data).hexdigest() != name:
            raise ValueError("upload of %s arrived corrupted (sha256 differs)" % name[:12])
        target = self._model(name)
        tmp = "%s.%d.tmp" % (target, os.getpid())
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
        return {"bytes": len(data)}

    def load(self, req):
        import numpy as np
        import onnxruntime as ort

        cores = req.get("cores")
        if cores and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, [int(c) for c in cores])
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(req.get("threads", 1))
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = {
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[req.get("graph_optimization", "all")]
        spin = "1" if req.get("spinning", True) else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        so.log_severity_level = 3
        sess = ort.InferenceSession(self._model(req["name"]), so, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(int(req.get("seed", 0)))
        binding = sess.io_binding()
        keep = []
        feed = {}
        for inp in sess.get_inputs():
            dtype = _DTYPES.get(inp.type)
            if dtype is None:
                raise ValueError("model input %s has type %s, which the agent cannot feed" % (inp.name, inp.type))
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
            if dtype.startswith("float"):
                feed[inp.name] = rng.standard_normal(shape).astype(dtype)
            else:
                feed[inp.name] = rng.integers(0, 2, size=shape).astype(dtype)
        first = sess.run(None, feed)
        for name, arr in feed.items():
            v = ort.OrtValue.ortvalue_from_numpy(arr, "cpu", 0)
            keep.append(v)
            binding.bind_ortvalue_input(name, v)
        for meta, arr in zip(sess.get_outputs(), first):
            v = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr), "cpu", 0)
            keep.append(v)
            binding.bind_ortvalue_output(meta.name, v)
        handle = self.next_handle
        self.next_handle += 1
        self.sessions[handle] = (sess, binding, keep)
        return {"handle": handle}

    def run(self, req):
        sess, binding, _ = self.sessions[int(req["handle"])]
        n = int(req["n"])
        run_bound = sess.run_with_iobinding
        clock = time.perf_counter_ns
        out = [0.0] * n
        lock = _lock(self.lock_path, self.lock_wait_s)
        if lock is None:
            raise RuntimeError("the board is busy: another latbench agent held its lock for %.0f s" % self.lock_wait_s)
        try:
            for i in range(n):
                t0 = clock()
                run_bound(binding)
                out[i] = (clock() - t0) * 1e-6
        finally:
            lock.close()
        return {"ms": out, "temperature_c": temperature_c(self.thermal_path)}

    def unload(self, req):
        self.sessions.pop(int(req["handle"]), None)
        return {}

    def thermal_wait(self, req):
        pause_c, resume_c = float(req["pause_c"]), float(req["resume_c"])
        max_s, poll_s = float(req.get("max_s", 600)), float(req.get("poll_s", 1.0))
        t0 = time.monotonic()
        before = temperature_c(self.thermal_path)
        if before is None or before < pause_c:
            return {"waited_s": 0.0, "temperature_c": before, "paused": False}
        now = before
        while now is not None and now > resume_c and time.monotonic() - t0 < max_s:
            time.sleep(poll_s)
            now = temperature_c(self.thermal_path)
        return {
            "waited_s": round(time.monotonic() - t0, 3),
            "temperature_before_c": before,
            "temperature_c": now,
            "paused": True,
            "timed_out": now is not None and now > resume_c,
        }

    def _model(self, name):
        if not all(c in "0123456789abcdef" for c in name) or len(name) != 64:
            raise ValueError("bad model name %r" % name)
        return os.path.join(self.cache_dir, name + ".onnx")


def _lock(path, wait_s):
    """Hold an exclusive lock on ``path`` (one latbench measurement per board); ``None`` if it stayed taken."""
    import fcntl

    fh = open(path, "a+")
    t_end = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fh
        except OSError:
            if time.monotonic() > t_end:
                fh.close()
                return None
            time.sleep(0.2)


def main(argv):
    cache = argv[1] if len(argv) > 1 else os.path.expanduser("~/.cache/latbench-agent/models")
    lock_wait_s = float(argv[2]) if len(argv) > 2 else 600.0
    out = sys.stdout
    agent = Agent(cache, lock_wait_s=lock_wait_s)
    out.write(json.dumps({"ok": True, "ready": PROTOCOL}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "bye":
                out.write(json.dumps({"ok": True}) + "\n")
                out.flush()
                break
            known = ("hello", "have", "put", "load", "run", "unload", "thermal_wait")
            fn = getattr(agent, op, None) if op in known else None
            if fn is None:
                raise ValueError("unknown request %r" % op)
            reply = {"ok": True}
            reply.update(fn(req))
        except Exception as exc:  # every failure goes back as one line
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            reply = {"ok": False, "error": "%s: %s" % (type(exc).__name__, msg[:300])}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
