"""PyTorch modules for every :class:`~latbench.ops.OpSpec` type.

The modules follow the reference implementations (ProxylessNAS / Once-for-All
MBConv, DARTS cell ops) closely enough that their latency is the latency a
deployed network of that family pays.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
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


def build_module(spec: OpSpec) -> nn.Module:
    """Build the module for ``spec`` (training-mode defaults; call ``.eval()`` to time)."""
    t = spec.type
    if spec.is_transformer:
        from latbench.torch_transformers import build_transformer_op

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
