"""Reusable contract test suites for backends and latency models (need pytest)."""

from latbench.testing.contracts import BackendContract

__all__ = ["BackendContract"]
