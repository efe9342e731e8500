"""Latency tables: published LUT import, LUT sums on real phone numbers, I/O, refusal of foreign rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from latbench.backends import get_backend
from latbench.errors import TableError
from latbench.predict.lut import TableLatency
from latbench.spaces import get_space
from latbench.table import LatencyTable, build_table, import_published

from .conftest import NOTE10_YAML, PIXEL1_YAML


def _pixel1_hand_sums() -> tuple[float, float]:
    """Smallest / largest ProxylessNAS-mobile net at 224, summed straight from the YAML keys."""
    raw = yaml.safe_load(PIXEL1_YAML.read_text())
    mean = {k: v["mean"] for k, v in raw.items()}
    fixed = (
        mean["Conv-input:224x224x3-output:112x112x32"]
        + mean["expanded_conv-input:112x112x32-output:112x112x16-expand:1-kernel:3-stride:1-idskip:0"]
        + mean["Conv_1-input:7x7x320-output:7x7x1280"]
        + mean["Logits-input:7x7x1280-output:1000"]
    )
    stages = [
        (112, 16, 24, 2, 4),
        (56, 24, 40, 2, 4),
        (28, 40, 80, 2, 4),
        (14, 80, 96, 1, 4),
        (14, 96, 192, 2, 4),
        (7, 192, 320, 1, 1),
    ]
    small = big = fixed
    for hw, cin, cout, stride, depth in stages:
        ho = hw // stride
        first = (
            f"expanded_conv-input:{hw}x{hw}x{cin}-output:{ho}x{ho}x{cout}"
            f"-expand:{{e}}-kernel:{{k}}-stride:{stride}-idskip:0"
        )
        rest = (
            f"expanded_conv-input:{ho}x{ho}x{cout}-output:{ho}x{ho}x{cout}-expand:{{e}}-kernel:{{k}}-stride:1-idskip:1"
        )
        small += mean[first.format(e=3, k=3)]  # other blocks skipped
        big += mean[first.format(e=6, k=7)]
        if depth > 1:
            big += (depth - 1) * mean[rest.format(e=6, k=7)]
    return small, big


def test_pixel1_import_has_72_rows_covering_the_space(need_luts: None) -> None:
    t = import_published(PIXEL1_YAML, "proxyless")
    assert len(t) == 72
    space = get_space("proxyless-mobile")
    assert t.missing(space.vocabulary) == []
    assert t.source["sha256"] and t.fingerprint_id == "published-pixel1-proxyless"


def test_pixel1_smallest_and_largest_arch_sum_by_hand(need_luts: None) -> None:
    t = import_published(PIXEL1_YAML, "proxyless")
    s = get_space("proxyless-mobile")
    smallest = s.arch({d.name: "zero" if "zero" in d.options else "k3_e3" for d in s.decisions})
    largest = s.arch({d.name: "k7_e6" for d in s.decisions})
    small_hand, big_hand = _pixel1_hand_sums()
    assert t.lut_sum(s.ops_of(smallest)) == pytest.approx(small_hand, rel=1e-12)
    assert t.lut_sum(s.ops_of(largest)) == pytest.approx(big_hand, rel=1e-12)
    assert 28 < small_hand < 32 and 185 < big_hand < 195  # "about 30 and 190 ms"
    compiled = TableLatency(t).compile(s)
    lo, hi = compiled.bounds()
    assert lo == pytest.approx(small_hand) and hi == pytest.approx(big_hand)
    lat = compiled.predict_indices(s.sample_indices(np.random.default_rng(0), 1000))
    assert lat.min() >= small_hand and lat.max() <= big_hand
    assert lat.std() > 5  # random archs really differ


def test_note10_import_maps_every_ofa_op(need_luts: None) -> None:
    t = import_published(NOTE10_YAML, "ofa")
    s = get_space("ofa-mbv3")
    assert len(t) == 96 and t.missing(s.vocabulary) == []
    se_rows = [r for r in t.rows.values() if r["spec"]["se"]]
    assert se_rows and all(
        r["published_key"].endswith("-se:1-hs:0") or r["published_key"].endswith("-se:1-hs:1") for r in se_rows
    )
    lat = TableLatency(t).compile(s).predict_indices(s.sample_indices(np.random.default_rng(1), 500))
    assert 15 < lat.min() < lat.max() < 80


def test_shipped_tables_equal_a_fresh_import(need_luts: None) -> None:
    from latbench import paths

    shipped = LatencyTable.load(paths.REPO_DIR / "tables" / "pixel1" / "proxyless-mobile.json")
    fresh = import_published(PIXEL1_YAML, "proxyless")
    assert {k: r["median_ms"] for k, r in shipped.rows.items()} == {k: r["median_ms"] for k, r in fresh.rows.items()}
    assert shipped.source["origin"].startswith("han-cai/files@a7c9bcd5")


def test_bad_yaml_and_formats(tmp_path) -> None:
    f = tmp_path / "x.yaml"
    f.write_text("Conv-input:224x224x3: {count: 1, mean: 1.0}\n")
    with pytest.raises(TableError, match="unrecognised"):
        import_published(f, "proxyless")
    with pytest.raises(TableError, match="unknown LUT format"):
        import_published(f, "tflite")


def _fake_table(tmp_path, device="dev-a"):
    be = get_backend("fake", device=device)
    s = get_space("proxyless-mobile")
    return build_table(be, s.vocabulary, tmp_path / f"{device}.json", space=s.name)


def test_build_save_load_round_trip_and_csv(tmp_path) -> None:
    table, measured = _fake_table(tmp_path)
    assert len(measured) == 70 and len(table) == 70
    loaded = LatencyTable.load(tmp_path / "dev-a.json")
    assert loaded.rows == json.loads(json.dumps(table.rows))
    row = next(iter(loaded.rows.values()))
    assert {"median_ms", "iqr_ms", "p90_ms", "n", "noisy", "timestamp", "samples_ms"} <= set(row)
    assert row["median_ms"] == pytest.approx(float(np.median(row["samples_ms"])), rel=1e-4)
    assert loaded.fingerprint["versions"]["python"] and loaded.timing["rounds"] >= 1
    csv_text = loaded.to_csv()
    assert csv_text.count("\n") == 71 and csv_text.startswith("key,type,hw,cin")


def test_resume_refuses_another_devices_table(tmp_path) -> None:
    _fake_table(tmp_path, "dev-a")
    other = get_backend("fake", device="dev-b")
    before = (tmp_path / "dev-a.json").read_text()
    with pytest.raises(TableError, match="refusing new rows from device"):
        build_table(other, get_space("proxyless-mobile").vocabulary, tmp_path / "dev-a.json", resume=True)
    assert (tmp_path / "dev-a.json").read_text() == before


def test_existing_table_needs_resume_and_resume_measures_only_missing(tmp_path) -> None:
    be = get_backend("fake", device="dev-a")
    vocab = get_space("proxyless-mobile").vocabulary
    path = tmp_path / "t.json"
    build_table(be, vocab[:30], path)
    with pytest.raises(TableError, match="--resume"):
        build_table(be, vocab, path)
    table, measured = build_table(be, vocab, path, resume=True)
    assert len(measured) == 40 and len(table) == 70
    assert set(measured).isdisjoint(k.key for k in vocab[:30])


def test_merge_refuses_foreign_rows_unless_forced(tmp_path) -> None:
    a, _ = _fake_table(tmp_path, "dev-a")
    b, _ = _fake_table(tmp_path, "dev-b")
    extra = LatencyTable(fingerprint=b.fingerprint, rows={"k": {**next(iter(b.rows.values()))}})
    with pytest.raises(TableError, match="merge on purpose"):
        a.merge(extra)
    assert a.merge(extra, force=True) == ["k"]
    assert a.rows["k"]["merged_from"] == b.fingerprint_id


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "corrupt table file"),
        ('{"rows": {}}', "not a latbench table"),
        ('{"schema": "latbench.table/99", "fingerprint": {"id": "x"}, "rows": {}}', "schema"),
        ('{"schema": "latbench.table/1", "fingerprint": {"id": "x"}, "rows": {"k": {"median_ms": 1}}}', "lacks"),
    ],
)
def test_corrupt_tables_are_refused(tmp_path, content: str, message: str) -> None:
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(TableError, match=message):
        LatencyTable.load(p)


def test_lut_sum_lists_missing_ops(tmp_path) -> None:
    be = get_backend("fake")
    s = get_space("proxyless-mobile")
    table, _ = build_table(be, s.vocabulary[:10], tmp_path / "part.json")
    with pytest.raises(TableError, match=r"lacks \d+ op\(s\)"):
        table.lut_sum(s.ops_of(s.sample(0)))
