"""Search spaces: structure, arch JSON validation, op lists, fast op ids, networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latbench.errors import ArchError, UnknownNameError
from latbench.spaces import SPACES, get_space, load_archs, space_of


def test_proxyless_structure() -> None:
    s = get_space("proxyless-mobile")
    assert len(s.decisions) == 21
    skippable = [d.name for d in s.decisions if "zero" in d.options]
    # zero only where stride 1, cin == cout and not the first block of a stage: 3 per stage in 5 stages
    assert len(skippable) == 15
    firsts = {"b01", "b05", "b09", "b13", "b17", "b21"}
    assert not firsts & set(skippable)
    assert len(s.vocabulary) == 70
    ops = s.ops_of(s.arch({d.name: "k7_e6" for d in s.decisions}))
    assert ops[0].key.startswith("conv-i224x224x3-o32-k3-s2")
    assert ops[-1].type == "classifier" and ops[-1].hw == 7 and ops[-1].cin == 1280
    assert [o.cout for o in ops if o.type == "mbconv"] == [16] + [24] * 4 + [40] * 4 + [80] * 4 + [96] * 4 + [
        192
    ] * 4 + [320]


def test_width_and_resolution_parameters() -> None:
    s = get_space("proxyless-mobile", resolution=192, width=1.4)
    ops = s.ops_of(s.sample(0))
    assert ops[0].hw == 192 and ops[0].cout == 48
    assert ops[-2].cout == 1792  # make_divisible(1280 * 1.4)
    assert ops[-1].hw == 6


def test_ofa_structure_matches_note10_widths() -> None:
    s = get_space("ofa-mbv3")
    assert len(s.decisions) == 45 and len(s.vocabulary) == 96
    arch = s.arch({**{f"d{i}": 2 for i in range(1, 6)}, **{d.name: d.options[0] for d in s.decisions[5:]}})
    ops = s.ops_of(arch)
    assert len(ops) == 2 + 10 + 4
    mb = [o for o in ops if o.type == "mbconv"][1:]
    assert [o.cout for o in mb] == [32, 32, 48, 48, 96, 96, 136, 136, 192, 192]
    assert [o.se for o in mb[::2]] == [False, True, False, True, True]
    assert [o.act for o in mb[::2]] == ["relu", "relu", "hswish", "hswish", "hswish"]
    searched = get_space("ofa-mbv3", resolution=None)
    assert searched.decisions[-1].name == "r" and len(searched.decisions[-1]) == 25


@pytest.mark.parametrize("name", list(SPACES))
def test_op_ids_match_ops_of(name: str) -> None:
    s = get_space(name)
    rng = np.random.default_rng(7)
    idx = s.sample_indices(rng, 50)
    ids = s.op_ids(idx)
    for row, r_ids in zip(idx, ids, strict=True):
        arch = s.from_indices(row)
        assert sorted(o.key for o in s.ops_of(arch)) == sorted(s.vocabulary[i].key for i in r_ids if i >= 0)


def test_op_ids_with_searched_resolution() -> None:
    s = get_space("ofa-mbv3", resolution=None)
    idx = s.sample_indices(np.random.default_rng(3), 20)
    for row, r_ids in zip(idx, s.op_ids(idx), strict=True):
        arch = s.from_indices(row)
        assert sorted(o.key for o in s.ops_of(arch)) == sorted(s.vocabulary[i].key for i in r_ids if i >= 0)


@pytest.mark.parametrize("name", list(SPACES))
def test_build_runs_and_counts_params(name: str) -> None:
    s = get_space(name)
    arch = s.sample(1)
    model = s.build(arch)
    with torch.inference_mode():
        y = model(torch.randn(*s.input_shape))
    assert y.shape == (1, s.params["num_classes"])
    assert sum(p.numel() for p in model.parameters()) == s.params_count(arch)
    summary = s.summary(arch)
    assert summary["macs"] > 0 and summary["peak_memory_bytes"] > 0


def test_sampling_and_mutation_are_seeded_and_legal() -> None:
    s = get_space("proxyless-mobile")
    assert s.sample(3) == s.sample(3)
    assert s.sample(3) != s.sample(4)
    rng = np.random.default_rng(0)
    base = s.to_indices(s.sample(0))
    children = s.mutate_indices(np.repeat(base[None], 200, axis=0), rng, prob=0.1)
    changed = (children != base).mean()
    assert 0.04 < changed < 0.12  # prob 0.1 resamples, some to the same option
    for c in children[:20]:
        s.validate(s.from_indices(c))
    assert s.mutate(s.sample(0), 1, prob=1.0) != s.sample(0)


def test_arch_json_validation_errors() -> None:
    s = get_space("proxyless-mobile")
    good = s.sample(0)
    bad_choice = {**good, "choices": {**good["choices"], "b01": "zero"}}  # first block of a stage cannot be skipped
    with pytest.raises(ArchError, match="illegal choice 'zero' for b01"):
        s.validate(bad_choice)
    with pytest.raises(ArchError, match="missing decisions"):
        s.validate({**good, "choices": {"b01": "k3_e3"}})
    with pytest.raises(ArchError, match="unknown decisions"):
        s.validate({**good, "choices": {**good["choices"], "b99": "k3_e3"}})
    with pytest.raises(ArchError, match="belongs to space"):
        s.validate({**good, "space": "darts"})
    with pytest.raises(ArchError, match="resolution"):
        s.validate({**good, "resolution": 192})
    with pytest.raises(UnknownNameError):
        get_space("mobilenet-v9")
    assert space_of({**good, "resolution": 192}).params["resolution"] == 192


def test_load_archs_reports_file_and_line(tmp_path) -> None:
    s = get_space("proxyless-mobile")
    import json

    f = tmp_path / "archs.jsonl"
    f.write_text(json.dumps(s.sample(0)) + "\n" + '{"space": "proxyless-mobile", "choices": {"b01": "k9_e9"}}\n')
    with pytest.raises(ArchError, match=r"archs.jsonl: line 2: .*illegal choice|archs.jsonl: line 2: .*missing"):
        load_archs(str(f))
    g = tmp_path / "broken.json"
    g.write_text('{"space": ')
    with pytest.raises(ArchError, match="malformed JSON"):
        load_archs(str(g))
