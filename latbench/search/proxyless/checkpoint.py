"""Safe checkpoints: tensors in safetensors, everything else in JSON, both written atomically.

No pickle: optimizer state dicts are split into their tensors (saved under
``opt.<name>.<param>.<field>``) and their scalars / param groups (JSON).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from latbench import paths
from latbench.errors import LatbenchError


def save_tensors(
    path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Atomically save named tensors as safetensors (copied to CPU, contiguous, unshared)."""
    from safetensors.torch import save

    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    paths.atomic_write_bytes(path, save(flat, metadata=metadata))


def load_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    p = Path(path)
    if not p.exists():
        raise LatbenchError(f"checkpoint file not found: {p}")
    try:
        return load_file(str(p))
    except Exception as exc:  # safetensors raises its own error types on a torn / foreign file
        raise LatbenchError(f"{p}: not a readable safetensors file ({type(exc).__name__})") from None


def split_optimizer(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state dict as (tensors, JSON-able rest)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, fields in sd["state"].items():
        for field, value in fields.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{name}.{pid}.{field}"] = value
            else:
                scalars.setdefault(str(pid), {})[field] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def join_optimizer(
    name: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict[str, Any]
) -> None:
    """Load what :func:`split_optimizer` saved into ``opt``."""
    state: dict[int, dict[str, Any]] = {}
    prefix = f"opt.{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, field = key[len(prefix) :].split(".", 1)
            state.setdefault(int(pid), {})[field] = value
    for pid, fields in rest.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(fields)
    opt.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    paths.atomic_write_text(path, json.dumps(data, indent=1, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
