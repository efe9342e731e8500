"""Offline data sets for accuracy (search) and proxy training.

``digits``: scikit-learn's bundled handwritten digits (1,797 8x8 grey images,
10 classes), a real data set that needs no download. Images are scaled to
``resolution`` (bilinear) and repeated to 3 channels so the ImageNet-style
spaces run on them. A user ``.npz`` with ``x`` (N,H,W[,C] or N,C,H,W) and ``y``
works the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latbench.errors import LatbenchError


@dataclass
class Splits:
    """Float32 NCHW tensors (torch) for train / valid / test, and the class count."""

    x_train: object
    y_train: object
    x_valid: object
    y_valid: object
    x_test: object
    y_test: object
    num_classes: int
    name: str


def _to_nchw(x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4:
        raise LatbenchError(f"images must be N,H,W or N,H,W,C or N,C,H,W; got shape {x.shape}")
    return x


def load_arrays(source: str) -> tuple[np.ndarray, np.ndarray, str]:
    """``digits`` or a path to an ``.npz`` with ``x`` and ``y``."""
    if source == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64), "digits"
    p = Path(source)
    if not p.exists():
        raise LatbenchError(f"data path does not exist: {p}")
    if p.suffix != ".npz":
        raise LatbenchError(f"data must be 'digits' or an .npz file with arrays x and y, got {p}")
    with np.load(p, allow_pickle=False) as z:
        if "x" not in z or "y" not in z:
            raise LatbenchError(f"{p}: the .npz needs arrays 'x' (images) and 'y' (labels)")
        x, y = z["x"].astype(np.float32), z["y"].astype(np.int64)
    if x.max() > 1.5:
        x = x / 255.0
    return x, y, p.stem


def load_splits(
    source: str = "digits", resolution: int = 32, seed: int = 0, valid_frac: float = 0.2, test_frac: float = 0.2
) -> Splits:
    """Stratified train / valid / test splits, resized to ``resolution`` and normalised."""
    import torch
    import torch.nn.functional as F
    from sklearn.model_selection import train_test_split

    x, y, name = load_arrays(source)
    x = _to_nchw(x)
    if len(x) != len(y):
        raise LatbenchError(f"{len(x)} images but {len(y)} labels")
    classes = np.unique(y)
    y = np.searchsorted(classes, y)
    xt = torch.from_numpy(np.ascontiguousarray(x))
    xt = F.interpolate(xt, size=(resolution, resolution), mode="bilinear", align_corners=False)
    if xt.shape[1] == 1:
        xt = xt.repeat(1, 3, 1, 1)
    xt = (xt - xt.mean()) / (xt.std() + 1e-6)
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=test_frac, random_state=seed, stratify=y)
    train, valid = train_test_split(rest, test_size=valid_frac / (1 - test_frac), random_state=seed, stratify=y[rest])
    yt = torch.from_numpy(y)
    return Splits(xt[train], yt[train], xt[valid], yt[valid], xt[test], yt[test], len(classes), name)
