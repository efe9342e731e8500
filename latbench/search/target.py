"""The one grammar of a latency target, shared by both search engines.

A target is milliseconds written as ``12``, ``12ms``, ``0.012s`` or ``12000us``,
or a share of the space's latency range under the chosen latency source:
``50%`` is half-way from the fastest to the slowest arch. Zero, negative,
NaN and infinite values, ``0%``, shares outside (0, 100] and anything else are
refused in one line, before a search trial or a training epoch starts.

:func:`parse_target_spec` checks the text alone (no latency source needed), so a
command refuses a bad target before it loads anything; :func:`parse_target`
turns it into milliseconds, given the range for a share and to refuse a target
no arch can meet (below the fastest) or every arch meets (above the slowest).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from latbench.errors import LatbenchError

#: unit -> milliseconds per unit
UNITS: dict[str, float] = {"ms": 1.0, "s": 1000.0, "us": 0.001}

_TARGET = re.compile(r"^\s*(?P<num>[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)\s*(?P<unit>ms|s|us|%)?\s*$")
_HOW = "write it like 12, 12ms, 0.012s, 12000us or 50% (of the space's latency range)"


@dataclass(frozen=True)
class TargetSpec:
    """A parsed target: ``value`` in ``unit`` (``ms`` after conversion, or ``%`` of the latency range)."""

    value: float
    unit: str
    text: str

    @property
    def is_share(self) -> bool:
        return self.unit == "%"

    def to_ms(self, bounds: tuple[float, float] | None = None) -> float:
        """Milliseconds; a share needs ``bounds`` = (fastest, slowest) predicted latency in ms."""
        if not self.is_share:
            return self.value
        if bounds is None:
            raise LatbenchError(f"the target {self.text!r} is a share of the latency range; give a latency source")
        lo, hi = bounds
        return lo + self.value / 100.0 * (hi - lo)


def parse_target_spec(text: str | float | int) -> TargetSpec:
    """Check a target's text (grammar, sign, finiteness, share range) without any latency source."""
    if isinstance(text, bool):
        raise LatbenchError(f"bad latency target {text!r}; {_HOW}")
    if isinstance(text, (int, float)):
        value, unit = float(text), "ms"
    else:
        m = _TARGET.match(str(text))
        if not m:
            raise LatbenchError(f"bad latency target {str(text)!r}; {_HOW}")
        value, unit = float(m["num"]), m["unit"] or "ms"
    if not math.isfinite(value):
        raise LatbenchError(f"bad latency target {text!r}: not a finite number; {_HOW}")
    if unit == "%":
        if not 0.0 < value <= 100.0:
            raise LatbenchError(f"bad latency target {text!r}: a share of the latency range must be in (0, 100]%")
        return TargetSpec(value, "%", str(text).strip())
    if value <= 0.0:
        raise LatbenchError(f"bad latency target {text!r}: it must be a positive latency; {_HOW}")
    ms = value * UNITS[unit]
    if not (math.isfinite(ms) and ms > 0.0):
        raise LatbenchError(f"bad latency target {text!r}: {ms} ms is not a usable latency")
    return TargetSpec(ms, "ms", str(text).strip())


def parse_target(text: str | float | int | TargetSpec, bounds: tuple[float, float] | None = None) -> float:
    """A latency target in milliseconds (see the module docstring).

    With ``bounds`` (fastest, slowest predicted latency of the space, ms) a
    target below the fastest arch or above the slowest one is refused, saying
    which side and what is reachable.
    """
    spec = text if isinstance(text, TargetSpec) else parse_target_spec(text)
    value = spec.to_ms(bounds)
    if bounds is not None:
        check_reachable(value, bounds)
    return value


def check_reachable(target_ms: float, bounds: tuple[float, float]) -> None:
    """Refuse a target that no arch can meet or that every arch meets (one line, with the reachable range)."""
    lo, hi = bounds
    if target_ms < lo * (1 - 1e-9):
        raise LatbenchError(
            f"target {target_ms:g} ms is below the smallest arch of the space ({lo:.3f} ms); "
            f"reachable: {lo:.3f}-{hi:.3f} ms"
        )
    if target_ms > hi * (1 + 1e-9):
        raise LatbenchError(
            f"target {target_ms:g} ms is above the largest arch of the space ({hi:.3f} ms), so every arch meets it; "
            f"reachable: {lo:.3f}-{hi:.3f} ms"
        )
