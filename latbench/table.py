"""`LatencyTable`: one row per op key, with the fingerprint that produced it.

File format (JSON, ``schema: "latbench.table/1"``)::

    {"schema": ..., "name": ..., "space": ..., "space_params": {...},
     "device": {"name", "backend", "settings"}, "fingerprint": {..., "id"},
     "timing": {...}, "source": {...}, "created": ..., "updated": ...,
     "rows": {KEY: {"spec": {...}, "median_ms", "iqr_ms", "p90_ms", "mean_ms",
                    "n", "rel_iqr", "noisy", "timestamp", "samples_ms"?, ...}}}

Tables are saved atomically (write, fsync, rename) after every chunk of rows,
so the file is valid JSON at every moment and an interrupted build resumes.
Saving takes a lock file beside the table (``<table>.lock``) and merges with
what is on disk, so two processes building into one table keep every row of
both. Every table is validated when it is read: a bad number, a row whose key
is not its spec's, a duplicate key, is refused in one line naming the file
and the row.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latbench import paths
from latbench.device import now_iso
from latbench.errors import ArchError, LatbenchError, TableError
from latbench.measure.harness import TimingConfig
from latbench.measure.measurement import Measurement
from latbench.ops import OpSpec, json_error_text, strict_json_loads

SCHEMA = "latbench.table/1"
ROW_FIELDS = ("median_ms", "iqr_ms", "p90_ms", "n")
#: seconds a save waits for another process's lock on the same table before giving up
LOCK_TIMEOUT_S = 120.0


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_row(where: Any, key: Any, row: Any) -> None:
    """Refuse (one line naming ``where`` and the row) a row that is not a valid measurement of its key."""
    if not isinstance(key, str):
        raise TableError(f"{where}: row key {key!r} is not text")
    if not isinstance(row, dict):
        raise TableError(f"{where}: row {key} is not an object")
    bad = [f for f in ROW_FIELDS if f not in row] + ([] if "spec" in row else ["spec"])
    if bad:
        raise TableError(f"{where}: row {key} lacks {', '.join(bad)}")
    if not isinstance(row["spec"], dict):
        raise TableError(f"{where}: row {key} has a spec that is not an object")
    try:
        spec = OpSpec.from_dict(row["spec"])
    except ArchError as exc:
        raise TableError(f"{where}: row {key} has a bad spec ({exc})") from None
    if spec.key != key:
        raise TableError(f"{where}: row {key} holds the spec of another op ({spec.key}); the file was edited")
    med = row["median_ms"]
    if not _is_number(med) or med <= 0:
        raise TableError(f"{where}: row {key} has an invalid median {med!r} (must be a finite number > 0 ms)")
    for f in ("iqr_ms", "p90_ms", "mean_ms", "std_ms", "raw_median_ms"):
        required = f in ROW_FIELDS
        if f in row and (required or row[f] is not None) and (not _is_number(row[f]) or row[f] < 0):
            raise TableError(f"{where}: row {key} has an invalid {f} {row[f]!r} (must be a finite number >= 0)")
    n = row["n"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise TableError(f"{where}: row {key} has an invalid sample count n={n!r}")
    for f in ("samples_ms", "raw_ms"):
        values = row.get(f)
        if values is not None and (not isinstance(values, list) or not all(_is_number(x) and x >= 0 for x in values)):
            raise TableError(f"{where}: row {key} has invalid {f} (a list of finite numbers >= 0 ms)")
    if "noisy" in row and not isinstance(row["noisy"], bool):
        raise TableError(f"{where}: row {key} has a noisy flag that is not true/false")


def _row_rank(row: dict[str, Any]) -> tuple[Any, ...]:
    """Order of preference between two rows of one key (lower is kept): not noisy, smaller relative IQR,
    more samples, then earlier timestamp and smaller median, so every process keeps the same row."""
    med = float(row["median_ms"])
    rel = row.get("rel_iqr")
    if not _is_number(rel):
        rel = float(row.get("iqr_ms", 0.0)) / med
    return (bool(row.get("noisy")), float(rel), -int(row.get("n", 0)), str(row.get("timestamp", "")), med)


def merge_rows(ours: dict[str, dict[str, Any]], theirs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every key of both; for a key in both the less noisy row (see :func:`_row_rank`), the same in any order."""
    out = dict(theirs)
    for key, row in ours.items():
        if key not in out or _row_rank(row) < _row_rank(out[key]):
            out[key] = row
    return out


@dataclass
class LatencyTable:
    """Per-op latencies (milliseconds) measured on one device."""

    fingerprint: dict[str, Any]
    device: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    space: str | None = None
    space_params: dict[str, Any] | None = None
    timing: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    created: str = field(default_factory=now_iso)
    updated: str = ""
    path: Path | None = None
    #: (path, inode, size, mtime) of the file this object last wrote: an unchanged file need not be merged again
    _written: tuple[Any, ...] | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ identity
    @property
    def fingerprint_id(self) -> str:
        return str(self.fingerprint.get("id", ""))

    @property
    def sentinel_ref_ms(self) -> float | None:
        v = self.timing.get("sentinel_ref_ms")
        return float(v) if v else None

    def content_hash(self) -> str:
        """Hash of the rows' keys and medians: identifies the data a predictor was trained on."""
        h = hashlib.sha256()
        for key in sorted(self.rows):
            h.update(f"{key}={self.rows[key]['median_ms']:.6f};".encode())
        return h.hexdigest()[:16]

    # --------------------------------------------------------------------- rows
    def __contains__(self, key: object) -> bool:
        k = key.key if isinstance(key, OpSpec) else key
        return k in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def latency(self, op: OpSpec | str) -> float:
        """Median latency of an op, milliseconds."""
        key = op.key if isinstance(op, OpSpec) else op
        try:
            return float(self.rows[key]["median_ms"])
        except KeyError:
            raise TableError(f"op {key} is not in table {self.path or self.name}") from None

    def specs(self) -> list[OpSpec]:
        return [OpSpec.from_dict(r["spec"]) for r in self.rows.values()]

    def missing(self, ops: Iterable[OpSpec]) -> list[OpSpec]:
        seen: set[str] = set()
        out = []
        for op in ops:
            if op.key not in self.rows and op.key not in seen and op.type != "zero":
                seen.add(op.key)
                out.append(op)
        return out

    def add(self, spec: OpSpec, m: Measurement | dict[str, Any], *, keep_samples: bool = True) -> None:
        if isinstance(m, Measurement):
            row = {"spec": spec.to_dict(), **m.summary(), "timestamp": now_iso()}
            if keep_samples:
                row["samples_ms"] = [round(x, 5) for x in m.samples_ms]
                if m.raw_ms is not None:
                    row["raw_ms"] = [round(x, 5) for x in m.raw_ms]
        else:
            row = {"spec": spec.to_dict(), **m}
            row.setdefault("timestamp", now_iso())
        self.rows[spec.key] = row

    def lut_sum(self, ops: Iterable[OpSpec]) -> float:
        """Sum of row medians over ``ops`` (``zero`` ops count 0); lists every missing op."""
        ops = list(ops)
        missing = self.missing(ops)
        if missing:
            names = ", ".join(o.key for o in missing[:4])
            more = f" (+{len(missing) - 4} more)" if len(missing) > 4 else ""
            raise TableError(f"table {self.path or self.name} lacks {len(missing)} op(s): {names}{more}")
        return float(sum(self.rows[o.key]["median_ms"] for o in ops if o.type != "zero"))

    # --------------------------------------------------------------- merging
    def check_same_space(self, space: str | None, space_params: dict[str, Any] | None, what: str = "rows") -> None:
        """Refuse rows of another space or other space parameters (resolution, width...).

        What one side does not record (a table of loose ops has no space, an older table no parameters) is not
        compared."""
        other_space = space is not None and self.space is not None and space != self.space
        other_params = (
            space_params is not None
            and self.space_params is not None
            and _norm(space_params) != _norm(self.space_params)
        )
        if other_space or other_params:
            raise TableError(
                f"refusing {what} of space {space} {space_params or {}} in table {self.path or self.name} of space "
                f"{self.space} {self.space_params or {}}; write them to another --out"
            )

    def check_same_device(self, fingerprint: dict[str, Any], what: str = "rows") -> None:
        other = str(fingerprint.get("id", ""))
        if other != self.fingerprint_id:
            raise TableError(
                f"refusing {what} from device {other} in table of device {self.fingerprint_id} "
                f"({self.path or self.name}); merge on purpose with `latbench table merge --force`"
            )

    def merge(self, other: LatencyTable, *, force: bool = False) -> list[str]:
        """Add the rows of ``other`` that this table lacks; returns the keys added.

        Refuses another device's rows, or rows of another space or space
        parameters (a Once-for-All table at 160 px shares head-op keys with the
        224 px one, at other values: a merge would keep one of them silently),
        unless ``force`` (rows from another device are then marked with their origin).
        """
        if not force:
            self.check_same_device(other.fingerprint, "merge")
            self.check_same_space(other.space, other.space_params, "merge")
        added = []
        for key, row in other.rows.items():
            if key not in self.rows:
                r = dict(row)
                if other.fingerprint_id != self.fingerprint_id:
                    r["merged_from"] = other.fingerprint_id
                self.rows[key] = r
                added.append(key)
        return added

    # -------------------------------------------------------------------- I/O
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "name": self.name,
            "space": self.space,
            "space_params": self.space_params,
            "device": self.device,
            "fingerprint": self.fingerprint,
            "timing": self.timing,
            "source": self.source,
            "created": self.created,
            "updated": self.updated or self.created,
            "rows": dict(sorted(self.rows.items())),
        }

    def save(self, path: str | Path | None = None, *, overwrite: bool = False) -> Path:
        """Write the table atomically, merged with the table already at ``path``.

        Under a lock file beside the table (``<path>.lock``), the file on disk
        is read again and its rows merged with these (every key of both; for a
        key in both, the less noisy row), so two processes building one table
        never lose each other's rows. A file of another device or space is
        refused, never replaced; ``overwrite=True`` replaces it (``--force``).
        The merged rows are kept in this object too.
        """
        from filelock import FileLock, Timeout

        target = Path(path) if path else self.path
        if target is None:
            raise TableError("table has no path to save to")
        paths.check_writable_target(target)
        lock = FileLock(f"{target}.lock", timeout=LOCK_TIMEOUT_S)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with lock:
                if target.exists() and not overwrite and _stamp(target) != self._written:
                    self._merge_from_disk(target)  # (skipped when the file is still the one this object wrote)
                self.updated = now_iso()
                paths.atomic_write_json(target, self.to_dict())
                self._written = _stamp(target)
        except Timeout:
            raise TableError(
                f"{target}: another latbench process has held {target}.lock for {LOCK_TIMEOUT_S:.0f} s; "
                "wait for it to finish (or remove the lock file if no latbench is running)"
            ) from None
        except OSError as exc:
            raise TableError(f"cannot write table {target}: {exc.strerror or exc}; give a writable --out") from None
        self.path = target
        return target

    def _merge_from_disk(self, target: Path) -> None:
        disk = LatencyTable.load(target)
        if disk.fingerprint_id != self.fingerprint_id:
            raise TableError(
                f"{target} holds a table of device {disk.fingerprint_id}, not {self.fingerprint_id}; "
                "refusing to replace it: write to another --out"
            )
        disk.check_same_space(self.space, self.space_params, "to save a table")
        self.rows = merge_rows(self.rows, disk.rows)
        if self.sentinel_ref_ms is None and disk.sentinel_ref_ms is not None:
            self.timing["sentinel_ref_ms"] = disk.sentinel_ref_ms

    @classmethod
    def from_dict(cls, d: Any, path: Path | None = None) -> LatencyTable:
        """A table from its JSON document, every field and row validated (one line naming ``path`` and the row)."""
        where = path or "table"
        if not isinstance(d, dict) or "schema" not in d:
            raise TableError(f"{where}: not a latbench table (no schema field)")
        if d["schema"] != SCHEMA:
            raise TableError(f"{where}: table schema {d['schema']!r} is not supported (this latbench reads {SCHEMA})")
        for k in ("fingerprint", "rows"):
            if not isinstance(d.get(k), dict):
                raise TableError(f"{where}: table has no {k!r} object")
        if not isinstance(d["fingerprint"].get("id"), str) or not d["fingerprint"]["id"]:
            raise TableError(f"{where}: table fingerprint has no id")
        for k in ("device", "space_params", "timing", "source"):
            if d.get(k) is not None and not isinstance(d[k], dict):
                raise TableError(f"{where}: table field {k!r} is not an object")
        for k in ("space", "name", "created", "updated"):
            if d.get(k) is not None and not isinstance(d[k], str):
                raise TableError(f"{where}: table field {k!r} is not text")
        ref = (d.get("timing") or {}).get("sentinel_ref_ms")
        if ref is not None and (not _is_number(ref) or ref <= 0):
            raise TableError(f"{where}: table timing.sentinel_ref_ms {ref!r} is not a finite number > 0")
        for key, row in d["rows"].items():
            check_row(where, key, row)
        return cls(
            fingerprint=d["fingerprint"],
            device=d.get("device") or {},
            rows=d["rows"],
            space=d.get("space"),
            space_params=d.get("space_params"),
            timing=d.get("timing") or {},
            source=d.get("source") or {},
            name=d.get("name") or "",
            created=d.get("created") or "",
            updated=d.get("updated") or "",
            path=path,
        )

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """Load a table by path or by ``<device>/<space>`` name under the ``tables/`` search dirs."""
        p = Path(path)
        found = paths.find("tables", p) or paths.find("tables", p.with_suffix(".json"))
        if found is None:
            raise TableError(f"table not found: {path}")
        if not found.is_file():
            raise TableError(f"{found} is not a table file")
        try:
            data = strict_json_loads(found.read_bytes())
        except ValueError as exc:
            raise TableError(f"{found}: corrupt table file ({json_error_text(exc)})") from None
        except OSError as exc:
            raise TableError(f"cannot read table {found}: {exc.strerror or exc}") from None
        return cls.from_dict(data, found)

    def to_csv(self) -> str:
        buf = io.StringIO()
        spec_fields = list(OpSpec.__dataclass_fields__)
        stats = ["median_ms", "iqr_ms", "p90_ms", "mean_ms", "n", "rel_iqr", "noisy", "timestamp"]
        w = csv.writer(buf)
        w.writerow(["key", *spec_fields, *stats])
        for key in sorted(self.rows):
            row = self.rows[key]
            w.writerow([key, *[row["spec"].get(f) for f in spec_fields], *[row.get(s, "") for s in stats]])
        return buf.getvalue()

    def summary(self) -> dict[str, Any]:
        meds = [r["median_ms"] for r in self.rows.values()]
        return {
            "path": str(self.path) if self.path else None,
            "name": self.name,
            "device": self.device.get("name"),
            "fingerprint": self.fingerprint_id,
            "space": self.space,
            "rows": len(self.rows),
            "noisy_rows": sum(bool(r.get("noisy")) for r in self.rows.values()),
            "total_ms": round(float(sum(meds)), 4) if meds else 0.0,
            "min_ms": round(float(min(meds)), 4) if meds else None,
            "max_ms": round(float(max(meds)), 4) if meds else None,
            "source": self.source or None,
        }


def _stamp(path: Path) -> tuple[Any, ...]:
    """Identity of the file at ``path`` now (every atomic write makes a new inode)."""
    st = path.stat()
    return (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


def _norm(params: dict[str, Any] | None) -> str:
    """Space parameters compared as JSON (``224`` and ``224.0`` alike, key order ignored)."""
    clean = {
        k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
        for k, v in (params or {}).items()
    }
    return json.dumps(clean, sort_keys=True, default=str)


# ------------------------------------------------------------------------- building
def default_table_path(device_name: str, space_name: str, resolution: int | None = None) -> Path:
    suffix = f"-{resolution}" if resolution else ""
    return paths.write_dir("tables") / device_name / f"{space_name}{suffix}.json"


def build_table(
    backend: Any,
    ops: list[OpSpec],
    path: str | Path,
    *,
    device: dict[str, Any] | None = None,
    space: str | None = None,
    space_params: dict[str, Any] | None = None,
    resume: bool = False,
    config: TimingConfig | None = None,
    sentinel_ref_ms: float | None = None,
    chunk_size: int = 10,
    progress: Callable[[int, int], None] | None = None,
    measure_stream: Callable[
        [dict[str, OpSpec], TimingConfig, float | None], Iterable[tuple[str, Measurement, dict[str, Any]]]
    ]
    | None = None,
) -> tuple[LatencyTable, list[str]]:
    """Measure every op of ``ops`` missing from the table at ``path``; returns (table, keys measured now).

    Locally, rows are timed in interleaved chunks of ``chunk_size`` (drift
    handling) and the table is saved atomically after each chunk. An existing
    file is only extended with ``resume=True``, and only when it was made on the
    same device.

    ``measure_stream`` replaces local timing (the Ray farm uses it): it gets every
    missing op at once and yields ``(key, measurement, info)`` as each op finishes,
    in any order. A key already in the table is never written twice,
    ``info["row_fields"]`` is stored in the row, ``info["sentinel_ref_ms"]`` is
    recorded as the table's reference, and the table is saved after every row
    whose ``info`` does not say ``more_in_batch``.
    """
    path = Path(path)
    # the destination first: a read-only folder is one line now, not a crash after the measuring
    paths.check_writable_target(path)
    paths.ensure_writable_dir(path.parent)
    config = config or backend.timing
    fp = backend.fingerprint().to_dict()
    unsupported = [o for o in ops if o.type != "zero" and not backend.supports(o)]
    if unsupported:
        why = backend.why_unsupported(unsupported[0])
        raise LatbenchError(
            f"backend {backend.name!r} cannot run {len(unsupported)} op(s), e.g. {unsupported[0].key}: {why}"
        )
    if path.exists():
        if not resume:
            raise TableError(f"{path} exists; pass --resume to measure only its missing rows, or choose another --out")
        table = LatencyTable.load(path)
        table.check_same_device(fp, "new rows")
        table.check_same_space(space, space_params, "new rows")
        if sentinel_ref_ms is None:
            sentinel_ref_ms = table.sentinel_ref_ms
    else:
        table = LatencyTable(
            fingerprint=fp,
            device=device or {"name": backend.name, "backend": backend.name, "settings": backend.settings},
            space=space,
            space_params=space_params,
            timing=config.to_dict(),
            name=f"{(device or {}).get('name', backend.name)}/{space or 'ops'}",
        )
    todo = table.missing(ops)
    done_before = len([o for o in {o.key: o for o in ops if o.type != "zero"}.values() if o.key in table.rows])
    total = done_before + len(todo)
    measured: list[str] = []
    seen: set[str] = set()
    if progress:
        progress(done_before, total)
    if not todo:
        if not path.exists():
            table.save(path)
        return table, measured

    def local_stream(
        chunk_ops: dict[str, OpSpec], cfg: TimingConfig, ref: float | None
    ) -> Iterator[tuple[str, Measurement, dict[str, Any]]]:
        items = list(chunk_ops.values())
        for start in range(0, len(items), chunk_size):
            chunk = {o.key: o for o in items[start : start + chunk_size]}
            results, info = backend.measure_many(chunk, cfg.with_(seed=cfg.seed + start), sentinel_ref_ms=ref)
            ref = ref or info.get("sentinel_ref_ms")
            keys = list(results)
            for i, key in enumerate(keys):
                yield key, results[key], {**info, "more_in_batch": i < len(keys) - 1}

    by_key = {o.key: o for o in todo}
    stream = (measure_stream or local_stream)(dict(by_key), config, sentinel_ref_ms)
    for key, m, info in stream:
        if key not in by_key or key in seen:
            continue  # never an op twice, never one that was not asked for
        seen.add(key)
        if sentinel_ref_ms is None and info.get("sentinel_ref_ms"):
            sentinel_ref_ms = float(info["sentinel_ref_ms"])
            table.timing["sentinel_ref_ms"] = sentinel_ref_ms
        table.add(by_key[key], m)
        table.rows[key].update(info.get("row_fields", {}))
        measured.append(key)
        if not info.get("more_in_batch"):
            table.save(path)
            if progress:
                progress(done_before + len(measured), total)
    return table, measured


# ------------------------------------------------------------------ published YAML LUTs
_YAML_KEY = re.compile(
    r"^(?P<kind>[A-Za-z0-9_]+)-input:(?P<hi>\d+)x(?P<wi>\d+)x(?P<ci>\d+)-output:(?:(?P<ho>\d+)x(?P<wo>\d+)x)?(?P<co>\d+)"
    r"(?:-expand:(?P<e>\d+))?(?:-kernel:(?P<k>\d+))?(?:-stride:(?P<s>\d+))?(?:-idskip:(?P<skip>\d))?"
    r"(?:-se:(?P<se>\d))?(?:-hs:(?P<hs>\d))?$"
)

PUBLISHED_SOURCES = {
    "proxyless": {
        "device": "pixel1",
        "description": "Google Pixel 1, TFLite, 1 thread (ProxylessNAS mobile LUT)",
        "paper": "Cai, Zhu, Han. ProxylessNAS: Direct Neural Architecture Search on Target Task and Hardware. "
        "ICLR 2019",
        "origin": "han-cai/files@a7c9bcd525e17404968bc55aa43772bf7e51909e:proxylessnas/mobile_trim.yaml",
        "space": "proxyless-mobile",
        "space_params": {"resolution": 224, "width": 1.0, "num_classes": 1000},
    },
    "ofa": {
        "device": "note10",
        "description": "Samsung Note10 (Once-for-All MobileNetV3 w1.2 LUT at 224)",
        "paper": "Cai, Gan, Wang, Zhang, Han. Once-for-All: Train One Network and Specialize it for Efficient "
        "Deployment. ICLR 2020",
        "origin": "han-cai/files@a7c9bcd525e17404968bc55aa43772bf7e51909e:ofa/note10/224_lookup_table.yaml",
        "space": "ofa-mbv3",
        "space_params": {"resolution": 224, "width": 1.2, "num_classes": 1000},
    },
}


def published_format_of(keys: Iterable[str]) -> str | None:
    """The format whose key grammar ``keys`` use: ``ofa`` (MBConv keys carry ``-se:`` / ``-hs:``, and
    ``AvgPool2D`` / ``Conv_2`` ops), ``proxyless`` (MBConv keys without them), or ``None`` when they say neither."""
    votes = set()
    for key in keys:
        m = _YAML_KEY.match(key)
        if not m:
            continue
        kind = m.group("kind")
        if kind == "expanded_conv":
            votes.add("ofa" if m.group("se") is not None or m.group("hs") is not None else "proxyless")
        elif kind in ("AvgPool2D", "Conv_2"):
            votes.add("ofa")
    if len(votes) > 1:
        return "mixed"
    return votes.pop() if votes else None


def published_key_to_spec(key: str, fmt: str) -> OpSpec:
    """Map one key of a published ProxylessNAS / OFA YAML LUT to the latbench op it times."""
    m = _YAML_KEY.match(key)
    if not m:
        raise TableError(f"unrecognised {fmt} LUT key: {key!r}")
    g = m.groupdict()
    kind, hw, cin, cout = g["kind"], int(g["hi"]), int(g["ci"]), int(g["co"])
    if fmt == "proxyless":
        act_default = "relu6"
        hs = False
    else:
        act_default = "hswish"
        hs = g["hs"] == "1"
    if kind == "Conv":
        return OpSpec("conv", hw, cin, cout, kernel=3, stride=2, act=act_default)
    if kind in ("Conv_1", "Conv_2"):
        return OpSpec("conv", hw, cin, cout, kernel=1, act=act_default)
    if kind == "AvgPool2D":
        return OpSpec("gap", hw, cin, cout, act="none")
    if kind == "Logits":
        return OpSpec("classifier", hw, cin, cout, act="none")
    if kind == "expanded_conv":
        e = int(g["e"])
        expand = e if fmt == "proxyless" else e / cin
        act = "relu6" if fmt == "proxyless" else ("hswish" if hs else "relu")
        spec = OpSpec(
            "mbconv",
            hw,
            cin,
            cout,
            kernel=int(g["k"]),
            stride=int(g["s"]),
            expand=expand,
            act=act,
            se=g["se"] == "1",
        )
        if fmt == "ofa" and spec.mid != e:
            raise TableError(f"OFA key {key!r}: middle width {e} is not make_divisible({cin} * {expand:g})")
        if int(g["skip"] or 0) != int(spec.residual):
            raise TableError(f"{fmt} key {key!r}: idskip={g['skip']} disagrees with stride/channels")
        return spec
    raise TableError(f"unrecognised {fmt} LUT op kind {kind!r} in key {key!r}")


def published_resolution(keys: Iterable[str]) -> int | None:
    """The input resolution a published LUT was made at: the input size of its stem conv (``Conv-input:RxRx3``)."""
    found = set()
    for key in keys:
        m = _YAML_KEY.match(key)
        if m and m.group("kind") == "Conv" and m.group("ci") == "3":
            found.add(int(m.group("hi")))
    if len(found) > 1:
        raise TableError(f"LUT has stem convs at several resolutions {sorted(found)}; import one table per resolution")
    return found.pop() if found else None


def import_published(yaml_path: str | Path, fmt: str, resolution: int | None = None) -> LatencyTable:
    """A :class:`LatencyTable` from a published ProxylessNAS (``proxyless``) or OFA (``ofa``) YAML LUT.

    Only the mean (and the variance / std) is published: rows store it as the
    median with ``n`` = the published sample count and ``imported: true``.
    The table records the resolution the LUT was made at (Once-for-All
    publishes one Note10 table per resolution, 160-224, whose 1x1 head ops
    share keys with different values): read from the stem conv's key, or
    ``resolution`` when the file has no stem conv; a ``resolution`` that
    disagrees with the file is refused. Tables of two resolutions are two
    tables (``space_params.resolution`` differs), never merged.
    """
    import yaml

    if fmt not in PUBLISHED_SOURCES:
        raise TableError(f"unknown LUT format {fmt!r}; known: {', '.join(PUBLISHED_SOURCES)}")
    p = Path(yaml_path)
    if not p.exists():
        raise TableError(f"LUT file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise TableError(f"{p}: not a YAML LUT (not UTF-8 text)") from None
    except RecursionError:
        raise TableError(f"{p}: not a YAML LUT (nested too deep)") from None
    except yaml.YAMLError as exc:
        raise TableError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not raw:
        raise TableError(f"{p}: expected a mapping of LUT keys")
    keys = [str(k) for k in raw]
    found_fmt = published_format_of(keys)
    if found_fmt == "mixed":
        raise TableError(f"{p}: mixes ProxylessNAS and Once-for-All LUT keys; import one table at a time")
    if found_fmt is not None and found_fmt != fmt:
        raise TableError(
            f"{p}: its keys are {found_fmt} LUT keys, not {fmt} (--format {found_fmt}); refusing to import it "
            f"as the {PUBLISHED_SOURCES[fmt]['device']} table"
        )
    src = PUBLISHED_SOURCES[fmt]
    found_res = published_resolution(keys)
    if resolution is not None and found_res is not None and resolution != found_res:
        raise TableError(f"{p}: its stem conv is at resolution {found_res}, not --resolution {resolution}")
    default_res = int(src["space_params"]["resolution"])
    res = found_res or resolution or default_res
    space_params = {**src["space_params"], "resolution": res}
    sha = hashlib.sha256(p.read_bytes()).hexdigest()
    # the recorded origin is the file latbench ships; another resolution's file is named by its own name and hash
    origin = src["origin"] if res == default_res else f"{p.name} (resolution {res})"
    description = src["description"].replace(f"at {default_res}", f"at {res}")
    fingerprint = {
        "id": f"published-{src['device']}-{fmt}",
        "backend": "published",
        "settings": {"format": fmt},
        "host": {"device": src["description"]},
        "versions": {},
    }
    table = LatencyTable(
        fingerprint=fingerprint,
        device={"name": src["device"], "backend": "published", "settings": {}},
        space=src["space"],
        space_params=space_params,
        source={
            "format": fmt,
            "file": p.name,
            "sha256": sha,
            "origin": origin,
            "paper": src["paper"],
            "description": description,
            "resolution": res,
            "note": "published means stored as median_ms; iqr/p90 are not published (0 / mean)",
        },
        name=f"{src['device']}/{src['space']}" + ("" if res == default_res else f"-{res}"),
    )
    for key, stats in raw.items():
        if not isinstance(stats, dict) or "mean" not in stats:
            raise TableError(f"{p}: entry {key!r} has no mean")
        spec = published_key_to_spec(str(key), fmt)
        mean, std, count = _published_stats(p, str(key), stats)
        table.add(
            spec,
            {
                "median_ms": mean,
                "iqr_ms": round(1.349 * std, 6),
                "p90_ms": round(mean + 1.2816 * std, 6),
                "mean_ms": mean,
                "std_ms": round(std, 6),
                "n": count,
                "noisy": False,
                "imported": True,
                "published_key": str(key),
                "timestamp": table.created,
            },
        )
    if len(table.rows) != len(raw):
        raise TableError(f"{p}: {len(raw)} keys mapped to only {len(table.rows)} distinct ops")
    for key, row in table.rows.items():
        check_row(p, key, row)
    return table


def _published_stats(p: Path, key: str, stats: dict[str, Any]) -> tuple[float, float, int]:
    """(mean, std, count) of one published entry; refuses NaN, infinite, zero or negative times."""

    def number(name: str, default: float | None = None) -> float:
        v = stats.get(name, default)
        if not _is_number(v):
            raise TableError(f"{p}: entry {key!r} has an invalid {name} {v!r}")
        return float(v)

    mean = number("mean")
    if mean <= 0:
        raise TableError(f"{p}: entry {key!r} has a latency of {mean!r} ms (must be > 0)")
    std = number("std") if "std" in stats else math.sqrt(max(number("var", 0.0), 0.0))
    if std < 0 or number("var", 0.0) < 0:
        raise TableError(f"{p}: entry {key!r} has a negative spread")
    count = stats.get("count", 0)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise TableError(f"{p}: entry {key!r} has an invalid count {count!r}")
    return mean, std, count
