"""The alternating training loop of the differentiable search.

Per step: one *weight* step (SGD, train split, paths sampled from ``p``) and,
after the warmup epochs, one *alpha* step (Adam ``lr 1e-3, betas (0, 0.999)``
as ProxylessNAS, valid split, cross-entropy plus the latency loss). After every
alpha step the argmax arch's exact predicted latency is computed and handed to
the loss (the budget loss adapts its multiplier from it) and to the latency
trajectory. Every epoch ends with a checkpoint (safetensors + JSON, atomic), so
an interrupted search resumes from its last finished epoch with the same result
as an uninterrupted one: all randomness of an epoch comes from generators
seeded by ``(seed, epoch)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from latbench.errors import LatbenchError
from latbench.search.proxyless.checkpoint import join_optimizer, load_tensors, save_tensors, split_optimizer, write_json
from latbench.search.proxyless.latency import ExpectedLatency
from latbench.search.proxyless.losses import LatencyLoss
from latbench.search.proxyless.supernet import Supernet, build_supernet
from latbench.torch_ops import torch_threads

CHECKPOINT_TENSORS = "checkpoint.safetensors"
CHECKPOINT_STATE = "checkpoint.json"


@dataclass
class TrainSettings:
    """Hyper-parameters of the supernet training (the defaults are the settings the end-to-end checks were run with)."""

    epochs: int = 30
    warmup_epochs: int = 10
    batch_size: int = 64
    weight_lr: float = 0.05
    weight_momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    alpha_lr: float = 1e-3
    alpha_betas: tuple[float, float] = (0.0, 0.999)
    alpha_init: float = 1e-3
    #: ``constant`` (ProxylessNAS) or ``cosine`` (decays to 0 over the search epochs)
    alpha_schedule: str = "constant"
    #: after the last epoch, at most this many extra alpha steps until the loss's band holds (budget loss)
    settle_steps: int = 100
    #: torch intra-op threads while training on a CPU (these nets are small: more threads mostly wait on each
    #: other, and on a shared machine they are 10-50x slower; measured, see the report)
    threads: int = 1
    tau_start: float = 5.0
    tau_end: float = 0.5
    #: MBConv candidates of a block share a superkernel (None: on for chain spaces, off for darts)
    share_weights: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["alpha_betas"] = list(self.alpha_betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainSettings:
        d = dict(d)
        if "alpha_betas" in d:
            d["alpha_betas"] = tuple(d["alpha_betas"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class EpochRecord:
    """What one epoch did (latency in ms, accuracy in [0, 1])."""

    epoch: int
    phase: str
    train_loss: float
    train_acc: float
    valid_acc: float
    expected_ms: float
    derived_ms: float
    multiplier: float
    tau: float
    seconds: float
    derived: list[int] = field(default_factory=list)


def torch_device(name: str | None) -> torch.device:
    """``auto`` (CUDA when present), ``cpu`` or ``cuda[:i]``; one clear error when CUDA is asked but absent."""
    name = name or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LatbenchError(f"--train-device {name}: CUDA is not available here (torch {torch.__version__}); use cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise LatbenchError(f"bad --train-device {name!r}; use auto, cpu or cuda") from None


def _epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch) * 101 + int(stream))


class SupernetTrainer:
    """Trains a supernet's weights and alphas against a latency loss; checkpoints every epoch."""

    def __init__(
        self,
        supernet: Supernet,
        latency: ExpectedLatency,
        loss: LatencyLoss,
        splits: Any,
        settings: TrainSettings,
        seed: int = 0,
        device: torch.device | None = None,
        checkpoint_dir: Path | None = None,
    ) -> None:
        self.net = supernet
        self.latency = latency
        self.loss = loss
        self.splits = splits
        self.settings = settings
        self.seed = int(seed)
        self.device = device or torch.device("cpu")
        self.checkpoint_dir = checkpoint_dir
        # channels-last convolutions are ~3x faster for these small nets on CPU (mkldnn)
        self.memory_format = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        self.net.to(self.device, memory_format=self.memory_format)
        s = settings
        self.w_opt = torch.optim.SGD(
            supernet.weight_parameters(),
            lr=s.weight_lr,
            momentum=s.weight_momentum,
            weight_decay=s.weight_decay,
            nesterov=True,
        )
        self.a_opt = torch.optim.Adam([supernet.alpha], lr=s.alpha_lr, betas=tuple(s.alpha_betas), eps=1e-8)
        mf = self.memory_format
        self.xt, self.yt = splits.x_train.to(self.device, memory_format=mf), splits.y_train.to(self.device)
        self.xv, self.yv = splits.x_valid.to(self.device, memory_format=mf), splits.y_valid.to(self.device)
        self.steps_per_epoch = max(1, math.ceil(len(self.yt) / s.batch_size))
        self.epoch = 0  # epochs finished
        self.history: list[EpochRecord] = []
        self.trajectory: list[dict[str, float]] = []  # one row per alpha step
        self.alpha_log: list[np.ndarray] = []  # alpha after each epoch
        self.settled: int | None = None  # alpha steps the settling took (None: not run yet)

    # ------------------------------------------------------------------ schedule
    @property
    def total_epochs(self) -> int:
        return self.settings.warmup_epochs + self.settings.epochs

    def _lr(self, epoch: int, step: int) -> float:
        t = (epoch * self.steps_per_epoch + step) / (self.total_epochs * self.steps_per_epoch)
        return 0.5 * self.settings.weight_lr * (1 + math.cos(math.pi * t))

    def _alpha_lr(self, epoch: int, step: int) -> float:
        s = self.settings
        if s.alpha_schedule == "constant":
            return s.alpha_lr
        k = (epoch - s.warmup_epochs) * self.steps_per_epoch + step
        t = k / max(1, s.epochs * self.steps_per_epoch)
        return 0.5 * s.alpha_lr * (1 + math.cos(math.pi * min(1.0, t)))

    def tau(self, epoch: int) -> float:
        """Gumbel temperature: exponential from ``tau_start`` to ``tau_end`` over the search epochs."""
        s = self.settings
        k = max(0, epoch - s.warmup_epochs)
        span = max(1, s.epochs - 1)
        return float(s.tau_start * (s.tau_end / s.tau_start) ** min(1.0, k / span))

    # ------------------------------------------------------------------ steps
    def _weight_step(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, lr: float) -> tuple[float, float]:
        for g in self.w_opt.param_groups:
            g["lr"] = lr
        self.net.train()
        self.net.plan("weights", gen)
        out = self.net(x)
        ce = F.cross_entropy(out, y, label_smoothing=self.settings.label_smoothing)
        self.w_opt.zero_grad(set_to_none=True)
        ce.backward()
        self.w_opt.step()
        self.net.alpha.grad = None
        return float(ce.detach()), float((out.argmax(1) == y).float().mean())

    def _alpha_step(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
        params = self.net.weight_parameters()
        for p in params:
            p.requires_grad_(False)
        try:
            self.net.train()
            self.net.plan("alpha", gen)
            out = self.net(x)
            ce = F.cross_entropy(out, y)
            expected = self.latency.expected(self.net.probs())
            total = self.loss(ce, expected)
            self.a_opt.zero_grad(set_to_none=True)
            total.backward()
            self.a_opt.step()
        finally:
            for p in params:
                p.requires_grad_(True)
        derived = self.latency.of_indices(self.net.argmax_indices())
        self.loss.update(derived)
        return {"ce": float(ce.detach()), "expected_ms": float(expected.detach()), "derived_ms": derived}

    @torch.no_grad()
    def recalibrate_bn(self, indices: np.ndarray | None = None, n_images: int = 512) -> None:
        """Re-estimate BatchNorm statistics for one sub-network (the argmax one by default).

        In a supernet a BN's running statistics mix the many paths it was trained
        under; before a sub-network is evaluated or exported its statistics are
        recomputed on ``n_images`` training images (cumulative average), as in
        SPOS / Once-for-All.
        """
        bns = [m for m in self.net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        saved = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        self.net.train()
        self.net.plan("eval", fixed=indices)
        n = min(n_images, len(self.yt))
        for i in range(0, n, 128):
            self.net(self.xt[i : min(n, i + 128)])
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, indices: np.ndarray | None = None) -> float:
        """Accuracy of the argmax (or ``indices``) sub-network of the supernet (BN recalibrated, eval mode)."""
        self.recalibrate_bn(indices)
        self.net.eval()
        self.net.plan("eval", fixed=indices)
        correct = 0
        for i in range(0, len(y), 256):
            correct += int((self.net(x[i : i + 256]).argmax(1) == y[i : i + 256]).sum())
        return correct / max(1, len(y))

    # ------------------------------------------------------------------ loop
    def fit(self, on_step: Callable[[int, int, dict[str, Any]], None] | None = None) -> SupernetTrainer:
        """Train from the epoch after the last checkpoint to the end; ``on_step(done, total, status)``."""
        with torch_threads(self.settings.threads if self.device.type == "cpu" else None):
            return self._fit(on_step)

    def _fit(self, on_step: Callable[[int, int, dict[str, Any]], None] | None) -> SupernetTrainer:
        s = self.settings
        total_steps = self.total_epochs * self.steps_per_epoch
        while self.epoch < self.total_epochs:
            epoch = self.epoch
            warm = epoch < s.warmup_epochs
            self.net.tau = self.tau(epoch)
            gen = _epoch_generator(self.seed, epoch, 0)
            order = torch.randperm(len(self.yt), generator=gen).to(self.device)
            vorder = torch.randperm(len(self.yv), generator=_epoch_generator(self.seed, epoch, 1)).to(self.device)
            t0 = time.perf_counter()
            losses, accs = [], []
            last: dict[str, float] = {}
            for step in range(self.steps_per_epoch):
                idx = order[step * s.batch_size : (step + 1) * s.batch_size]
                loss_v, acc_v = self._weight_step(self.xt[idx], self.yt[idx], gen, self._lr(epoch, step))
                losses.append(loss_v)
                accs.append(acc_v)
                if not warm:
                    start = (step * s.batch_size) % len(self.yv)
                    vidx = vorder[start : start + s.batch_size]
                    if len(vidx) < s.batch_size // 2:
                        vidx = vorder[: s.batch_size]
                    for g in self.a_opt.param_groups:
                        g["lr"] = self._alpha_lr(epoch, step)
                    last = self._alpha_step(self.xv[vidx], self.yv[vidx], gen)
                    self.trajectory.append(
                        {
                            "step": len(self.trajectory),
                            "epoch": epoch,
                            "expected_ms": last["expected_ms"],
                            "derived_ms": last["derived_ms"],
                            "multiplier": self.loss.multiplier,
                        }
                    )
                if on_step is not None:
                    status = {"epoch": epoch + 1, "loss": loss_v, "acc": float(np.mean(accs)), **last}
                    on_step(epoch * self.steps_per_epoch + step + 1, total_steps, status)
            idx_now = self.net.argmax_indices()
            with torch.no_grad():
                expected_now = float(self.latency.expected(self.net.probs()))
            rec = EpochRecord(
                epoch=epoch + 1,
                phase="warmup" if warm else "search",
                train_loss=float(np.mean(losses)),
                train_acc=float(np.mean(accs)),
                valid_acc=self.evaluate(self.xv, self.yv),
                expected_ms=expected_now,
                derived_ms=self.latency.of_indices(idx_now),
                multiplier=self.loss.multiplier,
                tau=self.net.tau,
                seconds=time.perf_counter() - t0,
                derived=[int(i) for i in idx_now],
            )
            self.history.append(rec)
            self.alpha_log.append(self.net.alpha.detach().cpu().numpy().copy())
            self.epoch += 1
            self.save_checkpoint()
        if self.settled is None:
            self.settle()
            self.save_checkpoint()
        return self

    def settle(self) -> int:
        """Alpha-only steps after the last epoch until the derived arch is in the loss's band; returns how many."""
        s = self.settings
        gen = _epoch_generator(self.seed, self.total_epochs, 2)
        steps = 0
        derived = self.latency.of_indices(self.net.argmax_indices())
        while not self.loss.in_band(derived) and steps < s.settle_steps and s.epochs > 0:
            vorder = torch.randperm(len(self.yv), generator=gen).to(self.device)
            vidx = vorder[: s.batch_size]
            for g in self.a_opt.param_groups:
                g["lr"] = s.alpha_lr
            last = self._alpha_step(self.xv[vidx], self.yv[vidx], gen)
            derived = last["derived_ms"]
            steps += 1
            self.trajectory.append(
                {
                    "step": len(self.trajectory),
                    "epoch": self.total_epochs + 1,
                    "expected_ms": last["expected_ms"],
                    "derived_ms": derived,
                    "multiplier": self.loss.multiplier,
                }
            )
        self.settled = steps
        return steps

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        if self.checkpoint_dir is None:
            return
        tensors: dict[str, torch.Tensor] = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        wt, wrest = split_optimizer("w", self.w_opt)
        at, arest = split_optimizer("a", self.a_opt)
        tensors.update(wt)
        tensors.update(at)
        if self.alpha_log:
            tensors["alpha_log"] = torch.from_numpy(np.stack(self.alpha_log))
        save_tensors(self.checkpoint_dir / CHECKPOINT_TENSORS, tensors)
        write_json(
            self.checkpoint_dir / CHECKPOINT_STATE,
            {
                "epoch": self.epoch,
                "loss_state": self.loss.state(),
                "optimizers": {"w": wrest, "a": arest},
                "history": [asdict(r) for r in self.history],
                "trajectory": self.trajectory,
                "settled": self.settled,
            },
        )

    def load_checkpoint(self) -> bool:
        """Restore the last checkpoint in ``checkpoint_dir``; False when there is none."""
        import json

        if self.checkpoint_dir is None or not (self.checkpoint_dir / CHECKPOINT_STATE).exists():
            return False
        state_path = self.checkpoint_dir / CHECKPOINT_STATE
        try:
            state = json.loads(state_path.read_text())
        except json.JSONDecodeError as exc:
            raise LatbenchError(f"{state_path}: corrupt checkpoint (invalid JSON at line {exc.lineno})") from None
        tensors = load_tensors(self.checkpoint_dir / CHECKPOINT_TENSORS)
        net_state = {k[len("net.") :]: v for k, v in tensors.items() if k.startswith("net.")}
        missing, unexpected = self.net.load_state_dict(net_state, strict=False)
        if missing or unexpected:
            raise LatbenchError(
                f"{self.checkpoint_dir}: checkpoint does not fit this supernet "
                f"({len(missing)} missing, {len(unexpected)} unexpected tensors)"
            )
        self.net.to(self.device, memory_format=self.memory_format)
        join_optimizer("w", self.w_opt, {k: v.to(self.device) for k, v in tensors.items()}, state["optimizers"]["w"])
        join_optimizer("a", self.a_opt, {k: v.to(self.device) for k, v in tensors.items()}, state["optimizers"]["a"])
        self.loss.load_state(state.get("loss_state", {}))
        self.epoch = int(state["epoch"])
        self.history = [EpochRecord(**r) for r in state.get("history", [])]
        self.trajectory = list(state.get("trajectory", []))
        self.settled = state.get("settled")
        self.alpha_log = list(tensors["alpha_log"].numpy()) if "alpha_log" in tensors else []
        return True


def make_trainer(
    train_space: Any,
    mode: str,
    latency: ExpectedLatency,
    loss: LatencyLoss,
    splits: Any,
    settings: TrainSettings,
    seed: int,
    device: torch.device,
    checkpoint_dir: Path | None,
) -> SupernetTrainer:
    """A trainer with a freshly (seeded) initialised supernet."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_supernet(train_space, mode, settings.share_weights)
    net.init_alpha(torch.Generator().manual_seed(seed + 7), settings.alpha_init)
    return SupernetTrainer(net, latency, loss, splits, settings, seed, device, checkpoint_dir)
