"""Reusable contract test suites for backends and latency models (need pytest)."""

from latbench.testing.contracts import BackendContract, LatencyModelContract

__all__ = ["BackendContract", "LatencyModelContract"]
