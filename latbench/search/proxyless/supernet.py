"""The over-parameterized network: every searchable block is a :class:`MixedOp` over its candidate ops.

Architecture parameters ``alpha`` live in one ``(decisions, max_options)`` tensor
(options a decision does not have are masked out), so the optimizer, the
expected latency and the ``alpha.csv`` log all read the same numbers.

Modes (how a mixed op combines its candidates):

``binary``
    ProxylessNAS path binarization. A weight step runs one path per block,
    sampled from ``p = softmax(alpha)``. An alpha step samples two paths per
    block (from ``p``, without replacement), re-normalizes their alphas
    (``q = softmax(alpha_pair)``), runs the active one (sampled from ``q``) with
    gradients and the other one without, and passes
    ``dL/dg_j = <dL/dy, o_j>`` to alpha through ``y = o_k + sum_j (q_j - sg(q_j)) o_j``
    (``sg`` = stop gradient), which is the ProxylessNAS binary-gate gradient
    ``dL/dalpha_i = sum_j dL/dg_j q_j (delta_ij - q_i)``. Memory: one sub-network
    plus one extra block output per block.
``gumbel``
    FBNet: ``y = sum_j w_j o_j`` with ``w = gumbel_softmax(alpha, tau)``; ``tau``
    is annealed by the training loop. Every path runs.
``softmax``
    DARTS: ``y = sum_j softmax(alpha)_j o_j``. Every path runs (small spaces).

The network runs in ``eval`` phase on the argmax path of every block.

Spaces: any space whose arch maps one op to each decision, with the other ops
fixed (``proxyless-mobile`` as a chain, ``darts`` as its cell). A ``zero``
candidate is the identity in a chain (a skipped block; the MBConv candidates add
their own residual) and zeros in a DARTS cell (the ``none`` edge).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latbench.errors import LatbenchError
from latbench.ops import OpSpec
from latbench.spaces import Arch, SearchSpace

MODES = ("binary", "gumbel", "softmax")
PHASES = ("weights", "alpha", "eval")


@dataclass(frozen=True)
class SpaceLayout:
    """Which op of an arch each decision picks: ``fixed`` ops (position, spec) and ``candidates[d][j]``."""

    n_ops: int
    fixed: tuple[tuple[int, OpSpec], ...]
    positions: tuple[int, ...]  # op position of each decision
    candidates: tuple[tuple[OpSpec, ...], ...]  # per decision, per option (zero included)


def space_layout(space: SearchSpace) -> SpaceLayout:
    """The one-op-per-decision layout of ``space``; :class:`LatbenchError` for spaces without one."""
    n_dec = len(space.decisions)
    base = tuple(0 for _ in range(n_dec))
    base_ops = space._ops_of_indices(base)
    why = (
        f"space {space.name!r} does not map one op to each decision (e.g. depth decisions), so it has no "
        "mixed-op supernet; use proxyless-mobile or darts"
    )
    positions: list[int] = []
    candidates: list[tuple[OpSpec, ...]] = []
    for d_i, d in enumerate(space.decisions):
        per_option = []
        pos: int | None = None
        for j in range(len(d)):
            idx = list(base)
            idx[d_i] = j
            ops = space._ops_of_indices(tuple(idx))
            if len(ops) != len(base_ops):
                raise LatbenchError(why)
            diff = [p for p, (a, b) in enumerate(zip(ops, base_ops, strict=True)) if a != b]
            if len(diff) > 1 or (pos is not None and diff and diff[0] != pos):
                raise LatbenchError(why)
            if diff:
                pos = diff[0]
            per_option.append(ops)
        if pos is None:  # every option gives the same op: find the slot by elimination below
            raise LatbenchError(why)
        positions.append(pos)
        candidates.append(tuple(ops[pos] for ops in per_option))
    if len(set(positions)) != n_dec:
        raise LatbenchError(why)
    fixed = tuple((p, op) for p, op in enumerate(base_ops) if p not in set(positions))
    return SpaceLayout(len(base_ops), fixed, tuple(positions), tuple(candidates))


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class ZeroOutput(nn.Module):
    """The DARTS ``none`` edge: zeros of the output shape."""

    def __init__(self, spec: OpSpec) -> None:
        super().__init__()
        self.stride, self.cout = spec.stride, spec.cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return x.new_zeros(x.shape[0], self.cout, x.shape[2], x.shape[3])


class SeparateChoices(nn.Module):
    """Candidates with their own weights (ProxylessNAS / DARTS as published)."""

    def __init__(self, specs: tuple[OpSpec, ...], zero_is_identity: bool) -> None:
        super().__init__()
        from latbench.torch_ops import build_module

        self.specs = specs
        self.ops = nn.ModuleList(
            (Identity() if zero_is_identity else ZeroOutput(s)) if s.type == "zero" else build_module(s) for s in specs
        )

    def run(self, j: int, x: torch.Tensor) -> torch.Tensor:
        return self.ops[j](x)

    def option_state(self, j: int) -> dict[str, torch.Tensor]:
        """State dict of option ``j`` as ``OpSpec.build()`` names it."""
        return {k: v.detach().clone() for k, v in self.ops[j].state_dict().items()}


class SharedMBConvChoices(nn.Module):
    """MBConv candidates of one block sharing their convolution weights (a "superkernel").

    One ``expand`` (``mid_max x cin``), ``depthwise`` (``mid_max x k_max x k_max``)
    and ``project`` (``cout x mid_max``) weight; option ``(k, e)`` uses the first
    ``mid(e)`` channels and the centre ``k x k`` of the kernel, as Single-Path NAS
    and Once-for-All do. Each option keeps private BatchNorms. Sharing is what
    makes a supernet of this depth trainable in a few CPU minutes: with separate
    weights every sampled path computes unrelated features and a 21-block supernet
    on digits stays at chance accuracy for 25 epochs (measured; see the report).
    :meth:`option_state` slices an option out into the exact ``MBConv`` of its OpSpec.
    """

    def __init__(self, specs: tuple[OpSpec, ...], zero_is_identity: bool) -> None:
        super().__init__()
        real = [s for s in specs if s.type != "zero"]
        s0 = real[0]
        self.specs = specs
        self.zero_is_identity = zero_is_identity
        self.k_max = max(s.kernel for s in real)
        mid_max = max(s.mid for s in real)
        self.w_expand = nn.Parameter(torch.empty(mid_max, s0.cin, 1, 1))
        self.w_depthwise = nn.Parameter(torch.empty(mid_max, 1, self.k_max, self.k_max))
        self.w_project = nn.Parameter(torch.empty(s0.cout, mid_max, 1, 1))
        for w in (self.w_expand, self.w_depthwise, self.w_project):
            nn.init.kaiming_normal_(w, mode="fan_out")
        self.bns = nn.ModuleList(
            nn.ModuleList()
            if s.type == "zero"
            else nn.ModuleList([nn.BatchNorm2d(s.mid), nn.BatchNorm2d(s.mid), nn.BatchNorm2d(s.cout)])
            for s in specs
        )
        self.zero_ops = nn.ModuleList(
            ZeroOutput(s) if s.type == "zero" and not zero_is_identity else Identity() for s in specs
        )

    @staticmethod
    def can_share(specs: tuple[OpSpec, ...]) -> bool:
        real = [s for s in specs if s.type != "zero"]
        if len(real) < 2 or any(s.type != "mbconv" or s.se or s.expand == 1.0 for s in real):
            return False
        first = real[0]
        return all(
            (s.hw, s.cin, s.cout, s.stride, s.act) == (first.hw, first.cin, first.cout, first.stride, first.act)
            for s in real
        )

    def _slices(self, j: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.specs[j]
        c = (self.k_max - s.kernel) // 2
        k = s.kernel
        return (
            self.w_expand[: s.mid],
            self.w_depthwise[: s.mid, :, c : c + k, c : c + k],
            self.w_project[:, : s.mid],
        )

    def run(self, j: int, x: torch.Tensor) -> torch.Tensor:
        s = self.specs[j]
        if s.type == "zero":
            return self.zero_ops[j](x)
        from latbench.torch_ops import activation

        act = activation(s.act)
        w_e, w_d, w_p = self._slices(j)
        bn_e, bn_d, bn_p = self.bns[j]
        y = act(bn_e(F.conv2d(x, w_e)))
        y = act(bn_d(F.conv2d(y, w_d, stride=s.stride, padding=(s.kernel - 1) // 2, groups=s.mid)))
        y = bn_p(F.conv2d(y, w_p))
        return x + y if s.residual else y

    def option_state(self, j: int) -> dict[str, torch.Tensor]:
        """State dict of option ``j`` named as ``torch_ops.MBConv`` (``expand.0.weight``, ``expand.1.*``, ...)."""
        if self.specs[j].type == "zero":
            return {}
        out: dict[str, torch.Tensor] = {}
        for name, w, bn in zip(("expand", "depthwise", "project"), self._slices(j), self.bns[j], strict=True):
            out[f"{name}.0.weight"] = w.detach().clone()
            for k, v in bn.state_dict().items():
                out[f"{name}.1.{k}"] = v.detach().clone()
        return out


class MixedOp(nn.Module):
    """One searchable block: candidate ops combined according to the supernet's mode and phase."""

    def __init__(self, specs: tuple[OpSpec, ...], zero_is_identity: bool, share_weights: bool = False) -> None:
        super().__init__()
        shared = share_weights and SharedMBConvChoices.can_share(specs)
        self.choices: SeparateChoices | SharedMBConvChoices = (
            SharedMBConvChoices(specs, zero_is_identity) if shared else SeparateChoices(specs, zero_is_identity)
        )
        self.specs = specs
        self.zero = tuple(s.type == "zero" for s in specs)
        self.zero_is_identity = zero_is_identity
        # set by Supernet.plan() before each forward
        self.plan: dict[str, Any] = {}

    @property
    def shared(self) -> bool:
        return isinstance(self.choices, SharedMBConvChoices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.plan
        kind = plan["kind"]
        run = self.choices.run
        if kind == "single":
            return run(plan["k"], x)
        if kind == "weighted":
            w = plan["w"]
            out = None
            for j in range(len(self.specs)):
                if self.zero[j] and not self.zero_is_identity:
                    continue  # a zero output adds nothing
                y = w[j] * run(j, x)
                out = y if out is None else out + y
            return out if out is not None else run(0, x)
        if kind == "binary":  # two paths: active k (with grad) + the other one (no grad) for dL/dg
            k, pair, q = plan["k"], plan["pair"], plan["q"]
            y_active = run(k, x)
            out = y_active
            for slot, j in enumerate(pair):
                if j == k:
                    o = y_active
                else:
                    with torch.no_grad():
                        o = run(j, x)
                gate = q[slot] - q[slot].detach()  # value 0, gradient dq
                out = out + gate * o
            return out
        raise AssertionError(kind)


class Supernet(nn.Module):
    """Mixed ops over a space's decisions plus the space's fixed ops; ``alpha`` is the architecture.

    Subclasses wire the ops (:class:`ChainSupernet`, :class:`DartsSupernet`).
    """

    def __init__(
        self, space: SearchSpace, mode: str = "binary", zero_is_identity: bool = True, share_weights: bool = False
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise LatbenchError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
        self.space = space
        self.mode = mode
        self.layout = space_layout(space)
        n_dec = len(space.decisions)
        width = int(max(len(d) for d in space.decisions))
        mask = torch.zeros(n_dec, width, dtype=torch.bool)
        for i, d in enumerate(space.decisions):
            mask[i, : len(d)] = True
        self.register_buffer("option_mask", mask, persistent=False)
        self.alpha = nn.Parameter(torch.zeros(n_dec, width))
        self.mixed = nn.ModuleList(MixedOp(c, zero_is_identity, share_weights) for c in self.layout.candidates)
        self.fixed_ops = nn.ModuleDict({str(p): _build(op) for p, op in self.layout.fixed})
        self.tau = 1.0

    # ------------------------------------------------------------------ parameters
    def init_alpha(self, generator: torch.Generator, scale: float = 1e-3) -> None:
        """Small random alphas (ProxylessNAS ``init_ratio``), so the first argmax is not a tie."""
        with torch.no_grad():
            noise = torch.randn(self.alpha.shape, generator=generator) * scale
            self.alpha.copy_(noise.to(self.alpha.device))

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n != "alpha"]

    def masked_alpha(self) -> torch.Tensor:
        return self.alpha.masked_fill(~self.option_mask, float("-inf"))

    def probs(self) -> torch.Tensor:
        """``softmax(alpha)`` per decision, 0 on options a decision lacks; shape ``(decisions, max_options)``."""
        return torch.softmax(self.masked_alpha(), dim=1)

    def argmax_indices(self) -> np.ndarray:
        return self.masked_alpha().argmax(dim=1).detach().cpu().numpy().astype(np.int64)

    def derived_arch(self) -> Arch:
        return self.space.from_indices(self.argmax_indices())

    # ------------------------------------------------------------------ planning
    def plan(self, phase: str, generator: torch.Generator | None = None, fixed: np.ndarray | None = None) -> None:
        """Decide, for the next forward, what every mixed op runs.

        ``phase``: ``weights`` (train weights; alpha gets no gradient), ``alpha``
        (train alpha), ``eval`` (argmax path, or the indices ``fixed``).
        """
        if phase not in PHASES:
            raise ValueError(phase)
        if phase == "eval" or fixed is not None:
            idx = self.argmax_indices() if fixed is None else np.asarray(fixed)
            for m, k in zip(self.mixed, idx, strict=True):
                m.plan = {"kind": "single", "k": int(k)}
            return
        logits = self.masked_alpha()
        if self.mode == "binary":
            p = torch.softmax(logits.detach(), dim=1).cpu()
            if phase == "weights":
                ks = torch.multinomial(p, 1, generator=generator)[:, 0]
                for m, k in zip(self.mixed, ks.tolist(), strict=True):
                    m.plan = {"kind": "single", "k": int(k)}
                return
            pairs = torch.multinomial(p, 2, replacement=False, generator=generator)  # (decisions, 2)
            u = torch.rand(len(self.mixed), generator=generator)
            for i, m in enumerate(self.mixed):
                pair = pairs[i].tolist()
                q = torch.softmax(logits[i, pairs[i].to(logits.device)], dim=0)
                k = pair[0] if float(u[i]) < float(q[0].detach()) else pair[1]
                m.plan = {"kind": "binary", "k": k, "pair": pair, "q": q}
            return
        if self.mode == "gumbel":
            g = -torch.log(-torch.log(torch.rand(logits.shape, generator=generator).clamp_(1e-10, 1 - 1e-7)))
            w = torch.softmax((logits + g.to(logits.device)) / self.tau, dim=1)
        else:
            w = torch.softmax(logits, dim=1)
        if phase == "weights":
            w = w.detach()
        for i, m in enumerate(self.mixed):
            m.plan = {"kind": "weighted", "w": w[i]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - subclasses
        raise NotImplementedError

    # ------------------------------------------------------------------ sub-network
    def subnet_state(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        """Weights of the sub-network ``indices``, named as in ``space.build(arch)`` of the train space."""
        raise NotImplementedError


def _build(op: OpSpec) -> nn.Module:
    from latbench.torch_ops import build_module

    return build_module(op)


class ChainSupernet(Supernet):
    """A chain space (``proxyless-mobile``): fixed ops and mixed ops in network order."""

    def __init__(self, space: SearchSpace, mode: str = "binary", share_weights: bool = True) -> None:
        super().__init__(space, mode, zero_is_identity=True, share_weights=share_weights)
        pos = {p: i for i, p in enumerate(self.layout.positions)}
        self._order = [("mixed", pos[p]) if p in pos else ("fixed", p) for p in range(self.layout.n_ops)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for kind, i in self._order:
            x = self.mixed[i](x) if kind == "mixed" else self.fixed_ops[str(i)](x)
        return x

    def subnet_state(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        """``nn.Sequential`` state of ``space.build(arch)``: ops in order, skipped (zero) blocks left out."""
        state: dict[str, torch.Tensor] = {}
        seq = 0
        for kind, i in self._order:
            if kind == "mixed":
                j = int(indices[i])
                if self.mixed[i].zero[j]:
                    continue
                part = self.mixed[i].choices.option_state(j)
            else:
                part = {k: v.detach().clone() for k, v in self.fixed_ops[str(i)].state_dict().items()}
            for name, t in part.items():
                state[f"{seq}.{name}"] = t
            seq += 1
        return state


class DartsSupernet(Supernet):
    """The DARTS cell: stem, 14 mixed edges into 4 nodes, classifier on the concatenated nodes."""

    def __init__(self, space: SearchSpace, mode: str = "softmax", share_weights: bool = False) -> None:
        super().__init__(space, mode, zero_is_identity=False, share_weights=share_weights)
        from latbench.spaces.darts import DARTS_EDGES

        self.edges = DARTS_EDGES
        fixed = [p for p, _ in self.layout.fixed]
        self._stem, self._head = str(fixed[0]), str(fixed[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fixed_ops[self._stem](x)
        states = [s, s]
        for node in range(4):
            acc = None
            for e, (n, inp) in enumerate(self.edges):
                if n == node:
                    y = self.mixed[e](states[inp])
                    acc = y if acc is None else acc + y
            states.append(acc)
        return self.fixed_ops[self._head](torch.cat(states[2:], dim=1))

    def subnet_state(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        """State of ``DartsNetwork`` (``stem.*``, ``edges.<e>.*``, ``head.*``)."""
        state: dict[str, torch.Tensor] = {}
        for name, t in self.fixed_ops[self._stem].state_dict().items():
            state[f"stem.{name}"] = t.detach().clone()
        for e, m in enumerate(self.mixed):
            j = int(indices[e])
            if m.zero[j]:
                continue
            for name, t in m.choices.option_state(j).items():
                state[f"edges.{e}.{name}"] = t
        for name, t in self.fixed_ops[self._head].state_dict().items():
            state[f"head.{name}"] = t.detach().clone()
        return state


def init_weights(module: nn.Module) -> nn.Module:
    """ProxylessNAS initialisation: convs He-normal (fan out), BN 1 / 0, linear N(0, 0.01) / 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
    return module


def build_supernet(space: SearchSpace, mode: str, share_weights: bool | None = None) -> Supernet:
    """The supernet of ``space`` in ``mode`` (``binary``, ``gumbel``, ``softmax``), initialised.

    ``share_weights`` (default: on for chain spaces, off for ``darts``) makes the
    MBConv candidates of a block share one superkernel (see :class:`SharedMBConvChoices`).
    """
    if space.name == "darts":
        return init_weights(DartsSupernet(space, mode, share_weights=bool(share_weights)))
    if space.name == "ofa-mbv3":
        raise LatbenchError(
            "ofa-mbv3 searches depth per stage, which is not one op per decision; the proxyless engine "
            "searches proxyless-mobile and darts (use `latbench search mnas` for ofa-mbv3)"
        )
    return init_weights(ChainSupernet(space, mode, share_weights=share_weights is not False))
