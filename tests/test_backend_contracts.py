"""The built-in CPU backends pass the reusable backend contract."""

from latbench.testing import BackendContract


class TestTorchCPU(BackendContract):
    backend_name = "torch-cpu"
    settings = {"threads": 1}


class TestFake(BackendContract):
    backend_name = "fake"
    settings = {"device": "contract"}
