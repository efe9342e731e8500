"""`SearchSpace`: the contract every search space implements.

An *arch* is plain JSON: ``{"space": NAME, <space params>, "choices": {decision: option}}``.
It is self-describing, so ``latbench.spaces.space_of(arch)`` rebuilds the space it
belongs to. Search engines work on integer index vectors (one option index per
decision) for speed; :meth:`SearchSpace.to_indices` / :meth:`from_indices`
convert, and :meth:`op_ids` maps a batch of index vectors to the ops each arch
runs (ids into :attr:`vocabulary`), which is how LUT sums of 100,000s of archs a
second are done.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from latbench.errors import ArchError
from latbench.ops import OpSpec

Arch = dict[str, Any]


def int_param(space: str, name: str, value: Any, lo: int, hi: int) -> int:
    """A space parameter that must be a whole number in ``lo..hi`` (``224.0`` is taken as 224, ``224.5``,
    ``"224"`` or ``true`` are refused)."""
    ok = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not ok:
        raise ArchError(f"{space} {name} must be a whole number, got {value!r}")
    if not lo <= int(value) <= hi:
        raise ArchError(f"{space} {name} must be {lo}..{hi}, got {value}")
    return int(value)


def float_param(space: str, name: str, value: Any, lo: float, hi: float) -> float:
    """A space parameter that must be a finite number in ``lo..hi``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ArchError(f"{space} {name} must be a number, got {value!r}")
    if not lo <= float(value) <= hi:
        raise ArchError(f"{space} {name} must be {lo:g}..{hi:g}, got {value}")
    return float(value)


def match_option(value: Any, options: tuple[Any, ...]) -> Any:
    """The option ``value`` names, or ``None``: equal *and* of a matching kind (``true`` is not the option ``1``,
    the integer ``1`` is the option ``1.0``), so an arch JSON cannot pick an option by accident."""
    for opt in options:
        if isinstance(opt, bool) or isinstance(value, bool):
            if isinstance(opt, bool) and isinstance(value, bool) and opt == value:
                return opt
            continue
        if isinstance(opt, str):
            if isinstance(value, str) and value == opt:
                return opt
            continue
        if isinstance(opt, numbers.Real) and isinstance(value, numbers.Real) and value == opt:
            if isinstance(opt, numbers.Integral) and not float(value).is_integer():
                continue
            return opt
    return None


@dataclass(frozen=True)
class Decision:
    """One choice a search makes: a name and its options (JSON scalars)."""

    name: str
    options: tuple[Any, ...]

    def __len__(self) -> int:
        return len(self.options)


class SearchSpace(ABC):
    """A named space of networks.

    Subclasses set :attr:`name`, store their parameters in :attr:`params` (JSON
    scalars: resolution, width...) and implement :meth:`decisions`,
    :meth:`_ops_of_indices` and :meth:`build`.
    """

    name: str = ""
    #: latency-free op types (never timed)
    free_types = ("zero",)

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = params

    # ------------------------------------------------------------------ contract
    @property
    @abstractmethod
    def decisions(self) -> list[Decision]:
        """The decisions of the space, in a fixed order."""

    @abstractmethod
    def _ops_of_indices(self, idx: tuple[int, ...]) -> list[OpSpec]:
        """The ops (``zero`` included) that the arch with option indices ``idx`` runs, in order."""

    @abstractmethod
    def build(self, arch: Arch) -> Any:
        """A ``torch.nn.Module`` (eval mode) of the whole network."""

    @abstractmethod
    def _all_indices_ops(self) -> list[OpSpec]:
        """Every op any arch of the space can run (used to build :attr:`vocabulary`)."""

    # ------------------------------------------------------------- conveniences
    @property
    def choices(self) -> dict[str, tuple[Any, ...]]:
        return {d.name: d.options for d in self.decisions}

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, int(self.params.get("resolution", 224)), int(self.params.get("resolution", 224)))

    def describe(self) -> str:
        n = 1
        for d in self.decisions:
            n *= len(d)
        return f"{len(self.decisions)} decisions, {n:.3g} archs, {len(self.vocabulary)} unique ops"

    # --------------------------------------------------------------- arch JSON
    def arch(self, choices: dict[str, Any]) -> Arch:
        """Build a validated arch dict from ``choices``."""
        return self.validate({"space": self.name, **self.params, "choices": dict(choices)})

    def validate(self, arch: Any) -> Arch:
        """Check an arch dict against the space; raises :class:`ArchError` with one clear line."""
        if not isinstance(arch, dict):
            raise ArchError(f"an arch must be a JSON object, got {type(arch).__name__}")
        space = arch.get("space", self.name)
        if space != self.name:
            raise ArchError(f"arch belongs to space {_short(space)}, not {self.name!r}")
        for key, value in self.params.items():
            if key in arch and (arch[key] != value or isinstance(arch[key], bool) != isinstance(value, bool)):
                raise ArchError(f"arch has {key}={_short(arch[key])} but the space has {key}={value!r}")
        choices = arch.get("choices")
        if not isinstance(choices, dict):
            raise ArchError("arch JSON needs a 'choices' object mapping each decision to an option")
        names = [d.name for d in self.decisions]
        unknown = sorted(set(choices) - set(names))
        unknown = [u if len(u) <= 40 else u[:37] + "..." for u in unknown]
        if unknown:
            raise ArchError(f"arch has unknown decisions: {', '.join(unknown[:5])}")
        missing = [n for n in names if n not in choices]
        if missing:
            raise ArchError(f"arch is missing decisions: {', '.join(missing[:5])}")
        picked = {}
        for d in self.decisions:
            opt = match_option(choices[d.name], d.options)
            if opt is None:
                opts = ", ".join(map(str, d.options))
                raise ArchError(f"illegal choice {_short(choices[d.name])} for {d.name} (options: {opts})")
            picked[d.name] = opt
        return {"space": self.name, **self.params, "choices": picked}

    def to_indices(self, arch: Arch) -> np.ndarray:
        arch = self.validate(arch)
        return np.array([d.options.index(arch["choices"][d.name]) for d in self.decisions], dtype=np.int64)

    def from_indices(self, idx: Any) -> Arch:
        idx = [int(i) for i in idx]
        if len(idx) != len(self.decisions):
            raise ArchError(f"expected {len(self.decisions)} indices, got {len(idx)}")
        return {
            "space": self.name,
            **self.params,
            "choices": {d.name: d.options[i] for d, i in zip(self.decisions, idx, strict=True)},
        }

    # ------------------------------------------------------------ sampling
    @cached_property
    def cardinalities(self) -> np.ndarray:
        return np.array([len(d) for d in self.decisions], dtype=np.int64)

    def sample_indices(self, rng: np.random.Generator, n: int = 1) -> np.ndarray:
        """``n`` uniform random index vectors, shape ``(n, len(decisions))``."""
        return (rng.random((n, len(self.cardinalities))) * self.cardinalities).astype(np.int64)

    def sample(self, rng: np.random.Generator | int | None = None) -> Arch:
        rng = np.random.default_rng(rng)
        return self.from_indices(self.sample_indices(rng, 1)[0])

    def mutate_indices(self, idx: np.ndarray, rng: np.random.Generator, prob: float = 0.1) -> np.ndarray:
        """Resample each decision with probability ``prob`` (works on a batch too)."""
        idx = np.array(idx, dtype=np.int64, copy=True)
        fresh = (rng.random(idx.shape) * self.cardinalities).astype(np.int64)
        mask = rng.random(idx.shape) < prob
        idx[mask] = fresh[mask]
        return idx

    def mutate(self, arch: Arch, rng: np.random.Generator | int | None = None, prob: float = 0.1) -> Arch:
        rng = np.random.default_rng(rng)
        return self.from_indices(self.mutate_indices(self.to_indices(arch), rng, prob))

    def crossover_indices(self, a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        mask = rng.random(np.shape(a)) < 0.5
        return np.where(mask, a, b)

    # -------------------------------------------------------------- op lists
    def ops_of(self, arch: Arch, *, include_free: bool = False) -> list[OpSpec]:
        """The ops ``arch`` runs, in network order (``zero`` ops left out unless asked)."""
        ops = self._ops_of_indices(tuple(int(i) for i in self.to_indices(arch)))
        if include_free:
            return ops
        return [op for op in ops if op.type not in self.free_types]

    @cached_property
    def vocabulary(self) -> list[OpSpec]:
        """Every timed op any arch can run, unique, sorted by key."""
        ops = {op for op in self._all_indices_ops() if op.type not in self.free_types}
        return sorted(ops, key=lambda o: o.key)

    @cached_property
    def vocabulary_index(self) -> dict[str, int]:
        return {op.key: i for i, op in enumerate(self.vocabulary)}

    def op_ids(self, idx: np.ndarray) -> np.ndarray:
        """Vocabulary ids of the ops each arch runs; ``-1`` pads. Shape ``(n, max_ops)``.

        The generic version loops in Python; spaces override it with a
        vectorised one where search speed matters.
        """
        idx = np.atleast_2d(np.asarray(idx, dtype=np.int64))
        rows = []
        vi = self.vocabulary_index
        for row in idx:
            ops = self._ops_of_indices(tuple(int(i) for i in row))
            rows.append([vi[o.key] for o in ops if o.type not in self.free_types])
        width = max(len(r) for r in rows)
        out = np.full((len(rows), width), -1, dtype=np.int64)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out

    # ---------------------------------------------------------------- counts
    def macs(self, arch: Arch) -> int:
        return sum(op.macs for op in self.ops_of(arch))

    def params_count(self, arch: Arch) -> int:
        return sum(op.params for op in self.ops_of(arch))

    def peak_memory_bytes(self, arch: Arch) -> int:
        """Peak activation memory of a layer-by-layer run plus all weights."""
        ops = self.ops_of(arch)
        return max(op.peak_activation_bytes for op in ops) + sum(op.weight_bytes for op in ops)

    def summary(self, arch: Arch) -> dict[str, Any]:
        ops = self.ops_of(arch)
        return {
            "ops": len(ops),
            "macs": sum(o.macs for o in ops),
            "params": sum(o.params for o in ops),
            "peak_memory_bytes": max(o.peak_activation_bytes for o in ops) + sum(o.weight_bytes for o in ops),
        }


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` of a value from a file, cut to one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
