"""The DARTS cell space (Liu et al., ICLR 2019) for small-image search.

A network is a stem conv (3 -> C), one DARTS cell of four intermediate nodes
(14 edges, each one of the eight DARTS ops, ``none`` included) on a
``C x hw x hw`` input, and a classifier on the concatenated node outputs.

With ``reduction=True`` the cell is a DARTS reduction cell: the edges leaving
the two cell inputs run at the input resolution with stride 2, and every node
works at half that resolution, so the edges leaving an intermediate node run
with stride 1 on the half-size maps (as in DARTS, where only the edges from
the cell inputs reduce). Each edge's op is keyed at the size it really runs on.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from latbench.errors import ArchError
from latbench.ops import OpSpec, conv_out
from latbench.spaces.base import Arch, Decision, SearchSpace, int_param

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
        if not isinstance(reduction, bool):
            raise ArchError(f"darts reduction must be true or false, got {reduction!r}")
        super().__init__(
            channels=int_param(self.name, "channels", channels, 2, 4096),
            resolution=int_param(self.name, "resolution", resolution, 4, 4096),
            reduction=reduction,
            num_classes=int_param(self.name, "num_classes", num_classes, 1, 100_000),
        )

    @cached_property
    def decisions(self) -> list[Decision]:  # type: ignore[override]
        return [Decision(f"n{node}_i{inp}", DARTS_OPS) for node, inp in DARTS_EDGES]

    @property
    def node_resolution(self) -> int:
        """Side of the maps the intermediate nodes hold: the input's, halved in a reduction cell."""
        r = self.params["resolution"]
        return conv_out(r, 1, 2) if self.params["reduction"] else r

    def _edge_op(self, e: int, name: str) -> OpSpec:
        c, r = self.params["channels"], self.params["resolution"]
        _, inp = DARTS_EDGES[e]
        if not self.params["reduction"]:
            return darts_op(name, r, c, 1)
        if inp < 2:  # from a cell input: reduces
            return darts_op(name, r, c, 2)
        return darts_op(name, self.node_resolution, c, 1)  # from an intermediate node: already half size

    def _fixed(self) -> tuple[OpSpec, OpSpec]:
        c, r = self.params["channels"], self.params["resolution"]
        hw = self.node_resolution
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
