"""Named search spaces.

``get_space(name, **params)`` makes a space; ``space_of(arch)`` rebuilds the
space an arch JSON belongs to from the parameters the arch records.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from latbench.errors import ArchError, LatbenchError, UnknownNameError
from latbench.spaces.autoformer import AutoFormer
from latbench.spaces.base import Arch, Decision, SearchSpace
from latbench.spaces.bert import Bert
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
    AutoFormer.name: AutoFormer,
    Bert.name: Bert,
}

__all__ = [
    "SPACES",
    "Arch",
    "Decision",
    "SearchSpace",
    "check_archs_target",
    "get_space",
    "load_archs",
    "save_archs",
    "space_of",
]


def get_space(name: str, **params: Any) -> SearchSpace:
    """The space ``name`` with ``params`` (``None`` values fall back to the defaults)."""
    cls = SPACES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise UnknownNameError(f"unknown search space {_short(name)}; known: {', '.join(SPACES)}")
    params = {k: v for k, v in params.items() if v is not None or (name == "ofa-mbv3" and k == "resolution")}
    try:
        return cls(**params)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ArchError(f"bad parameters for space {name!r}: {exc}") from None


def space_of(arch: Any, default: str | None = None, default_params: dict[str, Any] | None = None) -> SearchSpace:
    """The space an arch JSON belongs to, built with the parameters it records.

    ``default_params`` (``{"seq": 256}`` from ``--seq``) are the parameters of an arch that records none of its
    own; an arch that records another value is refused, never silently re-targeted.
    """
    if not isinstance(arch, dict):
        raise ArchError(f"an arch must be a JSON object, got {type(arch).__name__}")
    name = arch.get("space", default)
    if name is None:
        raise ArchError("arch JSON has no 'space' field and no --space was given")
    cls = SPACES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise UnknownNameError(f"unknown search space {_short(name)}; known: {', '.join(SPACES)}")
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    params = {k: v for k, v in arch.items() if k in accepted}
    for k, v in (default_params or {}).items():
        if v is None or k not in accepted:
            continue
        if k in params and params[k] != v:
            raise ArchError(
                f"arch has {k}={_short(params[k])} but {k}={v!r} was asked for; drop the option or edit the arch"
            )
        params[k] = v
    if name != "ofa-mbv3":
        space = get_space(name, **params)
    else:
        try:
            space = cls(**params)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ArchError(f"bad parameters for space {name!r}: {exc}") from None
    space.validate(arch)
    return space


def load_archs(path: str, default_space: str | None = None, default_params: dict[str, Any] | None = None) -> list[Arch]:
    """Read one arch (``.json``: an object or a list of them) or many (``.jsonl``, one per line), validated.

    ``default_space`` / ``default_params`` fill what an arch does not record (see :func:`space_of`).

    Refused in one line naming the file and, for JSONL, the line number in the file (blank lines count): bytes
    that are not UTF-8, malformed JSON, NaN / Infinity / numbers out of range, duplicate keys, nesting deeper
    than any arch, wrong types and unknown choices.
    """
    from latbench.ops import json_error_text, strict_json_loads

    p = Path(path)
    if not p.is_file():
        raise ArchError(f"arch file not found: {p}" if not p.exists() else f"{p} is not a file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ArchError(f"cannot read arch file {p}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ArchError(f"{p}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x})") from None
    items: list[tuple[str, Any]] = []  # (where in the file, raw arch)
    if p.suffix == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append((f"line {lineno}", strict_json_loads(line)))
            except ValueError as exc:
                raise ArchError(f"{p}: line {lineno}: malformed JSON ({_json_msg(exc)})") from None
    else:
        try:
            doc = strict_json_loads(text)
        except ValueError as exc:
            raise ArchError(f"{p}: malformed JSON ({json_error_text(exc)})") from None
        if isinstance(doc, list):
            items = [(f"arch {i + 1}", a) for i, a in enumerate(doc)]
        else:
            items = [("arch 1", doc)]
    if not items:
        raise ArchError(f"{p}: no archs in file")
    out = []
    for where, a in items:
        try:
            out.append(space_of(a, default_space, default_params).validate(a))
        except LatbenchError as exc:  # ArchError, UnknownNameError
            raise type(exc)(f"{p}: {where}: {exc}") from None
    return out


def check_archs_target(path: str | os.PathLike[str]) -> Path:
    """Refuse, before any work, a destination for archs that cannot be written (a read-only folder, a symlink)."""
    from latbench import paths

    target = paths.check_writable_target(path)
    paths.ensure_writable_dir(target.parent)
    return target


def save_archs(archs: list[Arch], path: str | os.PathLike[str]) -> Path:
    """Write archs as JSONL (one per line) atomically; one line naming the file when it cannot be written."""
    import json

    from latbench import paths

    target = check_archs_target(path)
    try:
        paths.atomic_write_text(target, "".join(json.dumps(a) + "\n" for a in archs))
    except OSError as exc:
        raise LatbenchError(f"cannot write archs to {target}: {exc.strerror or exc}") from None
    return target


def _json_msg(exc: ValueError) -> str:
    """The error of one JSONL line without its (always 1) line number."""
    import json

    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at column {exc.colno}"
    return str(exc).splitlines()[0]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
