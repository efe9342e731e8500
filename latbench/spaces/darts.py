"""The DARTS cell space (Liu et al., ICLR 2019) for small-image search.

A network is a stem conv (3 -> C), one DARTS cell of four intermediate nodes
(14 edges, each one of the eight DARTS ops, ``none`` included) on a
``C x hw x hw`` input, and a classifier on the concatenated node outputs.
With ``reduction=True`` the edges leaving the cell inputs have stride 2.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from latbench.errors import ArchError
from latbench.ops import OpSpec, conv_out
from latbench.spaces.base import Arch, Decision, SearchSpace

DARTS_OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
#: (node, input) for the 14 edges: node i takes inputs 0..i+1 (0, 1 are the cell inputs)
DARTS_EDGES = tuple((node, inp) for node in range(4) for inp in range(node + 2))


def darts_op(name: str, hw: int, c: int, stride: int) -> OpSpec:
    if name == "none":
        return OpSpec("zero", hw, c, c, stride=stride, act="none")
    if name == "skip_connect":
        return OpSpec("skip_connect", hw, c, c, stride=stride, act="relu")
    if name.endswith("pool_3x3"):
        return OpSpec(name[: -len("_3x3")], hw, c, c, kernel=3, stride=stride, act="none")
    kind, k = name.rsplit("_", 1)
    kernel = int(k.split("x")[0])
    if kind == "sep_conv":
        return OpSpec("sep_conv", hw, c, c, kernel=kernel, stride=stride, act="relu")
    return OpSpec("dil_conv", hw, c, c, kernel=kernel, stride=stride, dilation=2, act="relu")


class DartsCell(SearchSpace):
    name = "darts"

    def __init__(
        self, channels: int = 16, resolution: int = 32, reduction: bool = False, num_classes: int = 10
    ) -> None:
        if int(channels) < 2 or int(resolution) < 4:
            raise ArchError(f"darts needs channels >= 2 and resolution >= 4, got {channels}, {resolution}")
        super().__init__(
            channels=int(channels), resolution=int(resolution), reduction=bool(reduction), num_classes=int(num_classes)
        )

    @cached_property
    def decisions(self) -> list[Decision]:  # type: ignore[override]
        return [Decision(f"n{node}_i{inp}", DARTS_OPS) for node, inp in DARTS_EDGES]

    def _edge_op(self, e: int, name: str) -> OpSpec:
        c, r = self.params["channels"], self.params["resolution"]
        _, inp = DARTS_EDGES[e]
        stride = 2 if self.params["reduction"] and inp < 2 else 1
        return darts_op(name, r, c, stride)

    def _fixed(self) -> tuple[OpSpec, OpSpec]:
        c, r = self.params["channels"], self.params["resolution"]
        hw = conv_out(r, 1, 2) if self.params["reduction"] else r
        stem = OpSpec("conv", r, 3, c, kernel=3, act="none")
        head = OpSpec("classifier", hw, 4 * c, self.params["num_classes"], act="none")
        return stem, head

    def _ops_of_indices(self, idx: tuple[int, ...]) -> list[OpSpec]:
        stem, head = self._fixed()
        edges = [self._edge_op(e, DARTS_OPS[i]) for e, i in enumerate(idx)]
        return [stem, *edges, head]

    def _all_indices_ops(self) -> list[OpSpec]:
        ops = list(self._fixed())
        for e in range(len(DARTS_EDGES)):
            ops.extend(self._edge_op(e, o) for o in DARTS_OPS)
        return ops

    def build(self, arch: Arch) -> Any:
        from latbench.torch_spaces import DartsNetwork

        arch = self.validate(arch)
        stem, head = self._fixed()
        edges = [self._edge_op(e, arch["choices"][d.name]) for e, d in enumerate(self.decisions)]
        return DartsNetwork(stem, edges, head).eval()
