"""Torch modules of the NAS-Bench-201 CIFAR network, as the benchmark defines them.

``nor_conv`` is ReLU-Conv-BN (latbench's ``conv`` op is Conv-BN-act: the same
kernels in another order, so tables time it as ``conv``); the reduction block is
the ResNet basic block with an avg-pool + 1x1 shortcut; ``none`` multiplies by
zero as the benchmark's own code does (every edge runs).
"""

from __future__ import annotations

import torch
from torch import nn

#: (from node, to node) of the six edges, the order of ``latbench.spaces.nb201.NB201_EDGES`` (a test checks it;
#: not imported, so that the space does not import this torch module at import time and back)
NB201_EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))


class ReLUConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ZeroEdge(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def nb201_edge(name: str, c: int) -> nn.Module:
    if name == "none":
        return ZeroEdge()
    if name == "skip_connect":
        return nn.Identity()
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    return ReLUConvBN(c, c, 1 if name == "nor_conv_1x1" else 3)


class NB201Cell(nn.Module):
    """Four nodes; node j sums its edges from nodes i < j; the output is node 3."""

    def __init__(self, ops: tuple[str, ...], c: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(nb201_edge(o, c) for o in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for j in (1, 2, 3):
            acc = None
            for e, (i, jj) in enumerate(NB201_EDGES):
                if jj == j:
                    y = self.edges[e](nodes[i])
                    acc = y if acc is None else acc + y
            nodes.append(acc)
        return nodes[3]


class ResidualReduction(nn.Module):
    """ResNet basic block C -> 2C, stride 2, shortcut avg-pool 2x2 + 1x1 conv (no BN)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, stride=2)
        self.conv_b = ReLUConvBN(cout, cout, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2, padding=0), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """Stem, 3 stages of ``cells`` cells (C, 2C, 4C) with reductions between, BN-ReLU, pool, linear."""

    def __init__(self, ops: tuple[str, ...], channels: int = 16, cells: int = 5, num_classes: int = 100) -> None:
        super().__init__()
        c = channels
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        layers: list[nn.Module] = []
        for s in range(3):
            if s:
                layers.append(ResidualReduction(c, 2 * c))
                c *= 2
            layers.extend(NB201Cell(ops, c) for _ in range(cells))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lastact(self.cells(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))
