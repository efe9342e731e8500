"""Chain-structured mobile spaces: ProxylessNAS mobile and Once-for-All MobileNetV3.

A network of these spaces is a plain sequence of ops, so the network that
``build`` returns runs exactly the ops ``ops_of`` lists: the LUT sum and the
end-to-end measurement see the same kernels.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from latbench.errors import ArchError
from latbench.ops import OpSpec, conv_out, make_divisible
from latbench.spaces.base import Arch, Decision, SearchSpace, float_param, int_param


class ChainSpace(SearchSpace):
    """A space whose network is ``nn.Sequential`` of its ops."""

    def build(self, arch: Arch) -> Any:
        from torch import nn

        return nn.Sequential(*[op.build() for op in self.ops_of(arch)]).eval()


# --------------------------------------------------------------------------- ProxylessNAS
PROXYLESS_MB_OPTIONS = ("k3_e3", "k3_e6", "k5_e3", "k5_e6", "k7_e3", "k7_e6")


def _parse_mb(option: str) -> tuple[int, int]:
    k, e = option.split("_")
    return int(k[1:]), int(e[1:])


class ProxylessMobile(ChainSpace):
    """The ProxylessNAS mobile space (Cai et al., ICLR 2019).

    224 input; stem conv3x3 s2 to 32; fixed MBConv e1 k3 to 16; six stages of
    widths 24, 40, 80, 96, 192, 320 with 4, 4, 4, 4, 4, 1 blocks and first
    strides 2, 2, 2, 1, 2, 1 (21 searchable blocks); ops MBConv k{3,5,7} x
    e{3,6}, plus ``zero`` where stride is 1, cin == cout and the block is not
    the first of its stage; head conv1x1 to 1280, pool, linear.
    """

    name = "proxyless-mobile"
    WIDTHS = (24, 40, 80, 96, 192, 320)
    DEPTHS = (4, 4, 4, 4, 4, 1)
    STRIDES = (2, 2, 2, 1, 2, 1)

    def __init__(self, resolution: int = 224, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__(
            resolution=int_param(self.name, "resolution", resolution, 32, 1024),
            width=float_param(self.name, "width multiplier", width, 0.1, 4.0),
            num_classes=int_param(self.name, "num_classes", num_classes, 1, 100_000),
        )

    @cached_property
    def _layout(self) -> dict[str, Any]:
        r, w = self.params["resolution"], self.params["width"]
        stem_c = make_divisible(32 * w)
        first_c = make_divisible(16 * w)
        hw = conv_out(r, 3, 2)
        fixed_head = [
            OpSpec("conv", r, 3, stem_c, kernel=3, stride=2, act="relu6"),
            OpSpec("mbconv", hw, stem_c, first_c, kernel=3, stride=1, expand=1, act="relu6"),
        ]
        blocks: list[tuple[int, int, int, int, bool]] = []  # hw, cin, cout, stride, can_skip
        cin = first_c
        for width, depth, stride in zip(self.WIDTHS, self.DEPTHS, self.STRIDES, strict=True):
            cout = make_divisible(width * w)
            for j in range(depth):
                s = stride if j == 0 else 1
                blocks.append((hw, cin, cout, s, j > 0 and s == 1 and cin == cout))
                hw = conv_out(hw, 3, s)
                cin = cout
        last_c = make_divisible(1280 * w) if w > 1.0 else 1280
        fixed_tail = [
            OpSpec("conv", hw, cin, last_c, kernel=1, act="relu6"),
            OpSpec("classifier", hw, last_c, self.params["num_classes"], act="none"),
        ]
        return {"head": fixed_head, "blocks": blocks, "tail": fixed_tail}

    @cached_property
    def decisions(self) -> list[Decision]:  # type: ignore[override]
        out = []
        for i, (_, _, _, _, can_skip) in enumerate(self._layout["blocks"]):
            opts = PROXYLESS_MB_OPTIONS + (("zero",) if can_skip else ())
            out.append(Decision(f"b{i + 1:02d}", opts))
        return out

    def _block_op(self, i: int, option: str) -> OpSpec:
        hw, cin, cout, s, _ = self._layout["blocks"][i]
        if option == "zero":
            return OpSpec("zero", hw, cin, cout, stride=s, act="none")
        k, e = _parse_mb(option)
        return OpSpec("mbconv", hw, cin, cout, kernel=k, stride=s, expand=e, act="relu6")

    def _ops_of_indices(self, idx: tuple[int, ...]) -> list[OpSpec]:
        body = [self._block_op(i, d.options[j]) for i, (d, j) in enumerate(zip(self.decisions, idx, strict=True))]
        return [*self._layout["head"], *body, *self._layout["tail"]]

    def _all_indices_ops(self) -> list[OpSpec]:
        ops = [*self._layout["head"], *self._layout["tail"]]
        for i, d in enumerate(self.decisions):
            ops.extend(self._block_op(i, o) for o in d.options)
        return ops

    @cached_property
    def _id_table(self) -> tuple[np.ndarray, np.ndarray]:
        vi = self.vocabulary_index
        fixed = np.array([vi[o.key] for o in (*self._layout["head"], *self._layout["tail"])], dtype=np.int64)
        table = np.full((len(self.decisions), 7), -1, dtype=np.int64)
        for i, d in enumerate(self.decisions):
            for j, o in enumerate(d.options):
                op = self._block_op(i, o)
                table[i, j] = vi[op.key] if op.type != "zero" else -1
        return fixed, table

    def op_ids(self, idx: np.ndarray) -> np.ndarray:
        idx = np.atleast_2d(np.asarray(idx, dtype=np.int64))
        fixed, table = self._id_table
        body = table[np.arange(table.shape[0])[None, :], idx]
        return np.concatenate([np.broadcast_to(fixed, (len(idx), len(fixed))), body], axis=1)


# --------------------------------------------------------------------------- OFA MobileNetV3
class OFAMobileNetV3(ChainSpace):
    """The Once-for-All MobileNetV3 space (Cai et al., ICLR 2020).

    Five stages (base widths 24, 40, 80, 112, 160; strides 2, 2, 2, 1, 2), depth
    {2,3,4} each, kernel {3,5,7} and expand {3,4,6} per block, SE in stages 2,
    4, 5 and h-swish in stages 3-5 as in MobileNetV3; width 1.0 or 1.2;
    resolution fixed (``resolution=R``) or searched (``resolution=None``) over
    ``resolutions``: 128..224 step 4 by default, or a given set such as
    Once-for-All's own ``[160, 176, 192, 208, 224]`` (the resolutions it
    publishes latency tables for).
    """

    name = "ofa-mbv3"
    BASE_WIDTHS = (24, 40, 80, 112, 160)
    STRIDES = (2, 2, 2, 1, 2)
    ACTS = ("relu", "relu", "hswish", "hswish", "hswish")
    SE = (False, True, False, True, True)
    KERNELS = (3, 5, 7)
    EXPANDS = (3, 4, 6)
    DEPTHS = (2, 3, 4)
    RESOLUTIONS = tuple(range(128, 225, 4))

    #: Once-for-All's searched resolutions (one published Note10 latency table each)
    OFA_RESOLUTIONS = (160, 176, 192, 208, 224)

    def __init__(
        self,
        resolution: int | None = 224,
        width: float = 1.2,
        num_classes: int = 1000,
        resolutions: list[int] | tuple[int, ...] | None = None,
    ) -> None:
        extra: dict[str, Any] = {}
        if resolutions is not None:
            lo, hi = min(type(self).RESOLUTIONS), max(type(self).RESOLUTIONS)
            if isinstance(resolutions, (str, bytes)) or not hasattr(resolutions, "__iter__"):
                raise ArchError(f"ofa-mbv3 resolutions must be a list of whole numbers, got {resolutions!r}")
            rs = sorted({int_param(self.name, "resolutions", r, lo, hi) for r in resolutions})
            if not rs:
                raise ArchError("ofa-mbv3 resolutions must not be empty")
            self.RESOLUTIONS = tuple(rs)  # type: ignore[misc]  # this space's searched set
            extra["resolutions"] = rs
        res = (
            None
            if resolution is None
            else int_param(self.name, "resolution", resolution, min(self.RESOLUTIONS), max(self.RESOLUTIONS))
        )
        if res is not None and res not in self.RESOLUTIONS:
            lo, hi = min(self.RESOLUTIONS), max(self.RESOLUTIONS)
            raise ArchError(f"ofa-mbv3 resolution must be {lo}..{hi} step 4 (or None to search it), got {resolution}")
        w = float_param(self.name, "width", width, 1.0, 1.2)
        if w not in (1.0, 1.2):
            raise ArchError(f"ofa-mbv3 width must be 1.0 or 1.2, got {width}")
        super().__init__(
            resolution=res,
            width=w,
            num_classes=int_param(self.name, "num_classes", num_classes, 1, 100_000),
            **extra,
        )

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        r = self.params["resolution"] or max(self.RESOLUTIONS)
        return (1, 3, r, r)

    @cached_property
    def decisions(self) -> list[Decision]:  # type: ignore[override]
        out = [Decision(f"d{s + 1}", self.DEPTHS) for s in range(5)]
        out += [Decision(f"k{b + 1:02d}", self.KERNELS) for b in range(20)]
        out += [Decision(f"e{b + 1:02d}", self.EXPANDS) for b in range(20)]
        if self.params["resolution"] is None:
            out.append(Decision("r", self.RESOLUTIONS))
        return out

    def _widths(self) -> tuple[int, int, list[int], int, int]:
        w = self.params["width"]
        stem = make_divisible(16 * w)
        stages = [make_divisible(c * w) for c in self.BASE_WIDTHS]
        final_expand = make_divisible(960 * w)
        last = make_divisible(1280 * w)
        return stem, stem, stages, final_expand, last

    def _fixed_ops(self, r: int) -> tuple[list[OpSpec], list[OpSpec]]:
        stem, first, stages, final_expand, last = self._widths()
        hw = conv_out(r, 3, 2)
        head = [
            OpSpec("conv", r, 3, stem, kernel=3, stride=2, act="hswish"),
            OpSpec("mbconv", hw, stem, first, kernel=3, expand=1, act="relu"),
        ]
        for s in self.STRIDES:
            hw = conv_out(hw, 3, s)
        tail = [
            OpSpec("conv", hw, stages[-1], final_expand, kernel=1, act="hswish"),
            OpSpec("gap", hw, final_expand, final_expand, act="none"),
            OpSpec("conv", 1, final_expand, last, kernel=1, act="hswish"),
            OpSpec("classifier", 1, last, self.params["num_classes"], act="none"),
        ]
        return head, tail

    def _block_op(self, r: int, stage: int, j: int, k: int, e: int) -> OpSpec:
        _, first, stages, _, _ = self._widths()
        hw = conv_out(r, 3, 2)
        for s in self.STRIDES[:stage]:
            hw = conv_out(hw, 3, s)
        cin = stages[stage - 1] if stage > 0 else first
        stride = self.STRIDES[stage]
        if j > 0:
            hw, cin, stride = conv_out(hw, 3, stride), stages[stage], 1
        return OpSpec(
            "mbconv",
            hw,
            cin,
            stages[stage],
            kernel=k,
            stride=stride,
            expand=e,
            act=self.ACTS[stage],
            se=self.SE[stage],
        )

    def _resolution_of(self, idx: tuple[int, ...]) -> int:
        return self.params["resolution"] or self.RESOLUTIONS[idx[45]]

    def _ops_of_indices(self, idx: tuple[int, ...]) -> list[OpSpec]:
        r = self._resolution_of(idx)
        head, tail = self._fixed_ops(r)
        body = []
        for stage in range(5):
            depth = self.DEPTHS[idx[stage]]
            for j in range(depth):
                b = stage * 4 + j
                k, e = self.KERNELS[idx[5 + b]], self.EXPANDS[idx[25 + b]]
                body.append(self._block_op(r, stage, j, k, e))
        return [*head, *body, *tail]

    def _all_indices_ops(self) -> list[OpSpec]:
        ops: list[OpSpec] = []
        for r in [self.params["resolution"]] if self.params["resolution"] else self.RESOLUTIONS:
            head, tail = self._fixed_ops(r)
            ops += head + tail
            for stage in range(5):
                for j in range(2):  # block 0 and every later block (same shape)
                    for k in self.KERNELS:
                        for e in self.EXPANDS:
                            ops.append(self._block_op(r, stage, j, k, e))
        return ops

    @cached_property
    def _id_table(self) -> tuple[np.ndarray, np.ndarray]:
        """fixed[res, n_fixed] and blocks[res, 20, 3 kernels, 3 expands] vocabulary ids."""
        vi = self.vocabulary_index
        rs = [self.params["resolution"]] if self.params["resolution"] else list(self.RESOLUTIONS)
        fixed = np.array([[vi[o.key] for part in self._fixed_ops(r) for o in part] for r in rs], dtype=np.int64)
        blocks = np.zeros((len(rs), 20, 3, 3), dtype=np.int64)
        for ri, r in enumerate(rs):
            for b in range(20):
                for ki, k in enumerate(self.KERNELS):
                    for ei, e in enumerate(self.EXPANDS):
                        blocks[ri, b, ki, ei] = vi[self._block_op(r, b // 4, b % 4, k, e).key]
        return fixed, blocks

    def op_ids(self, idx: np.ndarray) -> np.ndarray:
        idx = np.atleast_2d(np.asarray(idx, dtype=np.int64))
        fixed, blocks = self._id_table
        ri = idx[:, 45] if self.params["resolution"] is None else np.zeros(len(idx), dtype=np.int64)
        depth = np.asarray(self.DEPTHS)[idx[:, :5]]  # (n, 5)
        b = np.arange(20)
        ids = blocks[ri[:, None], b[None, :], idx[:, 5:25], idx[:, 25:45]]  # (n, 20)
        active = (b[None, :] % 4) < depth[:, b // 4]
        ids = np.where(active, ids, -1)
        return np.concatenate([fixed[ri], ids], axis=1)
