"""Torch helpers shared by the evaluators that build networks (thread pinning, cached data)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=4)
def cached_splits(source: str, resolution: int, seed: int) -> Any:
    """``latbench.data.load_splits`` once per (source, resolution, seed)."""
    from latbench.data import load_splits

    return load_splits(source, resolution=resolution, seed=seed)
