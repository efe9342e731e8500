"""PyTorch modules for every :class:`~latbench.ops.OpSpec` type.

The modules follow the reference implementations (ProxylessNAS / Once-for-All
MBConv, DARTS cell ops; timm's ViT and Hugging Face's BERT for the transformer
ops: pre-LN blocks with class token and learned position embedding, post-LN
blocks with a tanh pooler) closely enough that their latency is the latency a
deployed network of that family pays. Attention runs either as
``torch.nn.functional.scaled_dot_product_attention`` (``fused``) or as the
explicit ``softmax(Q K^T / sqrt(d)) V`` with the ``L x L`` matrix written out.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from latbench.ops import OpSpec


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads (``None``/0: leave as is), restoring the previous number after.

    On a shared machine one thread avoids thread thrashing in training and proxies.
    """
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "hswish":
        return nn.Hardswish(inplace=True)
    return nn.Identity()


def conv_bn_act(
    cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, dilation: int = 1, act: str = "relu"
) -> nn.Sequential:
    pad = dilation * (kernel - 1) // 2
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act != "none":
        layers.append(activation(act))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """MobileNetV3 squeeze-and-excitation (reduce 4, relu, hard sigmoid)."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(reduced, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.gate(self.expand(self.act(self.reduce(s))))
        return x * s


class MBConv(nn.Module):
    """Mobile inverted bottleneck: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project (+ input)."""

    def __init__(self, spec: OpSpec) -> None:
        super().__init__()
        mid = spec.mid
        self.expand = None
        if spec.expand != 1.0:
            self.expand = conv_bn_act(spec.cin, mid, 1, act=spec.act)
        self.depthwise = conv_bn_act(mid, mid, spec.kernel, spec.stride, groups=mid, act=spec.act)
        self.se = SqueezeExcite(mid, spec.se_mid) if spec.se else None
        self.project = conv_bn_act(mid, spec.cout, 1, act="none")
        self.residual = spec.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.residual else y


class SepConv(nn.Module):
    """DARTS separable convolution, applied twice."""

    def __init__(self, spec: OpSpec) -> None:
        super().__init__()
        k, s, c = spec.kernel, spec.stride, spec.cin
        pad = (k - 1) // 2
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, k, s, pad, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, k, 1, pad, groups=c, bias=False),
            nn.Conv2d(c, spec.cout, 1, bias=False),
            nn.BatchNorm2d(spec.cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """DARTS dilated separable convolution."""

    def __init__(self, spec: OpSpec) -> None:
        super().__init__()
        k, s, d, c = spec.kernel, spec.stride, spec.dilation, spec.cin
        pad = d * (k - 1) // 2
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, k, s, pad, dilation=d, groups=c, bias=False),
            nn.Conv2d(c, spec.cout, 1, bias=False),
            nn.BatchNorm2d(spec.cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class FactorizedReduce(nn.Module):
    """DARTS skip connection at stride 2: two offset 1x1 stride-2 convs, concatenated."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv1 = nn.Conv2d(cin, cout // 2, 1, 2, bias=False)
        self.conv2 = nn.Conv2d(cin, cout - cout // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        y = x[:, :, 1:, 1:] if x.shape[-1] > 1 else x
        if y.shape[-1] < x.shape[-1]:
            y = nn.functional.pad(y, (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv1(x), self.conv2(y)], dim=1))


class Zero(nn.Module):
    def __init__(self, spec: OpSpec) -> None:
        super().__init__()
        self.stride = spec.stride
        self.cout = spec.cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return x.new_zeros(x.shape[0], self.cout, x.shape[2], x.shape[3])


class Classifier(nn.Module):
    def __init__(self, spec: OpSpec) -> None:
        super().__init__()
        self.pool = spec.hw > 1
        self.fc = nn.Linear(spec.cin, spec.cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool:
            x = x.mean((2, 3))
        return self.fc(torch.flatten(x, 1))


# ----------------------------------------------------------------------------- transformer ops
def _act(name: str) -> nn.Module:
    if name == "gelu":
        return nn.GELU()
    if name == "relu":
        return nn.ReLU()
    if name == "tanh":
        return nn.Tanh()
    return nn.Identity()


class PatchEmbed(nn.Module):
    """ViT patch embedding: ``k x k`` stride-``k`` conv, tokens, class token first, + position embedding."""

    def __init__(self, spec: OpSpec) -> None:
        super().__init__()
        self.proj = nn.Conv2d(spec.cin, spec.cout, spec.kernel, spec.kernel)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.cout))
        self.pos_embed = nn.Parameter(torch.randn(1, spec.tokens_out, spec.cout) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1) + self.pos_embed


class TokenEmbed(nn.Module):
    """BERT embeddings: token lookup (ids given as floats, clamped into the vocabulary) + position, LayerNorm."""

    def __init__(self, spec: OpSpec) -> None:
        super().__init__()
        self.vocab = spec.cin
        self.tokens = nn.Embedding(spec.cin, spec.cout)
        self.pos_embed = nn.Parameter(torch.randn(1, spec.hw, spec.cout) * 0.02)
        self.norm = nn.LayerNorm(spec.cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x.long().clamp(0, self.vocab - 1)
        return self.norm(self.tokens(ids) + self.pos_embed)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, fused: bool) -> torch.Tensor:
    """``softmax(q k^T / sqrt(head_dim)) v`` on ``batch x heads x L x head_dim`` tensors."""
    if fused:
        return F.scaled_dot_product_attention(q, k, v)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    return scores.softmax(dim=-1) @ v


class MultiHeadSelfAttention(nn.Module):
    """``[LN] -> QKV -> attention -> proj -> + input [-> LN]`` (pre-LN as ViT, post-LN as BERT)."""

    def __init__(self, spec: OpSpec) -> None:
        super().__init__()
        d, q = spec.cin, spec.qkv_dim
        self.heads, self.head_dim, self.fused, self.where = spec.heads, spec.head_dim, spec.fused, spec.norm
        self.norm = nn.LayerNorm(d) if spec.norm != "none" else nn.Identity()
        self.qkv = nn.Linear(d, 3 * q)
        self.proj = nn.Linear(q, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        y = self.norm(x) if self.where == "pre" else x
        qkv = self.qkv(y).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = attention(qkv[0], qkv[1], qkv[2], self.fused)
        out = self.proj(out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))
        out = x + out
        return self.norm(out) if self.where == "post" else out


class TransformerMLP(nn.Module):
    """``[LN] -> linear -> act -> linear -> + input [-> LN]``."""

    def __init__(self, spec: OpSpec) -> None:
        super().__init__()
        self.where = spec.norm
        self.norm = nn.LayerNorm(spec.cin) if spec.norm != "none" else nn.Identity()
        self.fc1 = nn.Linear(spec.cin, spec.hidden)
        self.act = _act(spec.act)
        self.fc2 = nn.Linear(spec.hidden, spec.cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x) if self.where == "pre" else x
        out = x + self.fc2(self.act(self.fc1(y)))
        return self.norm(out) if self.where == "post" else out


class ClsHead(nn.Module):
    """Class token (token 0) -> [BERT pooler: linear + tanh when ``act == 'tanh'``] -> linear to classes."""

    def __init__(self, spec: OpSpec) -> None:
        super().__init__()
        self.pool = nn.Sequential(nn.Linear(spec.cin, spec.cin), nn.Tanh()) if spec.act == "tanh" else nn.Identity()
        self.fc = nn.Linear(spec.cin, spec.cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x[:, 0]))


def build_transformer_op(spec: OpSpec) -> nn.Module:
    """The module of a transformer :class:`OpSpec` (training-mode defaults)."""
    t = spec.type
    if t == "patch_embed":
        return PatchEmbed(spec)
    if t == "token_embed":
        return TokenEmbed(spec)
    if t == "mhsa":
        return MultiHeadSelfAttention(spec)
    if t == "mlp":
        return TransformerMLP(spec)
    if t == "layernorm":
        return nn.LayerNorm(spec.cin)
    if t == "cls_head":
        return ClsHead(spec)
    raise AssertionError(t)


def build_module(spec: OpSpec) -> nn.Module:
    """Build the module for ``spec`` (training-mode defaults; call ``.eval()`` to time)."""
    t = spec.type
    if spec.is_transformer:
        return build_transformer_op(spec)
    if t == "conv":
        return conv_bn_act(spec.cin, spec.cout, spec.kernel, spec.stride, spec.groups, spec.dilation, spec.act)
    if t == "mbconv":
        return MBConv(spec)
    if t == "sep_conv":
        return SepConv(spec)
    if t == "dil_conv":
        return DilConv(spec)
    if t in ("max_pool", "avg_pool"):
        pad = (spec.kernel - 1) // 2
        if t == "max_pool":
            return nn.MaxPool2d(spec.kernel, spec.stride, pad)
        return nn.AvgPool2d(spec.kernel, spec.stride, pad, count_include_pad=False)
    if t == "skip_connect":
        return nn.Identity() if spec.stride == 1 else FactorizedReduce(spec.cin, spec.cout)
    if t == "gap":
        return nn.AdaptiveAvgPool2d(1)
    if t == "classifier":
        return Classifier(spec)
    if t == "zero":
        return Zero(spec)
    raise AssertionError(t)
