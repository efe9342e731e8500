"""The AutoFormer vision-transformer space (Chen et al., ICCV 2021), Tiny ranges by default.

A network is a ViT: patch embedding (``patch x patch`` conv to the embed dim,
class token, position embedding), ``depth`` pre-LN encoder layers (attention
with ``heads`` heads of 64 and an MLP of ``ratio x embed``), a final
LayerNorm and a class-token linear head. As in AutoFormer one embed dim is
shared by every layer (the supernet's); heads and MLP ratio are chosen per
layer, and the depth picks how many layers run (the choices of layers past
the depth are kept in the arch but run nothing).

Decisions: ``embed`` {192, 216, 240}, ``depth`` {12, 13, 14}, ``h01..h14``
{3, 4}, ``m01..m14`` {3.5, 4}; parameters: ``resolution`` (224), ``patch`` (16),
``num_classes`` (1000) and ``fused`` (attention through
``scaled_dot_product_attention``, default true).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from latbench.errors import ArchError
from latbench.ops import OpSpec
from latbench.spaces.base import Arch, Decision, SearchSpace, int_param

#: head width of every attention layer (AutoFormer and HAT keep it at 64; ``qkv = heads x 64``)
HEAD_DIM = 64


def bool_param(space: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ArchError(f"{space} {name} must be true or false, got {value!r}")
    return value


class TransformerChain(SearchSpace):
    """A transformer space whose network is ``nn.Sequential`` of its ops: an embedding op, ``depth`` layers of
    (attention, MLP) with a shared ``embed`` width and per-layer heads / MLP width, then the tail ops.

    Subclasses give the decision names and the ops; :meth:`op_ids` is vectorised from per-embed id tables.
    """

    EMBED_DECISION = "embed"
    DEPTH_DECISION = "depth"
    HEAD_PREFIX = "h"
    MLP_PREFIX = "m"
    EMBEDS: tuple[int, ...] = ()
    DEPTHS: tuple[int, ...] = ()
    HEADS: tuple[int, ...] = ()
    MLPS: tuple[Any, ...] = ()

    @property
    def max_depth(self) -> int:
        return max(self.DEPTHS)

    @cached_property
    def decisions(self) -> list[Decision]:  # type: ignore[override]
        out = [Decision(self.EMBED_DECISION, self.EMBEDS), Decision(self.DEPTH_DECISION, self.DEPTHS)]
        out += [Decision(f"{self.HEAD_PREFIX}{i + 1:02d}", self.HEADS) for i in range(self.max_depth)]
        out += [Decision(f"{self.MLP_PREFIX}{i + 1:02d}", self.MLPS) for i in range(self.max_depth)]
        return out

    # subclasses: the ops at one embed width
    def head_ops(self, embed: int) -> list[OpSpec]:
        raise NotImplementedError

    def tail_ops(self, embed: int) -> list[OpSpec]:
        raise NotImplementedError

    def attention_op(self, embed: int, heads: int) -> OpSpec:
        raise NotImplementedError

    def mlp_op(self, embed: int, mlp: Any) -> OpSpec:
        raise NotImplementedError

    def _ops_of_indices(self, idx: tuple[int, ...]) -> list[OpSpec]:
        embed, depth = self.EMBEDS[idx[0]], self.DEPTHS[idx[1]]
        L = self.max_depth
        body: list[OpSpec] = []
        for i in range(depth):
            body.append(self.attention_op(embed, self.HEADS[idx[2 + i]]))
            body.append(self.mlp_op(embed, self.MLPS[idx[2 + L + i]]))
        return [*self.head_ops(embed), *body, *self.tail_ops(embed)]

    def _all_indices_ops(self) -> list[OpSpec]:
        ops: list[OpSpec] = []
        for e in self.EMBEDS:
            ops += self.head_ops(e) + self.tail_ops(e)
            ops += [self.attention_op(e, h) for h in self.HEADS]
            ops += [self.mlp_op(e, m) for m in self.MLPS]
        return ops

    @cached_property
    def _id_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Vocabulary ids: head[e, :], tail[e, :], attention[e, h], mlp[e, m]."""
        vi = self.vocabulary_index
        head = np.array([[vi[o.key] for o in self.head_ops(e)] for e in self.EMBEDS], dtype=np.int64)
        tail = np.array([[vi[o.key] for o in self.tail_ops(e)] for e in self.EMBEDS], dtype=np.int64)
        att = np.array([[vi[self.attention_op(e, h).key] for h in self.HEADS] for e in self.EMBEDS], dtype=np.int64)
        mlp = np.array([[vi[self.mlp_op(e, m).key] for m in self.MLPS] for e in self.EMBEDS], dtype=np.int64)
        return head, tail, att, mlp

    def op_ids(self, idx: np.ndarray) -> np.ndarray:
        idx = np.atleast_2d(np.asarray(idx, dtype=np.int64))
        head, tail, att, mlp = self._id_table
        L = self.max_depth
        e = idx[:, 0]
        depth = np.asarray(self.DEPTHS)[idx[:, 1]]
        active = np.arange(L)[None, :] < depth[:, None]
        a = np.where(active, att[e[:, None], idx[:, 2 : 2 + L]], -1)
        m = np.where(active, mlp[e[:, None], idx[:, 2 + L : 2 + 2 * L]], -1)
        body = np.stack([a, m], axis=2).reshape(len(idx), 2 * L)
        # the layers past the depth run nothing: their (trailing) -1 columns are cut, so the width follows the
        # deepest arch of the batch (a depth-gated space does not map one op per decision)
        body = body[:, : 2 * int(depth.max())]
        return np.concatenate([head[e], tail[e], body], axis=1)

    def build(self, arch: Arch) -> Any:
        from torch import nn

        return nn.Sequential(*[op.build() for op in self.ops_of(arch)]).eval()

    def sub_config(self, arch: Arch) -> dict[str, Any]:
        """The arch as a supernet sub-network: ``{"embed", "depth", "heads": [...], "hidden": [...]}`` (every
        layer of the supernet, also those past the depth)."""
        arch = self.validate(arch)
        c = arch["choices"]
        embed = c[self.EMBED_DECISION]
        L = self.max_depth
        heads = [c[f"{self.HEAD_PREFIX}{i + 1:02d}"] for i in range(L)]
        hidden = [self.mlp_op(embed, c[f"{self.MLP_PREFIX}{i + 1:02d}"]).hidden for i in range(L)]
        return {"embed": embed, "depth": c[self.DEPTH_DECISION], "heads": heads, "hidden": hidden}


class AutoFormer(TransformerChain):
    """AutoFormer-Tiny's ViT space (see the module docstring)."""

    name = "autoformer"
    EMBEDS = (192, 216, 240)
    DEPTHS = (12, 13, 14)
    HEADS = (3, 4)
    MLPS = (3.5, 4.0)

    def __init__(self, resolution: int = 224, patch: int = 16, num_classes: int = 1000, fused: bool = True) -> None:
        r = int_param(self.name, "resolution", resolution, 16, 1024)
        p = int_param(self.name, "patch", patch, 2, 64)
        if r % p:
            raise ArchError(f"autoformer resolution {r} is not a multiple of the patch {p}")
        super().__init__(
            resolution=r,
            patch=p,
            num_classes=int_param(self.name, "num_classes", num_classes, 1, 100_000),
            fused=bool_param(self.name, "fused", fused),
        )

    @property
    def tokens(self) -> int:
        return (self.params["resolution"] // self.params["patch"]) ** 2 + 1

    def head_ops(self, embed: int) -> list[OpSpec]:
        r, p = self.params["resolution"], self.params["patch"]
        return [OpSpec("patch_embed", r, 3, embed, kernel=p, stride=p, act="none")]

    def tail_ops(self, embed: int) -> list[OpSpec]:
        n = self.tokens
        return [
            OpSpec("layernorm", n, embed, embed, act="none"),
            OpSpec("cls_head", n, embed, self.params["num_classes"], act="none"),
        ]

    def attention_op(self, embed: int, heads: int) -> OpSpec:
        return OpSpec(
            "mhsa",
            self.tokens,
            embed,
            embed,
            heads=heads,
            head_dim=HEAD_DIM,
            fused=self.params["fused"],
            norm="pre",
            act="none",
        )

    def mlp_op(self, embed: int, mlp: Any) -> OpSpec:
        return OpSpec("mlp", self.tokens, embed, embed, expand=float(mlp), act="gelu", norm="pre")
