"""`train`: short real training of each sampled network on a real offline data set.

The network is the small-image variant of the arch (:mod:`latbench.search.mnas.proxy`):
same decisions, sized for ``resolution`` px inputs and the data set's classes.
It is trained from scratch with SGD (Nesterov momentum, one-cycle learning
rate, label smoothing) for ``epochs`` epochs or until ``max_seconds`` have
passed, whichever comes first, and scored by top-1 accuracy on the validation
split, after its BatchNorm statistics are recalibrated on training images.
Every trial is seeded from (search seed, trial id), so a resumed search
trains the same networks the same way.

Defaults (batch 32, peak learning rate 0.02, 3 epochs) were chosen on digits:
at batch 64 / lr 0.1 / 2 epochs (about 45 steps) the same arch scored 0.32 with
one seed and 0.84 with another; with the defaults two seeds of six random
archs differ by about 0.03 and reach 0.86-0.96. The remaining seed noise is
still as large as the spread between archs, so ``repeats=k`` trains each arch
with k seeds and scores the mean, as benchmarks of NAS do.
"""

from __future__ import annotations

import math
import time
from typing import Any

from latbench.errors import LatbenchError
from latbench.search.mnas.evaluators.base import Evaluator
from latbench.search.mnas.proxy import describe_proxy, proxy_arch, proxy_data, proxy_space
from latbench.torch_ops import torch_threads


def recalibrate_bn(net: Any, x: Any, samples: int = 512, batch: int = 128) -> None:
    """Reset BatchNorm running statistics to the exact average over ``samples`` training images.

    After a few dozen steps the running averages (momentum 0.1) still lag the
    weights, and eval-mode accuracy is near chance; Once-for-All recalibrates
    its sub-networks' BN statistics the same way.
    """
    import torch

    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    with torch.no_grad():
        for i in range(0, min(samples, len(x)), batch):
            net(x[i : i + batch])


class TrainEvaluator(Evaluator):
    """Validation accuracy after a short training run (per-trial time budget ``max_seconds``)."""

    name = "train"
    summary = "short real training on digits (or a user .npz), validation accuracy"
    kind = "accuracy"

    def __init__(
        self,
        *,
        data: str = "digits",
        resolution: int = 32,
        width: float = 0.35,
        epochs: float = 3.0,
        batch_size: int = 32,
        lr: float = 0.02,
        weight_decay: float = 5e-5,
        max_seconds: float = 30.0,
        max_train: int | None = None,
        threads: int | None = 1,
        data_seed: int = 0,
        repeats: int = 1,
    ) -> None:
        if epochs <= 0 or max_seconds <= 0:
            raise LatbenchError("train evaluator: epochs and max_seconds must be > 0")
        if int(repeats) < 1:
            raise LatbenchError("train evaluator: repeats must be >= 1")
        self.repeats = int(repeats)
        self.data = data
        self.resolution = int(resolution)
        self.width = float(width)
        self.epochs = float(epochs)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.max_seconds = float(max_seconds)
        self.max_train = None if max_train is None else int(max_train)
        self.threads = threads
        self.data_seed = int(data_seed)

    def setup(self, problem: Any, seed: int) -> None:
        super().setup(problem, seed)
        self.splits = proxy_data(problem.space, self.data, self.resolution, self.data_seed)
        self.proxy = proxy_space(problem.space, self.resolution, self.width, self.splits.num_classes)

    def evaluate_one(self, arch: dict[str, Any], trial: int) -> tuple[float, str]:
        runs = [self._train_once(arch, trial, r) for r in range(self.repeats)]
        acc = sum(a for a, _ in runs) / len(runs)
        if self.repeats == 1:
            return acc, runs[0][1]
        return acc, f"mean of {self.repeats} seeds (" + ", ".join(f"{a:.4f}" for a, _ in runs) + f"); {runs[0][1]}"

    def _train_once(self, arch: dict[str, Any], trial: int, repeat: int) -> tuple[float, str]:
        import torch
        import torch.nn.functional as F

        sp = self.splits
        with torch_threads(self.threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + trial + 7_919 * repeat)
            net = self.proxy.build(proxy_arch(self.proxy, arch)).train()
            x, y = sp.x_train, sp.y_train
            if self.max_train is not None:
                x, y = x[: self.max_train], y[: self.max_train]
            n = len(y)
            steps_per_epoch = math.ceil(n / self.batch_size)
            total = max(1, round(self.epochs * steps_per_epoch))
            opt = torch.optim.SGD(
                net.parameters(), lr=self.lr, momentum=0.9, nesterov=True, weight_decay=self.weight_decay
            )
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=total, pct_start=0.25)
            t0 = time.perf_counter()
            step = 0
            cut = False
            while step < total and not cut:
                perm = torch.randperm(n)
                for i in range(0, n, self.batch_size):
                    b = perm[i : i + self.batch_size]
                    loss = F.cross_entropy(net(x[b]), y[b], label_smoothing=0.1)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"training loss became {loss.item()} at step {step}")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    step += 1
                    if step >= total:
                        break
                    if time.perf_counter() - t0 > self.max_seconds:
                        cut = True
                        break
            recalibrate_bn(net, x)
            net.eval()
            with torch.inference_mode():
                pred = torch.cat([net(sp.x_valid[i : i + 256]).argmax(1) for i in range(0, len(sp.y_valid), 256)])
            acc = float((pred == sp.y_valid).float().mean())
        note = f"{step / steps_per_epoch:.2f} epochs" + (f" (cut at {self.max_seconds:g} s)" if cut else "")
        return acc, note

    def describe(self) -> dict[str, Any]:
        d = {
            "name": self.name,
            "kind": self.kind,
            "data": self.data,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "repeats": self.repeats,
            "max_seconds": self.max_seconds,
            "max_train": self.max_train,
            "threads": self.threads,
            "metric": "top-1 accuracy on the validation split",
        }
        if hasattr(self, "proxy"):
            d["proxy_space"] = describe_proxy(self.proxy)
        return d
