"""Torch helpers shared by the evaluators that build networks (thread pinning, cached data)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=4)
def cached_splits(source: str, resolution: int, seed: int) -> Any:
    """``latbench.data.load_splits`` once per (source, resolution, seed)."""
    from latbench.data import load_splits

    return load_splits(source, resolution=resolution, seed=seed)


@lru_cache(maxsize=4)
def sequence_splits(seq: int, vocab: int, samples: int, seed: int) -> Any:
    """The synthetic sequence task of the ``bert`` proxy (:func:`~latbench.search.mnas.evaluators.supernet.
    make_sequence_task`) as :class:`~latbench.data.Splits`: 60 / 20 / 20 %, token ids as float32 (``bert``'s
    input is a float tensor), labels int64, 2 classes."""
    import torch

    from latbench.data import Splits
    from latbench.search.mnas.evaluators.supernet import make_sequence_task

    x, y = make_sequence_task(samples, seq, vocab, seed)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y)
    a, b = int(0.6 * samples), int(0.8 * samples)
    return Splits(xt[:a], yt[:a], xt[a:b], yt[a:b], xt[b:], yt[b:], num_classes=2, name=f"sequence-task-{seq}x{vocab}")
