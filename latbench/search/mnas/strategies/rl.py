"""`rl`: a policy-gradient controller in the NASNet / MnasNet style.

An LSTM controller (Zoph & Le 2017; Zoph et al., NASNet 2018) emits one choice
per decision of the space, each conditioned on the previous ones through the
LSTM state (the previous choice is fed back as an embedding). It is trained on
the MnasNet reward with REINFORCE and an exponential moving-average baseline
(``algo="reinforce"``), or with PPO's clipped surrogate (``algo="ppo"``, as
MnasNet did) using the log-probabilities recorded when the archs were sampled.
Advantages are ``(reward - baseline) / running std`` so the step size does not
depend on the scale of the accuracy source.

In hard-latency mode, sampled archs over a limit are not evaluated. They are
resampled; only while fewer than ``min_accept`` of the controller's samples
meet the limits do they also enter the update, with a penalty reward (below the
worst seen, lower the further over the budget), so the controller comes back
towards the budget without learning to fear it (a penalty on every rejection
drives it to tiny archs).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from latbench.errors import LatbenchError
from latbench.search.mnas.strategies.base import Strategy, register_strategy
from latbench.torch_ops import torch_threads

ALGOS = ("reinforce", "ppo")


def _controller_class() -> Any:
    import torch
    from torch import nn

    class LSTMController(nn.Module):
        """Autoregressive policy over the decisions of a space."""

        def __init__(self, cardinalities: list[int], hidden: int, tanh_c: float, temperature: float) -> None:
            super().__init__()
            self.cards = list(cardinalities)
            offsets = np.concatenate([[0], np.cumsum(self.cards)])
            self.offsets = [int(x) for x in offsets]
            total = int(offsets[-1])
            self.embed = nn.Embedding(total + 1, hidden)  # last row: the start token
            self.cell = nn.LSTMCell(hidden, hidden)
            self.head = nn.Linear(hidden, total)
            self.tanh_c = float(tanh_c)
            self.temperature = float(temperature)
            nn.init.uniform_(self.head.weight, -0.1, 0.1)
            nn.init.zeros_(self.head.bias)

        def forward(
            self, n: int, actions: torch.Tensor | None = None, generator: torch.Generator | None = None
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            hidden = self.cell.hidden_size
            h = torch.zeros(n, hidden)
            c = torch.zeros(n, hidden)
            x = self.embed.weight[-1].expand(n, hidden)
            logp = torch.zeros(n)
            ent = torch.zeros(n)
            out = []
            for d in range(len(self.cards)):
                h, c = self.cell(x, (h, c))
                lo, hi = self.offsets[d], self.offsets[d + 1]
                logits = (
                    torch.nn.functional.linear(h, self.head.weight[lo:hi], self.head.bias[lo:hi]) / self.temperature
                )
                if self.tanh_c > 0:
                    logits = self.tanh_c * torch.tanh(logits)
                logsm = torch.log_softmax(logits, dim=1)
                if actions is None:
                    a = torch.multinomial(logsm.exp(), 1, generator=generator).squeeze(1)
                else:
                    a = actions[:, d]
                logp = logp + logsm.gather(1, a[:, None]).squeeze(1)
                ent = ent - (logsm.exp() * logsm).sum(dim=1)
                out.append(a)
                x = self.embed(a + lo)
            return torch.stack(out, dim=1), logp, ent

    return LSTMController


@register_strategy
class RLStrategy(Strategy):
    """LSTM controller + REINFORCE (moving-average baseline) or PPO."""

    name = "rl"
    summary = "LSTM policy-gradient controller, one choice per decision (REINFORCE + EMA baseline, or PPO)"

    def __init__(  # type: ignore[no-untyped-def]
        self,
        problem,
        rng,
        *,
        trials: int,
        dedupe: bool = False,
        algo: str = "reinforce",
        batch: int = 20,
        lr: float = 0.01,
        hidden: int = 64,
        baseline_decay: float = 0.9,
        entropy_weight: float = 1e-3,
        tanh_c: float = 2.5,
        temperature: float = 5.0,
        ppo_clip: float = 0.2,
        ppo_epochs: int = 4,
        max_rejects: int = 50,
        threads: int | None = 1,
        learn_rejected: bool = True,
        min_accept: float = 0.3,
    ) -> None:
        import torch

        super().__init__(problem, rng, trials=trials, dedupe=dedupe)
        if algo not in ALGOS:
            raise LatbenchError(f"rl algo must be one of {', '.join(ALGOS)}, got {algo!r}")
        if int(batch) < 2:
            raise LatbenchError(f"rl batch must be >= 2 (the baseline needs several rewards), got {batch}")
        self.algo = algo
        self.batch = int(batch)
        self.lr = float(lr)
        self.hidden = int(hidden)
        self.baseline_decay = float(baseline_decay)
        self.entropy_weight = float(entropy_weight)
        self.tanh_c = float(tanh_c)
        self.temperature = float(temperature)
        self.ppo_clip = float(ppo_clip)
        self.ppo_epochs = int(ppo_epochs)
        self.max_rejects = int(max_rejects)
        self.threads = threads
        self.learn_rejected = bool(learn_rejected)
        self.min_accept = float(min_accept)
        self._accept_rate = 1.0
        seed = int(rng.integers(2**62))
        self.gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.policy = _controller_class()(
                [int(c) for c in self.space.cardinalities], self.hidden, self.tanh_c, self.temperature
            )
        self.opt = torch.optim.Adam(self.policy.parameters(), lr=self.lr)
        d = len(self.space.decisions)
        self.buf_idx = np.zeros((0, d), dtype=np.int64)
        self.buf_reward = np.zeros(0)
        self.buf_logp = np.zeros(0)
        self.pending: dict[bytes, list[float]] = {}
        self.baseline: float | None = None
        self.reward_var: float | None = None
        self.reward_lo = np.inf
        self.reward_hi = -np.inf
        self.updates = 0
        self.rejected = 0

    @property
    def batch_size(self) -> int:
        return self.batch

    # ------------------------------------------------------------------ sample
    def _sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch_threads(self.threads), torch.no_grad():
            acts, logp, _ = self.policy(n, generator=self.gen)
        return acts.numpy().astype(np.int64), logp.numpy().astype(np.float64)

    def _penalty(self, latency_ms: np.ndarray | None = None) -> np.ndarray | float:
        """Reward of an arch rejected unevaluated: below the worst seen, and lower the further over the budget.

        The slope matters: when every sample of a batch is over the budget, it
        still tells the controller which direction is faster.
        """
        if np.isfinite(self.reward_lo):
            spread = max(self.reward_hi - self.reward_lo, abs(self.reward_lo) * 0.1, 1e-3)
            base = min(0.0, self.reward_lo) - spread
        else:
            spread, base = 1.0, 0.0
        if latency_ms is None:
            return float(base)
        over = np.maximum(np.asarray(latency_ms) / self.problem.target_ms - 1.0, 0.0)
        return base - spread * over

    def ask(self, n: int) -> np.ndarray:
        got: list[np.ndarray] = []
        total = 0
        for _ in range(self.max_rejects):
            # oversample by the recent acceptance rate (hard limits), so one round usually suffices
            want = n - total
            idx, logp = self._sample(int(min(max(want / self._accept_rate * 1.2, want, 1), 16 * max(want, 1))))
            static = self.problem.measure_static(idx)
            ok, lat = static["feasible"], static["latency_ms"]
            self._accept_rate = max(0.05, 0.5 * self._accept_rate + 0.5 * float(ok.mean()))
            if ok.sum() > want:  # the surplus feasible ones are dropped unseen (not told, not learned from)
                keep = np.flatnonzero(ok)[want:]
                ok[keep] = False
                idx, logp = np.delete(idx, keep, axis=0), np.delete(logp, keep)
                ok, lat = np.delete(ok, keep), np.delete(lat, keep)
            if (~ok).any():
                self.rejected += int((~ok).sum())
                if self.learn_rejected and self._accept_rate < self.min_accept:
                    # only while the controller proposes mostly over-limit archs: it then learns to come back;
                    # otherwise rejections are just resampled, so it does not learn to fear the budget
                    self._add(idx[~ok], np.asarray(self._penalty(lat[~ok])), logp[~ok])
            for row, lp in zip(idx[ok], logp[ok], strict=True):
                self.pending.setdefault(row.tobytes(), []).append(float(lp))
            if ok.any():
                got.append(idx[ok])
                total += int(ok.sum())
            if total >= n:
                break
        if not got:
            return np.zeros((0, len(self.space.decisions)), dtype=np.int64)
        return np.concatenate(got)[:n]

    # ------------------------------------------------------------------ learn
    def tell(self, indices: np.ndarray, rewards: np.ndarray, feasible: np.ndarray | None = None) -> None:
        indices = np.asarray(indices, dtype=np.int64)
        rewards = np.asarray(rewards, dtype=np.float64).copy()
        feasible = np.ones(len(rewards), dtype=bool) if feasible is None else np.asarray(feasible, dtype=bool)
        good = np.isfinite(rewards) & feasible
        if good.any():
            self.reward_lo = min(self.reward_lo, float(rewards[good].min()))
            self.reward_hi = max(self.reward_hi, float(rewards[good].max()))
        rewards[~feasible] = self._penalty()
        keep = np.isfinite(rewards)  # failed trials (NaN) teach nothing
        logps = []
        for row in indices:
            lst = self.pending.get(row.tobytes())
            logps.append(lst.pop(0) if lst else np.nan)
            if lst is not None and not lst:
                del self.pending[row.tobytes()]
        self._add(indices[keep], rewards[keep], np.asarray(logps)[keep])

    def _add(self, idx: np.ndarray, rewards: np.ndarray, logp: np.ndarray) -> None:
        self.buf_idx = np.concatenate([self.buf_idx, idx])
        self.buf_reward = np.concatenate([self.buf_reward, rewards])
        self.buf_logp = np.concatenate([self.buf_logp, logp])
        while len(self.buf_reward) >= self.batch:
            self._update(self.buf_idx[: self.batch], self.buf_reward[: self.batch], self.buf_logp[: self.batch])
            self.buf_idx = self.buf_idx[self.batch :]
            self.buf_reward = self.buf_reward[self.batch :]
            self.buf_logp = self.buf_logp[self.batch :]

    def _update(self, idx: np.ndarray, rewards: np.ndarray, old_logp: np.ndarray) -> None:
        with torch_threads(self.threads):
            self._update_inner(idx, rewards, old_logp)

    def _update_inner(self, idx: np.ndarray, rewards: np.ndarray, old_logp: np.ndarray) -> None:
        import torch

        mean, var = float(rewards.mean()), float(rewards.var())
        if self.baseline is None:
            self.baseline, self.reward_var = mean, var
        adv_np = (rewards - self.baseline) / np.sqrt(max(self.reward_var or 0.0, 1e-12) + 1e-12)
        adv_np = np.clip(adv_np, -5.0, 5.0)
        dec = self.baseline_decay
        self.baseline = dec * self.baseline + (1 - dec) * mean
        self.reward_var = dec * float(self.reward_var) + (1 - dec) * (var + (mean - self.baseline) ** 2)
        actions = torch.from_numpy(idx)
        adv = torch.from_numpy(adv_np).float()
        if self.algo == "reinforce":
            _, logp, ent = self.policy(len(idx), actions=actions)
            loss = -(adv * logp).mean() - self.entropy_weight * ent.mean()
            self.opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 5.0)
            self.opt.step()
        else:
            with torch.no_grad():
                _, now, _ = self.policy(len(idx), actions=actions)
            old = torch.from_numpy(np.where(np.isfinite(old_logp), old_logp, now.numpy())).float()
            for _ in range(self.ppo_epochs):
                _, logp, ent = self.policy(len(idx), actions=actions)
                ratio = torch.exp(logp - old)
                clipped = torch.clamp(ratio, 1 - self.ppo_clip, 1 + self.ppo_clip)
                loss = -torch.min(ratio * adv, clipped * adv).mean() - self.entropy_weight * ent.mean()
                self.opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 5.0)
                self.opt.step()
        self.updates += 1

    # ------------------------------------------------------------------ state
    def state_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        state, arrays = super().state_dict()
        for k, v in self.policy.state_dict().items():
            arrays[f"policy.{k}"] = v.detach().numpy().copy()
        opt = self.opt.state_dict()
        steps = {}
        for pid, st in opt["state"].items():
            steps[str(pid)] = float(st["step"])
            arrays[f"adam.{pid}.exp_avg"] = st["exp_avg"].numpy().copy()
            arrays[f"adam.{pid}.exp_avg_sq"] = st["exp_avg_sq"].numpy().copy()
        arrays["torch_generator"] = self.gen.get_state().numpy().copy()
        arrays.update(buf_idx=self.buf_idx, buf_reward=self.buf_reward, buf_logp=self.buf_logp)
        state.update(
            adam_steps=steps,
            baseline=self.baseline,
            reward_var=self.reward_var,
            reward_lo=None if not np.isfinite(self.reward_lo) else self.reward_lo,
            reward_hi=None if not np.isfinite(self.reward_hi) else self.reward_hi,
            updates=self.updates,
            rejected=self.rejected,
        )
        return state, arrays

    def load_state_dict(self, state: dict[str, Any], arrays: dict[str, np.ndarray], history: np.ndarray) -> None:
        import torch

        super().load_state_dict(state, arrays, history)
        sd = {k[len("policy.") :]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith("policy.")}
        self.policy.load_state_dict(sd)
        opt = self.opt.state_dict()
        for pid_s, step in state["adam_steps"].items():
            pid = int(pid_s)
            opt["state"][pid] = {
                "step": torch.tensor(step),
                "exp_avg": torch.from_numpy(np.array(arrays[f"adam.{pid}.exp_avg"])),
                "exp_avg_sq": torch.from_numpy(np.array(arrays[f"adam.{pid}.exp_avg_sq"])),
            }
        self.opt.load_state_dict(opt)
        self.gen.set_state(torch.from_numpy(np.array(arrays["torch_generator"], dtype=np.uint8)))
        d = len(self.space.decisions)
        self.buf_idx = np.asarray(arrays["buf_idx"], dtype=np.int64).reshape(-1, d)
        self.buf_reward = np.asarray(arrays["buf_reward"], dtype=np.float64)
        self.buf_logp = np.asarray(arrays["buf_logp"], dtype=np.float64)
        self.baseline = state["baseline"]
        self.reward_var = state["reward_var"]
        self.reward_lo = np.inf if state["reward_lo"] is None else float(state["reward_lo"])
        self.reward_hi = -np.inf if state["reward_hi"] is None else float(state["reward_hi"])
        self.updates = int(state["updates"])
        self.rejected = int(state["rejected"])
        self.pending = {}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "algo": self.algo,
            "batch": self.batch,
            "lr": self.lr,
            "hidden": self.hidden,
            "baseline_decay": self.baseline_decay,
            "entropy_weight": self.entropy_weight,
            "updates": self.updates,
            "rejected_unevaluated": self.rejected,
        }
