"""Latency-aware losses for the alpha step (``ce`` = cross-entropy, ``E`` = E[LAT] in ms, ``T`` = target in ms).

``add``      ``ce + lam * E / T`` (one fixed ``lam``: what the target is reached with depends on the target)
``mul-log``  ``ce * a * (log E / log T) ** b`` (ProxylessNAS, ``a = 0.2``, ``b = 0.3``; needs ``T > 1 ms``)
``budget``   ``ce + lam_t * E / T`` where ``lam_t`` is a Lagrange multiplier adapted by dual ascent on the
             gap between the *derived* (argmax) arch's latency and the target, so the user gives only ``T``.

The budget multiplier is a PI ("PID Lagrangian", Stooke et al. 2020) dual
update: ``lam_I += ki * gap`` (dual ascent, clipped to ``[-lam_max, lam_max]``)
and ``lam = lam_I + kp * gap`` with ``gap = LAT(argmax) / (T (1 - margin)) - 1``.
Dual ascent alone is an integrator acting on alphas that integrate too, which
overshoots; the proportional term damps that. The multiplier may go negative:
an arch well under the budget is pushed back up towards it, because a budget
left unused is accuracy left on the table. ``margin`` (2 %) makes the search
settle just under ``T`` rather than around it.

The derived arch moves in discrete jumps (one block flipping from ``zero`` to a
k7 e6 MBConv is 18 ms of a 150 ms Pixel-1 budget) and keeps moving while alpha
does, so the trainer ends a budget search with *settling*: after the last epoch
it keeps taking alpha steps (same loss, same controller, at most
``settle_steps``) until the derived arch is in ``[T (1 - band), T]``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from latbench.errors import LatbenchError

LOSSES = ("budget", "add", "mul-log")


class LatencyLoss:
    """Combine cross-entropy with the expected latency; ``update`` sees the derived arch's latency."""

    name = ""

    def __init__(self, target_ms: float) -> None:
        if not target_ms > 0:
            raise LatbenchError(f"latency target must be > 0 ms, got {target_ms}")
        self.target_ms = float(target_ms)

    def __call__(self, ce: torch.Tensor, expected_ms: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update(self, derived_ms: float) -> None:
        """Called after each alpha step with the latency (ms) of the current argmax arch."""

    def in_band(self, derived_ms: float) -> bool:
        """Whether a derived arch of ``derived_ms`` is what this loss aims for (only the budget loss aims)."""
        del derived_ms
        return True

    @property
    def multiplier(self) -> float:
        """The weight on ``E / T`` now (for logs)."""
        return 0.0

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        del state

    def settings(self) -> dict[str, Any]:
        return {"loss": self.name, "target_ms": self.target_ms}


class AddLoss(LatencyLoss):
    """``ce + lam * E[LAT] / T``."""

    name = "add"

    def __init__(self, target_ms: float, lam: float = 0.1) -> None:
        super().__init__(target_ms)
        self.lam = float(lam)

    def __call__(self, ce: torch.Tensor, expected_ms: torch.Tensor) -> torch.Tensor:
        return ce + self.lam * expected_ms / self.target_ms

    @property
    def multiplier(self) -> float:
        return self.lam

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "lam": self.lam}


class MulLogLoss(LatencyLoss):
    """``ce * a * (log E[LAT] / log T) ** b`` (ProxylessNAS ``mul#log``)."""

    name = "mul-log"

    def __init__(self, target_ms: float, a: float = 0.2, b: float = 0.3) -> None:
        super().__init__(target_ms)
        if self.target_ms <= 1.0:
            raise LatbenchError(
                f"the mul-log loss needs a target above 1 ms (log T > 0), got {self.target_ms:g} ms; use --loss budget"
            )
        self.a, self.b = float(a), float(b)

    def __call__(self, ce: torch.Tensor, expected_ms: torch.Tensor) -> torch.Tensor:
        ratio = torch.log(expected_ms.clamp(min=1.0 + 1e-6)) / math.log(self.target_ms)
        return ce * self.a * ratio**self.b

    @property
    def multiplier(self) -> float:
        return self.a

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "a": self.a, "b": self.b}


class BudgetLoss(LatencyLoss):
    """``ce + lam * E[LAT] / T`` with ``lam`` adapted by (PI) dual ascent on the derived arch's latency gap."""

    name = "budget"

    def __init__(
        self,
        target_ms: float,
        ki: float = 0.01,
        kp: float = 2.0,
        margin: float = 0.02,
        lam_max: float = 20.0,
        band: float = 0.05,
    ) -> None:
        super().__init__(target_ms)
        if not 0 <= margin < 0.5:
            raise LatbenchError(f"budget margin must be in [0, 0.5), got {margin}")
        self.ki, self.kp, self.margin, self.lam_max = float(ki), float(kp), float(margin), float(lam_max)
        self.band = float(band)
        self.lam_i = 0.0
        self.gap = 0.0

    @property
    def aim_ms(self) -> float:
        return self.target_ms * (1.0 - self.margin)

    def __call__(self, ce: torch.Tensor, expected_ms: torch.Tensor) -> torch.Tensor:
        return ce + self.multiplier * expected_ms / self.target_ms

    def update(self, derived_ms: float) -> None:
        self.gap = derived_ms / self.aim_ms - 1.0
        self.lam_i = min(self.lam_max, max(-self.lam_max, self.lam_i + self.ki * self.gap))

    @property
    def multiplier(self) -> float:
        return self.lam_i + self.kp * self.gap

    def in_band(self, derived_ms: float) -> bool:
        """``T (1 - band) <= derived <= T``: at the target or just under it."""
        return self.target_ms * (1.0 - self.band) <= derived_ms <= self.target_ms

    def state(self) -> dict[str, Any]:
        return {"lam_i": self.lam_i, "gap": self.gap}

    def load_state(self, state: dict[str, Any]) -> None:
        self.lam_i = float(state.get("lam_i", 0.0))
        self.gap = float(state.get("gap", 0.0))

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "ki": self.ki,
            "kp": self.kp,
            "margin": self.margin,
            "lam_max": self.lam_max,
            "band": self.band,
        }


def make_loss(name: str, target_ms: float, **params: Any) -> LatencyLoss:
    """``budget``, ``add`` (param ``lam``) or ``mul-log`` (params ``a``, ``b``)."""
    params = {k: v for k, v in params.items() if v is not None}
    if name == "budget":
        return BudgetLoss(
            target_ms, **{k: v for k, v in params.items() if k in ("ki", "kp", "margin", "lam_max", "band")}
        )
    if name == "add":
        return AddLoss(target_ms, **{k: v for k, v in params.items() if k == "lam"})
    if name == "mul-log":
        return MulLogLoss(target_ms, **{k: v for k, v in params.items() if k in ("a", "b")})
    raise LatbenchError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
