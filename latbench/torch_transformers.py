"""Weight-sharing supernets of the ``autoformer`` / ``bert`` spaces (the op modules are in
:mod:`latbench.torch_ops`).

Op modules follow timm's ViT (pre-LN blocks, class token, learned position
embedding) and Hugging Face's BERT (post-LN blocks, token + position
embedding with LayerNorm, tanh pooler on the class token), so their latency is
what a deployed network of that family pays. Attention runs either as
``torch.nn.functional.scaled_dot_product_attention`` (``fused``) or as the
explicit ``softmax(Q K^T / sqrt(d)) V`` with the ``L x L`` matrix written out.

:class:`ViTSupernet` / :class:`BertSupernet` are AutoFormer-style weight-sharing
supernets: one set of weights of the largest choice, and a sub-network uses
its slice (the first ``d`` rows / columns of the embed, QKV and MLP matrices,
the first ``h`` heads): AutoFormer's *weight entanglement*.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latbench.torch_ops import PatchEmbed, TokenEmbed, attention

__all__ = ["BertSupernet", "ViTSupernet", "load_subnet"]


# ----------------------------------------------------------------------------- weight-sharing supernets
class _SuperBlock(nn.Module):
    """One encoder layer of the largest choice (embed ``D``, ``H`` heads of ``hd``, MLP hidden ``F``).

    ``forward(x, heads, hidden)`` runs the sub-layer of embed ``x.shape[-1]``: weight slices
    ``W[:q, :d]`` (QKV per part), ``W_proj[:d, :q]``, ``fc1[:f, :d]``, ``fc2[:d, :f]`` and the
    first ``d`` LayerNorm parameters (AutoFormer's weight entanglement).
    """

    def __init__(self, dim: int, heads: int, head_dim: int, hidden: int, act: str, norm: str) -> None:
        super().__init__()
        self.head_dim, self.where, self.act = head_dim, norm, act
        q = heads * head_dim
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * q)
        self.proj = nn.Linear(q, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.max_q = q

    def _ln(self, ln: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        return F.layer_norm(x, (d,), ln.weight[:d], ln.bias[:d], ln.eps)

    def forward(self, x: torch.Tensor, heads: int, hidden: int) -> torch.Tensor:
        b, n, d = x.shape
        q = heads * self.head_dim
        w = self.qkv.weight.view(3, self.max_q, -1)[:, :q, :d].reshape(3 * q, d)
        bias = self.qkv.bias.view(3, self.max_q)[:, :q].reshape(3 * q)
        y = self._ln(self.ln1, x) if self.where == "pre" else x
        qkv = F.linear(y, w, bias).reshape(b, n, 3, heads, self.head_dim).permute(2, 0, 3, 1, 4)
        a = attention(qkv[0], qkv[1], qkv[2], fused=True).transpose(1, 2).reshape(b, n, q)
        x = x + F.linear(a, self.proj.weight[:d, :q], self.proj.bias[:d])
        if self.where == "post":
            x = self._ln(self.ln1, x)
        y = self._ln(self.ln2, x) if self.where == "pre" else x
        h = F.linear(y, self.fc1.weight[:hidden, :d], self.fc1.bias[:hidden])
        h = F.gelu(h) if self.act == "gelu" else F.relu(h)
        x = x + F.linear(h, self.fc2.weight[:d, :hidden], self.fc2.bias[:d])
        return self._ln(self.ln2, x) if self.where == "post" else x


class ViTSupernet(nn.Module):
    """AutoFormer supernet on small images: patch embedding, ``max_depth`` pre-LN layers, class-token head.

    ``forward(x, cfg)`` runs the sub-network ``cfg = {"embed": d, "depth": L, "heads": [...],
    "hidden": [...]}`` with sliced weights.
    """

    def __init__(
        self,
        *,
        image: int,
        patch: int,
        channels: int,
        embed: int,
        depth: int,
        heads: int,
        head_dim: int,
        hidden: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(channels, embed, patch, patch)
        tokens = (image // patch) ** 2 + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, embed) * 0.02)
        self.blocks = nn.ModuleList(_SuperBlock(embed, heads, head_dim, hidden, "gelu", "pre") for _ in range(depth))
        self.norm = nn.LayerNorm(embed)
        self.head = nn.Linear(embed, num_classes)

    def forward(self, x: torch.Tensor, cfg: dict[str, Any]) -> torch.Tensor:
        d = int(cfg["embed"])
        x = F.conv2d(x, self.proj.weight[:d], self.proj.bias[:d], stride=self.patch).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token[:, :, :d].expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed[:, :, :d]
        for i in range(int(cfg["depth"])):
            x = self.blocks[i](x, int(cfg["heads"][i]), int(cfg["hidden"][i]))
        x = F.layer_norm(x, (d,), self.norm.weight[:d], self.norm.bias[:d], self.norm.eps)
        return F.linear(x[:, 0], self.head.weight[:, :d], self.head.bias)


class BertSupernet(nn.Module):
    """NAS-BERT / HAT-style supernet: token + position embedding with LayerNorm, post-LN layers, tanh pooler.

    ``forward(ids, cfg)`` (``ids``: ``batch x L`` long) runs the sub-network ``cfg = {"embed": d,
    "depth": L, "heads": [...], "hidden": [...]}`` with sliced weights.
    """

    def __init__(
        self, *, vocab: int, seq: int, embed: int, depth: int, heads: int, head_dim: int, hidden: int, num_classes: int
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, embed)
        self.pos_embed = nn.Parameter(torch.randn(1, seq, embed) * 0.02)
        self.ln = nn.LayerNorm(embed)
        self.blocks = nn.ModuleList(_SuperBlock(embed, heads, head_dim, hidden, "gelu", "post") for _ in range(depth))
        self.pool = nn.Linear(embed, embed)
        self.head = nn.Linear(embed, num_classes)

    def forward(self, ids: torch.Tensor, cfg: dict[str, Any]) -> torch.Tensor:
        d = int(cfg["embed"])
        x = self.tokens.weight[:, :d][ids] + self.pos_embed[:, : ids.shape[1], :d]
        x = F.layer_norm(x, (d,), self.ln.weight[:d], self.ln.bias[:d], self.ln.eps)
        for i in range(int(cfg["depth"])):
            x = self.blocks[i](x, int(cfg["heads"][i]), int(cfg["hidden"][i]))
        pooled = torch.tanh(F.linear(x[:, 0], self.pool.weight[:d, :d], self.pool.bias[:d]))
        return F.linear(pooled, self.head.weight[:, :d], self.head.bias)


def _copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    if dst.shape != src.shape:
        raise ValueError(f"slice of shape {tuple(src.shape)} does not fit a weight of shape {tuple(dst.shape)}")
    dst.copy_(src)


@torch.no_grad()
def load_subnet(net: nn.Sequential, supernet: nn.Module, cfg: dict[str, Any]) -> nn.Sequential:
    """Copy the supernet's slices for the sub-network ``cfg`` into ``net``, the ``nn.Sequential`` of ops a
    transformer space builds for the same arch (so the deployed module computes what the supernet scored).

    The supernet's head width must equal the space's (64); layers past ``cfg["depth"]`` are not in ``net``.
    """
    d = int(cfg["embed"])
    mods = list(net)
    first, body, tail = mods[0], mods[1 : 1 + 2 * int(cfg["depth"])], mods[1 + 2 * int(cfg["depth"]) :]
    if isinstance(first, PatchEmbed) and isinstance(supernet, ViTSupernet):
        _copy(first.proj.weight, supernet.proj.weight[:d])
        _copy(first.proj.bias, supernet.proj.bias[:d])
        _copy(first.cls_token, supernet.cls_token[:, :, :d])
        _copy(first.pos_embed, supernet.pos_embed[:, :, :d])
    elif isinstance(first, TokenEmbed) and isinstance(supernet, BertSupernet):
        _copy(first.tokens.weight, supernet.tokens.weight[:, :d])
        _copy(first.pos_embed, supernet.pos_embed[:, : first.pos_embed.shape[1], :d])
        _copy(first.norm.weight, supernet.ln.weight[:d])
        _copy(first.norm.bias, supernet.ln.bias[:d])
    else:
        raise ValueError("the network and the supernet are not of the same family")
    for i in range(int(cfg["depth"])):
        blk, att, mlp = supernet.blocks[i], body[2 * i], body[2 * i + 1]
        q, f = att.heads * att.head_dim, mlp.fc1.out_features
        if att.head_dim != blk.head_dim:
            raise ValueError(f"the supernet's heads are {blk.head_dim} wide, the network's {att.head_dim}")
        _copy(att.qkv.weight, blk.qkv.weight.view(3, blk.max_q, -1)[:, :q, :d].reshape(3 * q, d))
        _copy(att.qkv.bias, blk.qkv.bias.view(3, blk.max_q)[:, :q].reshape(3 * q))
        _copy(att.proj.weight, blk.proj.weight[:d, :q])
        _copy(att.proj.bias, blk.proj.bias[:d])
        _copy(att.norm.weight, blk.ln1.weight[:d])
        _copy(att.norm.bias, blk.ln1.bias[:d])
        _copy(mlp.fc1.weight, blk.fc1.weight[:f, :d])
        _copy(mlp.fc1.bias, blk.fc1.bias[:f])
        _copy(mlp.fc2.weight, blk.fc2.weight[:d, :f])
        _copy(mlp.fc2.bias, blk.fc2.bias[:d])
        _copy(mlp.norm.weight, blk.ln2.weight[:d])
        _copy(mlp.norm.bias, blk.ln2.bias[:d])
    if isinstance(supernet, ViTSupernet):
        norm, head = tail
        _copy(norm.weight, supernet.norm.weight[:d])
        _copy(norm.bias, supernet.norm.bias[:d])
        _copy(head.fc.weight, supernet.head.weight[:, :d])
        _copy(head.fc.bias, supernet.head.bias)
    else:
        (head,) = tail
        _copy(head.pool[0].weight, supernet.pool.weight[:d, :d])
        _copy(head.pool[0].bias, supernet.pool.bias[:d])
        _copy(head.fc.weight, supernet.head.weight[:, :d])
        _copy(head.fc.bias, supernet.head.bias)
    return net
