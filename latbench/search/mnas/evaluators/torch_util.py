"""Torch helpers shared by the evaluators that build networks (thread pinning, cached data)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads (on a shared machine 1 avoids thread thrashing), then restore."""
    import torch

    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@lru_cache(maxsize=4)
def cached_splits(source: str, resolution: int, seed: int) -> Any:
    """``latbench.data.load_splits`` once per (source, resolution, seed)."""
    from latbench.data import load_splits

    return load_splits(source, resolution=resolution, seed=seed)
