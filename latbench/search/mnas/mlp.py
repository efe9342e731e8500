"""A small numpy MLP regressor on one-hot arch encodings (Once-for-All's accuracy predictor shape).

Used by the fitted accuracy predictor (``--acc-predictor``) and as the batched
accuracy source of the speed benchmark. Saved as plain JSON (weights as lists).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

from latbench import paths


def onehot(cardinalities: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """One-hot encoding of option-index vectors: shape ``(n, sum(cardinalities))``, float32."""
    idx = np.atleast_2d(np.asarray(idx, dtype=np.int64))
    offsets = np.concatenate([[0], np.cumsum(cardinalities)[:-1]])
    out = np.zeros((len(idx), int(np.sum(cardinalities))), dtype=np.float32)
    out[np.arange(len(idx))[:, None], offsets[None, :] + idx] = 1.0
    return out


class MLPRegressor:
    """ReLU MLP, Adam, mean-squared error on a standardised target; deterministic for a given ``seed``."""

    def __init__(
        self,
        hidden: tuple[int, ...] = (64, 64),
        lr: float = 3e-3,
        epochs: int = 300,
        batch: int = 128,
        weight_decay: float = 1e-4,
        seed: int = 0,
    ) -> None:
        self.hidden = tuple(int(h) for h in hidden)
        self.lr = float(lr)
        self.epochs = int(epochs)
        self.batch = int(batch)
        self.weight_decay = float(weight_decay)
        self.seed = int(seed)

    def init(self, n_in: int) -> MLPRegressor:
        """Random (He) weights without training: a valid, untrained network of the right shape."""
        rng = np.random.default_rng(self.seed)
        sizes = [n_in, *self.hidden, 1]
        self.weights_ = [
            (rng.normal(0.0, np.sqrt(2.0 / a), (a, b)).astype(np.float32), np.zeros(b, dtype=np.float32))
            for a, b in itertools.pairwise(sizes)
        ]
        self.y_mean_, self.y_std_ = 0.0, 1.0
        return self

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        acts = [x]
        h = x
        for i, (w, b) in enumerate(self.weights_):
            h = h @ w + b
            if i < len(self.weights_) - 1:
                h = np.maximum(h, 0.0)
            acts.append(h)
        return h[:, 0], acts

    def fit(self, x: np.ndarray, y: np.ndarray) -> MLPRegressor:
        x = np.asarray(x, dtype=np.float32)
        y = np.asarray(y, dtype=np.float64)
        self.init(x.shape[1])
        self.y_mean_ = float(y.mean())
        self.y_std_ = float(y.std()) or 1.0
        t = ((y - self.y_mean_) / self.y_std_).astype(np.float32)
        rng = np.random.default_rng(self.seed + 1)
        m = [(np.zeros_like(w), np.zeros_like(b)) for w, b in self.weights_]
        v = [(np.zeros_like(w), np.zeros_like(b)) for w, b in self.weights_]
        b1, b2, eps = 0.9, 0.999, 1e-8
        step = 0
        n = len(t)
        for _ in range(self.epochs):
            perm = rng.permutation(n)
            for s in range(0, n, self.batch):
                sel = perm[s : s + self.batch]
                out, acts = self._forward(x[sel])
                grad = (2.0 / len(sel)) * (out - t[sel])[:, None]
                step += 1
                for i in range(len(self.weights_) - 1, -1, -1):
                    w = self.weights_[i][0]
                    gw = acts[i].T @ grad + self.weight_decay * w
                    gb = grad.sum(axis=0)
                    if i > 0:
                        grad = (grad @ w.T) * (acts[i] > 0)
                    for j, g in enumerate((gw, gb)):
                        mj = m[i][j]
                        vj = v[i][j]
                        mj *= b1
                        mj += (1 - b1) * g
                        vj *= b2
                        vj += (1 - b2) * g * g
                        mhat = mj / (1 - b1**step)
                        vhat = vj / (1 - b2**step)
                        self.weights_[i][j][...] -= (self.lr * mhat / (np.sqrt(vhat) + eps)).astype(np.float32)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        out, _ = self._forward(np.asarray(x, dtype=np.float32))
        return out.astype(np.float64) * self.y_std_ + self.y_mean_

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "latbench.mlp/1",
            "hidden": list(self.hidden),
            "y_mean": self.y_mean_,
            "y_std": self.y_std_,
            "layers": [{"w": w.tolist(), "b": b.tolist()} for w, b in self.weights_],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MLPRegressor:
        m = cls(hidden=tuple(d["hidden"]))
        m.weights_ = [
            (np.asarray(layer["w"], dtype=np.float32), np.asarray(layer["b"], dtype=np.float32))
            for layer in d["layers"]
        ]
        m.y_mean_, m.y_std_ = float(d["y_mean"]), float(d["y_std"])
        return m

    def save(self, path: str | Path) -> None:
        paths.atomic_write_text(path, json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> MLPRegressor:
        return cls.from_dict(json.loads(Path(path).read_text()))
