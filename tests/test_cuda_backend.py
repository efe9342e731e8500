"""`torch-cuda`: the contract where a GPU exists; one clear line (exit 2) where it does not.

On machines without an NVIDIA GPU the contract and CUDA timing tests skip with
the backend's own reason; the "no CUDA" behaviour is checked instead.
"""

from __future__ import annotations

import pytest

from latbench.backends import backend_class, get_backend
from latbench.backends.torch_cuda import cuda_unavailable_reason, settle
from latbench.cli import main
from latbench.errors import BackendUnavailable
from latbench.ops import OpSpec
from latbench.testing.contracts import BackendContract

REASON = cuda_unavailable_reason()
needs_cuda = pytest.mark.skipif(REASON is not None, reason=f"torch-cuda unavailable here: {REASON}")


@pytest.mark.cuda
class TestTorchCUDA(BackendContract):
    backend_name = "torch-cuda"
    settings = {"warmup_min_s": 0.1, "warmup_max_s": 0.5}


@pytest.mark.cuda
class TestTorchCUDAHalfChannelsLast(BackendContract):
    backend_name = "torch-cuda"
    settings = {"warmup_min_s": 0.1, "warmup_max_s": 0.5, "precision": "fp16", "channels_last": True}


def test_available_says_why_not() -> None:
    ok, reason = backend_class("torch-cuda").available()
    assert ok == (REASON is None)
    if not ok:
        assert reason and "\n" not in reason


@pytest.mark.skipif(REASON is None, reason="a CUDA GPU is present")
def test_no_cuda_is_one_line_exit_2(home, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(BackendUnavailable, match="cannot run here"):
        get_backend("torch-cuda")
    rc = main(["profile", "torch-cuda"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("latbench: error: backend 'torch-cuda' cannot run here:") and "\n" not in err
    assert not list(home.rglob("*.toml"))  # nothing written


def test_settle_stops_when_block_medians_agree() -> None:
    calls: list[int] = []
    seq = iter([10.0, 8.0, 6.0, 5.0, 5.0, 5.0, 5.0])

    def runner(n: int) -> list[float]:
        calls.append(n)
        v = next(seq)
        return [v] * n

    assert settle(runner, max_s=10.0, block=4) == 5.0
    assert len(calls) == 5  # 10 -> 8 -> 6 -> 5 -> 5 (agree)


@pytest.mark.cuda
@needs_cuda
def test_fingerprint_holds_gpu_identity() -> None:
    b = get_backend("torch-cuda", warmup_max_s=0.5)
    fp = b.fingerprint().to_dict()
    gpu = fp["gpu"]
    assert gpu["name"] and gpu["compute_capability"].count(".") == 1 and gpu["cuda_runtime"]
    assert fp["settings"]["cudnn_benchmark_effective"] is True and fp["settings"]["timer"] == "cuda-events"


@pytest.mark.cuda
@needs_cuda
def test_batch_setting_scales_work() -> None:
    op = OpSpec("mbconv", 56, 32, 32, kernel=5, expand=6, act="relu6")
    one = get_backend("torch-cuda", warmup_max_s=0.5).measure(op)
    many = get_backend("torch-cuda", warmup_max_s=0.5, batch=64).measure(op.with_(batch=64))
    assert many.median > one.median


@pytest.mark.cuda
@needs_cuda
def test_bad_device_index() -> None:
    with pytest.raises(BackendUnavailable, match="does not exist"):
        get_backend("torch-cuda", device=999)
