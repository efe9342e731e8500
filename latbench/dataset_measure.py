"""Measuring a network latency dataset on a local device: resumable, atomic, under a file lock.

Rows are appended after every chunk of networks (the whole CSV and its
sidecar rewritten atomically); ``resume`` measures only what the file lacks.
It sits above :mod:`latbench.dataset` and uses the service layer (devices,
whole-network timing, progress).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from latbench import paths
from latbench.dataset import DatasetError, arch_key, load_dataset, write_dataset
from latbench.spaces import Arch, SearchSpace


def _existing_rows(
    target: Path, space: SearchSpace, fp_id: str
) -> tuple[list[str], list[float], list[float], float | None]:
    ds = load_dataset(target)
    if ds.space != space.name or ds.space_params != dict(space.params):
        raise DatasetError(f"{target} is a dataset of {ds.space} {ds.space_params}, not {space.name} {space.params}")
    have = (ds.device.get("fingerprint") or {}).get("id")
    if have != fp_id:
        raise DatasetError(f"{target} was measured on device {have}, this device is {fp_id}; give another --out")
    iqr = ds.extra.get("iqr_ms", np.zeros(len(ds)))
    ref = ds.provenance.get("sentinel_ref_ms")
    ref = float(ref) if isinstance(ref, (int, float)) and np.isfinite(ref) and ref > 0 else None
    return list(ds.archs), [float(v) for v in ds.ms], [float(v) for v in iqr], ref


def measure_dataset(
    device: str,
    space: SearchSpace,
    out: str | os.PathLike[str],
    archs: list[Arch],
    *,
    resume: bool = False,
    force: bool = False,
    chunk: int = 64,
    config: Any = None,
    selection: str = "",
    sentinel_ref_ms: float | None = None,
) -> Path:
    """Measure ``archs`` end to end on ``device`` into the dataset ``out``; resumable, written after every chunk.

    ``sentinel_ref_ms`` puts the networks on the scale of another dataset
    (its ``sentinel_ref_ms``, e.g. for a test-retest in a second file).

    Refuses before measuring anything: an existing ``out`` without ``resume``
    / ``force``, a dataset of another space or device, a folder that cannot be
    written, a second writer (file lock).
    """
    from filelock import FileLock, Timeout

    from latbench import __version__, service
    from latbench.fingerprint import now_iso
    from latbench.progress import track

    target = paths.check_writable_target(Path(out))
    if target.suffix != ".csv":
        raise DatasetError(f"dataset file must end in .csv, got {target}")
    paths.ensure_writable_dir(target.parent)
    if target.exists() and not (resume or force):
        raise DatasetError(f"{target} exists; pass --resume to measure what is missing or --force to start again")
    profile, backend = service.open_device(device)
    fp = backend.fingerprint()
    config = config or service.dataset_timing(backend)
    lock = FileLock(str(target) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise DatasetError(f"{target} is being written by another latbench process ({target}.lock)") from None
    try:
        keys: list[str] = []
        ms: list[float] = []
        iqr: list[float] = []
        # one sentinel reference for the whole file (the profile's, else the first chunk's, kept on resume):
        # every chunk is normalised to the same scale, so load that changes over a long run does not
        # become a drift between the first and the last networks
        sentinel_ref = sentinel_ref_ms or profile.sentinel_ms
        if target.exists() and resume:
            keys, ms, iqr, kept_ref = _existing_rows(target, space, fp.id)
            sentinel_ref = sentinel_ref or kept_ref
        done = set(keys)
        todo = [a for a in archs if arch_key(space, a) not in done]
        dev = {"name": profile.name, "backend": profile.backend, "fingerprint": {"id": fp.id}}
        prov = {
            "kind": "measured",
            "by": f"latbench {__version__}",
            "settings": dict(getattr(backend, "settings", {}) or {}),
            "timing": config.to_dict(),
            "selection": selection,
            "created": now_iso(),
        }
        if sentinel_ref is not None:
            prov["sentinel_ref_ms"] = sentinel_ref
        with track(f"measure {space.name} on {profile.name}", total=len(todo)) as update:
            for start in range(0, len(todo), chunk):
                part = todo[start : start + chunk]
                results, info = service.measure_archs(
                    backend, part, config, sentinel_ref_ms=sentinel_ref, progress=False
                )
                if sentinel_ref is None and info.get("sentinel_ref_ms"):
                    sentinel_ref = float(info["sentinel_ref_ms"])
                    prov["sentinel_ref_ms"] = sentinel_ref
                for a, m in zip(part, results, strict=True):
                    keys.append(arch_key(space, a))
                    ms.append(float(m.median))
                    iqr.append(float(m.iqr))
                write_dataset(
                    target,
                    space,
                    keys,
                    {profile.name: (np.asarray(ms), dev, prov)},
                    {"iqr_ms": np.asarray(iqr)},
                )
                update(start + len(part), len(todo))
        if not todo and not target.exists():
            raise DatasetError("nothing to measure")
    finally:
        lock.release()
        Path(str(target) + ".lock").unlink(missing_ok=True)
    return target
