"""Torch modules of the FBNet space that latbench's op modules do not cover: the group-2 block.

FBNet's group variants run 1x1 group conv (groups 2) -> channel shuffle -> kxk
depthwise -> 1x1 group conv, with the input added when stride is 1 and the
width is kept. Each conv is a latbench ``conv`` op (Conv-BN-act), so a table
times the same kernels; the shuffle (a reshape) and the add are not timed.
"""

from __future__ import annotations

import torch
from torch import nn

from latbench.ops import OpSpec


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class GroupedBlock(nn.Module):
    """The FBNet group-2 inverted residual built from its three conv ops."""

    def __init__(self, ops: list[OpSpec]) -> None:
        super().__init__()
        pw, dw, project = ops
        self.pw = pw.build()
        self.shuffle = ChannelShuffle(pw.groups)
        self.dw = dw.build()
        self.project = project.build()
        self.residual = dw.stride == 1 and pw.cin == project.cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.shuffle(self.pw(x))))
        return x + y if self.residual else y


def build_fbnet(units: list[tuple[list[OpSpec], bool]]) -> nn.Sequential:
    """The network: one module per unit; identity layers (``zero``) are left out."""
    layers: list[nn.Module] = []
    for ops, grouped in units:
        if grouped:
            layers.append(GroupedBlock(ops))
        elif ops[0].type != "zero":
            layers.append(ops[0].build())
    return nn.Sequential(*layers)
