"""Network latency datasets: the shipped NAS-Bench-201 data, import, validation refusals, measuring with resume."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from latbench.dataset import (
    DatasetError,
    distinct_archs,
    import_published,
    load_dataset,
    load_datasets,
    write_dataset,
)
from latbench.dataset_measure import measure_dataset
from latbench.measure.harness import TimingConfig
from latbench.spaces import get_space
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "datasets" / "nb201" / "published-13.csv"
ARCH0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
ARCH1 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def test_shipped_published_dataset_loads_with_provenance() -> None:
    sets = load_datasets("nb201/published-13")
    assert [d.name for d in sets][:3] == ["1080ti_1", "1080ti_32", "1080ti_256"] and len(sets) == 13
    pixel3 = load_dataset("nb201/published-13:pixel3")
    assert len(pixel3) == 15625 and pixel3.archs[0] == ARCH0
    assert pixel3.ms[1] == pytest.approx(17.2381)
    assert "HW-NAS-Bench" in pixel3.provenance["origin"]
    assert "45f70eb92d0d735970a33b608d1544ad3c52f285" in pixel3.provenance["source"]
    assert load_dataset("nb201/published-13:samsung_a50").ms[0] == 16.0
    assert pixel3.fingerprint == load_dataset(PUBLISHED, "pixel3").fingerprint


def test_shipped_host_dataset_is_every_distinct_network_measured_with_one_sentinel_reference() -> None:
    host = load_dataset("nb201/host-torch-cpu")
    s = get_space("nb201")
    assert sorted(host.archs) == sorted(s.arch_str(a) for a in distinct_archs(s, all_archs=True))
    assert host.provenance["kind"] == "measured" and host.provenance["sentinel_ref_ms"] > 0
    assert host.provenance["timing"]["drift"] == "sentinel"
    assert host.device["fingerprint"]["id"].startswith("torch-cpu-")
    assert host.space_params == {"channels": 16, "cells": 5, "num_classes": 100, "resolution": 32}

    # measured, not made up: it ranks networks like a published phone does (Spearman 0.77 with pixel3) and unlike a
    # batch-1 GPU (0.33 with 1080ti_1)
    def rank_corr(other: str) -> float:
        pub = load_dataset(f"nb201/published-13:{other}")
        by_arch = dict(zip(pub.archs, pub.ms, strict=True))
        ref = np.array([by_arch[a] for a in host.archs])
        return float(np.corrcoef(np.argsort(np.argsort(host.ms)), np.argsort(np.argsort(ref)))[0, 1])

    assert 0.7 < rank_corr("pixel3") < 0.99 and rank_corr("1080ti_1") < 0.5


def test_import_writes_one_dataset_per_device(tmp_path: Path) -> None:
    written = import_published(PUBLISHED, "nb201", tmp_path, citation="HELP")
    assert sorted(p.stem for p in written) == sorted(d.name for d in load_datasets(PUBLISHED))
    gold = load_dataset(tmp_path / "gold_6240.csv")
    assert gold.ms[0] == pytest.approx(6.6145) and gold.provenance["kind"] == "published"
    assert gold.fingerprint == load_dataset(PUBLISHED, "gold_6240").fingerprint
    with pytest.raises(DatasetError, match="exists; pass --force"):
        import_published(PUBLISHED, "nb201", tmp_path)


def _write_raw(path: Path, text: str) -> Path:
    """A dataset whose sidecar matches ``text`` (so the row checks, not the hash check, speak)."""
    path.write_text(text)
    side = {
        "schema": "latbench.dataset/1",
        "space": "nb201",
        "space_params": dict(get_space("nb201").params),
        "units": "ms",
        "columns": {"ms": {"device": {"name": "dev"}, "provenance": {"kind": "published"}}},
        "extra_columns": [],
        "content_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    path.with_suffix(".json").write_text(json.dumps(side))
    return path


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (f"{ARCH0},nan\n", "is not a finite positive number"),
        (f"{ARCH0},-3\n", "is not a finite positive number"),
        (f"{ARCH0},0\n", "is not a finite positive number"),
        (f"{ARCH0},abc\n", "is not a number"),
        (f"{ARCH0},3\n{ARCH1},4\n{ARCH0},5\n", "duplicate arch \\(first on line 2\\)"),
        ("|conv_7x7~0|+|none~0|none~1|+|none~0|none~1|none~2|,3\n", "unknown arch"),
    ],
)
def test_bad_rows_are_refused_in_one_line(tmp_path: Path, rows: str, message: str) -> None:
    path = _write_raw(tmp_path / "bad.csv", "arch,ms\n" + rows)
    with pytest.raises(DatasetError, match=message) as info:
        load_datasets(path)
    assert "\n" not in str(info.value) and "bad.csv:" in str(info.value)


def test_edited_csv_and_missing_sidecar_are_refused(tmp_path: Path) -> None:
    space = get_space("nb201")
    path = write_dataset(tmp_path / "d.csv", space, [ARCH0, ARCH1], {"ms": (np.array([3.0, 4.0]), {"name": "d"}, {})})
    assert load_dataset(path).ms.tolist() == [3.0, 4.0]
    path.write_text(path.read_text().replace("4", "5"))
    with pytest.raises(DatasetError, match="does not match its sidecar"):
        load_dataset(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(DatasetError, match="no sidecar"):
        load_dataset(path)


def test_cli_import_and_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "pub.csv"
    bad.write_text(f"arch,devA\n{ARCH0},1.5\n{ARCH1},-1\n")
    code, _, err = run_cli(capsys, "dataset", "import", bad, "--space", "nb201", "--out-dir", tmp_path / "out")
    assert code == 2 and err.startswith("latbench: error: ") and "pub.csv:3" in err
    assert not (tmp_path / "out" / "devA.csv").exists()
    bad.write_text(f"arch,devA\n{ARCH0},1.5\n{ARCH1},2.5\n")
    code, out, _ = run_cli(capsys, "dataset", "import", bad, "--space", "nb201", "--out-dir", tmp_path / "out")
    assert code == 0 and "wrote 1 datasets" in out
    assert load_dataset(tmp_path / "out" / "devA.csv").ms.tolist() == [1.5, 2.5]


def test_distinct_archs_one_per_isomorphism_class() -> None:
    s = get_space("nb201")
    assert len(distinct_archs(s, all_archs=True)) == 4930
    a = distinct_archs(s, sample=6, seed=1)
    assert a == distinct_archs(s, sample=6, seed=1) and len({s.arch_str(x) for x in a}) == 6
    with pytest.raises(DatasetError, match="exactly one of --all or --sample"):
        distinct_archs(s)


QUICK = TimingConfig(warmup_s=0.0, min_warmup_calls=1, min_run_time_s=0.01, min_runs=5, rounds=2, max_retries=1)


def test_measure_six_archs_on_torch_cpu_and_resume(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import latbench.service as service

    s = get_space("nb201")
    archs = distinct_archs(s, sample=6, seed=0)
    out = tmp_path / "cpu.csv"
    real = service.measure_archs
    calls = {"n": 0}

    def flaky(*args, **kwargs):  # interrupted on the second chunk
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "measure_archs", flaky)
    with pytest.raises(KeyboardInterrupt):
        measure_dataset("torch-cpu", s, out, archs, chunk=3, config=QUICK)
    first = load_dataset(out)
    assert len(first) == 3 and np.all(first.ms > 0)
    assert not Path(str(out) + ".lock").exists()
    with pytest.raises(DatasetError, match="pass --resume"):
        measure_dataset("torch-cpu", s, out, archs, chunk=3, config=QUICK)

    monkeypatch.setattr(service, "measure_archs", real)
    measure_dataset("torch-cpu", s, out, archs, chunk=3, config=QUICK, resume=True)
    done = load_dataset(out)
    assert done.archs[:3] == first.archs and done.ms[:3].tolist() == first.ms.tolist()
    assert sorted(done.archs) == sorted(s.arch_str(a) for a in archs)
    assert done.provenance["kind"] == "measured" and done.device["fingerprint"]["id"]
    assert done.provenance["timing"]["min_runs"] == 5
    # one sentinel reference for the whole file: the first chunk's, kept across the resume
    ref = first.provenance["sentinel_ref_ms"]
    assert ref > 0 and done.provenance["sentinel_ref_ms"] == ref
    # the heaviest of the six (most conv 3x3 edges) is slower than the lightest (fewest non-none edges)
    work = {s.arch_str(a): sum(o == "nor_conv_3x3" for o in a["choices"].values()) for a in archs}
    lut = done.as_dict()
    heavy, light = max(work, key=work.get), min(work, key=work.get)
    if work[heavy] >= work[light] + 3:
        assert lut[heavy] > lut[light]


def test_scale_of_takes_the_sentinel_reference_of_a_dataset_of_this_device(home: Path, tmp_path: Path) -> None:
    from latbench.cli.dataset import _sentinel_ref_of
    from latbench.errors import LatbenchError
    from latbench.service import open_device

    s = get_space("nb201")
    out = tmp_path / "a.csv"
    measure_dataset("torch-cpu", s, out, distinct_archs(s, sample=2, seed=1), config=QUICK)
    ref = load_dataset(out).provenance["sentinel_ref_ms"]
    _, backend = open_device("torch-cpu")
    assert _sentinel_ref_of(out, backend.fingerprint().id) == ref
    with pytest.raises(LatbenchError, match="this device is other"):
        _sentinel_ref_of(out, "other")
    again = tmp_path / "b.csv"
    measure_dataset("torch-cpu", s, again, distinct_archs(s, sample=2, seed=2), config=QUICK, sentinel_ref_ms=ref)
    assert load_dataset(again).provenance["sentinel_ref_ms"] == ref
