"""`supernet`: AutoFormer-style one-shot accuracy for the transformer spaces (``autoformer``, ``bert``).

One weight-sharing supernet is trained once, before the first trial: every
step samples a random sub-network of the space (uniformly, as AutoFormer
does) and trains the slice of the shared weights it uses (*weight
entanglement*: the first ``d`` rows / columns of the embed, QKV and MLP
matrices, the first ``h`` heads; see :mod:`latbench.torch_transformers`).
A trial is then scored by the validation accuracy of its sub-network with
the inherited weights, with no training of its own, so a search of hundreds
of trials costs one supernet training plus one forward pass per trial.

The training variant is small so it trains on a CPU in a minute or two;
latency is always the deployed network's (224 px ViT, BERT at its sequence):

* ``autoformer``: scikit-learn's digits (8x8) upscaled to ``image`` px (16)
  and cut into ``patch`` px patches (4: 16 patches + class token); widths
  scaled by ``width`` (0.25: embed 48 / 54 / 60), heads of ``head_dim`` (16).
* ``bert``: a synthetic task the project makes (:func:`make_sequence_task`):
  does a random token sequence contain the bigram ``(1, 2)``? Sequences of
  ``seq`` tokens (32) from ``vocab`` (16), widths scaled by 0.125, heads of 8.

Every choice keeps its rank (a wider deployment layer is a wider training
layer), so the accuracy ranking the search sees is that of the deployed archs'
shapes at a smaller scale. The supernet is seeded from the search seed: a
resumed search retrains the same supernet.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from latbench.errors import LatbenchError
from latbench.search.mnas.evaluators.base import Evaluator
from latbench.torch_ops import torch_threads

#: training-variant defaults per space: width scale of embed / MLP widths, head width
DEFAULTS = {"autoformer": {"width": 0.25, "head_dim": 16}, "bert": {"width": 0.125, "head_dim": 8}}
#: the bigram whose presence the synthetic sequence task asks about
PATTERN = (1, 2)


def make_sequence_task(n: int, seq: int, vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` token sequences (``n x seq`` int64, token 0 is the class token) and labels: 1 when the bigram
    :data:`PATTERN` occurs, 0 when not; balanced, deterministic for a seed."""
    if vocab < 4 or seq < 4:
        raise LatbenchError("the sequence task needs vocab >= 4 and seq >= 4")
    rng = np.random.default_rng(seed)
    a, b = PATTERN
    x = rng.integers(1, vocab, size=(n, seq)).astype(np.int64)
    x[:, 0] = 0
    # break every accidental bigram, then plant one in half the sequences
    for _ in range(seq):
        hit = (x[:, 1:-1] == a) & (x[:, 2:] == b)
        if not hit.any():
            break
        rows, cols = np.nonzero(hit)
        x[rows, cols + 2] = rng.integers(3, vocab, size=len(rows))
    y = (np.arange(n) % 2).astype(np.int64)
    rng.shuffle(y)
    pos = rng.integers(1, seq - 1, size=n)
    idx = np.flatnonzero(y == 1)
    x[idx, pos[idx]] = a
    x[idx, pos[idx] + 1] = b
    return x, y


class SupernetEvaluator(Evaluator):
    """Validation accuracy of the arch's sub-network of a weight-sharing supernet trained once."""

    name = "supernet"
    summary = "AutoFormer-style weight-sharing supernet (autoformer: digits patches; bert: synthetic sequences)"
    kind = "accuracy"

    def __init__(
        self,
        *,
        steps: int = 600,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        width: float | None = None,
        head_dim: int | None = None,
        image: int = 16,
        patch: int = 4,
        seq: int = 32,
        vocab: int = 16,
        samples: int = 4000,
        max_seconds: float = 600.0,
        threads: int | None = 1,
        data_seed: int = 0,
    ) -> None:
        if int(steps) < 1 or int(batch_size) < 1 or float(max_seconds) <= 0:
            raise LatbenchError("supernet evaluator: steps, batch_size and max_seconds must be > 0")
        if int(image) % int(patch):
            raise LatbenchError(f"supernet evaluator: image {image} is not a multiple of the patch {patch}")
        self.steps, self.batch_size, self.lr, self.weight_decay = int(steps), int(batch_size), float(lr), weight_decay
        self.width, self.head_dim = width, head_dim
        self.image, self.patch, self.seq, self.vocab, self.samples = (
            int(image),
            int(patch),
            int(seq),
            int(vocab),
            samples,
        )
        self.max_seconds, self.threads, self.data_seed = float(max_seconds), threads, int(data_seed)
        self.trained_steps = 0
        self.train_seconds = 0.0

    # ------------------------------------------------------------------ set-up
    def setup(self, problem: Any, seed: int) -> None:
        super().setup(problem, seed)
        space = problem.space
        if space.name not in DEFAULTS:
            raise LatbenchError(
                f"the supernet evaluator runs on the transformer spaces ({', '.join(DEFAULTS)}), not {space.name!r}"
            )
        self.space = space
        self.width = float(self.width if self.width is not None else DEFAULTS[space.name]["width"])
        self.head_dim = int(self.head_dim if self.head_dim is not None else DEFAULTS[space.name]["head_dim"])
        if not 0 < self.width <= 1:
            raise LatbenchError(f"supernet evaluator: width must be in (0, 1], got {self.width}")
        self._load_data()
        self.supernet = self._make_supernet()
        self._train()

    def _load_data(self) -> None:
        import torch

        if self.space.name == "autoformer":
            from latbench.data import load_splits

            sp = load_splits("digits", resolution=self.image, seed=self.data_seed)
            self.x_train, self.y_train, self.x_valid, self.y_valid = sp.x_train, sp.y_train, sp.x_valid, sp.y_valid
            self.num_classes = sp.num_classes
            return
        x, y = make_sequence_task(int(self.samples), self.seq, self.vocab, self.data_seed)
        cut = int(0.75 * len(y))
        t = torch.from_numpy
        self.x_train, self.y_train, self.x_valid, self.y_valid = t(x[:cut]), t(y[:cut]), t(x[cut:]), t(y[cut:])
        self.num_classes = 2

    def _scaled(self, value: float) -> int:
        return max(1, round(value * self.width))

    def _make_supernet(self) -> Any:
        import torch

        from latbench.torch_transformers import BertSupernet, ViTSupernet

        sp = self.space
        dims = dict(
            embed=self._scaled(max(sp.EMBEDS)),
            depth=sp.max_depth,
            heads=max(sp.HEADS),
            head_dim=self.head_dim,
            hidden=max(self._scaled(sp.mlp_op(e, m).hidden) for e in sp.EMBEDS for m in sp.MLPS),
            num_classes=self.num_classes,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if sp.name == "autoformer":
                return ViTSupernet(image=self.image, patch=self.patch, channels=3, **dims)
            return BertSupernet(vocab=self.vocab, seq=self.seq, **dims)

    def train_config(self, arch: dict[str, Any]) -> dict[str, Any]:
        """The arch's sub-network in the training variant: embed and MLP widths scaled by ``width``."""
        cfg = self.space.sub_config(arch)
        return {**cfg, "embed": self._scaled(cfg["embed"]), "hidden": [self._scaled(h) for h in cfg["hidden"]]}

    def _train(self) -> None:
        import torch
        import torch.nn.functional as F

        net, sp = self.supernet, self.space
        rng = np.random.default_rng([self.seed, 0x5E7])
        t0 = time.perf_counter()
        with torch_threads(self.threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 1)
            opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            warm = max(1, self.steps // 10)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / self.steps)))
            )
            net.train()
            n = len(self.y_train)
            step = 0
            while step < self.steps:
                perm = torch.randperm(n)
                for i in range(0, n - self.batch_size + 1, self.batch_size):
                    b = perm[i : i + self.batch_size]
                    cfg = self.train_config(sp.from_indices(sp.sample_indices(rng, 1)[0]))
                    loss = F.cross_entropy(net(self.x_train[b], cfg), self.y_train[b])
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"supernet training loss became {loss.item()} at step {step}")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    step += 1
                    if step >= self.steps or time.perf_counter() - t0 > self.max_seconds:
                        break
                if time.perf_counter() - t0 > self.max_seconds:
                    break
            net.eval()
        self.trained_steps = step
        self.train_seconds = time.perf_counter() - t0

    # ------------------------------------------------------------------ trials
    def evaluate_one(self, arch: dict[str, Any], trial: int) -> tuple[float, str]:
        import torch

        cfg = self.train_config(arch)
        with torch_threads(self.threads), torch.inference_mode():
            pred = torch.cat(
                [self.supernet(self.x_valid[i : i + 512], cfg).argmax(1) for i in range(0, len(self.y_valid), 512)]
            )
        acc = float((pred == self.y_valid).float().mean())
        return acc, f"sub-network of a supernet trained {self.trained_steps} steps"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "metric": "validation accuracy of the sub-network with inherited supernet weights",
            "task": "digits as patches"
            if getattr(self, "space", None) is None or self.space.name == "autoformer"
            else f"synthetic: bigram {PATTERN} in {self.seq} tokens of {self.vocab}",
            "steps": self.steps,
            "trained_steps": self.trained_steps,
            "train_seconds": round(self.train_seconds, 2),
            "batch_size": self.batch_size,
            "lr": self.lr,
            "width": self.width,
            "head_dim": self.head_dim,
            "image": self.image,
            "patch": self.patch,
            "seq": self.seq,
            "vocab": self.vocab,
        }
