"""Named search spaces.

``get_space(name, **params)`` makes a space; ``space_of(arch)`` rebuilds the
space an arch JSON belongs to from the parameters the arch records.
"""

from __future__ import annotations

from typing import Any

from latbench.errors import ArchError, UnknownNameError
from latbench.spaces.base import Arch, Decision, SearchSpace
from latbench.spaces.darts import DartsCell
from latbench.spaces.fbnet import FBNet
from latbench.spaces.mobile import OFAMobileNetV3, ProxylessMobile
from latbench.spaces.nb201 import NasBench201

SPACES: dict[str, type[SearchSpace]] = {
    ProxylessMobile.name: ProxylessMobile,
    OFAMobileNetV3.name: OFAMobileNetV3,
    DartsCell.name: DartsCell,
    NasBench201.name: NasBench201,
    FBNet.name: FBNet,
}

__all__ = ["SPACES", "Arch", "Decision", "SearchSpace", "get_space", "load_archs", "space_of"]


def get_space(name: str, **params: Any) -> SearchSpace:
    """The space ``name`` with ``params`` (``None`` values fall back to the defaults)."""
    cls = SPACES.get(name)
    if cls is None:
        raise UnknownNameError(f"unknown search space {name!r}; known: {', '.join(SPACES)}")
    params = {k: v for k, v in params.items() if v is not None or (name == "ofa-mbv3" and k == "resolution")}
    try:
        return cls(**params)
    except TypeError as exc:
        raise ArchError(f"bad parameters for space {name!r}: {exc}") from None


def space_of(arch: Any, default: str | None = None) -> SearchSpace:
    """The space an arch JSON belongs to, built with the parameters it records."""
    if not isinstance(arch, dict):
        raise ArchError(f"an arch must be a JSON object, got {type(arch).__name__}")
    name = arch.get("space", default)
    if name is None:
        raise ArchError("arch JSON has no 'space' field and no --space was given")
    cls = SPACES.get(name)
    if cls is None:
        raise UnknownNameError(f"unknown search space {name!r}; known: {', '.join(SPACES)}")
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    params = {k: v for k, v in arch.items() if k in accepted}
    space = get_space(name, **params) if name != "ofa-mbv3" else cls(**params)
    space.validate(arch)
    return space


def load_archs(path: str, default_space: str | None = None) -> list[Arch]:
    """Read one arch (``.json``) or many (``.jsonl``, one per line), validated."""
    import json
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise ArchError(f"arch file not found: {p}")
    text = p.read_text()
    try:
        if p.suffix == ".jsonl":
            raw = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
            raw = data if isinstance(data, list) else [data]
    except json.JSONDecodeError as exc:
        raise ArchError(f"{p}: malformed JSON ({exc.msg} at line {exc.lineno})") from None
    if not raw:
        raise ArchError(f"{p}: no archs in file")
    out = []
    for i, a in enumerate(raw):
        try:
            out.append(space_of(a, default_space).validate(a))
        except ArchError as exc:
            raise ArchError(f"{p}: arch {i + 1}: {exc}") from None
    return out
