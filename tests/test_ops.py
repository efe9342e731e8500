"""OpSpec: keys, validation, analytic counts, and modules that match their declared shapes."""

from __future__ import annotations

import pytest
import torch

from latbench.errors import ArchError
from latbench.ops import OP_TYPES, OpSpec, make_divisible

EXAMPLES = [
    OpSpec("conv", 224, 3, 32, kernel=3, stride=2, act="relu6"),
    OpSpec("mbconv", 56, 24, 40, kernel=5, stride=2, expand=6, act="relu6"),
    OpSpec("mbconv", 28, 48, 48, kernel=7, expand=4, act="hswish", se=True),
    OpSpec("mbconv", 112, 32, 16, kernel=3, expand=1, act="relu6"),
    OpSpec("sep_conv", 32, 16, 16, kernel=5, act="relu"),
    OpSpec("dil_conv", 32, 16, 16, kernel=3, dilation=2, act="relu"),
    OpSpec("max_pool", 32, 16, 16, kernel=3, stride=2, act="none"),
    OpSpec("avg_pool", 32, 16, 16, kernel=3, act="none"),
    OpSpec("skip_connect", 32, 16, 16, stride=2),
    OpSpec("skip_connect", 32, 16, 16),
    OpSpec("gap", 7, 1152, 1152, act="none"),
    OpSpec("classifier", 7, 1280, 1000, act="none"),
    OpSpec("zero", 28, 40, 40, act="none"),
    # transformer ops (their own key format; see tests/test_transformer_ops.py)
    OpSpec("patch_embed", 32, 3, 24, kernel=8, stride=8, act="none"),
    OpSpec("token_embed", 16, 50, 32, act="none"),
    OpSpec("mhsa", 17, 48, 48, heads=3, head_dim=16, fused=True, norm="pre", act="none"),
    OpSpec("mlp", 17, 48, 48, expand=3.5, act="gelu", norm="pre"),
    OpSpec("layernorm", 17, 48, 48, act="none"),
    OpSpec("cls_head", 16, 32, 2, act="tanh"),
]


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda s: s.type)
def test_key_and_dict_round_trip(spec: OpSpec) -> None:
    assert OpSpec.from_key(spec.key) == spec
    assert OpSpec.from_dict(spec.to_dict()) == spec
    assert hash(OpSpec.from_key(spec.key)) == hash(spec)


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda s: s.key)
def test_module_output_matches_declared_shape(spec: OpSpec) -> None:
    with torch.inference_mode():
        y = spec.build()(spec.example_input())
    assert tuple(y.shape) == spec.output_shape


def test_every_op_type_has_an_example() -> None:
    assert {s.type for s in EXAMPLES} == set(OP_TYPES)


def test_counts_by_hand() -> None:
    stem = EXAMPLES[0]
    assert stem.macs == 112 * 112 * 9 * 3 * 32
    assert stem.params == 9 * 3 * 32 + 2 * 32
    mb = EXAMPLES[1]  # 56x56x24 -> 28x28x40, k5, e6: mid 144
    assert mb.mid == 144 and not mb.residual and mb.hw_out == 28
    assert mb.macs == 56 * 56 * 24 * 144 + 28 * 28 * 25 * 144 + 28 * 28 * 144 * 40
    assert mb.params == (24 * 144 + 288) + (25 * 144 + 288) + (144 * 40 + 80)
    assert mb.flops == 2 * mb.macs
    assert mb.input_bytes == 24 * 56 * 56 * 4 and mb.output_bytes == 40 * 28 * 28 * 4
    assert mb.memory_bytes == mb.weight_bytes + mb.input_bytes + mb.output_bytes
    se = EXAMPLES[2]
    assert se.residual and se.se_mid == make_divisible(192 // 4)
    torch_params = sum(p.numel() for p in se.build().parameters())
    assert torch_params == se.params
    assert sum(p.numel() for p in mb.build().parameters()) == mb.params


def test_peak_activation_counts_mid_tensors() -> None:
    mb = EXAMPLES[1]
    mid_in = 144 * 56 * 56 * 4
    assert mb.peak_activation_bytes == mid_in + 144 * 28 * 28 * 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"type": "conv3d", "hw": 8, "cin": 3, "cout": 8},
        {"type": "conv", "hw": 0, "cin": 3, "cout": 8},
        {"type": "conv", "hw": 8, "cin": 3, "cout": 8, "act": "gelu"},
        {"type": "conv", "hw": 8, "cin": 6, "cout": 8, "groups": 4},
    ],
)
def test_bad_specs_raise_arch_error(kwargs: dict) -> None:
    with pytest.raises(ArchError):
        OpSpec(**kwargs)


def test_from_dict_rejects_unknown_fields_and_bad_keys() -> None:
    with pytest.raises(ArchError, match="unknown op fields"):
        OpSpec.from_dict({"type": "conv", "hw": 8, "cin": 3, "cout": 8, "colour": "red"})
    with pytest.raises(ArchError, match="not an op key"):
        OpSpec.from_key("expanded_conv-input:112x112x16")


def test_make_divisible_matches_mobilenet_rounding() -> None:
    assert [make_divisible(c * 1.2) for c in (16, 24, 40, 80, 112, 160)] == [24, 32, 48, 96, 136, 192]
