"""Torch networks of the non-chain spaces (the DARTS cell)."""

from __future__ import annotations

import torch
from torch import nn

from latbench.ops import OpSpec
from latbench.spaces.darts import DARTS_EDGES


class DartsNetwork(nn.Module):
    """Stem conv, one DARTS cell (14 edges into 4 nodes), classifier on the concatenated nodes."""

    def __init__(self, stem: OpSpec, edges: list[OpSpec], head: OpSpec) -> None:
        super().__init__()
        self.stem = stem.build()
        self.edges = nn.ModuleList(op.build() for op in edges)
        self.head = head.build()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        states = [s, s]
        for node in range(4):
            acc = None
            for e, (n, inp) in enumerate(DARTS_EDGES):
                if n == node:
                    y = self.edges[e](states[inp])
                    acc = y if acc is None else acc + y
            states.append(acc)
        return self.head(torch.cat(states[2:], dim=1))
