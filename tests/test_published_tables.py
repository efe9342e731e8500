"""Published phone tables, exactly: latbench's LUT sums equal Once-for-All's own rule, per resolution.

Once-for-All sums a MobileNetV3 network over its Note10 LUT as
``LatencyTable.predict_network_latency_given_spec`` does (first conv, the
first block, the searched blocks, final expand, global pool, feature mix,
classifier); :func:`ofa_latency` below re-implements that rule from OFA's key
grammar alone, independently of latbench's op model, and reads the published
means straight from the shipped table file's ``published_key`` fields.

Only the 224 px Note10 table is public here. The multi-resolution tests use a
second table at 160 px that is SYNTHETIC: written by this test, with made-up
numbers, never shipped; it exists to check that each network is summed over
its own resolution's table.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from latbench.errors import ArchError, TableError
from latbench.predict.lut import ResolutionTables, TableLatency, load_tables
from latbench.service import resolve_latency_source
from latbench.spaces import get_space
from latbench.table import LatencyTable, import_published

NOTE10 = Path(__file__).resolve().parents[1] / "tables" / "note10" / "ofa-mbv3.json"

# Once-for-All's MobileNetV3 w1.2 layout (ofa/tutorial/latency_table.py, predict_network_latency_given_spec)
STRIDES = [2, 2, 2, 1, 2]
WIDTHS = [32, 48, 96, 136, 192]
ACTS = ["relu", "relu", "h_swish", "h_swish", "h_swish"]
SE = [False, True, False, True, True]


def _shape(*dims: int) -> str:
    return "x".join(str(d) for d in dims)


def _block_key(
    fsize: int, cin: int, out_fz: int, cout: int, mid: int, ks: int, stride: int, skip: int, se: int, hs: int
):
    return (
        f"expanded_conv-input:{_shape(fsize, fsize, cin)}-output:{_shape(out_fz, out_fz, cout)}"
        f"-expand:{mid}-kernel:{ks}-stride:{stride}-idskip:{skip}-se:{se}-hs:{hs}"
    )


def ofa_keys(spec: dict) -> list[str]:
    """The LUT keys OFA's rule queries for a network ``spec`` ({"ks", "e", "d", "r"})."""
    image_size = spec["r"][0]
    fsize = (image_size + 1) // 2
    keys = [f"Conv-input:{_shape(image_size, image_size, 3)}-output:{_shape(fsize, fsize, 24)}"]
    keys.append(_block_key(fsize, 24, fsize, 24, 24, 3, 1, 1, 0, 0))
    in_channel = 24
    for i in range(20):
        stage = i // 4
        if i % 4 + 1 > spec["d"][stage]:
            continue
        ks, e = spec["ks"][i], spec["e"][i]
        stride, idskip = (STRIDES[stage], 0) if i % 4 == 0 else (1, 1)
        out_channel = WIDTHS[stage]
        out_fz = int((fsize - 1) / stride + 1)
        mid = round(in_channel * e)
        keys.append(
            _block_key(
                fsize,
                in_channel,
                out_fz,
                out_channel,
                mid,
                ks,
                stride,
                idskip,
                int(SE[stage]),
                int(ACTS[stage] == "h_swish"),
            )
        )
        in_channel, fsize = out_channel, out_fz
    keys.append(f"Conv_1-input:{_shape(fsize, fsize, 192)}-output:{_shape(fsize, fsize, 1152)}")
    keys.append(f"AvgPool2D-input:{_shape(fsize, fsize, 1152)}-output:{_shape(1, 1, 1152)}")
    keys.append(f"Conv_2-input:{_shape(1, 1, 1152)}-output:{_shape(1, 1, 1536)}")
    keys.append(f"Logits-input:{_shape(1, 1, 1536)}-output:1000")
    return keys


def ofa_latency(lut: dict[str, float], spec: dict) -> float:
    """OFA's LUT-sum rule: the sum of the published means of the keys it queries, in its order."""
    total = 0.0
    for k in ofa_keys(spec):
        total += lut[k]
    return total


def ofa_spec(arch: dict) -> dict:
    """latbench's ofa-mbv3 arch JSON as OFA's spec dict."""
    c = arch["choices"]
    return {
        "ks": [c[f"k{i:02d}"] for i in range(1, 21)],
        "e": [c[f"e{i:02d}"] for i in range(1, 21)],
        "d": [c[f"d{s}"] for s in range(1, 6)],
        "r": [arch["resolution"] if arch.get("resolution") is not None else c["r"]],
    }


def published_means(path: Path) -> dict[str, float]:
    """``{published key: mean}`` read from a table file with the json module only."""
    doc = json.loads(path.read_text())
    return {row["published_key"]: row["mean_ms"] for row in doc["rows"].values()}


def test_lut_sum_equals_ofa_rule_on_1000_archs() -> None:
    lut = published_means(NOTE10)
    space = get_space("ofa-mbv3", resolution=224, width=1.2)
    model = TableLatency(LatencyTable.load(NOTE10))
    compiled = model.compile(space)
    archs = [space.sample(np.random.default_rng([7, i])) for i in range(1000)]
    ours = np.array([model.predict_arch(a) for a in archs])
    theirs = np.array([ofa_latency(lut, ofa_spec(a)) for a in archs])
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
    fast = compiled.predict_indices(np.stack([space.to_indices(a) for a in archs]))
    np.testing.assert_allclose(fast, theirs, rtol=0, atol=1e-9)
    assert theirs.min() > 15 and theirs.max() < 80  # Note10 milliseconds, not a vacuous sum


def test_importer_records_the_resolution_of_the_file(tmp_path: Path) -> None:
    synthetic = _synthetic_yaml(tmp_path, 160)
    t160 = import_published(synthetic, "ofa")
    assert t160.space_params["resolution"] == 160 and t160.name == "note10/ofa-mbv3-160"
    assert t160.source["resolution"] == 160 and "224_lookup_table" not in t160.source["origin"]
    with pytest.raises(TableError, match="not --resolution 176"):
        import_published(synthetic, "ofa", resolution=176)
    assert import_published(synthetic, "ofa", resolution=160).space_params["resolution"] == 160


def test_tables_of_two_resolutions_never_merge(tmp_path: Path) -> None:
    t224 = LatencyTable.load(NOTE10)
    t160 = import_published(_synthetic_yaml(tmp_path, 160), "ofa")
    shared = set(t224.rows) & set(t160.rows)
    assert shared and all(t224.rows[k]["median_ms"] != t160.rows[k]["median_ms"] for k in shared)
    before = {k: t224.rows[k]["median_ms"] for k in shared}
    with pytest.raises(TableError, match="refusing merge of space ofa-mbv3"):
        t224.merge(t160)
    assert {k: t224.rows[k]["median_ms"] for k in shared} == before


def test_searched_resolution_sums_each_arch_over_its_own_table(tmp_path: Path, home: Path) -> None:
    t224 = LatencyTable.load(NOTE10)
    synthetic = _synthetic_yaml(tmp_path, 160)
    t160 = import_published(synthetic, "ofa")
    lut = {160: _yaml_means(synthetic), 224: published_means(NOTE10)}
    model = ResolutionTables([t224, t160])
    space = get_space("ofa-mbv3", resolution=None, resolutions=[160, 224])
    compiled = model.compile(space)
    archs = [space.sample(np.random.default_rng([11, i])) for i in range(400)]
    assert {a["choices"]["r"] for a in archs} == {160, 224}
    theirs = np.array([ofa_latency(lut[a["choices"]["r"]], ofa_spec(a)) for a in archs])
    np.testing.assert_allclose([model.predict_arch(a) for a in archs], theirs, rtol=0, atol=1e-9)
    fast = compiled.predict_indices(np.stack([space.to_indices(a) for a in archs]))
    np.testing.assert_allclose(fast, theirs, rtol=0, atol=1e-9)
    # a single merged table would be off for every 160 px arch (the shared head ops differ)
    # the --table resolver takes one table per resolution, comma-joined
    p160 = tmp_path / "note10-160.json"
    t160.save(p160)
    src = resolve_latency_source(space, table=f"{NOTE10},{p160}")
    assert isinstance(src.model, ResolutionTables) and src.kind == "looked up"
    np.testing.assert_allclose(src.compiled.predict_indices(space.to_indices(archs[0])[None, :]), theirs[:1], atol=1e-9)
    assert isinstance(load_tables(str(NOTE10)), TableLatency)


def test_resolution_tables_refuse_what_they_cannot_answer(tmp_path: Path) -> None:
    t224 = LatencyTable.load(NOTE10)
    t160 = import_published(_synthetic_yaml(tmp_path, 160), "ofa")
    with pytest.raises(TableError, match="both of resolution 224"):
        ResolutionTables([t224, LatencyTable.load(NOTE10)])
    model = ResolutionTables([t224, t160])
    with pytest.raises(TableError, match="no table covers"):
        model.compile(get_space("ofa-mbv3", resolution=None))  # 128..224 step 4: most have no table
    with pytest.raises(TableError, match="no table of resolution 192"):
        model.compile(get_space("ofa-mbv3", resolution=192))


def test_ofa_resolution_set_is_a_space_parameter() -> None:
    space = get_space("ofa-mbv3", resolution=None, resolutions=[224, 160, 176, 192, 208])
    assert space.RESOLUTIONS == (160, 176, 192, 208, 224) and space.decisions[-1].options == space.RESOLUTIONS
    assert space.params["resolutions"] == [160, 176, 192, 208, 224]
    assert "resolutions" not in get_space("ofa-mbv3").params  # the default space's parameters are unchanged
    with pytest.raises(ArchError):
        get_space("ofa-mbv3", resolution=None, resolutions=[100])


# ------------------------------------------------------------------ the synthetic second table
def _synthetic_yaml(tmp_path: Path, resolution: int) -> Path:
    """A SYNTHETIC Note10-format LUT at ``resolution``: OFA's keys, made-up means (never shipped, test only)."""
    rng = np.random.default_rng(resolution)
    keys: set[str] = set()
    for _ in range(3000):
        spec = {
            "ks": rng.choice([3, 5, 7], 20).tolist(),
            "e": rng.choice([3, 4, 6], 20).tolist(),
            "d": rng.choice([2, 3, 4], 5).tolist(),
            "r": [resolution],
        }
        keys.update(ofa_keys(spec))
    lines = [f"# SYNTHETIC test table at {resolution} px: made-up numbers, not Once-for-All's"]
    for k in sorted(keys):
        lines += [f"{k}:", "  count: 10", f"  mean: {float(rng.uniform(0.05, 5.0))!r}", "  std: 0.01"]
    p = tmp_path / f"synthetic_{resolution}_lookup_table.yaml"
    p.write_text("\n".join(lines) + "\n")
    return p


def _yaml_means(path: Path) -> dict[str, float]:
    import yaml

    return {k: v["mean"] for k, v in yaml.safe_load(path.read_text()).items()}
