"""Train a derived arch from scratch and measure its accuracy; the random-archs-under-budget baseline.

Retraining uses the train and valid splits together and reports accuracy on the
held-out test split (never seen by the search). Random archs for the baseline
are drawn uniformly per decision and kept when their predicted latency is within
the same budget, and are trained with exactly the same recipe and seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from latbench.search.proxyless.latency import ExpectedLatency
from latbench.search.proxyless.supernet import init_weights
from latbench.spaces import Arch, SearchSpace


@dataclass
class RetrainResult:
    """Accuracy in [0, 1] after training from scratch for ``epochs`` epochs."""

    epochs: int
    test_acc: float
    train_acc: float
    seconds: float
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def retrain(
    space: SearchSpace,
    arch: Arch,
    splits: Any,
    epochs: int,
    *,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 0.05,
    weight_decay: float = 4e-5,
    label_smoothing: float = 0.1,
    device: torch.device | None = None,
    threads: int | None = 1,
    on_epoch: Callable[[int, int], None] | None = None,
) -> tuple[RetrainResult, torch.nn.Module]:
    """Train ``space.build(arch)`` from scratch on train + valid; returns (result, trained module in eval mode).

    ``threads``: torch intra-op threads on a CPU while training (1 is fastest for these small nets).
    """
    from latbench.torch_ops import torch_threads

    device = device or torch.device("cpu")
    with torch_threads(threads if device.type == "cpu" else None):
        return _retrain(
            space, arch, splits, epochs, seed, batch_size, lr, weight_decay, label_smoothing, device, on_epoch
        )


def _retrain(
    space: SearchSpace,
    arch: Arch,
    splits: Any,
    epochs: int,
    seed: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    label_smoothing: float,
    device: torch.device,
    on_epoch: Callable[[int, int], None] | None,
) -> tuple[RetrainResult, torch.nn.Module]:
    mf = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = init_weights(space.build(arch)).train()
    net = net.to(device, memory_format=mf)
    x = torch.cat([splits.x_train, splits.x_valid]).to(device, memory_format=mf)
    y = torch.cat([splits.y_train, splits.y_valid]).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    steps = max(1, math.ceil(len(y) / batch_size))
    total = max(1, epochs * steps)
    t0 = time.perf_counter()
    correct = seen = 0
    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(seed * 7919 + epoch)
        order = torch.randperm(len(y), generator=gen).to(device)
        correct = seen = 0
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = 0.5 * lr * (1 + math.cos(math.pi * (epoch * steps + step) / total))
            idx = order[step * batch_size : (step + 1) * batch_size]
            out = net(x[idx])
            loss = F.cross_entropy(out, y[idx], label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            correct += int((out.argmax(1) == y[idx]).sum())
            seen += len(idx)
        if on_epoch is not None:
            on_epoch(epoch + 1, epochs)
    net.eval()
    xt, yt = splits.x_test.to(device, memory_format=mf), splits.y_test.to(device)
    with torch.no_grad():
        test_correct = sum(
            int((net(xt[i : i + 256]).argmax(1) == yt[i : i + 256]).sum()) for i in range(0, len(yt), 256)
        )
    result = RetrainResult(
        epochs=epochs,
        test_acc=test_correct / max(1, len(yt)),
        train_acc=correct / max(1, seen),
        seconds=time.perf_counter() - t0,
        seed=seed,
    )
    return result, net.to("cpu", memory_format=torch.contiguous_format)


def random_archs_under_budget(
    latency: ExpectedLatency, target_ms: float, n: int, seed: int = 0, pool: int = 200_000
) -> list[np.ndarray]:
    """``n`` uniformly random option-index vectors whose predicted latency is <= ``target_ms``."""
    rng = np.random.default_rng(seed)
    space = latency.space
    idx = space.sample_indices(rng, pool)
    ms = latency.compiled.predict_indices(idx)
    ok = idx[ms <= target_ms]
    if len(ok) < n:
        from latbench.errors import LatbenchError

        raise LatbenchError(
            f"only {len(ok)} of {pool} random archs are within {target_ms:.3f} ms; the baseline needs {n}"
        )
    return [ok[i] for i in range(n)]
