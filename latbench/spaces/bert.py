"""A BERT encoder space in the style of NAS-BERT (Xu et al., KDD 2021) and HAT (Wang et al., ACL 2020).

A network is token + position embedding with LayerNorm, ``layers`` post-LN
encoder layers (attention with ``heads`` heads of 64, HAT-style, and a GELU
FFN of ``ffn`` units), and BERT's head (tanh pooler on the class token, a
linear classifier). The hidden size is shared by every layer; heads and FFN
size are chosen per layer; the layer count picks how many run.

Decisions: ``hidden`` {256, 384, 512, 768}, ``layers`` {4..12}, ``h01..h12``
{4, 8, 12}, ``f01..f12`` {512, 1024, ..., 3072}; parameters: ``seq`` (the
sequence length, 128), ``vocab`` (30522, BERT's WordPiece), ``num_classes``
(2) and ``fused`` (attention through ``scaled_dot_product_attention``).

The network's input is ``batch x seq`` token ids held in a float tensor (every
latbench input is a float tensor); ids outside the vocabulary are clamped.
"""

from __future__ import annotations

from typing import Any

from latbench.ops import OpSpec
from latbench.spaces.autoformer import HEAD_DIM, TransformerChain, bool_param
from latbench.spaces.base import int_param


class Bert(TransformerChain):
    """BERT encoder space (see the module docstring)."""

    name = "bert"
    EMBED_DECISION = "hidden"
    DEPTH_DECISION = "layers"
    HEAD_PREFIX = "h"
    MLP_PREFIX = "f"
    EMBEDS = (256, 384, 512, 768)
    DEPTHS = tuple(range(4, 13))
    HEADS = (4, 8, 12)
    MLPS = (512, 1024, 1536, 2048, 2560, 3072)

    def __init__(self, seq: int = 128, vocab: int = 30522, num_classes: int = 2, fused: bool = True) -> None:
        super().__init__(
            seq=int_param(self.name, "seq", seq, 1, 8192),
            vocab=int_param(self.name, "vocab", vocab, 2, 1 << 20),
            num_classes=int_param(self.name, "num_classes", num_classes, 1, 100_000),
            fused=bool_param(self.name, "fused", fused),
        )

    @property
    def input_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (1, self.params["seq"])

    def head_ops(self, embed: int) -> list[OpSpec]:
        return [OpSpec("token_embed", self.params["seq"], self.params["vocab"], embed, act="none")]

    def tail_ops(self, embed: int) -> list[OpSpec]:
        return [OpSpec("cls_head", self.params["seq"], embed, self.params["num_classes"], act="tanh")]

    def attention_op(self, embed: int, heads: int) -> OpSpec:
        return OpSpec(
            "mhsa",
            self.params["seq"],
            embed,
            embed,
            heads=heads,
            head_dim=HEAD_DIM,
            fused=self.params["fused"],
            norm="post",
            act="none",
        )

    def mlp_op(self, embed: int, mlp: Any) -> OpSpec:
        return OpSpec("mlp", self.params["seq"], embed, embed, expand=int(mlp) / embed, act="gelu", norm="post")
