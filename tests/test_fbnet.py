"""FBNet space: layout, candidates, seeds, the network at both settings and its op list."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latbench.errors import ArchError
from latbench.spaces import get_space, space_of
from latbench.spaces.fbnet import FBNET_OPTIONS, FBNET_SEEDS


def test_layout_22_layers_9_candidates() -> None:
    s = get_space("fbnet")
    assert len(s.decisions) == 22
    assert all(len(d) == 9 for d in s.decisions)
    assert set(FBNET_OPTIONS) == {"k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip"}
    couts = [lay[2] for lay in s._layout["layers"]]
    assert couts == [16] + [24] * 4 + [32] * 4 + [64] * 4 + [112] * 4 + [184] * 4 + [352]
    strides = [lay[3] for lay in s._layout["layers"]]
    assert strides == [1, 2, 1, 1, 1, 2, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]
    assert s._layout["tail"][0].cout == 1984 and s._layout["tail"][0].hw == 7


@pytest.mark.parametrize(("seed", "mmacs"), [("fbnet-a", 249), ("fbnet-b", 295), ("fbnet-c", 375)])
def test_seeds_have_the_published_flops(seed: str, mmacs: float) -> None:
    s = get_space("fbnet")
    arch = s.seed(seed)
    assert len(FBNET_SEEDS[seed]) == 22
    assert abs(s.macs(arch) / 1e6 - mmacs) / mmacs < 0.03  # paper: 249 / 295 / 375 M FLOPs (multiply-adds)


@pytest.mark.parametrize("setting", ["imagenet", "cifar"])
def test_network_builds_and_runs_and_matches_op_list(setting: str) -> None:
    s = get_space("fbnet", setting=setting)
    for arch in (s.seed("fbnet-a"), s.sample(3), s.arch({d.name: "k5_e1_g2" for d in s.decisions})):
        model = s.build(arch)
        with torch.inference_mode():
            y = model(torch.randn(*s.input_shape))
        assert y.shape == (1, s.params["num_classes"])
        assert sum(p.numel() for p in model.parameters()) == s.params_count(arch)
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        want = sum(2 + (o.expand != 1.0) if o.type == "mbconv" else 1 for o in s.ops_of(arch) if o.type != "classifier")
        assert len(convs) == want
    assert s.input_shape == ((1, 3, 224, 224) if setting == "imagenet" else (1, 3, 32, 32))


def test_group_block_has_shuffle_and_residual() -> None:
    s = get_space("fbnet", setting="cifar")
    arch = s.arch({d.name: "k3_e1_g2" for d in s.decisions})
    ops = s.ops_of(arch)
    grouped = [o for o in ops if o.type == "conv" and o.groups == 2]
    assert len(grouped) == 2 * 22
    model = s.build(arch)
    blocks = [m for m in model if type(m).__name__ == "GroupedBlock"]
    assert len(blocks) == 22 and sum(b.residual for b in blocks) == 22 - 6  # first layer of 6 stages changes shape


def test_skip_is_identity_or_projection() -> None:
    s = get_space("fbnet")
    arch = s.arch({d.name: "skip" for d in s.decisions})
    body = s.ops_of(arch)[1:-2]
    assert [o.kernel for o in body] == [1] * 6 and all(o.type == "conv" for o in body)  # 6 shape-changing layers
    ids = s.op_ids(s.to_indices(arch)[None, :])[0]
    assert sorted(s.vocabulary[i].key for i in ids if i >= 0) == sorted(o.key for o in s.ops_of(arch))


def test_fast_op_ids_and_validation() -> None:
    s = get_space("fbnet", setting="cifar")
    idx = s.sample_indices(np.random.default_rng(0), 30)
    for row, ids in zip(idx, s.op_ids(idx), strict=True):
        assert [s.vocabulary[i].key for i in ids if i >= 0] == [o.key for o in s.ops_of(s.from_indices(row))]
    assert space_of(s.sample(0)).params == {"setting": "cifar", "num_classes": 100}
    with pytest.raises(ArchError, match="setting must be one of"):
        get_space("fbnet", setting="mnist")
    with pytest.raises(ArchError, match="unknown FBNet seed"):
        s.seed("fbnet-z")
