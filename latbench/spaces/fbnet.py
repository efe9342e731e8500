"""The FBNet layer-wise space (Wu et al., CVPR 2019).

Macro-architecture as the paper's table 1: stem conv3x3 (16, stride 2), then
seven stages of searchable blocks (channels, repeats, first stride)
``(16,1,1) (24,4,2) (32,4,2) (64,4,2) (112,4,1) (184,4,2) (352,1,1)`` - 22
searchable layers - then conv1x1 to 1984, global pool and the classifier.
Every layer picks one of 9 candidates: MBConv ``k3``/``k5`` x expand 1/3/6,
the group-2 variants of the two expand-1 blocks (1x1 group convs with a
channel shuffle) and ``skip`` (identity, or a 1x1 conv where the layer changes
shape, as FBNet's own Identity op).

Two settings: ``imagenet`` (224 input, 1000 classes) and ``cifar`` (32 input,
100 classes; the stem and the 24-channel stage keep stride 1 so the head sees
4x4, the way ImageNet spaces are commonly moved to CIFAR).

Seeds: :data:`FBNET_SEEDS` holds FBNet-A, -B and -C as published in the FBNet
model zoo (facebookresearch/mobile-vision).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from latbench.errors import ArchError
from latbench.ops import OpSpec, conv_out
from latbench.spaces.base import Arch, Decision, SearchSpace

FBNET_OPTIONS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
#: (channels, repeats, first stride) of the seven stages (paper table 1)
FBNET_STAGES = ((16, 1, 1), (24, 4, 2), (32, 4, 2), (64, 4, 2), (112, 4, 1), (184, 4, 2), (352, 1, 1))
SETTINGS = {
    "imagenet": {"resolution": 224, "num_classes": 1000, "stem_stride": 2, "strides": (1, 2, 2, 2, 1, 2, 1)},
    "cifar": {"resolution": 32, "num_classes": 100, "stem_stride": 1, "strides": (1, 1, 2, 2, 1, 2, 1)},
}

_A = ["skip", "k3_e3", "k3_e1", "skip", "skip", "k5_e6", "k3_e3", "k5_e1", "k3_e3", "k5_e6", "k5_e3", "k5_e1_g2"]
_A += ["k5_e6", "k3_e6", "k5_e1_g2", "k5_e1", "k3_e1_g2", "k5_e6", "k5_e6", "k5_e3", "k5_e6", "k5_e6"]
_B = ["k3_e1", "k3_e6", "k5_e1", "k3_e1", "k3_e1", "k5_e6", "k5_e3", "k3_e6", "k5_e6", "k5_e6", "k5_e6", "skip"]
_B += ["k5_e3", "k5_e6", "k3_e1", "k5_e1", "k5_e3", "k5_e6", "k5_e1", "k5_e6", "k5_e6", "k3_e6"]
_C = ["k3_e1", "k3_e6", "skip", "k3_e1", "k3_e1", "k5_e6", "k5_e3", "k5_e6", "k3_e6", "k5_e6", "k5_e3", "k5_e6"]
_C += ["k5_e6", "k5_e6", "k5_e6", "k5_e6", "k5_e3", "k5_e6", "k5_e6", "k5_e6", "k5_e6", "k3_e6"]
#: the paper's searched networks, layer by layer
FBNET_SEEDS: dict[str, list[str]] = {"fbnet-a": _A, "fbnet-b": _B, "fbnet-c": _C}


def parse_option(option: str) -> tuple[int, int, int]:
    """``k5_e1_g2`` -> (kernel 5, expand 1, groups 2)."""
    parts = option.split("_")
    return int(parts[0][1:]), int(parts[1][1:]), int(parts[2][1:]) if len(parts) > 2 else 1


class FBNet(SearchSpace):
    """FBNet: 22 searchable layers x 9 candidates (9**22 ~ 1e21 networks)."""

    name = "fbnet"

    def __init__(self, setting: str = "imagenet", num_classes: int | None = None) -> None:
        if setting not in SETTINGS:
            raise ArchError(f"fbnet setting must be one of {', '.join(SETTINGS)}, got {setting!r}")
        classes = int(num_classes) if num_classes is not None else SETTINGS[setting]["num_classes"]
        if classes < 1:
            raise ArchError(f"num_classes must be >= 1, got {classes}")
        super().__init__(setting=setting, num_classes=classes)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        r = SETTINGS[self.params["setting"]]["resolution"]
        return (1, 3, r, r)

    @cached_property
    def _layout(self) -> dict[str, Any]:
        cfg = SETTINGS[self.params["setting"]]
        r = cfg["resolution"]
        hw = conv_out(r, 3, cfg["stem_stride"])
        head = [OpSpec("conv", r, 3, 16, kernel=3, stride=cfg["stem_stride"], act="relu")]
        layers: list[tuple[int, int, int, int]] = []  # hw, cin, cout, stride
        cin = 16
        for (c, n, _), s in zip(FBNET_STAGES, cfg["strides"], strict=True):
            for j in range(n):
                stride = s if j == 0 else 1
                layers.append((hw, cin, c, stride))
                hw = conv_out(hw, 3, stride)
                cin = c
        tail = [
            OpSpec("conv", hw, cin, 1984, kernel=1, act="relu"),
            OpSpec("classifier", hw, 1984, self.params["num_classes"], act="none"),
        ]
        return {"head": head, "layers": layers, "tail": tail}

    @cached_property
    def decisions(self) -> list[Decision]:  # type: ignore[override]
        return [Decision(f"l{i + 1:02d}", FBNET_OPTIONS) for i in range(len(self._layout["layers"]))]

    def seed(self, name: str) -> Arch:
        """FBNet-A/B/C as an arch of this space."""
        if name not in FBNET_SEEDS:
            raise ArchError(f"unknown FBNet seed {name!r}; known: {', '.join(FBNET_SEEDS)}")
        return self.arch({d.name: o for d, o in zip(self.decisions, FBNET_SEEDS[name], strict=True)})

    def layer_ops(self, i: int, option: str) -> list[OpSpec]:
        """The ops of layer ``i`` with ``option``: one op, three (group-2 block) or a ``zero`` (identity)."""
        hw, cin, cout, s = self._layout["layers"][i]
        if option == "skip":
            if s == 1 and cin == cout:
                return [OpSpec("zero", hw, cin, cout, act="none")]
            return [OpSpec("conv", hw, cin, cout, kernel=1, stride=s, act="relu")]
        k, e, g = parse_option(option)
        if g == 1:
            return [OpSpec("mbconv", hw, cin, cout, kernel=k, stride=s, expand=e, act="relu")]
        hw_out = conv_out(hw, k, s)
        return [
            OpSpec("conv", hw, cin, cin, kernel=1, groups=g, act="relu"),
            OpSpec("conv", hw, cin, cin, kernel=k, stride=s, groups=cin, act="relu"),
            OpSpec("conv", hw_out, cin, cout, kernel=1, groups=g, act="none"),
        ]

    def units(self, arch: Arch) -> list[tuple[list[OpSpec], bool]]:
        """The network as units: (ops, is a group-2 block with shuffle and maybe a residual)."""
        arch = self.validate(arch)
        out: list[tuple[list[OpSpec], bool]] = [([op], False) for op in self._layout["head"]]
        for i, d in enumerate(self.decisions):
            option = arch["choices"][d.name]
            out.append((self.layer_ops(i, option), option.endswith("_g2")))
        out.extend(([op], False) for op in self._layout["tail"])
        return out

    def _ops_of_indices(self, idx: tuple[int, ...]) -> list[OpSpec]:
        body = [op for i, j in enumerate(idx) for op in self.layer_ops(i, FBNET_OPTIONS[j])]
        return [*self._layout["head"], *body, *self._layout["tail"]]

    def _all_indices_ops(self) -> list[OpSpec]:
        ops = [*self._layout["head"], *self._layout["tail"]]
        for i in range(len(self.decisions)):
            for o in FBNET_OPTIONS:
                ops.extend(self.layer_ops(i, o))
        return ops

    @cached_property
    def _id_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        vi = self.vocabulary_index
        head = np.array([vi[o.key] for o in self._layout["head"]], dtype=np.int64)
        tail = np.array([vi[o.key] for o in self._layout["tail"]], dtype=np.int64)
        table = np.full((len(self.decisions), len(FBNET_OPTIONS), 3), -1, dtype=np.int64)
        for i in range(len(self.decisions)):
            for j, o in enumerate(FBNET_OPTIONS):
                timed = [op for op in self.layer_ops(i, o) if op.type not in self.free_types]
                table[i, j, : len(timed)] = [vi[op.key] for op in timed]
        return head, table, tail

    def op_ids(self, idx: np.ndarray) -> np.ndarray:
        """Vectorised: head, 3 slots per layer (``-1`` pads), tail."""
        idx = np.atleast_2d(np.asarray(idx, dtype=np.int64))
        head, table, tail = self._id_table
        n = len(idx)
        body = table[np.arange(table.shape[0])[None, :], idx].reshape(n, -1)
        return np.concatenate([np.broadcast_to(head, (n, len(head))), body, np.broadcast_to(tail, (n, len(tail)))], 1)

    def build(self, arch: Arch) -> Any:
        from latbench.torch_fbnet import build_fbnet

        return build_fbnet(self.units(arch)).eval()
