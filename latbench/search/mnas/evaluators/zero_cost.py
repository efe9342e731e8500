"""`zero-cost`: training-free accuracy proxies, computed on a real batch at initialisation.

* ``naswot`` (Mellor et al., ICML 2021): log-determinant of the kernel
  ``K[i, j]`` = number of ReLU-like units on which inputs ``i`` and ``j`` agree
  (both active or both inactive), over a batch of real images. The paper
  defines the code for ReLU; on GELU networks (the transformer spaces) a
  unit's code is the sign of the GELU's input, the code a ReLU there would give;
* ``synflow`` (Tanaka et al., NeurIPS 2020; as a NAS proxy Abdelfattah et al.,
  ICLR 2021): ``log sum |theta * dR/dtheta|`` with ``R`` the output sum of the
  network with absolute weights on an all-ones input (float64, BatchNorm in
  eval mode);
* ``grad-norm`` (Abdelfattah et al.): sum of the L2 norms of the weight
  gradients of the cross-entropy loss on a real batch.

All three grow with a network's capacity; none is an accuracy in [0, 1]. The
MnasNet reward multiplies them by the latency term, which is invariant to
their scale. Networks are the small-image variants of the archs; each trial is
seeded from (search seed, trial id).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from latbench.errors import LatbenchError
from latbench.search.mnas.evaluators.base import Evaluator
from latbench.search.mnas.proxy import describe_proxy, proxy_arch, proxy_data, proxy_space
from latbench.torch_ops import torch_threads

PROXIES = ("naswot", "synflow", "grad-norm")


def naswot_score(net: Any, x: Any) -> float:
    """log |K| of the binary activation-code kernel over the batch ``x`` (Mellor et al. 2021)."""
    import torch
    from torch import nn

    n = x.shape[0]
    k = torch.zeros(n, n, dtype=torch.float64)
    handles = []

    def hook(_module: Any, inputs: tuple[Any, ...]) -> None:
        codes = (inputs[0].detach().reshape(n, -1) > 0).double()
        k.add_(codes @ codes.t() + (1.0 - codes) @ (1.0 - codes).t())

    for m in net.modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.GELU)):
            handles.append(m.register_forward_pre_hook(hook))
    if not handles:
        raise LatbenchError("naswot needs ReLU-like activations; this network has none")
    try:
        net.train()
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = np.linalg.slogdet(k.numpy())
    if sign <= 0:
        raise FloatingPointError("singular NASWOT kernel (identical activation codes for two inputs)")
    return float(logdet)


def synflow_score(net: Any, input_shape: tuple[int, ...]) -> float:
    """log of the synaptic-flow saliency sum (absolute weights, all-ones input, float64)."""
    import torch

    net = net.double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad()
    out = net(torch.ones(1, *input_shape[1:], dtype=torch.float64))
    out.sum().backward()
    total = 0.0
    for p in net.parameters():
        if p.grad is not None:
            total += float((p.detach() * p.grad).abs().sum())
    if not total > 0 or not np.isfinite(total):
        raise FloatingPointError(f"synflow saliency is {total}")
    return float(np.log(total))


def grad_norm_score(net: Any, x: Any, y: Any) -> float:
    """Sum of per-parameter gradient L2 norms of the cross-entropy loss on a real batch."""
    import torch.nn.functional as F

    net.train()
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    total = sum(float(p.grad.norm()) for p in net.parameters() if p.grad is not None and p.dim() > 1)
    if not total > 0:
        raise FloatingPointError(f"gradient norm is {total}")
    return float(total)


class ZeroCostEvaluator(Evaluator):
    """A training-free proxy score (naswot, synflow or grad-norm) on a real batch."""

    name = "zero-cost"
    summary = "training-free proxies on a real batch: naswot (default), synflow, grad-norm"
    kind = "proxy score"

    def __init__(
        self,
        *,
        proxy: str = "naswot",
        data: str = "digits",
        resolution: int = 32,
        width: float = 0.35,
        batch: int = 32,
        threads: int | None = 1,
        data_seed: int = 0,
    ) -> None:
        if proxy not in PROXIES:
            raise LatbenchError(f"unknown zero-cost proxy {proxy!r}; known: {', '.join(PROXIES)}")
        self.proxy_name = proxy
        self.data = data
        self.resolution = int(resolution)
        self.width = float(width)
        self.batch = int(batch)
        self.threads = threads
        self.data_seed = int(data_seed)

    def setup(self, problem: Any, seed: int) -> None:
        import torch

        super().setup(problem, seed)
        sp = proxy_data(problem.space, self.data, self.resolution, self.data_seed)
        self.proxy = proxy_space(problem.space, self.resolution, self.width, sp.num_classes)
        g = torch.Generator().manual_seed(self.seed)
        pick = torch.randperm(len(sp.y_train), generator=g)[: self.batch]
        self.x, self.y = sp.x_train[pick], sp.y_train[pick]

    def evaluate_one(self, arch: dict[str, Any], trial: int) -> float:
        import torch

        with torch_threads(self.threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + trial)
            net = self.proxy.build(proxy_arch(self.proxy, arch))
            if self.proxy_name == "naswot":
                return naswot_score(net, self.x)
            if self.proxy_name == "synflow":
                return synflow_score(net, self.proxy.input_shape)
            return grad_norm_score(net, self.x, self.y)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": f"{self.name}:{self.proxy_name}",
            "kind": self.kind,
            "proxy": self.proxy_name,
            "data": self.data,
            "batch": self.batch,
            "threads": self.threads,
        }
        if hasattr(self, "proxy"):
            d["proxy_space"] = describe_proxy(self.proxy)
        return d
