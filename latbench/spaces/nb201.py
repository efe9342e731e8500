"""The NAS-Bench-201 space (Dong & Yang, ICLR 2020).

One cell of 4 nodes and 6 edges (node ``j`` sums its edges from every node
``i < j``; node 0 is the cell input, node 3 its output), each edge one of
``none``, ``skip_connect``, ``nor_conv_1x1``, ``nor_conv_3x3``,
``avg_pool_3x3`` (``nor_conv`` = ReLU-Conv-BN), 5**6 = 15,625 archs. The CIFAR
network: stem conv3x3 to C + BN, three stages of N cells at C, 2C, 4C with a
residual reduction block (ResNet basic block, stride 2) between stages, BN-ReLU,
global average pool, linear classifier; 32x32 input.

The benchmark's **index order**: all 5**6 op tuples in lexicographic order
(edges ``1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2``, the first edge most significant,
ops in the order above), then shuffled by Python's ``random.Random(88).shuffle``
(the benchmark's generation script). The published latency CSV's ``index``
column follows this order for all 15,625 rows (checked by the tests).

**Isomorphism classes** (networks computing the same function): edges that
are ``none`` or lie on no path from node 0 to node 3 never change the output,
``skip_connect`` is the identity, sums are order-free, so isomorphic graphs
(nodes 1 and 2 swapped, a skip chain vs a direct edge) collapse.
:func:`function_key` names the class; there are 4,930 classes
(:data:`NUM_ISOMORPHISM_CLASSES`). The benchmark's own ``to_unique_str``
keeps zero terms and nested sums and counts 6,466 (:func:`benchmark_unique_str`).

``num_classes`` defaults to 100: the shipped latency datasets were measured on
the CIFAR-100 network (the classifier is 64 x classes; 10 or 100 change
latency by well under 1%).
"""

from __future__ import annotations

import random
import re
from functools import cached_property, lru_cache
from itertools import product
from typing import Any

import numpy as np

from latbench.errors import ArchError
from latbench.ops import OpSpec
from latbench.spaces.base import Arch, Decision, SearchSpace

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: (from node, to node) of the six edges, in the benchmark's string order
NB201_EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
EDGE_NAMES = tuple(f"e{j}_{i}" for i, j in NB201_EDGES)
NUM_ARCHS = 5**6
NUM_ISOMORPHISM_CLASSES = 4930
NUM_BENCHMARK_UNIQUE_STRS = 6466
_STR_RE = re.compile(
    r"^\|([a-z0-9_]+)~0\|\+\|([a-z0-9_]+)~0\|([a-z0-9_]+)~1\|\+\|([a-z0-9_]+)~0\|([a-z0-9_]+)~1\|([a-z0-9_]+)~2\|$"
)

Ops6 = tuple[str, str, str, str, str, str]


# ----------------------------------------------------------------------------- strings and indices
def ops_to_str(ops: Ops6) -> str:
    """The benchmark's arch string, e.g. ``|nor_conv_3x3~0|+|skip_connect~0|none~1|+|...~2|``."""
    a, b, c, d, e, f = ops
    return f"|{a}~0|+|{b}~0|{c}~1|+|{d}~0|{e}~1|{f}~2|"


def str_to_ops(text: str) -> Ops6:
    """Parse an arch string; raises :class:`ArchError` on anything else."""
    m = _STR_RE.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise ArchError(f"not a NAS-Bench-201 arch string: {str(text)[:80]!r}")
    ops = m.groups()
    bad = [o for o in ops if o not in NB201_OPS]
    if bad:
        raise ArchError(f"unknown NAS-Bench-201 op {bad[0]!r} in {text!r} (ops: {', '.join(NB201_OPS)})")
    return ops  # type: ignore[return-value]


@lru_cache(maxsize=1)
def index_order() -> tuple[Ops6, ...]:
    """All 15,625 op tuples in the benchmark's index order (lexicographic, then ``Random(88).shuffle``)."""
    archs = [tuple(p) for p in product(NB201_OPS, repeat=6)]
    random.Random(88).shuffle(archs)
    return tuple(archs)  # type: ignore[arg-type]


@lru_cache(maxsize=1)
def _index_of() -> dict[Ops6, int]:
    return {ops: i for i, ops in enumerate(index_order())}


def ops_of_index(index: int) -> Ops6:
    if not 0 <= int(index) < NUM_ARCHS:
        raise ArchError(f"NAS-Bench-201 index must be 0..{NUM_ARCHS - 1}, got {index}")
    return index_order()[int(index)]


def index_of_ops(ops: Ops6) -> int:
    return _index_of()[tuple(ops)]  # type: ignore[index]


# ----------------------------------------------------------------------------- graph structure
def live_edges(ops: Ops6) -> tuple[bool, ...]:
    """Which edges can change the cell output: not ``none`` and on a path from node 0 to node 3."""
    fwd = {0}
    for (i, j), o in zip(NB201_EDGES, ops, strict=True):
        if o != "none" and i in fwd:
            fwd.add(j)
    bwd = {3}
    for (i, j), o in reversed(list(zip(NB201_EDGES, ops, strict=True))):
        if o != "none" and j in bwd:
            bwd.add(i)
    if 3 not in fwd:
        return (False,) * 6
    return tuple(o != "none" and i in fwd and j in bwd for (i, j), o in zip(NB201_EDGES, ops, strict=True))


def function_key(ops: Ops6) -> str:
    """A key equal for exactly the cells that compute the same function (up to renaming weights).

    Each node's value is a multiset of terms: ``none`` contributes nothing,
    ``skip_connect`` passes its input's terms through, any other op is one term
    ``op(input)``; sums are order-free. Dead edges and isomorphic graphs
    (e.g. nodes 1 and 2 swapped) get the same key.
    """
    nodes: dict[int, tuple[Any, ...]] = {0: ("x",)}
    for j in (1, 2, 3):
        terms: list[Any] = []
        for (i, jj), o in zip(NB201_EDGES, ops, strict=True):
            if jj != j or o == "none" or not nodes[i]:
                continue
            if o == "skip_connect":
                terms.extend(nodes[i])
            else:
                terms.append((o, nodes[i]))
        nodes[j] = tuple(sorted(terms, key=repr))
    return repr(nodes[3])


def benchmark_unique_str(ops: Ops6) -> str:
    """The benchmark's own ``to_unique_str(consider_zero=True)`` (keeps zero terms, nests sums): 6,466 classes."""
    nodes = {0: "0"}
    for j in (1, 2, 3):
        cur = []
        for (i, jj), o in zip(NB201_EDGES, ops, strict=True):
            if jj != j:
                continue
            if o == "none" or nodes[i] == "#":
                cur.append("#")
            elif o == "skip_connect":
                cur.append(nodes[i])
            else:
                cur.append(f"({nodes[i]})@{o}")
        nodes[j] = "+".join(sorted(cur))
    return nodes[3]


@lru_cache(maxsize=1)
def isomorphism_classes() -> dict[str, list[int]]:
    """Function key -> benchmark indices of its members, the representative first.

    The representative is the member with the fewest non-``none`` edges (the
    network that computes the function with the least work), ties by index.
    """
    out: dict[str, list[int]] = {}
    for i, ops in enumerate(index_order()):
        out.setdefault(function_key(ops), []).append(i)
    order = index_order()
    return {k: sorted(v, key=lambda i: (sum(o != "none" for o in order[i]), i)) for k, v in out.items()}


def representatives() -> list[int]:
    """One benchmark index per isomorphism class (its representative), ascending."""
    return sorted(members[0] for members in isomorphism_classes().values())


def structure_features(ops: Ops6) -> np.ndarray:
    """Arch features a latency model can use: op counts (all / live edges), a dead-cell flag, live nodes.

    Runtimes that run every edge see the first counts; graph compilers that
    drop dead code (TFLite on phones) see the live ones.
    """
    live = live_edges(ops)
    f = np.zeros(10)
    for o, keep in zip(ops, live, strict=True):
        k = NB201_OPS.index(o)
        if k:
            f[k - 1] += 1
            if keep:
                f[4 + k - 1] += 1
    f[8] = 0.0 if any(live) else 1.0
    f[9] = len({j for (_, j), keep in zip(NB201_EDGES, live, strict=True) if keep})
    return f


STRUCTURE_FEATURE_NAMES = (
    "n_skip",
    "n_conv1x1",
    "n_conv3x3",
    "n_pool",
    "live_skip",
    "live_conv1x1",
    "live_conv3x3",
    "live_pool",
    "dead_cell",
    "live_nodes",
)


# ----------------------------------------------------------------------------- the space
def edge_op(name: str, hw: int, c: int) -> OpSpec:
    """The table row of one cell edge at ``c`` channels and ``hw`` x ``hw``."""
    if name == "none":
        return OpSpec("zero", hw, c, c, act="none")
    if name == "skip_connect":
        return OpSpec("skip_connect", hw, c, c, act="none")
    if name == "avg_pool_3x3":
        return OpSpec("avg_pool", hw, c, c, kernel=3, act="none")
    k = 1 if name == "nor_conv_1x1" else 3
    return OpSpec("conv", hw, c, c, kernel=k, act="relu")  # ReLU-Conv-BN: the same kernels as Conv-BN-ReLU


def reduction_ops(hw: int, c: int) -> list[OpSpec]:
    """The residual reduction block C -> 2C, stride 2: two 3x3 convs and the avg-pool + 1x1 shortcut."""
    return [
        OpSpec("conv", hw, c, 2 * c, kernel=3, stride=2, act="relu"),
        OpSpec("conv", hw // 2, 2 * c, 2 * c, kernel=3, act="relu"),
        OpSpec("avg_pool", hw, c, c, kernel=2, stride=2, act="none"),
        OpSpec("conv", hw // 2, c, 2 * c, kernel=1, act="none"),
    ]


class NasBench201(SearchSpace):
    """NAS-Bench-201: one searched cell repeated 3 x ``cells`` times in the CIFAR network."""

    name = "nb201"

    def __init__(self, channels: int = 16, cells: int = 5, num_classes: int = 100, resolution: int = 32) -> None:
        if int(channels) < 1 or int(cells) < 1 or int(num_classes) < 1:
            raise ArchError(f"nb201 needs channels, cells, num_classes >= 1, got {channels}, {cells}, {num_classes}")
        if int(resolution) < 8 or int(resolution) % 4:
            raise ArchError(f"nb201 resolution must be a multiple of 4 and >= 8, got {resolution}")
        super().__init__(
            channels=int(channels), cells=int(cells), num_classes=int(num_classes), resolution=int(resolution)
        )

    @cached_property
    def decisions(self) -> list[Decision]:  # type: ignore[override]
        return [Decision(n, NB201_OPS) for n in EDGE_NAMES]

    # ------------------------------------------------------------ strings
    def arch_from_str(self, text: str) -> Arch:
        return self.arch(dict(zip(EDGE_NAMES, str_to_ops(text), strict=True)))

    def arch_from_index(self, index: int) -> Arch:
        return self.arch(dict(zip(EDGE_NAMES, ops_of_index(index), strict=True)))

    def ops6(self, arch: Arch) -> Ops6:
        arch = self.validate(arch)
        return tuple(arch["choices"][n] for n in EDGE_NAMES)  # type: ignore[return-value]

    def arch_str(self, arch: Arch) -> str:
        return ops_to_str(self.ops6(arch))

    def index_of(self, arch: Arch) -> int:
        return index_of_ops(self.ops6(arch))

    def canonical(self, arch: Arch) -> Arch:
        """The representative arch of ``arch``'s isomorphism class (see :func:`isomorphism_classes`)."""
        rep = isomorphism_classes()[function_key(self.ops6(arch))][0]
        return self.arch_from_index(rep)

    # ------------------------------------------------------------ layout
    @cached_property
    def _stages(self) -> list[tuple[int, int]]:
        """(hw, channels) of the three stages."""
        c, r = self.params["channels"], self.params["resolution"]
        return [(r, c), (r // 2, 2 * c), (r // 4, 4 * c)]

    def _fixed(self) -> tuple[list[OpSpec], list[list[OpSpec]], list[OpSpec]]:
        (h0, c0), (h1, c1), (h2, c2) = self._stages
        stem = [OpSpec("conv", self.params["resolution"], 3, c0, kernel=3, act="none")]
        reductions = [reduction_ops(h0, c0), reduction_ops(h1, c1)]
        head = [OpSpec("classifier", h2, c2, self.params["num_classes"], act="none")]
        return stem, reductions, head

    def _ops_of_indices(self, idx: tuple[int, ...]) -> list[OpSpec]:
        stem, reductions, head = self._fixed()
        out = list(stem)
        for s, (hw, c) in enumerate(self._stages):
            cell = [edge_op(NB201_OPS[i], hw, c) for i in idx]
            out.extend(cell * self.params["cells"])
            if s < 2:
                out.extend(reductions[s])
        return out + head

    def _all_indices_ops(self) -> list[OpSpec]:
        stem, reductions, head = self._fixed()
        ops = [*stem, *reductions[0], *reductions[1], *head]
        for hw, c in self._stages:
            ops.extend(edge_op(o, hw, c) for o in NB201_OPS)
        return ops

    @cached_property
    def _id_table(self) -> tuple[list[np.ndarray], np.ndarray]:
        vi = self.vocabulary_index
        stem, reductions, head = self._fixed()

        def ids(ops: list[OpSpec]) -> np.ndarray:
            return np.array([vi[o.key] for o in ops if o.type not in self.free_types], dtype=np.int64)

        fixed = [ids(stem), ids(reductions[0]), ids(reductions[1]), ids(head)]
        table = np.full((3, len(NB201_OPS)), -1, dtype=np.int64)
        for s, (hw, c) in enumerate(self._stages):
            for j, o in enumerate(NB201_OPS):
                op = edge_op(o, hw, c)
                if op.type not in self.free_types:
                    table[s, j] = vi[op.key]
        return fixed, table

    def op_ids(self, idx: np.ndarray) -> np.ndarray:
        """Vectorised: stem, stage cells, reduction, ..., classifier (``-1`` for free edges)."""
        idx = np.atleast_2d(np.asarray(idx, dtype=np.int64))
        (stem, red0, red1, head), table = self._id_table
        n = len(idx)
        parts = [np.broadcast_to(stem, (n, len(stem)))]
        for s in range(3):
            parts.append(np.tile(table[s][idx], (1, self.params["cells"])))
            if s < 2:
                red = red0 if s == 0 else red1
                parts.append(np.broadcast_to(red, (n, len(red))))
        parts.append(np.broadcast_to(head, (n, len(head))))
        return np.concatenate(parts, axis=1)

    # ------------------------------------------------------------ counts
    def _param_correction(self) -> int:
        """Parameters the op rows do not describe: the final BN (+), the BN-less shortcut 1x1 convs (-)."""
        c = self.params["channels"]
        return 2 * 4 * c - 2 * (2 * c) - 2 * (4 * c)

    def params_count(self, arch: Arch) -> int:
        """Exact parameters of the benchmark network (1,531,546 for all-``nor_conv_3x3``, 10 classes)."""
        return super().params_count(arch) + self._param_correction()

    def summary(self, arch: Arch) -> dict[str, Any]:
        out = super().summary(arch)
        out["params"] += self._param_correction()
        return out

    # ------------------------------------------------------------ network
    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        r = self.params["resolution"]
        return (1, 3, r, r)

    def build(self, arch: Arch) -> Any:
        from latbench.torch_nb201 import NB201Network

        return NB201Network(
            self.ops6(arch), self.params["channels"], self.params["cells"], self.params["num_classes"]
        ).eval()
