"""Speed and memory of the differentiable search's steps (ratios measured in one run, never wall-clock limits).

* a weight step and an alpha step of the supernet in ``binary``, ``gumbel`` and ``softmax`` mode, and a plain
  training step of one sub-network, on the small-image ``proxyless-mobile`` variant the search trains;
* peak RSS of training steps per mode, each in a fresh process: ``binary`` must stay near one sub-network
  (it runs one path, plus one no-grad path per block in alpha steps), ``softmax`` runs every path;
* the per-step latency bookkeeping (E[LAT], derived latency, controller) next to a training step.

Run: ``.venv/bin/pytest benchmarks/bench_proxyless.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latbench.predict.base import SpaceLatency
from latbench.search.proxyless.latency import ExpectedLatency
from latbench.search.proxyless.losses import make_loss
from latbench.search.proxyless.supernet import build_supernet
from latbench.spaces import get_space

SMALL = {"resolution": 32, "width": 0.35, "num_classes": 10}
BATCH = 64


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 3, 32, 32, generator=g).contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 10, (BATCH,), generator=g)


def _step_fn(mode: str, phase: str):
    space = get_space("proxyless-mobile", **SMALL)
    torch.manual_seed(0)
    net = build_supernet(space, mode).to(memory_format=torch.channels_last).train()
    x, y = _batch()
    g = torch.Generator().manual_seed(0)
    params = net.weight_parameters()

    def step() -> None:
        if phase == "alpha":
            for p in params:
                p.requires_grad_(False)
        net.plan(phase, g)
        F.cross_entropy(net(x), y).backward()
        net.zero_grad(set_to_none=True)
        for p in params:
            p.requires_grad_(True)

    return step


def _subnet_step():
    space = get_space("proxyless-mobile", **SMALL)
    torch.manual_seed(0)
    idx = space.sample_indices(np.random.default_rng(0), 1)[0]
    net = space.build(space.from_indices(idx)).train().to(memory_format=torch.channels_last)
    x, y = _batch()

    def step() -> None:
        F.cross_entropy(net(x), y).backward()
        net.zero_grad(set_to_none=True)

    return step


@pytest.mark.parametrize(
    ("mode", "phase"), [(m, p) for m in ("binary", "gumbel", "softmax") for p in ("weights", "alpha")]
)
def test_supernet_step(benchmark, mode: str, phase: str) -> None:
    step = _step_fn(mode, phase)
    step()
    benchmark.extra_info.update({"mode": mode, "phase": phase, "batch": BATCH, "space": "proxyless-mobile 32px w0.35"})
    benchmark.pedantic(step, rounds=8, iterations=1, warmup_rounds=1)


def test_subnet_step(benchmark) -> None:
    step = _subnet_step()
    step()
    benchmark.pedantic(step, rounds=8, iterations=1, warmup_rounds=1)


def _median_s(fn, n: int = 7) -> float:
    import time

    fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return float(np.median(out))


def test_binary_step_costs_about_one_subnet_and_softmax_all_paths() -> None:
    """Ratios of median step times measured in one run: binary weight ~ 1 sub-network, alpha ~ 1-2, softmax >> 1."""
    sub = _median_s(_subnet_step())
    times = {(m, p): _median_s(_step_fn(m, p)) for m in ("binary", "softmax") for p in ("weights", "alpha")}
    ratios = {f"{m}/{p}": round(t / sub, 2) for (m, p), t in times.items()}
    print(f"\nstep time / sub-network step ({sub * 1e3:.1f} ms): {ratios}")
    assert ratios["binary/weights"] < 2.0
    assert ratios["binary/alpha"] < 3.0  # the active path with grad, one more without, per block
    assert ratios["softmax/weights"] > 2.5 * ratios["binary/weights"]


_RSS_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path

    def status_mb(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    import numpy as np, torch, torch.nn.functional as F
    from latbench.spaces import get_space
    from latbench.search.proxyless.supernet import build_supernet
    torch.set_num_threads(1)
    mode, batch = sys.argv[1], int(sys.argv[2])
    space = get_space("proxyless-mobile", resolution=32, width=0.35, num_classes=10)
    torch.manual_seed(0)
    if mode == "subnet":
        net = space.build(space.from_indices(space.sample_indices(np.random.default_rng(0), 1)[0])).train()
        params = list(net.parameters())
    else:
        net = build_supernet(space, mode).train()
        params = net.weight_parameters()
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    g = torch.Generator().manual_seed(0)
    try:  # reset the peak (VmHWM) to the current RSS, so the peak below is the training's own
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    before = status_mb("VmRSS")
    for phase in ("weights", "alpha", "weights", "alpha"):
        if mode != "subnet":
            for p in params:
                p.requires_grad_(phase == "weights")
            net.plan(phase, g)
        F.cross_entropy(net(x), y).backward()
        net.zero_grad(set_to_none=True)
    after = status_mb("VmHWM")
    print(json.dumps({"before_mb": before, "after_mb": after}))
    """
)


def _rss(mode: str, batch: int = 512) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, mode, str(batch)], check=True, capture_output=True, text=True, timeout=600
    )
    d = json.loads(out.stdout.strip().splitlines()[-1])
    d["training_mb"] = d["after_mb"] - d["before_mb"]
    return d


def test_peak_rss_binary_stays_near_one_subnet() -> None:
    """Peak RSS growth over the RSS before 4 training steps (batch 512), each mode in a fresh process."""
    rss = {m: _rss(m) for m in ("subnet", "binary", "softmax")}
    print("\npeak RSS (MB):", {m: {k: round(v, 1) for k, v in d.items()} for m, d in rss.items()})
    sub, binary, softmax = (rss[m]["training_mb"] for m in ("subnet", "binary", "softmax"))
    assert sub > 10  # the measurement sees activation memory at all
    assert binary < 2.0 * sub
    assert softmax > 3.0 * binary


def test_latency_bookkeeping_is_small_next_to_a_step(benchmark) -> None:
    """E[LAT] with its gradient, the derived arch's exact latency and the controller update, per alpha step."""
    space = get_space("proxyless-mobile")
    rng = np.random.default_rng(0)
    lat = ExpectedLatency(SpaceLatency(space, rng.uniform(0.1, 3.0, len(space.vocabulary))))
    train = get_space("proxyless-mobile", **SMALL)
    net = build_supernet(train, "binary")
    loss = make_loss("budget", sum(lat.bounds()) / 2)

    def bookkeeping() -> float:
        e = lat.expected(net.probs())
        loss(torch.tensor(1.0), e).backward()
        d = lat.of_indices(net.argmax_indices())
        loss.update(d)
        net.alpha.grad = None
        return d

    benchmark(bookkeeping)
    step = _median_s(_step_fn("binary", "alpha"))
    book = _median_s(bookkeeping, 21)
    print(f"\nbookkeeping {book * 1e3:.2f} ms vs binary alpha step {step * 1e3:.1f} ms")
    assert book < 0.2 * step
