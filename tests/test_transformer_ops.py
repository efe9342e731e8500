"""Transformer ops: keys, counts, torch modules, ONNX export under onnxruntime, features, sampled shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latbench.errors import ArchError
from latbench.export import WEIGHT_SEED, export_onnx
from latbench.ops import TRANSFORMER_TYPES, OpSpec
from latbench.predict.featurize import FEATURES, Featurizer, op_features
from latbench.predict.sampling import sample_ops

MHSA = OpSpec("mhsa", 197, 240, 240, heads=4, head_dim=64, fused=True, norm="pre", act="none")
OPS = (
    OpSpec("patch_embed", 32, 3, 24, kernel=8, stride=8, act="none"),
    OpSpec("token_embed", 16, 50, 32, act="none"),
    OpSpec("mhsa", 17, 48, 48, heads=3, head_dim=16, fused=True, norm="pre", act="none"),
    OpSpec("mhsa", 16, 32, 32, heads=4, head_dim=8, fused=False, norm="post", act="none"),
    OpSpec("mlp", 17, 48, 48, expand=3.5, act="gelu", norm="pre"),
    OpSpec("mlp", 16, 32, 32, expand=64 / 32, act="gelu", norm="post"),
    OpSpec("layernorm", 17, 48, 48, act="none"),
    OpSpec("cls_head", 17, 48, 10, act="none"),
    OpSpec("cls_head", 16, 32, 2, act="tanh"),
)


def test_keys_are_stable_text_and_round_trip() -> None:
    assert MHSA.key == "mhsa-n197-d240-o240-h4-hd64-k1-f240-none-pre-fu1-b1-float32"
    mlp = OpSpec("mlp", 197, 216, 216, expand=3.5, act="gelu", norm="pre")
    assert mlp.key == "mlp-n197-d216-o216-h1-hd0-k1-f756-gelu-pre-fu0-b1-float32"
    bert_ffn = OpSpec("mlp", 128, 384, 384, expand=512 / 384, act="gelu", norm="post")
    assert bert_ffn.hidden == 512 and "-f512-" in bert_ffn.key
    for op in (*OPS, MHSA, mlp, bert_ffn):
        back = OpSpec.from_key(op.key)
        assert back.key == op.key and back.hidden == op.hidden
        assert OpSpec.from_dict(op.to_dict()).key == op.key


def test_conv_op_keys_and_dicts_are_unchanged() -> None:
    op = OpSpec("mbconv", 56, 24, 40, kernel=5, stride=2, expand=6, act="relu6")
    assert op.key == "mbconv-i56x56x24-o40-k5-s2-e6-g1-d1-relu6-se0-b1-float32"
    assert set(op.to_dict()) == {
        "type", "hw", "cin", "cout", "kernel", "stride", "expand", "groups", "dilation", "act", "se", "batch", "dtype"
    }  # fmt: skip
    assert OpSpec.from_key(op.key) == op
    with pytest.raises(ArchError, match="takes no heads"):
        OpSpec("conv", 8, 8, 8, heads=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(type="mhsa", hw=16, cin=32, cout=32, heads=2, head_dim=0), "head_dim >= 1"),
        (dict(type="mlp", hw=16, cin=32, cout=48, expand=2.0), "cin must equal cout"),
        (dict(type="patch_embed", hw=30, cin=3, cout=32, kernel=8, stride=8), "dividing hw"),
        (dict(type="layernorm", hw=16, cin=32, cout=32, kernel=3), "kernel=1"),
        (dict(type="mhsa", hw=16, cin=32, cout=32, heads=2, head_dim=8, norm="middle"), "unknown op norm"),
        (dict(type="mhsa", hw=16, cin=32, cout=32, heads=2, head_dim=8, fused="yes"), "fused must be"),
    ],
)
def test_bad_transformer_ops_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ArchError, match=match):
        OpSpec(**kwargs)


def test_attention_work_has_the_sequence_squared_term() -> None:
    short, long = MHSA.with_(hw=64), MHSA.with_(hw=128)
    a, b = short.transformer_macs(), long.transformer_macs()
    assert a["attn"] == 2 * 4 * 64 * 64 * 64 and b["attn"] == 4 * a["attn"]
    assert b["dense"] == 2 * a["dense"]  # the projections are linear in L
    assert long.macs == sum(b.values())
    assert long.attn_matrix_bytes == 4 * 128 * 128 * 4
    assert long.with_(fused=False).peak_activation_bytes - long.peak_activation_bytes == long.attn_matrix_bytes


@pytest.mark.parametrize("op", OPS, ids=lambda o: o.key)
def test_module_shape_params_and_onnx_export_match(op: OpSpec, tmp_path) -> None:
    import onnxruntime as ort

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(WEIGHT_SEED)
        module = op.build()
    assert sum(p.numel() for p in module.parameters()) == op.params
    x = op.example_input()
    with torch.inference_mode():
        y = module(x).numpy()
    assert y.shape == op.output_shape
    path = export_onnx(op, tmp_path / "op.onnx", cache_dir=tmp_path / "cache")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(out, y, rtol=1e-4, atol=1e-4)


def test_fused_and_explicit_attention_compute_the_same() -> None:
    fused = OpSpec("mhsa", 33, 48, 48, heads=3, head_dim=16, fused=True, norm="pre", act="none")
    plain = fused.with_(fused=False)
    torch.manual_seed(3)
    a = fused.build()
    b = plain.build()
    b.load_state_dict(a.state_dict())
    x = fused.example_input()
    with torch.inference_mode():
        np.testing.assert_allclose(a(x).numpy(), b(x).numpy(), rtol=1e-5, atol=1e-5)
    assert fused.key != plain.key


def test_featurizer_entries() -> None:
    names = list(FEATURES)
    row = dict(zip(names, op_features(MHSA), strict=True))
    assert row["tokens"] == 197 and row["heads"] == 4 and row["head_dim"] == 64 and row["qkv_dim"] == 256
    assert row["macs_attn"] == 2 * 4 * 197 * 197 * 64
    assert row["fused"] == 1.0 and row["norm_pre"] == 1.0 and row["type_mhsa"] == 1.0
    assert row["macs_dense"] + row["macs_attn"] + row["macs_elementwise"] == MHSA.macs
    conv = dict(zip(names, op_features(OpSpec("conv", 56, 24, 48, kernel=3)), strict=True))
    assert all(conv[n] == 0.0 for n in ("tokens", "macs_attn", "fused", "type_mhsa", "act_gelu"))
    # the schema-2 columns come first, in their old order, so older predictors read theirs unchanged
    assert names.index("hw_out_align4") < names.index("tokens")
    assert names[: names.index("hw_out_align4") + 1][-5:] == [
        "type_zero", "hw_align8", "hw_align4", "hw_out_align8", "hw_out_align4"
    ]  # fmt: skip
    x = Featurizer().transform([MHSA, MHSA.with_(hw=394)])
    col = names.index("macs_attn")
    assert x[1, col] - x[0, col] == pytest.approx(2.0, abs=0.01)  # log2 of 4x


def test_sampled_transformer_shapes_cover_types_and_lengths() -> None:
    ops = sample_ops(400, seed=0, family="transformer")
    assert ops == sample_ops(400, seed=0, family="transformer")
    assert {o.type for o in ops} == set(TRANSFORMER_TYPES)
    lengths = {o.hw for o in ops if o.type == "mhsa"}
    assert min(lengths) <= 32 and max(lengths) >= 384 and len(lengths) > 20
    widths = {o.cin for o in ops if o.type in ("mhsa", "mlp")}
    assert min(widths) < 128 and max(widths) > 768
    assert {o.fused for o in ops if o.type == "mhsa"} == {True, False}
    assert sample_ops(50, seed=0) == sample_ops(50, seed=0, family="conv")  # the default draw is unchanged
    assert not any(o.is_transformer for o in sample_ops(200, seed=0))
