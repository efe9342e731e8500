"""Network latency datasets: whole-network latencies (ms) of many archs of one space on one or more devices.

A dataset file is a CSV plus a JSON sidecar of the same stem::

    arch,<col>[,<col>...][,index]        # one latency column (ms) per device
    {"schema": "latbench.dataset/1", "space": "nb201", "space_params": {...}, "units": "ms",
     "columns": {"<col>": {"device": {"name", "fingerprint"?}, "provenance": {"kind": "measured"|"published", ...}}},
     "extra_columns": ["iqr_ms", ...], "rows": N, "content_sha256": "..."}

``arch`` is the space's arch key (NAS-Bench-201's own arch string for
``nb201``, the compact choices JSON otherwise). Loading checks everything:
sidecar schema, the CSV's hash, known archs, no duplicates, finite positive
milliseconds; any failure is one :class:`DatasetError` line naming the file.
A file with several latency columns (a published benchmark) yields one
:class:`NetworkDataset` per column.

:func:`latbench.dataset_measure.measure_dataset` measures a space's distinct
networks (:func:`distinct_archs`) on a local device into a dataset, resumably.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latbench import paths
from latbench.errors import LatbenchError
from latbench.spaces import Arch, SearchSpace, get_space

SCHEMA = "latbench.dataset/1"
KIND = "datasets"


class DatasetError(LatbenchError):
    """A missing, corrupt or inconsistent network latency dataset."""


# ----------------------------------------------------------------------------- arch keys
def arch_key(space: SearchSpace, arch: Arch) -> str:
    """The text that names ``arch`` in a dataset (the benchmark string where the space has one)."""
    if hasattr(space, "arch_str"):
        return str(space.arch_str(arch))
    arch = space.validate(arch)
    return json.dumps(arch["choices"], sort_keys=True, separators=(",", ":"))


def arch_from_key(space: SearchSpace, key: str) -> Arch:
    """Inverse of :func:`arch_key`; raises :class:`~latbench.errors.ArchError` for an unknown arch."""
    if hasattr(space, "arch_from_str"):
        return space.arch_from_str(key)
    from latbench.errors import ArchError

    try:
        choices = json.loads(key)
    except json.JSONDecodeError:
        raise ArchError(f"not an arch of {space.name}: {key[:80]!r}") from None
    return space.arch(choices)


# ----------------------------------------------------------------------------- the dataset
@dataclass
class NetworkDataset:
    """Whole-network latencies of one device: ``ms[i]`` of arch key ``archs[i]``."""

    space: str
    space_params: dict[str, Any]
    device: dict[str, Any]
    provenance: dict[str, Any]
    archs: list[str]
    ms: np.ndarray
    column: str = "ms"
    path: Path | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.device.get("name") or self.column)

    @property
    def id(self) -> str:
        """``<file stem>:<column>`` (or the device name for an unsaved dataset)."""
        return f"{self.path.stem}:{self.column}" if self.path else self.name

    @property
    def fingerprint(self) -> str:
        """SHA-256 (16 hex) of the rows (arch key and ms), independent of file layout."""
        h = hashlib.sha256()
        for key, v in zip(self.archs, self.ms, strict=True):
            h.update(f"{key}\t{float(v)!r}\n".encode())
        return h.hexdigest()[:16]

    def get_space(self) -> SearchSpace:
        return get_space(self.space, **self.space_params)

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in zip(self.archs, self.ms, strict=True)}

    def __len__(self) -> int:
        return len(self.archs)


# ----------------------------------------------------------------------------- paths
def resolve(path: str | os.PathLike[str]) -> Path:
    """An explicit path, or ``<path>`` over the ``datasets`` search dirs (``$LATBENCH_HOME``, the checkout, the
    copies an installed wheel carries, the user data dir); ``.csv`` optional."""
    p = Path(path)
    for c in [p, p.with_suffix(".csv")] if p.suffix != ".csv" else [p]:
        found = paths.find(KIND, c)
        if found is not None and found.is_file():
            return found
    raise DatasetError(f"dataset not found: {path} (give a CSV path or a name under datasets/)")


def sidecar_of(csv_path: Path) -> Path:
    return csv_path.with_suffix(".json")


# ----------------------------------------------------------------------------- writing
def dataset_csv_text(archs: list[str], columns: dict[str, np.ndarray], extra: dict[str, np.ndarray]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["arch", *columns, *extra])
    for i, key in enumerate(archs):
        w.writerow(
            [key, *(f"{float(c[i]):.6g}" for c in columns.values()), *(f"{float(e[i]):.6g}" for e in extra.values())]
        )
    return buf.getvalue()


def write_dataset(
    csv_path: str | os.PathLike[str],
    space: SearchSpace,
    archs: list[str],
    columns: dict[str, tuple[np.ndarray, dict[str, Any], dict[str, Any]]],
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a dataset file: ``columns`` maps a column to ``(ms, device, provenance)``. CSV first, then sidecar."""
    target = paths.check_writable_target(Path(csv_path))
    extra = extra or {}
    text = dataset_csv_text(archs, {c: v[0] for c, v in columns.items()}, extra)
    side = {
        "schema": SCHEMA,
        "space": space.name,
        "space_params": dict(space.params),
        "units": "ms",
        "columns": {c: {"device": v[1], "provenance": v[2]} for c, v in columns.items()},
        "extra_columns": list(extra),
        "rows": len(archs),
        "content_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    paths.atomic_write_text(target, text)
    paths.atomic_write_json(sidecar_of(target), side)
    return target


# ----------------------------------------------------------------------------- reading
def _read_sidecar(csv_path: Path) -> dict[str, Any]:
    side_path = sidecar_of(csv_path)
    if not side_path.is_file():
        raise DatasetError(f"{csv_path}: no sidecar {side_path.name} (a dataset is a CSV plus its JSON sidecar)")
    try:
        side = json.loads(side_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DatasetError(f"{side_path}: corrupt dataset sidecar (not JSON)") from None
    if not isinstance(side, dict) or side.get("schema") != SCHEMA:
        raise DatasetError(f"{side_path}: not a latbench dataset sidecar (schema must be {SCHEMA})")
    if side.get("units") != "ms":
        raise DatasetError(f"{side_path}: units must be 'ms', got {side.get('units')!r}")
    for k in ("space", "space_params", "columns", "content_sha256"):
        if k not in side:
            raise DatasetError(f"{side_path}: dataset sidecar lacks {k!r}")
    if not isinstance(side["columns"], dict) or not side["columns"]:
        raise DatasetError(f"{side_path}: dataset sidecar names no latency columns")
    return side


def _parse_ms(text: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise DatasetError(f"{where}: latency {text!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise DatasetError(f"{where}: latency {text} ms is not a finite positive number")
    return v


def _rows(
    csv_path: Path, text: str, side: dict[str, Any], space: SearchSpace
) -> tuple[list[str], dict[str, list[float]]]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    cols = list(side["columns"]) + list(side.get("extra_columns") or [])
    if not header or "arch" not in header or any(c not in header for c in cols):
        raise DatasetError(f"{csv_path}: header must have 'arch' and the columns {', '.join(cols)}; got {header}")
    pos = {c: header.index(c) for c in cols}
    arch_pos = header.index("arch")
    index_pos = header.index("index") if "index" in header else None
    archs: list[str] = []
    values: dict[str, list[float]] = {c: [] for c in cols}
    seen: dict[str, int] = {}
    for line_no, row in enumerate(reader, start=2):
        where = f"{csv_path}:{line_no}"
        if len(row) != len(header):
            raise DatasetError(f"{where}: {len(row)} fields, the header has {len(header)}")
        key = row[arch_pos]
        try:
            arch = arch_from_key(space, key)
        except LatbenchError as exc:
            raise DatasetError(f"{where}: unknown arch ({exc})") from None
        if key in seen:
            raise DatasetError(f"{where}: duplicate arch (first on line {seen[key]}): {key[:80]}")
        seen[key] = line_no
        if index_pos is not None and hasattr(space, "index_of") and int(row[index_pos]) != space.index_of(arch):
            raise DatasetError(f"{where}: index {row[index_pos]} is not the benchmark index of {key}")
        archs.append(key)
        for c in cols:
            values[c].append(_parse_ms(row[pos[c]], where) if c in side["columns"] else float(row[pos[c]]))
    if not archs:
        raise DatasetError(f"{csv_path}: dataset has no rows")
    return archs, values


def load_datasets(path: str | os.PathLike[str]) -> list[NetworkDataset]:
    """Every device column of a dataset file, validated (see the module docstring)."""
    csv_path = resolve(path)
    side = _read_sidecar(csv_path)
    data = csv_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != side["content_sha256"]:
        raise DatasetError(
            f"{csv_path}: the CSV does not match its sidecar's hash (edited or torn); restore it or re-measure"
        )
    try:
        space = get_space(side["space"], **side["space_params"])
    except LatbenchError as exc:
        raise DatasetError(f"{csv_path}: {exc}") from None
    archs, values = _rows(csv_path, data.decode("utf-8"), side, space)
    extra = {c: np.asarray(values[c]) for c in side.get("extra_columns") or []}
    out = []
    for col, meta in side["columns"].items():
        out.append(
            NetworkDataset(
                space=space.name,
                space_params=dict(space.params),
                device=dict(meta.get("device") or {"name": col}),
                provenance=dict(meta.get("provenance") or {}),
                archs=list(archs),
                ms=np.asarray(values[col], dtype=np.float64),
                column=col,
                path=csv_path,
                extra=extra,
            )
        )
    return out


def load_dataset(path: str | os.PathLike[str], column: str | None = None) -> NetworkDataset:
    """One device's dataset; ``path`` may be ``FILE:COLUMN`` for a file with several columns."""
    text = str(path)
    if column is None and ":" in text and not Path(text).exists():
        text, column = text.rsplit(":", 1)
    sets = load_datasets(text)
    if column is None:
        if len(sets) > 1:
            raise DatasetError(
                f"{text} holds {len(sets)} devices; name one as FILE:DEVICE ({', '.join(d.column for d in sets)})"
            )
        return sets[0]
    for d in sets:
        if d.column == column or d.name == column:
            return d
    raise DatasetError(f"{text}: no device column {column!r} (columns: {', '.join(d.column for d in sets)})")


# ----------------------------------------------------------------------------- importing published tables
def import_published(
    source: str | os.PathLike[str],
    space_name: str,
    out_dir: str | os.PathLike[str],
    *,
    citation: str = "",
    force: bool = False,
) -> list[Path]:
    """Split a published table (``[index,]arch,<device>,...``, ms) into one dataset per device column.

    Every value is checked before anything is written; an existing dataset is
    only replaced with ``force``.
    """
    src = Path(source)
    if not src.is_file():
        raise DatasetError(f"file to import not found: {src}")
    raw = src.read_bytes()
    try:
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8"))))
    except UnicodeDecodeError:
        raise DatasetError(f"{src}: not a text CSV") from None
    if not rows or "arch" not in rows[0]:
        raise DatasetError(f"{src}: needs a header with an 'arch' column and one column per device (ms)")
    header = rows[0]
    devices = [c for c in header if c not in ("arch", "index")]
    if not devices:
        raise DatasetError(f"{src}: no device columns besides arch/index")
    for d in devices:
        paths.check_name(d, "device column")
    space = get_space(space_name)
    side = {
        "schema": SCHEMA,
        "space": space.name,
        "space_params": dict(space.params),
        "units": "ms",
        "columns": {d: {} for d in devices},
        "extra_columns": [],
        "content_sha256": "",
    }
    archs, values = _rows(src, raw.decode("utf-8"), side, space)  # validates every row
    out = paths.ensure_writable_dir(out_dir)
    targets = [out / f"{d}.csv" for d in devices]
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        raise DatasetError(f"{existing[0]} exists; pass --force to replace the imported datasets")
    digest = hashlib.sha256(raw).hexdigest()
    for d, target in zip(devices, targets, strict=True):
        prov = {"kind": "published", "source": citation or src.name, "file": src.name, "file_sha256": digest}
        write_dataset(target, space, archs, {"ms": (np.asarray(values[d]), {"name": d}, prov)})
    return targets


# ----------------------------------------------------------------------------- measuring on a local device
def distinct_archs(
    space: SearchSpace, *, all_archs: bool = False, sample: int | None = None, seed: int = 0
) -> list[Arch]:
    """The networks a dataset measures: every distinct one (``all_archs``) or ``sample`` of them, seeded.

    ``nb201``: one representative per isomorphism class (4,930). Other spaces:
    ``--all`` only where the space has at most 100,000 archs; ``--sample``
    draws distinct archs uniformly.
    """
    if all_archs == (sample is not None):
        raise DatasetError("give exactly one of --all or --sample N")
    if sample is not None and sample < 1:
        raise DatasetError(f"--sample must be >= 1, got {sample}")
    rng = np.random.default_rng(seed)
    if space.name == "nb201":
        from latbench.spaces.nb201 import representatives

        reps = representatives()
        chosen = (
            reps
            if all_archs
            else [reps[i] for i in rng.choice(len(reps), size=min(sample or 0, len(reps)), replace=False)]
        )
        return [space.arch_from_index(i) for i in chosen]  # type: ignore[attr-defined]
    total = int(np.prod(space.cardinalities))
    if all_archs:
        if total > 100_000:
            raise DatasetError(f"{space.name} has {total:.3g} archs; measure a --sample N of them")
        from itertools import product

        return [space.from_indices(ix) for ix in product(*(range(len(d)) for d in space.decisions))]
    out: dict[str, Arch] = {}
    while len(out) < min(sample or 0, total):
        a = space.sample(rng)
        out.setdefault(arch_key(space, a), a)
    return list(out.values())
